#pragma once
#include <cstdint>

namespace swapcoord {

class SwapFile;

// Where a tensor lives on disk: `bytes` at `offset` of an open swap file (not owned).
struct SwapLocation {
  SwapFile* file = nullptr;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

}  // namespace swapcoord
