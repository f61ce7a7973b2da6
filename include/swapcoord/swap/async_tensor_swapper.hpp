#pragma once
// AsyncTensorSwapper: swaps tensors that live in ordinary (pageable) memory through a
// ring of pinned staging buffers. On swap-out, copying the next tensors into one buffer
// overlaps the write of the previous buffer; on swap-in, the reads of the next groups
// (one group = one buffer-full) are in flight while the current group is copied out.
// A tensor larger than a buffer is moved in buffer-sized pieces. No heap allocation
// once the first call has sized the internal lists.
//
// write_stream / read_stream are the same pipelines without source tensors: a callback
// fills (or consumes) each piece directly in the pinned staging buffer, which saves the
// copy when the data is produced or checked on the fly.
//
// In place: where the caller's memory is aligned to the alignment, a location's first
// aligned bytes can be read and written straight from and to it (O_DIRECT works on any
// suitably aligned memory), with no staging copy; only the rest (the unaligned tail and
// the padding) goes through staging. The pipeline is the same: at most a buffer-full of
// bytes per group, and the callbacks still see every byte in order.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/function_ref.hpp"
#include "swapcoord/common/tensor_view.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_location.hpp"

namespace swapcoord {

struct SwapperStats {
  std::uint64_t bytes_out = 0;     // bytes written (aligned, as on disk)
  std::uint64_t bytes_in = 0;      // bytes read
  double copy_seconds = 0;         // in copies / fill and drain callbacks
  double wait_seconds = 0;         // blocked on I/O
};

// fill(i, offset, out): write out.size() bytes of location i, starting `offset` bytes into
// it, into `out` (padding included). drain(i, offset, in): consume them after a read.
// In an in-place range, `out` and `in` are the caller's memory itself (InPlace::data +
// offset): fill finds the bytes already there, and drain finds them read in place.
using FillFn = FunctionRef<void(std::size_t, std::uint64_t, std::span<std::byte>)>;
using DrainFn = FunctionRef<void(std::size_t, std::uint64_t, std::span<const std::byte>)>;

// The first `bytes` bytes of a location live at `data` and move in place: `data` aligned
// to the swapper's alignment, `bytes` a multiple of it, at most the location's bytes.
// {nullptr, 0}: all through staging.
struct InPlace {
  std::byte* data = nullptr;
  std::uint64_t bytes = 0;
};

// What of tensor `t` can move in place: its aligned bytes when it is host memory starting
// on a multiple of `alignment`, else nothing.
inline InPlace in_place_part(const TensorView& t, std::size_t alignment) {
  if (!t.device.is_cpu() || !is_aligned(t.data, alignment)) return {};
  return {t.bytes(), align_down(t.size_bytes(), alignment)};
}

class AsyncTensorSwapper {
 public:
  // `staging`: at least two buffers (not owned) of equal size, a multiple of
  // `alignment_bytes`, aligned to it; usually from SwapBufferManager::allocate.
  AsyncTensorSwapper(IoEngine& engine, std::span<const TensorView> staging,
                     std::size_t alignment_bytes = kDefaultAlignmentBytes);
  AsyncTensorSwapper(const AsyncTensorSwapper&) = delete;
  AsyncTensorSwapper& operator=(const AsyncTensorSwapper&) = delete;
  ~AsyncTensorSwapper();  // waits for anything still in flight

  // Writes tensors[i] to locations[i]; returns when all is written. locations[i].bytes
  // must be tensors[i]'s size rounded up to the alignment; the padding is written as 0.
  // A tensor whose memory is aligned moves in place (see above); others are staged.
  void swap_out(std::span<const TensorView> tensors, std::span<const SwapLocation> locations);
  // Reads locations[i] into tensors[i] (same size rule); returns when all is copied.
  void swap_in(std::span<const TensorView> tensors, std::span<const SwapLocation> locations);

  // The pipelines with callbacks. Each location needs an aligned offset and size.
  // `in_place`: empty, or one entry per location.
  void write_stream(std::span<const SwapLocation> locations, FillFn fill, std::span<const InPlace> in_place = {});
  void read_stream(std::span<const SwapLocation> locations, DrainFn drain, std::span<const InPlace> in_place = {});

  const SwapperStats& stats() const noexcept { return _stats; }
  void reset_stats() noexcept { _stats = {}; }
  std::size_t staging_bytes() const noexcept { return _buffer_bytes; }

 private:
  struct Piece {          // one location range of a group: staged, or in place
    std::size_t location;
    std::uint64_t offset; // into the location
    std::size_t bytes;
    std::byte* data;      // in the staging buffer, or the caller's memory
  };
  struct Slot {           // one staging buffer
    std::byte* data = nullptr;
    std::vector<IoRequest> requests;
    std::vector<Piece> pieces;
    IoTicket ticket{};
    bool busy = false;
  };
  struct Cursor {         // the next byte to stage
    std::size_t tensor = 0;
    std::uint64_t done = 0;
  };

  void check(std::span<const TensorView> tensors, std::span<const SwapLocation> locations) const;
  void check(std::span<const SwapLocation> locations, std::span<const InPlace> in_place) const;
  // The pipelines, after the caller's checks.
  void write_pipeline(std::span<const SwapLocation> locations, FillFn fill, std::span<const InPlace> in_place);
  void read_pipeline(std::span<const SwapLocation> locations, DrainFn drain, std::span<const InPlace> in_place);
  // The next group from `cursor` (a buffer-full of bytes, staged in `slot` or in place):
  // its pieces and requests.
  void plan(Slot& slot, Cursor& cursor, IoOp op, std::span<const SwapLocation> locations,
            std::span<const InPlace> in_place);
  void wait(Slot& slot);
  void drain() noexcept;  // waits for every busy slot, ignoring errors (error path)
  // Each tensor's aligned part, where its memory is aligned (in _in_place).
  std::span<const InPlace> in_place_of(std::span<const TensorView> tensors);

  IoEngine& _engine;
  std::vector<Slot> _slots;
  std::size_t _buffer_bytes = 0;
  std::size_t _alignment;
  std::vector<InPlace> _in_place;  // swap_out / swap_in: per tensor
  SwapperStats _stats;
};

}  // namespace swapcoord
