// Contact sheets drawn with cairo (docs in concord/io/contact_sheet.h). The layout is computed
// first, with the same font settings on a scratch surface, so the numbers returned are the ones
// drawn; the sheet is painted on an RGB24 image surface and leaves through write_png.
#include "concord/io/contact_sheet.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string_view>

#include "concord/core/error.h"
#include "concord/text/utf8.h"

namespace concord::io {

namespace {

namespace utf8 = concord::text::utf8;

constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026
// Longer captions are cut before wrapping (a few lines of a cell never show more), so a
// megabyte of text costs no more than this.
constexpr size_t kMaxCaptionBytes = 4096;
constexpr int64_t kMaxSide = 32767;  // cairo's image surfaces
constexpr int64_t kMaxPixels = int64_t{1} << 28;

struct SurfaceDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
struct ContextDeleter {
  void operator()(cairo_t* c) const { cairo_destroy(c); }
};
using Surface = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
using Context = std::unique_ptr<cairo_t, ContextDeleter>;

void check_surface(cairo_surface_t* s, const char* what) {
  const cairo_status_t status = cairo_surface_status(s);
  CONCORD_CHECK(status == CAIRO_STATUS_SUCCESS, "contact sheet: cairo cannot create ", what, ": ",
                cairo_status_to_string(status));
}

void check_context(cairo_t* cr, const char* what) {
  const cairo_status_t status = cairo_status(cr);
  CONCORD_CHECK(status == CAIRO_STATUS_SUCCESS, "contact sheet: cairo failed while ", what, ": ",
                cairo_status_to_string(status));
}

Context make_context(cairo_surface_t* surface) {
  Context cr(cairo_create(surface));
  check_context(cr.get(), "creating a drawing context");
  return cr;
}

void set_caption_font(cairo_t* cr, const ContactSheetOptions& o) {
  cairo_select_font_face(cr, o.font_family.c_str(), CAIRO_FONT_SLANT_NORMAL,
                         CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, o.font_size);
}

void set_title_font(cairo_t* cr, const ContactSheetOptions& o) {
  cairo_select_font_face(cr, o.font_family.c_str(), CAIRO_FONT_SLANT_NORMAL,
                         CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, o.font_size * 1.4);
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t te;
  cairo_text_extents(cr, s.c_str(), &te);
  return te.x_advance;
}

int64_t line_height(cairo_t* cr) {
  cairo_font_extents_t fe;
  cairo_font_extents(cr, &fe);
  return static_cast<int64_t>(std::ceil(fe.height));
}

// Valid UTF-8 with every control character (C0, DEL, C1) a space, runs of spaces one space,
// no space at either end; cut to about kMaxCaptionBytes on a character boundary first (`*cut`
// says so).
std::string clean_text(std::string_view raw, bool* cut) {
  *cut = raw.size() > kMaxCaptionBytes;
  if (*cut) {
    size_t keep = kMaxCaptionBytes;  // back to a character boundary
    while (keep > 0 && (static_cast<unsigned char>(raw[keep]) & 0xC0) == 0x80) --keep;
    raw = raw.substr(0, keep);
  }
  const std::string valid = utf8::replace_invalid(raw);
  std::string out;
  size_t i = 0;
  while (i < valid.size()) {
    const size_t start = i;
    const char32_t cp = utf8::next(valid, i);
    const bool space = cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == ' ';
    if (space) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out.append(valid, start, i - start);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Removes the last character (not byte) of `s`.
void pop_character(std::string& s) {
  while (!s.empty()) {
    const unsigned char c = static_cast<unsigned char>(s.back());
    s.pop_back();
    if ((c & 0xC0) != 0x80) break;  // stopped at a lead byte
  }
}

// `line` shortened until it and "…" fit in `max_width`, then "…" appended.
std::string ellipsise(cairo_t* cr, std::string line, double max_width) {
  const std::string ellipsis(kEllipsis);
  while (!line.empty() && text_width(cr, line + ellipsis) > max_width) pop_character(line);
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line + ellipsis;
}

// Greedy wrapping at spaces; a word wider than the line is broken between characters. At most
// `max_lines` lines; the last ends in "…" when text was left over.
std::vector<std::string> wrap(cairo_t* cr, const std::string& raw, double max_width,
                              int64_t max_lines) {
  std::vector<std::string> lines;
  if (max_lines <= 0) return lines;
  bool overflow = false;
  const std::string text = clean_text(raw, &overflow);
  const auto fits = [&](const std::string& s) { return text_width(cr, s) <= max_width; };
  const auto full = [&] { return static_cast<int64_t>(lines.size()) >= max_lines; };

  std::string current;
  size_t pos = 0;
  while (pos < text.size() && !overflow) {
    size_t end = text.find(' ', pos);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    const std::string joined = current.empty() ? word : current + " " + word;
    if (fits(joined)) {
      current = joined;
      continue;
    }
    if (!current.empty()) {
      lines.push_back(current);
      current.clear();
      if (full()) {
        overflow = true;
        break;
      }
    }
    if (fits(word)) {
      current = word;
      continue;
    }
    // Break the word: the longest prefix that fits (at least one character) a line each.
    size_t i = 0;
    while (i < word.size()) {
      size_t stop = i + utf8::lead_length(static_cast<unsigned char>(word[i]));
      while (stop < word.size()) {
        const size_t next = stop + utf8::lead_length(static_cast<unsigned char>(word[stop]));
        if (!fits(word.substr(i, next - i))) break;
        stop = next;
      }
      std::string piece = word.substr(i, stop - i);
      i = stop;
      if (i == word.size()) {
        current = std::move(piece);  // the rest of the word may share its line
      } else {
        lines.push_back(std::move(piece));
        if (full()) {
          overflow = true;
          break;
        }
      }
    }
  }
  if (!current.empty()) {
    if (full()) {
      overflow = true;
    } else {
      lines.push_back(current);
    }
  }
  if (pos < text.size()) overflow = true;
  if (overflow && !lines.empty()) lines.back() = ellipsise(cr, lines.back(), max_width);
  return lines;
}

// An RGB24 cairo surface holding `image` (grey replicated, alpha dropped).
Surface image_surface(const Image& image) {
  Surface s(cairo_image_surface_create(CAIRO_FORMAT_RGB24, static_cast<int>(image.width),
                                       static_cast<int>(image.height)));
  check_surface(s.get(), "an image surface");
  cairo_surface_flush(s.get());
  unsigned char* data = cairo_image_surface_get_data(s.get());
  const int stride = cairo_image_surface_get_stride(s.get());
  const int c = image.channels;
  for (int64_t y = 0; y < image.height; ++y) {
    auto* row = reinterpret_cast<uint32_t*>(data + y * stride);
    const uint8_t* src = image.pixels.data() + y * image.width * c;
    for (int64_t x = 0; x < image.width; ++x, src += c) {
      const uint32_t r = src[0], g = src[c >= 3 ? 1 : 0], b = src[c >= 3 ? 2 : 0];
      row[x] = 0xFF000000u | (r << 16) | (g << 8) | b;
    }
  }
  cairo_surface_mark_dirty(s.get());
  return s;
}

void check_inputs(const std::vector<Image>& images, const std::vector<std::string>& captions,
                  const ContactSheetOptions& o) {
  CONCORD_CHECK(!images.empty(), "contact sheet: no images");
  CONCORD_CHECK(captions.empty() || captions.size() == images.size(), "contact sheet: ",
                images.size(), " images but ", captions.size(), " captions (give one per image, "
                "or none)");
  CONCORD_CHECK(o.columns >= 0 && o.cell_width >= 0 && o.cell_height >= 0 && o.padding >= 0 &&
                    o.max_caption_lines >= 0,
                "contact sheet: columns, cell_width, cell_height, padding and max_caption_lines "
                "must not be negative");
  CONCORD_CHECK(std::isfinite(o.font_size) && o.font_size > 0 && o.font_size <= 1000,
                "contact sheet: font_size must be in (0, 1000], got ", o.font_size);
  for (size_t i = 0; i < images.size(); ++i) {
    const Image& im = images[i];
    CONCORD_CHECK((im.channels == 1 || im.channels == 3 || im.channels == 4) && im.width > 0 &&
                      im.height > 0 && im.width <= kMaxSide && im.height <= kMaxSide &&
                      im.pixels.size() == static_cast<size_t>(im.width * im.height * im.channels),
                  "contact sheet: image ", i, " is not a valid 1/3/4-channel image of at most ",
                  kMaxSide, " pixels a side (", im.width, "x", im.height, "x", im.channels, ", ",
                  im.pixels.size(), " bytes)");
  }
}

ContactSheetLayout make_layout(cairo_t* cr, const std::vector<Image>& images,
                               const std::vector<std::string>& captions,
                               const ContactSheetOptions& o) {
  ContactSheetLayout l;
  const auto n = static_cast<int64_t>(images.size());
  l.columns = o.columns > 0 ? std::min(o.columns, n)
                            : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  l.rows = (n + l.columns - 1) / l.columns;
  l.cell_width = o.cell_width;
  l.cell_height = o.cell_height;
  for (const Image& im : images) {
    if (o.cell_width == 0) l.cell_width = std::max(l.cell_width, im.width);
    if (o.cell_height == 0) l.cell_height = std::max(l.cell_height, im.height);
  }
  CONCORD_CHECK(l.cell_width <= kMaxSide && l.cell_height <= kMaxSide,
                "contact sheet: cell ", l.cell_width, "x", l.cell_height, " is too large");
  l.padding = o.padding;
  l.width = l.columns * l.cell_width + (l.columns + 1) * l.padding;

  set_caption_font(cr, o);
  l.line_height = line_height(cr);
  int64_t most_lines = 0;
  l.cells.resize(images.size());
  for (size_t i = 0; i < images.size() && i < captions.size(); ++i) {
    l.cells[i].caption_lines =
        wrap(cr, captions[i], static_cast<double>(l.cell_width), o.max_caption_lines);
    most_lines = std::max(most_lines, static_cast<int64_t>(l.cells[i].caption_lines.size()));
  }
  l.caption_height = most_lines > 0 ? l.padding / 2 + most_lines * l.line_height : 0;

  if (!o.title.empty()) {
    set_title_font(cr, o);
    const double room = static_cast<double>(std::max<int64_t>(l.width - 2 * l.padding, 1));
    std::vector<std::string> title = wrap(cr, o.title, room, 1);
    l.title_line = title.empty() ? std::string() : title.front();
    l.title_height = line_height(cr) + l.padding;
  }
  check_context(cr, "measuring text");

  const int64_t row_height = l.cell_height + l.caption_height + l.padding;
  l.height = l.padding + l.title_height + l.rows * row_height;
  CONCORD_CHECK(l.width <= kMaxSide && l.height <= kMaxSide && l.width * l.height <= kMaxPixels,
                "contact sheet: ", l.width, "x", l.height, " pixels is over cairo's limit of ",
                kMaxSide, " a side or ", kMaxPixels, " pixels; use smaller cells or fewer images");

  for (int64_t i = 0; i < n; ++i) {
    ContactSheetCell& cell = l.cells[static_cast<size_t>(i)];
    const Image& im = images[static_cast<size_t>(i)];
    cell.x = l.padding + (i % l.columns) * (l.cell_width + l.padding);
    cell.y = l.padding + l.title_height + (i / l.columns) * row_height;
    const double scale = std::min(static_cast<double>(l.cell_width) / im.width,
                                  static_cast<double>(l.cell_height) / im.height);
    cell.image_width = std::clamp<int64_t>(std::llround(im.width * scale), 1, l.cell_width);
    cell.image_height = std::clamp<int64_t>(std::llround(im.height * scale), 1, l.cell_height);
    cell.image_x = cell.x + (l.cell_width - cell.image_width) / 2;
    cell.image_y = cell.y + (l.cell_height - cell.image_height) / 2;
  }
  return l;
}

void draw_centred(cairo_t* cr, const std::string& text, double left, double width,
                  double baseline) {
  const double w = text_width(cr, text);
  cairo_move_to(cr, left + std::max(0.0, (width - w) / 2), baseline);
  cairo_show_text(cr, text.c_str());
}

}  // namespace

ContactSheet render_contact_sheet(const std::vector<Image>& images,
                                  const std::vector<std::string>& captions,
                                  const ContactSheetOptions& options) {
  check_inputs(images, captions, options);
  Surface scratch(cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1));
  check_surface(scratch.get(), "a scratch surface");
  Context measure = make_context(scratch.get());
  ContactSheet sheet;
  ContactSheetLayout& l = sheet.layout;
  l = make_layout(measure.get(), images, captions, options);

  Surface surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, static_cast<int>(l.width),
                                             static_cast<int>(l.height)));
  check_surface(surface.get(), "the sheet");
  Context cr = make_context(surface.get());
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());

  for (size_t i = 0; i < images.size(); ++i) {
    const ContactSheetCell& cell = l.cells[i];
    const Image& im = images[i];
    Surface src = image_surface(im);
    cairo_save(cr.get());
    cairo_rectangle(cr.get(), cell.image_x, cell.image_y, cell.image_width, cell.image_height);
    cairo_clip(cr.get());
    cairo_translate(cr.get(), cell.image_x, cell.image_y);
    cairo_scale(cr.get(), static_cast<double>(cell.image_width) / im.width,
                static_cast<double>(cell.image_height) / im.height);
    cairo_set_source_surface(cr.get(), src.get(), 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr.get()), CAIRO_FILTER_GOOD);
    cairo_pattern_set_extend(cairo_get_source(cr.get()), CAIRO_EXTEND_PAD);  // no dark edges
    cairo_paint(cr.get());
    cairo_restore(cr.get());
  }
  check_context(cr.get(), "drawing the images");

  cairo_set_source_rgb(cr.get(), 0.1, 0.1, 0.1);
  cairo_font_extents_t fe;
  set_caption_font(cr.get(), options);
  cairo_font_extents(cr.get(), &fe);
  for (const ContactSheetCell& cell : l.cells) {
    if (cell.caption_lines.empty()) continue;
    cairo_save(cr.get());
    const int64_t top = cell.y + l.cell_height + l.padding / 2;
    cairo_rectangle(cr.get(), cell.x, top, l.cell_width, l.caption_height);
    cairo_clip(cr.get());  // a glyph wider than the cell never reaches a neighbour
    for (size_t k = 0; k < cell.caption_lines.size(); ++k) {
      draw_centred(cr.get(), cell.caption_lines[k], cell.x, l.cell_width,
                   top + k * l.line_height + fe.ascent);
    }
    cairo_restore(cr.get());
  }
  if (!l.title_line.empty()) {
    set_title_font(cr.get(), options);
    cairo_font_extents(cr.get(), &fe);
    draw_centred(cr.get(), l.title_line, l.padding, l.width - 2 * l.padding,
                 l.padding + fe.ascent);
  }
  check_context(cr.get(), "drawing the captions");
  cairo_surface_flush(surface.get());

  Image& out = sheet.image;
  out.width = l.width;
  out.height = l.height;
  out.channels = 3;
  out.pixels.resize(static_cast<size_t>(l.width * l.height * 3));
  const unsigned char* data = cairo_image_surface_get_data(surface.get());
  const int stride = cairo_image_surface_get_stride(surface.get());
  for (int64_t y = 0; y < l.height; ++y) {
    const auto* row = reinterpret_cast<const uint32_t*>(data + y * stride);
    uint8_t* dst = out.pixels.data() + y * l.width * 3;
    for (int64_t x = 0; x < l.width; ++x) {
      dst[3 * x] = static_cast<uint8_t>(row[x] >> 16);
      dst[3 * x + 1] = static_cast<uint8_t>(row[x] >> 8);
      dst[3 * x + 2] = static_cast<uint8_t>(row[x]);
    }
  }
  return sheet;
}

ContactSheetLayout write_contact_sheet(const std::filesystem::path& path,
                                       const std::vector<Image>& images,
                                       const std::vector<std::string>& captions,
                                       const ContactSheetOptions& options) {
  ContactSheet sheet = render_contact_sheet(images, captions, options);
  write_png(path, sheet.image);
  return std::move(sheet.layout);
}

}  // namespace concord::io
