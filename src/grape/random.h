// Platform-independent random draws for the grape module: raw std::mt19937_64 outputs turned
// into integers by rejection and into doubles by their top bits, never through std
// distributions (whose algorithms are left to each standard library, so the same seed would give
// other pools or picks elsewhere).
#pragma once
#include <cstdint>
#include <random>
#include <string>

namespace concord::grape::detail {

/// Uniform in [0, n), n > 0.
inline uint64_t below(std::mt19937_64& rng, uint64_t n) {
  // 2^64 - threshold is a multiple of n; outputs under the threshold would favour small values.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

/// Uniform in [0, 1): the top 53 bits of one output, every double there equally likely.
inline double unit_interval(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

/// SplitMix64's finaliser: turns related seeds (seed, seed + 1, ...) into unrelated ones.
inline uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// 64-bit FNV-1a of a string: the same on every platform (std::hash is not).
inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace concord::grape::detail
