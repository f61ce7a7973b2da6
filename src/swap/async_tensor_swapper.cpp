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

void AsyncTensorSwapper::check(std::span<const SwapLocation> locations, std::span<const InPlace> in_place) const {
  for (std::size_t i = 0; i < locations.size(); ++i) {
    const auto& l = locations[i];
    if (l.file == nullptr || !is_aligned(l.bytes, _alignment) || !is_aligned(l.offset, _alignment))
      throw Error(fmt::format("AsyncTensorSwapper: location {} ({} bytes at offset {} of '{}') "
                              "is not aligned to {} bytes", i, l.bytes, l.offset,
                              l.file ? l.file->path() : std::string("(no file)"), _alignment));
  }
  if (!in_place.empty() && in_place.size() != locations.size())
    throw Error(fmt::format("AsyncTensorSwapper: {} in-place ranges for {} locations", in_place.size(),
                            locations.size()));
  for (std::size_t i = 0; i < in_place.size(); ++i) {
    const InPlace& p = in_place[i];
    if (p.bytes == 0) continue;
    if (p.data == nullptr || !is_aligned(p.data, _alignment) || !is_aligned(p.bytes, _alignment) ||
        p.bytes > locations[i].bytes)
      throw Error(fmt::format("AsyncTensorSwapper: location {} ({} bytes): its in-place range ({} bytes at {}) is "
                              "not a multiple of {} bytes aligned to it within the location", i, locations[i].bytes,
                              p.bytes, static_cast<const void*>(p.data), _alignment));
  }
}

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

void AsyncTensorSwapper::plan(Slot& slot, Cursor& cursor, IoOp op, std::span<const SwapLocation> locations,
                              std::span<const InPlace> in_place) {
  slot.requests.clear();
  slot.pieces.clear();
  std::size_t group = 0;  // bytes in this group, staged or in place
  std::size_t fill = 0;   // of them, staged
  while (cursor.tensor < locations.size() && group < _buffer_bytes) {
    const SwapLocation& location = locations[cursor.tensor];
    const std::uint64_t direct = in_place.empty() ? 0 : in_place[cursor.tensor].bytes;
    // In place up to `direct`, staged after it; both end at the group's budget.
    const std::uint64_t end = cursor.done < direct ? direct : location.bytes;
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(end - cursor.done, _buffer_bytes - group));
    if (chunk > 0) {
      std::byte* data = cursor.done < direct ? in_place[cursor.tensor].data + cursor.done : slot.data + fill;
      slot.pieces.push_back({cursor.tensor, cursor.done, chunk, data});
      slot.requests.push_back({op, location.file, data, location.offset + cursor.done, chunk});
      if (cursor.done >= direct) fill += chunk;
      group += chunk;
      cursor.done += chunk;
    }
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
  (void)_engine.wait(std::move(slot.ticket));
  _stats.wait_seconds += seconds_since(start);
}

void AsyncTensorSwapper::drain() noexcept {
  for (auto& slot : _slots) {
    if (!slot.busy) continue;
    slot.busy = false;
    try {
      (void)_engine.wait(std::move(slot.ticket));
    } catch (...) {
      // Already failing: the first error is the one being reported.
    }
  }
}

void AsyncTensorSwapper::write_stream(std::span<const SwapLocation> locations, FillFn fill,
                                      std::span<const InPlace> in_place) {
  check(locations, in_place);
  write_pipeline(locations, fill, in_place);
}

void AsyncTensorSwapper::read_stream(std::span<const SwapLocation> locations, DrainFn drain_fn,
                                     std::span<const InPlace> in_place) {
  check(locations, in_place);
  read_pipeline(locations, drain_fn, in_place);
}

void AsyncTensorSwapper::write_pipeline(std::span<const SwapLocation> locations, FillFn fill,
                                        std::span<const InPlace> in_place) {
  try {
    Cursor cursor;
    for (std::size_t next = 0; cursor.tensor < locations.size(); next = (next + 1) % _slots.size()) {
      Slot& slot = _slots[next];
      wait(slot);  // its previous write must be done before the buffer is refilled
      plan(slot, cursor, IoOp::write, locations, in_place);
      if (slot.requests.empty()) break;
      const auto start = Clock::now();
      for (const Piece& piece : slot.pieces) {
        fill(piece.location, piece.offset, {piece.data, piece.bytes});
        _stats.bytes_out += piece.bytes;
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

void AsyncTensorSwapper::read_pipeline(std::span<const SwapLocation> locations, DrainFn drain_fn,
                                       std::span<const InPlace> in_place) {
  try {
    Cursor cursor;
    const std::size_t n = _slots.size();
    // Start the first groups; then, in order, finish the oldest and start the next.
    auto start_group = [&](Slot& slot) {
      plan(slot, cursor, IoOp::read, locations, in_place);
      if (slot.requests.empty()) return;
      slot.ticket = _engine.submit(slot.requests);
      slot.busy = true;
    };
    for (std::size_t i = 0; i < n; ++i) start_group(_slots[i]);
    for (std::size_t i = 0; _slots[i].busy; i = (i + 1) % n) {
      Slot& slot = _slots[i];
      wait(slot);
      const auto start = Clock::now();
      for (const Piece& piece : slot.pieces) {
        drain_fn(piece.location, piece.offset, {piece.data, piece.bytes});
        _stats.bytes_in += piece.bytes;
      }
      _stats.copy_seconds += seconds_since(start);
      start_group(slot);
    }
  } catch (...) {
    drain();
    throw;
  }
}

std::span<const InPlace> AsyncTensorSwapper::in_place_of(std::span<const TensorView> tensors) {
  _in_place.clear();
  for (const auto& t : tensors) _in_place.push_back(in_place_part(t, _alignment));
  return _in_place;
}

void AsyncTensorSwapper::swap_out(std::span<const TensorView> tensors,
                                  std::span<const SwapLocation> locations) {
  check(tensors, locations);  // also everything check(locations) checks
  write_pipeline(locations, [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) {
    const std::uint64_t size = tensors[i].size_bytes();
    const std::size_t copy = offset < size ? static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size - offset)) : 0;
    const std::byte* from = tensors[i].bytes() + offset;
    if (copy && out.data() != from) std::memcpy(out.data(), from, copy);  // else in place
    std::memset(out.data() + copy, 0, out.size() - copy);  // padding after the tensor
  }, in_place_of(tensors));
}

void AsyncTensorSwapper::swap_in(std::span<const TensorView> tensors,
                                 std::span<const SwapLocation> locations) {
  check(tensors, locations);
  read_pipeline(locations, [&](std::size_t i, std::uint64_t offset, std::span<const std::byte> in) {
    const std::uint64_t size = tensors[i].size_bytes();
    const std::size_t copy = offset < size ? static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), size - offset)) : 0;
    std::byte* to = tensors[i].bytes() + offset;
    if (copy && in.data() != to) std::memcpy(to, in.data(), copy);  // else read in place
  }, in_place_of(tensors));
}

}  // namespace swapcoord
