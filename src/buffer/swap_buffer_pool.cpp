#include "swapcoord/buffer/swap_buffer_pool.hpp"

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord {

SwapBufferPool::SwapBufferPool(std::span<const TensorView> buffers, std::size_t alignment_bytes) {
  if (buffers.empty()) throw Error("SwapBufferPool: no buffers given");
  _buffers.reserve(buffers.size());
  for (const auto& buffer : buffers) {
    if (buffer.dtype != buffers.front().dtype)
      throw Error(fmt::format("SwapBufferPool: buffers mix dtypes {} and {}",
                              dtype_name(buffers.front().dtype), dtype_name(buffer.dtype)));
    _buffers.emplace_back(buffer, alignment_bytes);
    _largest_numel = std::max(_largest_numel, buffer.numel);
  }
}

SwapBuffer* SwapBufferPool::buffer_with_space(std::size_t numel, std::size_t aligned) {
  if (aligned > _largest_numel)
    throw Error(fmt::format("SwapBufferPool: a tensor of {} elements ({} aligned) is larger than "
                            "any of its buffers ({} elements)", numel, aligned, _largest_numel));
  for (; _current < _buffers.size(); ++_current)
    if (_buffers[_current].has_space(aligned)) return &_buffers[_current];
  _current = _buffers.size() - 1;
  return nullptr;
}

std::optional<std::pair<TensorView, TensorView>> SwapBufferPool::allocate_tensor(
    const SwapLocation& location, std::size_t numel, std::size_t aligned) {
  SwapBuffer* buffer = buffer_with_space(numel, aligned);
  if (buffer == nullptr) return std::nullopt;
  return buffer->allocate_tensor(location, numel, aligned);
}

std::optional<TensorView> SwapBufferPool::insert_tensor(const TensorView& tensor,
                                                        const SwapLocation& location,
                                                        std::size_t aligned) {
  SwapBuffer* buffer = buffer_with_space(tensor.numel, aligned);
  if (buffer == nullptr) return std::nullopt;
  return buffer->insert_tensor(tensor, location, aligned);
}

bool SwapBufferPool::has_space(std::size_t aligned) const noexcept {
  for (std::size_t i = _current; i < _buffers.size(); ++i)
    if (_buffers[i].has_space(aligned)) return true;
  return false;
}

void SwapBufferPool::reset() noexcept {
  for (auto& buffer : _buffers) buffer.reset();
  _current = 0;
}

IoBatchResult SwapBufferPool::swap_out(IoEngine& engine) { return swap(engine, IoOp::write); }
IoBatchResult SwapBufferPool::swap_in(IoEngine& engine) { return swap(engine, IoOp::read); }

IoBatchResult SwapBufferPool::swap(IoEngine& engine, IoOp op) {
  _requests.clear();
  for (const auto& buffer : _buffers)
    for (const auto& e : buffer.entries())
      _requests.push_back(to_request(op, e.location, e.swap.data, e.swap.size_bytes()));
  return engine.run(_requests);
}

std::size_t SwapBufferPool::count() const noexcept {
  std::size_t n = 0;
  for (const auto& buffer : _buffers) n += buffer.count();
  return n;
}

std::vector<TensorView> SwapBufferPool::swap_tensors() const {
  std::vector<TensorView> out;
  for (const auto& buffer : _buffers)
    for (const auto& e : buffer.entries()) out.push_back(e.swap);
  return out;
}

std::vector<TensorView> SwapBufferPool::compute_tensors() const {
  std::vector<TensorView> out;
  for (const auto& buffer : _buffers)
    for (const auto& e : buffer.entries()) out.push_back(e.compute);
  return out;
}

std::vector<SwapLocation> SwapBufferPool::locations() const {
  std::vector<SwapLocation> out;
  for (const auto& buffer : _buffers)
    for (const auto& e : buffer.entries()) out.push_back(e.location);
  return out;
}

}  // namespace swapcoord
