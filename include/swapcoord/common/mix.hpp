#pragma once
#include <cstdint>

namespace swapcoord {

// A 64-bit finaliser (MurmurHash3's fmix64): turns counters into well-spread values, for
// the deterministic data patterns that the bench, the main job and the tests write.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

}  // namespace swapcoord
