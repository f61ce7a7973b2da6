#pragma once
// The value pattern of `swapcoord run`: the 8-byte word w of tensor t at epoch e (counted
// from the tensor's first byte, so shards and whole tensors agree) is a hash of (t, w, e);
// the padding after a piece is zero. Every element changes every epoch, so a swap-in that
// reads stale or misplaced data finds wrong values.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "swapcoord/coord/plan.hpp"

namespace swapcoord::app {

// `out` = bytes [offset, offset + out.size()) of a piece's on-disk image at `epoch`.
void fill_piece(const PlanPiece& piece, std::size_t element_size, int epoch, std::uint64_t offset,
                std::span<std::byte> out);
// Counts elements of `in` (bytes [offset, ...) of the piece) that differ from epoch's
// values; records the first mismatch's element index in the tensor.
std::uint64_t check_piece(const PlanPiece& piece, std::size_t element_size, int epoch, std::uint64_t offset,
                          std::span<const std::byte> in, std::optional<std::uint64_t>& first_wrong);

}  // namespace swapcoord::app
