#pragma once
// SwapBuffer: a bump allocator over one pinned region (DeepSpeed's SwapBuffer). Each
// allocation has a compute view (numel elements, what the program uses) and a swap view
// (aligned_numel elements, what goes to disk) at the same address, plus its location.
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/tensor_view.hpp"
#include "swapcoord/io/swap_location.hpp"

namespace swapcoord {

struct SwapBufferEntry {
  TensorView compute;          // numel elements
  TensorView swap;             // aligned_numel elements, same data pointer
  SwapLocation location;
  std::size_t offset_numel = 0;  // where in the buffer, in elements
};

// The smallest element count >= numel whose size in bytes is a multiple of alignment.
std::size_t aligned_numel(std::size_t numel, DType dtype,
                          std::size_t alignment_bytes = kDefaultAlignmentBytes);

class SwapBuffer {
 public:
  // `buffer` is not owned; its address must be aligned to `alignment_bytes`.
  explicit SwapBuffer(TensorView buffer, std::size_t alignment_bytes = kDefaultAlignmentBytes);

  // Reserves aligned_numel elements; returns {compute view, swap view}. Throws Error when
  // it does not fit (saying how much was asked and how much is left), when aligned_numel
  // < numel, or when aligned_numel elements are not a multiple of the alignment.
  std::pair<TensorView, TensorView> allocate_tensor(const SwapLocation& location,
                                                    std::size_t numel, std::size_t aligned_numel);
  // allocate_tensor + copy of `tensor` into the compute view (and zeros into the padding);
  // returns the compute view. The dtype must match the buffer's.
  TensorView insert_tensor(const TensorView& tensor, const SwapLocation& location,
                           std::size_t aligned_numel);
  bool has_space(std::size_t numel) const noexcept { return numel <= free_numel(); }
  void reset() noexcept;

  TensorView buffer() const noexcept { return _buffer; }
  DType dtype() const noexcept { return _buffer.dtype; }
  std::size_t alignment_bytes() const noexcept { return _alignment; }
  std::size_t capacity_numel() const noexcept { return _buffer.numel; }
  std::size_t used_numel() const noexcept { return _used_numel; }
  std::size_t free_numel() const noexcept { return _buffer.numel - _used_numel; }

  std::size_t count() const noexcept { return _entries.size(); }
  std::span<const SwapBufferEntry> entries() const noexcept { return _entries; }
  const TensorView& swap_tensor(std::size_t i) const { return _entries.at(i).swap; }
  const TensorView& compute_tensor(std::size_t i) const { return _entries.at(i).compute; }
  const SwapLocation& location(std::size_t i) const { return _entries.at(i).location; }
  std::size_t offset(std::size_t i) const { return _entries.at(i).offset_numel; }
  std::vector<TensorView> swap_tensors() const;
  std::vector<TensorView> compute_tensors() const;
  std::vector<SwapLocation> locations() const;

 private:
  TensorView _buffer;
  std::size_t _alignment;
  std::size_t _used_numel = 0;
  std::vector<SwapBufferEntry> _entries;
};

}  // namespace swapcoord
