// Tests of the contact sheet (cairo): the layout's numbers are where the tiles and captions are
// drawn, images of the cell's size are copied pixel for pixel and scaled flat colours stay flat,
// captions in Turkish, Cyrillic and Arabic are wrapped and cut with "…", the file written is the
// image rendered.
#include <gtest/gtest.h>

#include <array>
#include <cstdlib>

#include "concord/core/error.h"
#include "concord/io/contact_sheet.h"
#include "concord/io/image.h"
#include "image_samples.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace concord::io;
using concord::testing::pixel;
using concord::testing::random_image;
using concord::testing::TempDir;

namespace {

Image solid(int64_t width, int64_t height, uint8_t r, uint8_t g, uint8_t b) {
  Image im;
  im.width = width;
  im.height = height;
  im.pixels.resize(static_cast<size_t>(width * height * 3));
  for (size_t i = 0; i < im.pixels.size(); i += 3) {
    im.pixels[i] = r;
    im.pixels[i + 1] = g;
    im.pixels[i + 2] = b;
  }
  return im;
}

bool all_of(const Image& im, int64_t x0, int64_t y0, int64_t w, int64_t h,
            std::array<uint8_t, 3> rgb, int tolerance = 0) {
  for (int64_t y = y0; y < y0 + h; ++y) {
    for (int64_t x = x0; x < x0 + w; ++x) {
      const auto p = pixel(im, x, y);
      for (int c = 0; c < 3; ++c) {
        if (std::abs(int(p[c]) - int(rgb[c])) > tolerance) return false;
      }
    }
  }
  return true;
}

int64_t dark_pixels(const Image& im, int64_t x0, int64_t y0, int64_t w, int64_t h) {
  int64_t n = 0;
  for (int64_t y = y0; y < y0 + h; ++y) {
    for (int64_t x = x0; x < x0 + w; ++x) n += pixel(im, x, y)[0] < 128;
  }
  return n;
}

const std::string kTurkish =
    "İstanbul'da sabah güneşi altında çiçek açmış erguvan ağaçları, Boğaz'ın kıyısında yürüyen "
    "insanlar ve martılar, yağlı boya tablo";

}  // namespace

TEST(ContactSheet, TilesSitWhereTheLayoutSaysWithCaptionsUnderThem) {
  const std::vector<Image> images = {
      solid(64, 48, 220, 20, 30),   // the cell's size: copied pixel for pixel
      solid(32, 48, 20, 200, 40),   // narrower: copied, centred with margins
      solid(16, 12, 30, 40, 210),   // enlarged 4x
      solid(128, 48, 240, 200, 0),  // shrunk to 64x24, centred vertically
  };
  const std::vector<std::string> captions = {"", "Кошка", kTurkish, "قطة"};
  ContactSheetOptions o;
  o.cell_width = 64;
  o.cell_height = 48;
  o.padding = 6;
  o.font_size = 11;
  o.max_caption_lines = 2;
  const ContactSheet sheet = render_contact_sheet(images, captions, o);
  const ContactSheetLayout& l = sheet.layout;

  EXPECT_EQ(l.columns, 2);
  EXPECT_EQ(l.rows, 2);
  EXPECT_GE(l.line_height, 11);
  EXPECT_LE(l.line_height, 22);
  EXPECT_EQ(l.title_height, 0);
  EXPECT_EQ(l.caption_height, 3 + 2 * l.line_height);  // the Turkish caption takes both lines
  EXPECT_EQ(sheet.image.width, 2 * 64 + 3 * 6);
  EXPECT_EQ(sheet.image.height, 6 + 2 * (48 + l.caption_height + 6));
  EXPECT_EQ(l.width, sheet.image.width);
  EXPECT_EQ(l.height, sheet.image.height);

  const int64_t row2 = 6 + 48 + l.caption_height + 6;
  const std::vector<std::array<int64_t, 4>> rects = {
      {6, 6, 64, 48}, {76 + 16, 6, 32, 48}, {6, row2, 64, 48}, {76, row2 + 12, 64, 24}};
  for (size_t i = 0; i < images.size(); ++i) {
    SCOPED_TRACE(i);
    const ContactSheetCell& c = l.cells[i];
    EXPECT_EQ((std::array<int64_t, 4>{c.image_x, c.image_y, c.image_width, c.image_height}),
              rects[i]);
    const auto colour = pixel(images[i], 0, 0);
    EXPECT_TRUE(all_of(sheet.image, c.image_x, c.image_y, c.image_width, c.image_height, colour));
  }
  // Around the narrow tile and the shrunk one: background.
  EXPECT_TRUE(all_of(sheet.image, 76, 6, 16, 48, {255, 255, 255}));
  EXPECT_TRUE(all_of(sheet.image, 76, row2, 64, 12, {255, 255, 255}));
  EXPECT_TRUE(all_of(sheet.image, 0, 0, sheet.image.width, 6, {255, 255, 255}));

  // Captions: none under the first image, text under the others.
  EXPECT_TRUE(l.cells[0].caption_lines.empty());
  EXPECT_EQ(l.cells[1].caption_lines, (std::vector<std::string>{"Кошка"}));
  ASSERT_EQ(l.cells[2].caption_lines.size(), 2u);
  EXPECT_EQ(l.cells[2].caption_lines[0].rfind("İstanbul", 0), 0u);
  const std::string& last = l.cells[2].caption_lines[1];
  EXPECT_EQ(last.substr(last.size() - 3), "\xE2\x80\xA6");  // ellipsised: it was too long
  EXPECT_FALSE(l.cells[3].caption_lines.empty());
  const int64_t caption_top = 6 + 48 + 3;
  EXPECT_EQ(dark_pixels(sheet.image, 6, caption_top, 64, l.caption_height), 0);
  EXPECT_GT(dark_pixels(sheet.image, 76, caption_top, 64, l.caption_height), 10);
  EXPECT_GT(dark_pixels(sheet.image, 6, row2 + 48 + 3, 64, l.caption_height), 10);
  EXPECT_GT(dark_pixels(sheet.image, 76, row2 + 48 + 3, 64, l.caption_height), 10);
}

TEST(ContactSheet, CaptionsAreCleanedWrappedAndCut) {
  const std::vector<Image> images(4, solid(8, 8, 0, 0, 0));
  ContactSheetOptions o;
  o.cell_width = 60;
  o.cell_height = 8;
  o.max_caption_lines = 2;
  const std::vector<std::string> captions = {"a\xFF" "b", "a\tb\n\x01 c  ", std::string(300, 'x'),
                                             "fits"};
  const ContactSheetLayout l = render_contact_sheet(images, captions, o).layout;
  EXPECT_EQ(l.cells[0].caption_lines, (std::vector<std::string>{"a\xEF\xBF\xBD" "b"}));
  EXPECT_EQ(l.cells[1].caption_lines, (std::vector<std::string>{"a b c"}));
  // One long word: broken between characters, cut at two lines, ending in "…".
  const auto& xs = l.cells[2].caption_lines;
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_EQ(xs[0], std::string(xs[0].size(), 'x'));
  EXPECT_GT(xs[0].size(), 3u);
  EXPECT_EQ(xs[1], std::string(xs[1].size() - 3, 'x') + "\xE2\x80\xA6");
  EXPECT_EQ(l.cells[3].caption_lines, (std::vector<std::string>{"fits"}));

  o.max_caption_lines = 0;  // no captions at all: no caption band
  const ContactSheetLayout none = render_contact_sheet(images, captions, o).layout;
  EXPECT_EQ(none.caption_height, 0);
  EXPECT_EQ(none.height, 8 + 2 * (8 + 8));
}

TEST(ContactSheet, TitleAddsItsBandAbove) {
  const std::vector<Image> images = {solid(10, 10, 255, 0, 0), solid(10, 10, 0, 255, 0),
                                     solid(10, 10, 0, 0, 255)};
  ContactSheetOptions o;
  o.cell_width = 0;  // the largest image
  o.cell_height = 0;
  o.columns = 3;
  const ContactSheet plain = render_contact_sheet(images, {}, o);
  o.title = "KOALA-700M, 25 Euler steps, guidance 7.5 — seed 0";
  const ContactSheet titled = render_contact_sheet(images, {}, o);
  EXPECT_EQ(plain.layout.cell_width, 10);
  EXPECT_EQ(plain.image.width, 3 * 10 + 4 * 8);
  EXPECT_EQ(plain.image.height, 8 + 10 + 8);
  EXPECT_GT(titled.layout.title_height, 8);
  EXPECT_EQ(titled.image.height, plain.image.height + titled.layout.title_height);
  EXPECT_EQ(titled.image.width, plain.image.width);
  // The title does not fit in 62 - 2 * 8 pixels: ellipsised, and drawn.
  EXPECT_EQ(titled.layout.title_line.substr(titled.layout.title_line.size() - 3), "\xE2\x80\xA6");
  EXPECT_GT(dark_pixels(titled.image, 0, 0, titled.image.width, titled.layout.title_height), 5);
  const ContactSheetCell& c = titled.layout.cells[2];
  EXPECT_EQ(c.image_y, 8 + titled.layout.title_height);
  EXPECT_TRUE(all_of(titled.image, c.image_x, c.image_y, 10, 10, {0, 0, 255}));
}

TEST(ContactSheet, WrittenFileIsTheRenderedImage) {
  TempDir dir;
  const std::vector<Image> images = {random_image(20, 10, 3, 1), random_image(10, 20, 1, 2),
                                     random_image(15, 15, 4, 3)};
  const std::vector<std::string> captions = {"one", "two", "three"};
  ContactSheetOptions o;
  o.cell_width = 32;
  o.cell_height = 32;
  const fs::path path = dir / "sheets" / "sheet.png";
  const ContactSheetLayout l = write_contact_sheet(path, images, captions, o);
  const Image back = read_image(path);
  const ContactSheet again = render_contact_sheet(images, captions, o);
  EXPECT_EQ(back.width, l.width);
  EXPECT_EQ(back.height, l.height);
  EXPECT_EQ(back.pixels, again.image.pixels);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(path.parent_path())) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "sheet.png");
  }
  EXPECT_EQ(entries, 1);
}

TEST(ContactSheet, BadArgumentsAreErrors) {
  const std::vector<Image> images = {solid(4, 4, 0, 0, 0), solid(4, 4, 0, 0, 0)};
  EXPECT_THROW(render_contact_sheet({}, {}), concord::Error);
  EXPECT_THROW(render_contact_sheet(images, {"only one"}), concord::Error);
  ContactSheetOptions huge;
  huge.cell_width = 20000;
  huge.columns = 2;
  EXPECT_THROW(render_contact_sheet(images, {}, huge), concord::Error);
  ContactSheetOptions negative;
  negative.padding = -1;
  EXPECT_THROW(render_contact_sheet(images, {}, negative), concord::Error);
  std::vector<Image> broken = images;
  broken[1].pixels.clear();
  EXPECT_THROW(render_contact_sheet(broken, {}), concord::Error);
}
