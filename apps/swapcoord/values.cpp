#include "values.hpp"

#include <algorithm>
#include <cstring>

#include "swapcoord/common/mix.hpp"

namespace swapcoord::app {
namespace {

std::uint64_t value_word(std::uint32_t tensor, std::uint64_t word, int epoch) {
  return mix64((static_cast<std::uint64_t>(tensor) << 40) ^ (word * 0x9e3779b97f4a7c15ULL) ^
             (static_cast<std::uint64_t>(epoch) * 0xd6e8feb86659fd93ULL + 1));
}

}  // namespace

void fill_piece(const PlanPiece& piece, std::size_t element_size, int epoch, std::uint64_t offset,
                std::span<std::byte> out) {
  const std::uint64_t base = piece.element_offset * element_size;  // tensor byte of piece byte 0
  const std::uint64_t data_end = piece.bytes;
  std::size_t i = 0;
  const std::size_t data = offset < data_end ? static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), data_end - offset)) : 0;
  // base and offset are multiples of 8 (aligned shards and pieces), so words line up.
  for (; i + 8 <= data; i += 8) {
    const std::uint64_t w = value_word(piece.tensor, (base + offset + i) / 8, epoch);
    std::memcpy(out.data() + i, &w, 8);
  }
  if (i < data) {
    const std::uint64_t w = value_word(piece.tensor, (base + offset + i) / 8, epoch);
    std::memcpy(out.data() + i, &w, data - i);
    i = data;
  }
  std::memset(out.data() + i, 0, out.size() - i);
}

std::uint64_t check_piece(const PlanPiece& piece, std::size_t element_size, int epoch,
                          std::uint64_t offset, std::span<const std::byte> in,
                          std::optional<std::uint64_t>& first_wrong) {
  const std::uint64_t base = piece.element_offset * element_size;
  const std::size_t data = offset < piece.bytes ? static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), piece.bytes - offset)) : 0;
  std::uint64_t wrong = 0;
  for (std::size_t i = 0; i < data; i += 8) {
    const std::size_t n = std::min<std::size_t>(8, data - i);
    const std::uint64_t want = value_word(piece.tensor, (base + offset + i) / 8, epoch);
    std::uint64_t got = 0;
    std::memcpy(&got, in.data() + i, n);
    const std::uint64_t mask = n == 8 ? ~0ULL : ((1ULL << (8 * n)) - 1);
    const std::uint64_t diff = (got ^ want) & mask;
    if (diff == 0) continue;
    for (std::size_t e = 0; e < n; e += element_size) {
      const std::uint64_t element_mask = element_size >= 8 ? ~0ULL : ((1ULL << (8 * element_size)) - 1) << (8 * e);
      if ((diff & element_mask) == 0) continue;
      ++wrong;
      if (!first_wrong) first_wrong = (base + offset + i + e) / element_size;
    }
  }
  return wrong;
}

}  // namespace swapcoord::app
