#include "swapcoord/buffer/swap_buffer_manager.hpp"

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord {

SwapBufferManager::SwapBufferManager(std::size_t num_elems, std::size_t count, DType dtype,
                                     std::size_t alignment_bytes)
    : _num_elems(num_elems),
      _count(count),
      _dtype(dtype),
      _stride_bytes(static_cast<std::size_t>(align_up(num_elems * dtype_size(dtype), alignment_bytes))),
      _memory(_stride_bytes * count),
      _in_use(count, false) {
  if (num_elems == 0 || count == 0)
    throw Error(fmt::format("SwapBufferManager: num_elems ({}) and count ({}) must be positive",
                            num_elems, count));
  _free.reserve(count);
  for (std::size_t i = count; i-- > 0;) _free.push_back(i);  // hand out buffer 0 first
}

TensorView SwapBufferManager::view(std::size_t index, std::size_t num_elems) const {
  return TensorView{_memory.data() + index * _stride_bytes, num_elems, _dtype, Device::cpu()};
}

std::vector<TensorView> SwapBufferManager::allocate(std::size_t num_elems, std::size_t count) {
  if (num_elems > _num_elems)
    throw Error(fmt::format("SwapBufferManager: asked for buffers of {} elements, but its buffers "
                            "hold {}", num_elems, _num_elems));
  std::vector<TensorView> out;
  if (count > _free.size()) return out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t index = _free.back();
    _free.pop_back();
    _in_use[index] = true;
    out.push_back(view(index, num_elems));
  }
  return out;
}

std::vector<TensorView> SwapBufferManager::allocate_all(std::size_t num_elems) {
  return allocate(num_elems, _free.size());
}

std::size_t SwapBufferManager::index_of(const TensorView& buffer) const {
  const auto* p = static_cast<const std::byte*>(buffer.data);
  const auto* base = _memory.data();
  if (p < base || p >= base + _stride_bytes * _count || (p - base) % _stride_bytes != 0)
    throw Error(fmt::format("SwapBufferManager::free: buffer at {} was not handed out by this "
                            "manager", buffer.data));
  return static_cast<std::size_t>(p - base) / _stride_bytes;
}

void SwapBufferManager::free(std::span<const TensorView> buffers) {
  // Check all first, so that a bad one frees none.
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const std::size_t index = index_of(buffers[i]);
    bool repeated = !_in_use[index];
    for (std::size_t j = 0; j < i && !repeated; ++j) repeated = buffers[j].data == buffers[i].data;
    if (repeated)
      throw Error(fmt::format("SwapBufferManager::free: buffer {} at {} is already free", index,
                              buffers[i].data));
  }
  for (const auto& buffer : buffers) {
    const std::size_t index = index_of(buffer);
    _in_use[index] = false;
    _free.push_back(index);
  }
}

double SwapBufferManager::gigabytes() const noexcept {
  return static_cast<double>(buffer_bytes()) * static_cast<double>(_count) / (1024.0 * 1024.0 * 1024.0);
}

TensorView sized_view(const TensorView& buffer, std::size_t numel) {
  if (numel > buffer.numel)
    throw Error(fmt::format("sized_view: {} elements asked of a buffer of {}", numel, buffer.numel));
  return buffer.first(numel);
}

std::vector<TensorView> sized_views(std::span<const TensorView> buffers,
                                    std::span<const std::size_t> numels) {
  if (buffers.size() != numels.size())
    throw Error(fmt::format("sized_views: {} buffers but {} sizes", buffers.size(), numels.size()));
  std::vector<TensorView> out;
  out.reserve(buffers.size());
  for (std::size_t i = 0; i < buffers.size(); ++i) out.push_back(sized_view(buffers[i], numels[i]));
  return out;
}

}  // namespace swapcoord
