#pragma once
// SwapBufferPool: several SwapBuffers filled one after the other (DeepSpeed's
// SwapBufferPool). Swapping the pool moves every tensor it holds with one wait.
#include <cstddef>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/io/io_engine.hpp"

namespace swapcoord {

class SwapBufferPool {
 public:
  // The buffers (not owned) must share one dtype.
  explicit SwapBufferPool(std::span<const TensorView> buffers,
                          std::size_t alignment_bytes = kDefaultAlignmentBytes);

  // In the current buffer, or the next one when it is full; std::nullopt when no buffer
  // has room ("no space"). Throws Error if aligned_numel exceeds every buffer's capacity.
  std::optional<std::pair<TensorView, TensorView>> allocate_tensor(
      const SwapLocation& location, std::size_t numel, std::size_t aligned_numel);
  std::optional<TensorView> insert_tensor(const TensorView& tensor, const SwapLocation& location,
                                          std::size_t aligned_numel);
  bool has_space(std::size_t aligned_numel) const noexcept;
  void reset() noexcept;

  // Writes (reads) the swap view of every entry to (from) its location: one batch, one wait.
  IoBatchResult swap_out(IoEngine& engine);
  IoBatchResult swap_in(IoEngine& engine);

  std::span<const SwapBuffer> buffers() const noexcept { return _buffers; }
  std::size_t current() const noexcept { return _current; }
  std::size_t count() const noexcept;  // entries in all buffers
  std::vector<TensorView> swap_tensors() const;
  std::vector<TensorView> compute_tensors() const;
  std::vector<SwapLocation> locations() const;

 private:
  // The current buffer, or the next with room for `aligned` elements; nullptr if none.
  SwapBuffer* buffer_with_space(std::size_t numel, std::size_t aligned);
  IoBatchResult swap(IoEngine& engine, IoOp op);

  std::vector<SwapBuffer> _buffers;
  std::size_t _current = 0;
  std::size_t _largest_numel = 0;  // of the largest buffer
  std::vector<IoRequest> _requests;
};

}  // namespace swapcoord
