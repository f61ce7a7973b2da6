#include "swapcoord/swap/async_tensor_swapper.hpp"

#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"
#include "swapcoord/io/swap_file.hpp"

namespace swapcoord {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

AsyncTensorSwapper::AsyncTensorSwapper(IoEngine& engine, std::span<const TensorView> staging,
                                       std::size_t alignment_bytes)
    : _engine(engine), _alignment(alignment_bytes) {
  if (staging.size() < 2)
    throw Error(fmt::format("AsyncTensorSwapper: needs at least 2 staging buffers, got {}",
                            staging.size()));
  _buffer_bytes = staging.front().size_bytes();
  for (std::size_t i = 0; i < staging.size(); ++i) {
    const auto& buffer = staging[i];
    if (buffer.size_bytes() != _buffer_bytes)
      throw Error(fmt::format("AsyncTensorSwapper: staging buffer {} has {} bytes, buffer 0 has {}",
                              i, buffer.size_bytes(), _buffer_bytes));
    if (_buffer_bytes == 0 || !is_aligned(_buffer_bytes, _alignment) ||
        !is_aligned(buffer.data, _alignment))
      throw Error(fmt::format("AsyncTensorSwapper: staging buffer {} ({} bytes at {}) is not a "
                              "non-empty multiple of {} bytes aligned to it",
                              i, buffer.size_bytes(), buffer.data, _alignment));
    if (!buffer.device.is_cpu())
      throw Error(fmt::format("AsyncTensorSwapper: staging buffer {} is on {}, not in host memory",
                              i, to_string(buffer.device)));
  }
  _slots.resize(staging.size());
  const std::size_t max_pieces = _buffer_bytes / _alignment;
  for (std::size_t i = 0; i < staging.size(); ++i) {
    _slots[i].data = staging[i].bytes();
    _slots[i].requests.reserve(max_pieces);
    _slots[i].pieces.reserve(max_pieces);
  }
}

AsyncTensorSwapper::~AsyncTensorSwapper() { drain(); }

void AsyncTensorSwapper::check(std::span<const TensorView> tensors,
                               std::span<const SwapLocation> locations) const {
  if (tensors.size() != locations.size())
    throw Error(fmt::format("AsyncTensorSwapper: {} tensors but {} locations", tensors.size(),
                            locations.size()));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& l = locations[i];
    const auto want = align_up(tensors[i].size_bytes(), _alignment);
    if (l.file == nullptr || l.bytes != want || !is_aligned(l.offset, _alignment))
      throw Error(fmt::format("AsyncTensorSwapper: tensor {} ({} bytes) needs an aligned location "
                              "of {} bytes, got {} bytes at offset {} of '{}'",
                              i, tensors[i].size_bytes(), want, l.bytes, l.offset,
                              l.file ? l.file->path() : std::string("(no file)")));
    if (!tensors[i].device.is_cpu())
      throw Error(fmt::format("AsyncTensorSwapper: tensor {} is on {} (host tensors only in this "
                              "build)", i, to_string(tensors[i].device)));
  }
}

void AsyncTensorSwapper::plan(Slot& slot, Cursor& cursor, IoOp op,
                              std::span<const TensorView> tensors,
                              std::span<const SwapLocation> locations) {
  slot.requests.clear();
  slot.pieces.clear();
  std::size_t fill = 0;
  while (cursor.tensor < tensors.size() && fill < _buffer_bytes) {
    const TensorView& tensor = tensors[cursor.tensor];
    const SwapLocation& location = locations[cursor.tensor];
    const std::uint64_t left = location.bytes - cursor.done;
    if (left == 0) {  // empty tensor
      ++cursor.tensor;
      continue;
    }
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(left, _buffer_bytes - fill));
    const std::uint64_t data_left = tensor.size_bytes() > cursor.done ? tensor.size_bytes() - cursor.done : 0;
    const std::size_t copy = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, data_left));
    slot.pieces.push_back({copy ? tensor.bytes() + cursor.done : nullptr, copy, fill});
    slot.requests.push_back({op, location.file, slot.data + fill, location.offset + cursor.done, chunk});
    fill += chunk;
    cursor.done += chunk;
    if (cursor.done == location.bytes) {
      ++cursor.tensor;
      cursor.done = 0;
    }
  }
}

void AsyncTensorSwapper::wait(Slot& slot) {
  if (!slot.busy) return;
  const auto start = Clock::now();
  slot.busy = false;
  _engine.wait(slot.ticket);
  _stats.wait_seconds += seconds_since(start);
}

void AsyncTensorSwapper::drain() noexcept {
  for (auto& slot : _slots) {
    if (!slot.busy) continue;
    slot.busy = false;
    try {
      _engine.wait(slot.ticket);
    } catch (...) {
      // Already failing: the first error is the one being reported.
    }
  }
}

void AsyncTensorSwapper::swap_out(std::span<const TensorView> tensors,
                                  std::span<const SwapLocation> locations) {
  check(tensors, locations);
  try {
    Cursor cursor;
    for (std::size_t next = 0; cursor.tensor < tensors.size(); next = (next + 1) % _slots.size()) {
      Slot& slot = _slots[next];
      wait(slot);  // its previous write must be done before the buffer is refilled
      plan(slot, cursor, IoOp::write, tensors, locations);
      if (slot.requests.empty()) break;
      const auto start = Clock::now();
      for (const Piece& piece : slot.pieces) {
        std::byte* into = slot.data + piece.buffer_offset;
        if (piece.copy_bytes) std::memcpy(into, piece.tensor, piece.copy_bytes);
      }
      // Zero the padding after each tensor's last piece (the request's tail).
      for (std::size_t i = 0; i < slot.pieces.size(); ++i) {
        const std::size_t length = slot.requests[i].size_bytes;
        if (slot.pieces[i].copy_bytes < length)
          std::memset(slot.data + slot.pieces[i].buffer_offset + slot.pieces[i].copy_bytes, 0,
                      length - slot.pieces[i].copy_bytes);
        _stats.bytes_out += length;
      }
      _stats.copy_seconds += seconds_since(start);
      slot.ticket = _engine.submit(slot.requests);
      slot.busy = true;
    }
    for (auto& slot : _slots) wait(slot);
  } catch (...) {
    drain();
    throw;
  }
}

void AsyncTensorSwapper::swap_in(std::span<const TensorView> tensors,
                                 std::span<const SwapLocation> locations) {
  check(tensors, locations);
  try {
    Cursor cursor;
    const std::size_t n = _slots.size();
    // Start the first groups; then, in order, finish the oldest and start the next.
    auto start_group = [&](Slot& slot) {
      plan(slot, cursor, IoOp::read, tensors, locations);
      if (slot.requests.empty()) return;
      slot.ticket = _engine.submit(slot.requests);
      slot.busy = true;
    };
    for (std::size_t i = 0; i < n; ++i) start_group(_slots[i]);
    for (std::size_t i = 0; _slots[i].busy; i = (i + 1) % n) {
      Slot& slot = _slots[i];
      wait(slot);
      const auto start = Clock::now();
      for (std::size_t p = 0; p < slot.pieces.size(); ++p) {
        const Piece& piece = slot.pieces[p];
        if (piece.copy_bytes) std::memcpy(piece.tensor, slot.data + piece.buffer_offset, piece.copy_bytes);
        _stats.bytes_in += slot.requests[p].size_bytes;
      }
      _stats.copy_seconds += seconds_since(start);
      start_group(slot);
    }
  } catch (...) {
    drain();
    throw;
  }
}

}  // namespace swapcoord
