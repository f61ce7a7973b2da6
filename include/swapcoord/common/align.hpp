#pragma once
#include <cstddef>
#include <cstdint>

namespace swapcoord {

// The alignment swap files and pinned buffers use unless a file reports a larger one.
// It is a multiple of every logical block size in use (512 and 4096 bytes).
inline constexpr std::size_t kDefaultAlignmentBytes = 4096;

constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return alignment <= 1 ? value : (value + alignment - 1) / alignment * alignment;
}
constexpr std::uint64_t align_down(std::uint64_t value, std::uint64_t alignment) noexcept {
  return alignment <= 1 ? value : value / alignment * alignment;
}
constexpr bool is_aligned(std::uint64_t value, std::uint64_t alignment) noexcept {
  return alignment <= 1 || value % alignment == 0;
}
inline bool is_aligned(const void* pointer, std::uint64_t alignment) noexcept {
  return is_aligned(reinterpret_cast<std::uintptr_t>(pointer), alignment);
}

}  // namespace swapcoord
