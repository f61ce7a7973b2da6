#pragma once
// Asynchronous block I/O on swap files. Backends by name from one registry: `libaio`
// (default), `io_uring`, `posix`. An engine owns `intra_op_parallelism` I/O threads,
// each with its own kernel queue kept `queue_depth` deep. `submit` splits a batch of
// requests into `block_size` blocks and returns at once; `wait` blocks until the batch
// is done and throws IoError if any request failed. Every completion is checked against
// the bytes asked for: short transfers are resumed, EINTR/EAGAIN retried, the end of a
// file or a real error fails the request with its path, offset, length and errno text.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/common/error.hpp"
#include "swapcoord/io/aio_config.hpp"

namespace swapcoord {

class SwapFile;

enum class IoOp : std::uint8_t { read, write };

struct IoRequest {
  IoOp op = IoOp::read;
  SwapFile* file = nullptr;
  void* buffer = nullptr;
  std::uint64_t offset = 0;
  std::uint64_t size_bytes = 0;
};

// Identifies a submitted batch; pass it to wait() exactly once.
struct IoTicket {
  std::uint64_t id = 0;
};

struct IoBatchResult {
  std::size_t requests = 0;
  std::uint64_t bytes = 0;
};

// One failed request of a batch (of its failed blocks, the one at the lowest offset).
struct IoFailure {
  std::size_t request = 0;     // index in the submitted batch
  IoOp op = IoOp::read;
  std::string path;
  std::uint64_t offset = 0;     // where the failing transfer started
  std::uint64_t size_bytes = 0; // what was still to transfer in that block
  int errno_value = 0;          // 0 when the file ended before the request did
};

// A batch had failed requests. what() describes the first few; failures() has them all.
class IoError : public SystemError {
 public:
  IoError(const std::string& message, int errno_value, std::vector<IoFailure> failures)
      : SystemError(Formatted{}, message, errno_value), _failures(std::move(failures)) {}
  const std::vector<IoFailure>& failures() const noexcept { return _failures; }

 private:
  std::vector<IoFailure> _failures;
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  IoEngine() = default;
  IoEngine(const IoEngine&) = delete;
  IoEngine& operator=(const IoEngine&) = delete;

  virtual std::string_view name() const noexcept = 0;
  virtual const AioConfig& config() const noexcept = 0;

  // Validates every request (non-null file and buffer, non-zero length, alignment when the
  // file is O_DIRECT, write access) and throws Error naming the first bad one before
  // anything is queued; then queues the batch and returns. The requests and their
  // buffers must stay valid until wait() returns.
  virtual IoTicket submit(std::span<const IoRequest> requests) = 0;
  // Waits for the batch; with config().fsync, a batch with writes ends with fdatasync
  // of each file written. Throws IoError when any request failed.
  virtual IoBatchResult wait(IoTicket ticket) = 0;
  // submit + wait.
  IoBatchResult run(std::span<const IoRequest> requests) { return wait(submit(requests)); }
};

struct EngineInfo {
  std::string name;
  bool compiled = false;   // built into this binary
  bool available = false;  // compiled, and the kernel accepts it
  std::string reason;      // why not, when !available
};

// Every backend name this library knows, compiled in or not, in registry order.
std::vector<EngineInfo> engine_infos();
const char* default_engine_name() noexcept;
// Throws Error saying which and why for an unknown name, a backend not compiled in, or
// one the kernel refuses (io_uring disabled, aio limits); ConfigError for bad knobs.
std::unique_ptr<IoEngine> make_engine(std::string_view name, const AioConfig& config = {});

}  // namespace swapcoord

namespace swapcoord {

struct SwapLocation;

// The request that moves `size_bytes` at `buffer` to or from `location`. Throws Error
// naming the file and offset when the length differs from location.bytes or the
// location has no file.
IoRequest to_request(IoOp op, const SwapLocation& location, void* buffer, std::uint64_t size_bytes);

}  // namespace swapcoord
