#pragma once
// Asynchronous block I/O on swap files. Backends by name from one registry: `libaio`
// (default), `io_uring`, `posix`. An engine owns `intra_op_parallelism` I/O threads,
// each with its own kernel queue kept `queue_depth` deep. `submit` splits a batch of
// requests into `block_size` blocks and returns at once; `wait` blocks until the batch
// is done and throws IoError if any request failed. Every completion is checked against
// the bytes asked for: short transfers are resumed, EINTR/EAGAIN retried, the end of a
// file or a real error fails the request with its path, offset, length and errno text.
//
// Robustness: an exception inside an I/O thread (a backend error, no memory) fails the
// requests that thread held, with the message, and is reported by wait(); the thread
// then restarts its kernel queue, and if it cannot, the engine refuses new work with the
// reason. When the kernel answers EAGAIN with nothing in flight, the thread backs off
// (sleeps, 50 us doubling to 5 ms) instead of spinning. A batch in flight is an
// IoTicket, a move-only handle that waits for its batch when dropped.
//
// Registered I/O (io_uring): the engine's owner may register its buffers and files once
// (register_buffers, register_files) instead of the kernel pinning the pages and taking
// a file reference on every request; see IoEngine.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "swapcoord/common/error.hpp"
#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/swap_file.hpp"

namespace swapcoord {

class IoEngine;

enum class IoOp : std::uint8_t { read, write };

struct IoRequest {
  IoOp op = IoOp::read;
  SwapFileRef file;  // shares the open file (`&swap_file` converts): the SwapFile may move
  void* buffer = nullptr;
  std::uint64_t offset = 0;
  std::uint64_t size_bytes = 0;
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
  std::string message;          // when the I/O thread failed (an exception): what it said
};

// A submitted batch: a move-only handle, as a unique_ptr is. Pass it to wait() (or call
// its wait()) once; that consumes it, so a second wait on the same batch does not
// compile, and one on a moved-from or empty ticket throws Error. Dropping a ticket
// without waiting waits for its batch and releases it (a failure is logged, as a
// destructor must not throw): nothing leaks and the buffers are free to reuse.
// A ticket must not outlive the engine that issued it.
class [[nodiscard]] IoTicket {
 public:
  IoTicket() noexcept = default;  // empty
  IoTicket(IoTicket&& other) noexcept
      : _engine(std::exchange(other._engine, nullptr)), _id(std::exchange(other._id, 0)) {}
  IoTicket& operator=(IoTicket&& other) noexcept {
    if (this != &other) {
      abandon();  // the batch this ticket held is waited for first
      _engine = std::exchange(other._engine, nullptr);
      _id = std::exchange(other._id, 0);
    }
    return *this;
  }
  IoTicket(const IoTicket&) = delete;
  IoTicket& operator=(const IoTicket&) = delete;
  ~IoTicket() { abandon(); }

  bool valid() const noexcept { return _engine != nullptr; }
  explicit operator bool() const noexcept { return valid(); }
  std::uint64_t id() const noexcept { return _id; }  // 0 when empty; for messages
  // The same as engine.wait(std::move(ticket)).
  IoBatchResult wait();

 private:
  friend class IoEngine;
  IoTicket(IoEngine* engine, std::uint64_t id) noexcept : _engine(engine), _id(id) {}
  void abandon() noexcept;

  IoEngine* _engine = nullptr;
  std::uint64_t _id = 0;
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

// What an engine has registered (IoEngine::registration()).
struct IoRegistration {
  std::size_t regions = 0;  // memory regions passed to register_buffers
  std::size_t buffers = 0;  // kernel buffer slots they take (one per started GiB of a region)
  std::uint64_t bytes = 0;  // the regions' total size
  std::size_t files = 0;    // files passed to register_files
};

// The kernel's limits on registered buffers (io_uring: IORING_MAX_REG_BUFFERS, and at
// most 1 GiB per buffer; a longer region is registered as several buffers).
inline constexpr std::size_t kMaxRegisteredBuffers = 16384;
inline constexpr std::uint64_t kMaxRegisteredBufferBytes = std::uint64_t{1} << 30;

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
  // anything is queued; then queues the batch and returns. The buffers must stay valid
  // until the batch is waited for (wait(), or the ticket dropped); the requests are
  // copied, each sharing its open file.
  // Throws Error when the engine cannot take work any more (its I/O threads stopped;
  // the message says why).
  virtual IoTicket submit(std::span<const IoRequest> requests) = 0;
  // Waits for the batch; with config().fsync, a batch with writes ends with fdatasync
  // of each file written. Throws IoError when any request failed, Error for an empty
  // ticket or one of another engine. Takes the ticket: `engine.wait(std::move(t))`.
  IoBatchResult wait(IoTicket ticket);
  // submit + wait.
  IoBatchResult run(std::span<const IoRequest> requests) { return wait(submit(requests)); }

  // Registered I/O. Every I/O thread's kernel queue registers the regions (and files);
  // a block that lies wholly inside one registered buffer is then sent as a fixed-buffer
  // read or write, and one on a registered file with the file's index. Every other block
  // goes as before, and completions are handled as before (short transfers, retries,
  // errors).
  //
  // register_buffers replaces what is registered by `regions` (empty: unregisters) and
  // returns true; it returns false when the backend has no registered I/O (libaio,
  // posix): nothing is registered and I/O works as before. Throws Error, leaving no
  // buffer registered, for an empty or overlapping region, more than
  // kMaxRegisteredBuffers buffers, or a kernel queue that refuses them (the message names
  // the sizes and the errno; ENOMEM: the locked-memory limit, RLIMIT_MEMLOCK, which
  // every I/O thread's queue is charged separately unless the process has CAP_IPC_LOCK).
  // The caller may go on without registration after such an Error.
  //
  // Rules:
  //  - Call with no batch in flight (every ticket waited for) and not concurrently with
  //    submit() or another registration: Error otherwise.
  //  - A region must stay allocated and mapped at its address until it is unregistered
  //    or the engine is destroyed. The kernel pinned its pages at registration, and a
  //    fixed-buffer request uses those pages even if the address maps other memory now.
  //  - An I/O thread that restarts its kernel queue (see Robustness above) registers
  //    again; if the kernel refuses then, that thread goes on unregistered (logged).
  virtual bool register_buffers(std::span<const std::span<std::byte>> regions) = 0;
  // The same for files (the engine keeps them open while they are registered): a request
  // on one of them names the file by its index. Throws Error, leaving no file
  // registered, for a closed file or a kernel queue that refuses.
  virtual bool register_files(std::span<const SwapFileRef> files) = 0;
  void unregister_buffers() { (void)register_buffers({}); }
  void unregister_files() { (void)register_files({}); }
  // What is registered now (all zero on a backend without registered I/O).
  virtual IoRegistration registration() const = 0;

 protected:
  IoTicket make_ticket(std::uint64_t id) noexcept { return IoTicket(this, id); }
  // wait() for a ticket of this engine, once per batch.
  virtual IoBatchResult wait_batch(std::uint64_t id) = 0;
  // A dropped ticket: waits for the batch and releases it; reports failures by logging.
  virtual void abandon_batch(std::uint64_t id) noexcept = 0;

 private:
  friend class IoTicket;
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
