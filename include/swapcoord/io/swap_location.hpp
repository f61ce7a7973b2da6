#pragma once
#include <cstdint>

#include "swapcoord/io/swap_file.hpp"

namespace swapcoord {

// Where a tensor lives on disk: `bytes` at `offset` of an open swap file. `file` shares
// the open descriptor (SwapFileRef): the SwapFile it was taken from may move or go away.
struct SwapLocation {
  SwapFileRef file;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

}  // namespace swapcoord
