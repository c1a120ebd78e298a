#include "concord/data/builtin_corpus.h"

#include <array>
#include <random>

#include "concord/core/error.h"

namespace concord::data {

namespace {

class Draw {
 public:
  explicit Draw(uint64_t seed) : engine_(seed) {}
  // Modulo of a 64-bit draw: the bias is below 2^-50 for these tiny ranges, and unlike
  // std::uniform_int_distribution the result is the same on every standard library.
  uint64_t below(uint64_t n) { return engine_() % n; }
  template <size_t N>
  const char* pick(const std::array<const char*, N>& words) { return words[below(N)]; }

 private:
  std::mt19937_64 engine_;
};

constexpr std::array<const char*, 10> kAnimals = {"fox", "owl", "cat", "horse", "rabbit",
                                                  "eagle", "wolf", "camel", "sparrow", "bear"};
constexpr std::array<const char*, 8> kAdjectives = {"small", "quick", "old", "brown",
                                                    "quiet", "clever", "tired", "young"};
constexpr std::array<const char*, 6> kVerbs = {"sees", "follows", "finds", "watches", "carries",
                                               "avoids"};
constexpr std::array<const char*, 8> kObjects = {"stone", "river", "basket", "lantern", "apple",
                                                 "feather", "boat", "book"};
constexpr std::array<const char*, 7> kPlaces = {"hill", "forest", "market", "bridge", "lake",
                                                "village", "garden"};
constexpr std::array<const char*, 8> kNames = {"Aida", "Timur", "Leyla", "Arman", "Dana",
                                               "Emir", "Zarina", "Kerim"};
constexpr std::array<const char*, 5> kFruit = {"apple", "pear", "plum", "apricot", "melon"};
constexpr std::array<const char*, 4> kTimes = {"In the morning", "At noon", "In the evening",
                                               "At night"};

std::string capitalised(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string sentence(Draw& d) {
  switch (d.below(5)) {
    case 0:
      return capitalised(std::string("the ") + d.pick(kAdjectives) + " " + d.pick(kAnimals) + " " +
                         d.pick(kVerbs) + " the " + d.pick(kObjects) + " near the " +
                         d.pick(kPlaces) + ".");
    case 1: {
      const char* name = d.pick(kNames);
      const char* fruit = d.pick(kFruit);
      const uint64_t a = 1 + d.below(9), b = 1 + d.below(9);
      return std::string(name) + " has " + std::to_string(a) + " " + fruit + "s and buys " +
             std::to_string(b) + " more, so " + name + " has " + std::to_string(a + b) + " " +
             fruit + "s.";
    }
    case 2: {
      const uint64_t a = d.below(50), b = d.below(50);
      return std::to_string(a) + " plus " + std::to_string(b) + " is " + std::to_string(a + b) + ".";
    }
    case 3:
      return std::string(d.pick(kTimes)) + " the " + d.pick(kAnimals) + " goes to the " +
             d.pick(kPlaces) + ".";
    default:
      return std::string(d.pick(kNames)) + " walks from the " + d.pick(kPlaces) + " to the " +
             d.pick(kPlaces) + " with a " + d.pick(kObjects) + ".";
  }
}

}  // namespace

std::vector<std::string> builtin_corpus(int64_t documents, uint64_t seed) {
  CONCORD_CHECK(documents >= 0, "builtin_corpus: documents must be >= 0, got ", documents);
  Draw d(seed);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(documents));
  for (int64_t i = 0; i < documents; ++i) {
    const uint64_t n = 3 + d.below(4);
    std::string doc;
    for (uint64_t s = 0; s < n; ++s) doc += (s ? " " : "") + sentence(d);
    out.push_back(std::move(doc));
  }
  return out;
}

}  // namespace concord::data
