#pragma once
// The kernel-facing part of an I/O backend. The threaded engine (engine.cpp) owns one
// Backend per I/O thread and drives it: it hands over blocks to start, reaps their
// completions and handles every result (short transfers, retries, errors), so a backend
// only translates blocks to its kernel interface.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/io_engine.hpp"

namespace swapcoord::detail {

struct Batch;

// One kernel request: at most block_size bytes of one IoRequest. `buffer`, `offset` and
// `remaining` advance when a transfer comes back short.
struct Block {
  Batch* batch = nullptr;
  std::uint32_t request = 0;
  IoOp op = IoOp::read;
  int fd = -1;
  std::byte* buffer = nullptr;
  std::uint64_t offset = 0;
  std::uint64_t remaining = 0;
  std::uint32_t slot = 0;  // the I/O thread's in-flight slot while the kernel has it
};

struct Completion {
  Block* block = nullptr;
  std::int64_t result = 0;  // bytes transferred, or -errno
};

// What the engine's owner registered (IoEngine::register_buffers, register_files), as a
// backend gets it: the kernel buffers (a region over kMaxRegisteredBufferBytes already
// split), sorted by address and disjoint, and the files' descriptors in index order.
struct Registration {
  std::vector<std::span<std::byte>> buffers;
  std::vector<int> fds;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Registers `registration` with the kernel queue in place of what it had (an empty
  // part unregisters). Called by the backend's own I/O thread with nothing in flight.
  // Returns false when the backend has no registered I/O. Throws SystemError naming what
  // the kernel refused; the backend then has nothing registered and works unregistered.
  virtual bool set_registration(const Registration& /*registration*/) { return false; }
  // Starts up to blocks.size() blocks (never more than queue_depth in flight, which the
  // caller ensures); returns how many it took, 0 when the kernel asks to reap first
  // (EAGAIN). A block the kernel rejects outright comes back as a completion carrying
  // its -errno.
  virtual std::size_t submit(std::span<Block* const> blocks) = 0;
  // Waits for at least `min_completions` completions and stores up to out.size() of them.
  virtual std::size_t reap(std::size_t min_completions, std::span<Completion> out) = 0;
  // Either call may throw (a kernel error that is not a block's, no memory): the engine
  // then fails every block it had given this backend, destroys the backend (which must
  // wait for, or cancel, what the kernel still has) and asks the factory for a new one.
};

using BackendFactory = std::function<std::unique_ptr<Backend>(const AioConfig&)>;

// The threaded engine over `intra_op_parallelism` backends made by `factory`, one per
// I/O thread. make_engine uses it for every registry entry; the io tests use it to wrap
// a real backend in one that injects faults (throws, answers EAGAIN), which is the seam
// for provoking what a kernel does only rarely.
std::unique_ptr<IoEngine> make_threaded_engine(std::string name, const AioConfig& config,
                                               BackendFactory factory);

std::unique_ptr<Backend> make_libaio_backend(const AioConfig& config);
std::unique_ptr<Backend> make_io_uring_backend(const AioConfig& config);
std::unique_ptr<Backend> make_posix_backend(const AioConfig& config);

}  // namespace swapcoord::detail
