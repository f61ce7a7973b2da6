#include "swapcoord/buffer/swap_buffer.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord {

std::size_t aligned_numel(std::size_t numel, DType dtype, std::size_t alignment_bytes) {
  const std::size_t size = dtype_size(dtype);
  // The element count must be a multiple of lcm(size, alignment) / size.
  const std::size_t unit = std::lcm(size, std::max<std::size_t>(alignment_bytes, 1)) / size;
  return static_cast<std::size_t>(align_up(numel, unit));
}

SwapBuffer::SwapBuffer(TensorView buffer, std::size_t alignment_bytes)
    : _buffer(buffer), _alignment(alignment_bytes) {
  if (_alignment == 0 || (_alignment & (_alignment - 1)) != 0)
    throw Error(fmt::format("SwapBuffer: alignment {} is not a power of two", _alignment));
  if (!is_aligned(buffer.data, _alignment))
    throw Error(fmt::format("SwapBuffer: buffer address {} is not aligned to {} bytes",
                            buffer.data, _alignment));
}

std::pair<TensorView, TensorView> SwapBuffer::allocate_tensor(const SwapLocation& location,
                                                              std::size_t numel,
                                                              std::size_t aligned) {
  if (aligned < numel)
    throw Error(fmt::format("SwapBuffer: aligned_numel {} is smaller than numel {}", aligned, numel));
  if (!is_aligned(aligned * _buffer.element_size(), _alignment))
    throw Error(fmt::format("SwapBuffer: aligned_numel {} ({} bytes of {}) is not a multiple of "
                            "{} bytes; use aligned_numel()", aligned,
                            aligned * _buffer.element_size(), dtype_name(_buffer.dtype), _alignment));
  if (aligned > free_numel())
    throw Error(fmt::format("SwapBuffer: asked for {} elements ({} aligned) but only {} of {} "
                            "are left", numel, aligned, free_numel(), capacity_numel()));
  auto* data = _buffer.bytes() + _used_numel * _buffer.element_size();
  const TensorView compute{data, numel, _buffer.dtype, _buffer.device};
  const TensorView swap{data, aligned, _buffer.dtype, _buffer.device};
  _entries.push_back({compute, swap, location, _used_numel});
  _used_numel += aligned;
  return {compute, swap};
}

TensorView SwapBuffer::insert_tensor(const TensorView& tensor, const SwapLocation& location,
                                     std::size_t aligned) {
  if (tensor.dtype != _buffer.dtype)
    throw Error(fmt::format("SwapBuffer: cannot insert a {} tensor into a {} buffer",
                            dtype_name(tensor.dtype), dtype_name(_buffer.dtype)));
  if (!tensor.device.is_cpu())
    throw Error(fmt::format("SwapBuffer: tensor on {} (this build copies host tensors only)",
                            to_string(tensor.device)));
  auto [compute, swap] = allocate_tensor(location, tensor.numel, aligned);
  if (tensor.size_bytes() > 0) std::memcpy(compute.data, tensor.data, tensor.size_bytes());
  std::memset(swap.bytes() + compute.size_bytes(), 0, swap.size_bytes() - compute.size_bytes());
  return compute;
}

void SwapBuffer::reset() noexcept {
  _used_numel = 0;
  _entries.clear();
}

std::vector<TensorView> SwapBuffer::swap_tensors() const {
  std::vector<TensorView> out;
  for (const auto& e : _entries) out.push_back(e.swap);
  return out;
}

std::vector<TensorView> SwapBuffer::compute_tensors() const {
  std::vector<TensorView> out;
  for (const auto& e : _entries) out.push_back(e.compute);
  return out;
}

std::vector<SwapLocation> SwapBuffer::locations() const {
  std::vector<SwapLocation> out;
  for (const auto& e : _entries) out.push_back(e.location);
  return out;
}

}  // namespace swapcoord
