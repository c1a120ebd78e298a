// Contact sheets: a grid of images, each scaled to a common cell and captioned with its prompt,
// drawn with cairo and written as one PNG. For looking at a text-to-image run's samples (KOALA
// student against teacher, one prompt per cell) the way diffusers' make_image_grid is used, with
// the prompt under each image.
//
// Layout, in pixels (every number is in ContactSheetLayout):
//   width  = columns * cell_width + (columns + 1) * padding
//   height = padding + title_height + rows * (cell_height + caption_height + padding)
//   title_height   = 0 without a title, else one title line + padding
//   caption_height = 0 when no caption has text, else padding / 2 + lines * line_height, lines
//                    being the most lines any caption wrapped to (at most max_caption_lines)
//   cell (r, c) starts at x = padding + c * (cell_width + padding),
//                         y = padding + title_height + r * (cell_height + caption_height + padding)
// Each image is scaled to fit its cell with its aspect ratio kept (cairo's GOOD filter: box
// filtering when shrinking, bilinear when enlarging), centred in it; an image of the cell's size
// is copied pixel for pixel. Captions are wrapped at spaces to the cell width (a word wider than
// the cell is broken between characters), centred, and cut to max_caption_lines with "…" ending
// the last line shown. Invalid UTF-8 becomes U+FFFD and control characters spaces.
//
// Text goes through cairo's "toy" text API: one font (fontconfig's match for font_family, DejaVu
// Sans on Debian, which covers Latin including Turkish, Cyrillic, Greek and Arabic letters), no
// fallback to other fonts, no shaping and no bidi: Arabic and Hebrew are drawn left to right in
// isolated letter forms, and a script the font lacks shows as boxes. Pango would fix that; the
// sheet is a quick look, not typography.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "concord/io/image.h"

namespace concord::io {

struct ContactSheetOptions {
  /// Images per row; 0: ceil(sqrt(n)).
  int64_t columns = 0;
  /// The box every image is scaled to fit; 0: the largest width (height) among the images.
  int64_t cell_width = 256;
  int64_t cell_height = 256;
  /// Space around the grid and between cells.
  int64_t padding = 8;
  /// Caption font size in pixels (the title's is 1.4 times it).
  double font_size = 13;
  /// Most lines a caption may take; 0 draws no captions.
  int64_t max_caption_lines = 3;
  /// One line above the grid (ellipsised to the sheet's width); empty: none.
  std::string title;
  /// Font family as fontconfig matches it.
  std::string font_family = "sans-serif";
};

/// Where a cell's parts went.
struct ContactSheetCell {
  /// Top-left corner of the cell.
  int64_t x = 0, y = 0;
  /// The scaled image's rectangle.
  int64_t image_x = 0, image_y = 0, image_width = 0, image_height = 0;
  /// The caption as drawn: wrapped, the last line ending in "…" when it was cut.
  std::vector<std::string> caption_lines;
};

struct ContactSheetLayout {
  int64_t width = 0, height = 0;
  int64_t columns = 0, rows = 0;
  int64_t cell_width = 0, cell_height = 0;
  int64_t padding = 0;
  /// Height of one caption line (the font's recommended line spacing, rounded up).
  int64_t line_height = 0;
  int64_t caption_height = 0;
  int64_t title_height = 0;
  /// The title as drawn (ellipsised); empty without one.
  std::string title_line;
  /// One per image, in the images' order (row by row).
  std::vector<ContactSheetCell> cells;
};

struct ContactSheet {
  Image image;  ///< RGB
  ContactSheetLayout layout;
};

/// Draws the sheet in memory. `captions` is empty or has one entry per image (an empty caption
/// draws nothing). Images may have 1, 3 or 4 channels (alpha is discarded, as convert("RGB")).
/// Throws concord::Error for no images, a caption count that does not match, bad options, or a
/// sheet over 32767 pixels a side or 2^28 pixels.
ContactSheet render_contact_sheet(const std::vector<Image>& images,
                                  const std::vector<std::string>& captions,
                                  const ContactSheetOptions& options = {});

/// render_contact_sheet written to `path` as a PNG, atomically (see write_png); returns the
/// layout.
ContactSheetLayout write_contact_sheet(const std::filesystem::path& path,
                                       const std::vector<Image>& images,
                                       const std::vector<std::string>& captions,
                                       const ContactSheetOptions& options = {});

}  // namespace concord::io
