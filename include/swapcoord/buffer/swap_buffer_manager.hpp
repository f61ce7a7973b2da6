#pragma once
// SwapBufferManager: `count` pinned buffers of `num_elems` elements made up front
// (DeepSpeed's SwapBufferManager), handed out and taken back without allocating pinned
// memory again.
#include <cstddef>
#include <span>
#include <vector>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/common/tensor_view.hpp"

namespace swapcoord {

class SwapBufferManager {
 public:
  // Each buffer starts at a multiple of `alignment_bytes`.
  SwapBufferManager(std::size_t num_elems, std::size_t count, DType dtype,
                    std::size_t alignment_bytes = kDefaultAlignmentBytes);

  // `count` free buffers narrowed to `num_elems` elements; empty when fewer than `count`
  // are free. Throws Error when num_elems exceeds the buffer size.
  std::vector<TensorView> allocate(std::size_t num_elems, std::size_t count);
  // Every free buffer, narrowed to `num_elems`.
  std::vector<TensorView> allocate_all(std::size_t num_elems);
  // Takes buffers back. Throws Error, freeing none of them, when one was not handed out
  // by this manager or is already free.
  void free(std::span<const TensorView> buffers);

  std::size_t num_elems() const noexcept { return _num_elems; }
  std::size_t count() const noexcept { return _count; }
  DType dtype() const noexcept { return _dtype; }
  std::size_t free_count() const noexcept { return _free.size(); }
  std::size_t used_count() const noexcept { return _count - _free.size(); }
  std::size_t buffer_bytes() const noexcept { return _num_elems * dtype_size(_dtype); }
  double gigabytes() const noexcept;  // total pinned size in GiB (2^30 bytes)
  const PinnedAllocation& memory() const noexcept { return _memory; }

 private:
  TensorView view(std::size_t index, std::size_t num_elems) const;
  std::size_t index_of(const TensorView& buffer) const;  // throws when not one of ours

  std::size_t _num_elems;
  std::size_t _count;
  DType _dtype;
  std::size_t _stride_bytes;
  PinnedAllocation _memory;
  std::vector<std::size_t> _free;     // indices of free buffers (a stack)
  std::vector<bool> _in_use;
};

// The first `numel` elements of `buffer` (the seed's get_sized_buffer); throws Error
// when `numel` exceeds the buffer.
TensorView sized_view(const TensorView& buffer, std::size_t numel);
// One sized_view per buffer (the seed's get_sized_buffers); the spans must be as long.
std::vector<TensorView> sized_views(std::span<const TensorView> buffers,
                                    std::span<const std::size_t> numels);

}  // namespace swapcoord
