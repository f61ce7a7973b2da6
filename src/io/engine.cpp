// The threaded I/O engine shared by every backend, and the backend registry.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "swapcoord/common/align.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "detail/backend.hpp"

namespace swapcoord {
namespace detail {

struct Batch {
  std::uint64_t id = 0;
  Batch* next = nullptr;        // in the engine's queue of batches with blocks to start
  std::vector<IoRequest> requests;
  std::vector<Block> blocks;
  std::size_t next_block = 0;   // guarded by the engine mutex
  std::atomic<std::size_t> unfinished{0};
  bool done = false;            // guarded by the engine mutex
  std::vector<IoFailure> failures;  // guarded by the engine mutex
  std::vector<SwapFile*> written;   // with fsync: the files to fdatasync (wait() only)
  std::uint64_t bytes = 0;
};

const char* op_name(IoOp op) { return op == IoOp::read ? "read" : "write"; }

namespace {

class ThreadedEngine final : public IoEngine {
 public:
  ThreadedEngine(std::string name, const AioConfig& config,
                 std::unique_ptr<Backend> (*factory)(const AioConfig&))
      : _name(std::move(name)), _config(config) {
    _config.validate();
    std::vector<std::unique_ptr<Backend>> backends;
    for (std::size_t t = 0; t < _config.intra_op_parallelism; ++t)
      backends.push_back(factory(_config));  // throws if the kernel refuses
    for (auto& backend : backends)
      _threads.emplace_back([this, b = std::move(backend)] { worker(*b); });
  }

  ~ThreadedEngine() override {
    {
      std::lock_guard lock(_mutex);
      _stopping = true;
    }
    _work_cv.notify_all();
    for (auto& thread : _threads) thread.join();
  }

  std::string_view name() const noexcept override { return _name; }
  const AioConfig& config() const noexcept override { return _config; }

  IoTicket submit(std::span<const IoRequest> requests) override {
    for (std::size_t i = 0; i < requests.size(); ++i) validate(requests[i], i);
    Batch* batch = acquire_batch();
    batch->requests.assign(requests.begin(), requests.end());
    batch->blocks.clear();
    batch->failures.clear();
    batch->written.clear();
    batch->next_block = 0;
    batch->done = false;
    batch->bytes = 0;
    const std::uint64_t block_size = _config.block_size;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const auto& r = requests[i];
      batch->bytes += r.size_bytes;
      if (_config.fsync && r.op == IoOp::write) batch->written.push_back(r.file);
      for (std::uint64_t at = 0; at < r.size_bytes; at += block_size) {
        batch->blocks.push_back(Block{batch, static_cast<std::uint32_t>(i), r.op, r.file->fd(),
                                      static_cast<std::byte*>(r.buffer) + at, r.offset + at,
                                      std::min(block_size, r.size_bytes - at)});
      }
    }
    batch->unfinished.store(batch->blocks.size());
    {
      std::lock_guard lock(_mutex);
      if (batch->blocks.empty()) {
        batch->done = true;
      } else {
        batch->next = nullptr;
        (_tail ? _tail->next : _head) = batch;
        _tail = batch;
      }
    }
    _work_cv.notify_all();
    return IoTicket{batch->id};
  }

  IoBatchResult wait(IoTicket ticket) override {
    Batch* batch = nullptr;
    {
      std::unique_lock lock(_mutex);
      batch = find_batch(ticket);
      _done_cv.wait(lock, [batch] { return batch->done; });
    }
    const IoBatchResult result{batch->requests.size(), batch->bytes};
    std::vector<IoFailure> failures;
    std::swap(failures, batch->failures);
    std::exception_ptr sync_error;
    if (failures.empty() && _config.fsync && !batch->written.empty()) {
      auto& files = batch->written;
      std::sort(files.begin(), files.end());
      files.erase(std::unique(files.begin(), files.end()), files.end());
      try {
        for (SwapFile* file : files) file->sync();
      } catch (...) {
        sync_error = std::current_exception();
      }
    }
    release_batch(batch);
    if (sync_error) std::rethrow_exception(sync_error);
    if (!failures.empty()) throw make_error(std::move(failures), result.requests);
    return result;
  }

 private:
  void validate(const IoRequest& r, std::size_t index) const {
    auto where = [&] {
      return fmt::format("{} request {} ({} bytes at offset {} of '{}')", op_name(r.op), index,
                         r.size_bytes, r.offset, r.file ? r.file->path() : std::string("?"));
    };
    if (r.file == nullptr) throw Error(fmt::format("{} request {} has no file", op_name(r.op), index));
    if (r.buffer == nullptr) throw Error(where() + " has no buffer");
    if (r.size_bytes == 0) throw Error(where() + " has zero length");
    if (r.op == IoOp::write && !r.file->writable())
      throw Error(where() + ": the file was opened read-only");
    if (r.file->direct()) {
      const auto mem = r.file->memory_alignment(), off = r.file->offset_alignment();
      if (!is_aligned(r.buffer, mem))
        throw Error(fmt::format("{}: buffer address {} is not aligned to {} bytes, which "
                                "O_DIRECT on this file needs", where(), r.buffer, mem));
      if (!is_aligned(r.offset, off) || !is_aligned(r.size_bytes, off))
        throw Error(fmt::format("{}: offset and length must be multiples of {} bytes for "
                                "O_DIRECT on this file", where(), off));
      if (!is_aligned(_config.block_size, off))
        throw Error(fmt::format("{}: aio.block_size {} is not a multiple of the file's "
                                "alignment {}", where(), _config.block_size, off));
    }
  }

  Batch* acquire_batch() {
    std::lock_guard lock(_mutex);
    Batch* batch = nullptr;
    if (!_free.empty()) {
      batch = _free.back();
      _free.pop_back();
    } else {
      _pool.push_back(std::make_unique<Batch>());
      batch = _pool.back().get();
      _free.reserve(_pool.size());
    }
    batch->id = ++_last_id;
    return batch;
  }

  void release_batch(Batch* batch) {
    std::lock_guard lock(_mutex);
    batch->id = 0;
    _free.push_back(batch);
  }

  Batch* find_batch(IoTicket ticket) {
    for (auto& batch : _pool)
      if (ticket.id != 0 && batch->id == ticket.id) return batch.get();
    throw Error(fmt::format("wait() on I/O ticket {} that is unknown or already waited for",
                            ticket.id));
  }

  IoError make_error(std::vector<IoFailure> failures, std::size_t requests) const {
    // One entry per request: the failed block with the lowest offset stands for it.
    std::sort(failures.begin(), failures.end(), [](const IoFailure& a, const IoFailure& b) {
      return a.request != b.request ? a.request < b.request : a.offset < b.offset;
    });
    failures.erase(std::unique(failures.begin(), failures.end(),
                               [](const IoFailure& a, const IoFailure& b) {
                                 return a.request == b.request;
                               }),
                   failures.end());
    std::string message = fmt::format("{} I/O: {} of {} requests failed", _name,
                                      failures.size(), requests);
    constexpr std::size_t kShown = 4;
    for (std::size_t i = 0; i < std::min(kShown, failures.size()); ++i) {
      const auto& f = failures[i];
      message += fmt::format("; {} of {} bytes at offset {} of '{}' (request {}): ",
                             op_name(f.op), f.size_bytes, f.offset, f.path, f.request);
      if (f.errno_value == 0) {
        message += "the file ended first (short file)";
      } else {
        char text[256];
        message += fmt::format("{} (errno {})", strerror_r(f.errno_value, text, sizeof text),
                               f.errno_value);
      }
    }
    if (failures.size() > kShown) message += fmt::format("; and {} more", failures.size() - kShown);
    const int code = failures.front().errno_value;
    return IoError(message, code, std::move(failures));
  }

  // Takes up to `max` blocks from the queue; blocks the thread while there are none and
  // `wait_for_work` is set. Returns 0 when stopping (or nothing to take without waiting).
  std::size_t take_blocks(std::vector<Block*>& out, std::size_t max, bool wait_for_work) {
    std::unique_lock lock(_mutex);
    if (wait_for_work) _work_cv.wait(lock, [this] { return _head != nullptr || _stopping; });
    std::size_t taken = 0;
    while (_head != nullptr && taken < max) {
      Batch* batch = _head;
      while (batch->next_block < batch->blocks.size() && taken < max) {
        out.push_back(&batch->blocks[batch->next_block++]);
        ++taken;
      }
      if (batch->next_block == batch->blocks.size()) {
        _head = batch->next;
        if (_head == nullptr) _tail = nullptr;
      }
    }
    return taken;
  }

  void finish(Block& block, const IoFailure* failure) {
    Batch* batch = block.batch;
    if (failure != nullptr) {
      std::lock_guard lock(_mutex);
      batch->failures.push_back(*failure);
    }
    if (batch->unfinished.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      {
        std::lock_guard lock(_mutex);
        batch->done = true;
      }
      _done_cv.notify_all();
    }
  }

  void fail(Block& block, int errno_value) {
    const IoRequest& r = block.batch->requests[block.request];
    // Only the error path allocates (the path string).
    IoFailure failure{block.request, block.op, r.file->path(), block.offset, block.remaining,
                      errno_value};
    finish(block, &failure);
  }

  // Handles one completion: done, resumed (returned true: resubmit), or failed.
  bool complete(Block& block, std::int64_t result) {
    if (result == -EINTR || result == -EAGAIN) return true;
    if (result < 0) {
      fail(block, static_cast<int>(-result));
      return false;
    }
    if (result == 0) {  // no progress: the file ended (read) or the device gave up (write)
      fail(block, block.op == IoOp::read ? 0 : EIO);
      return false;
    }
    const auto moved = std::min<std::uint64_t>(static_cast<std::uint64_t>(result), block.remaining);
    block.buffer += moved;
    block.offset += moved;
    block.remaining -= moved;
    if (block.remaining > 0) return true;  // short transfer: resume where it stopped
    finish(block, nullptr);
    return false;
  }

  void worker(Backend& backend) {
    const std::size_t depth = _config.queue_depth;
    std::vector<Block*> pending;  // blocks to (re)start, in order
    pending.reserve(2 * depth);
    std::vector<Completion> completions(depth);
    std::size_t in_flight = 0;
    for (;;) {
      // Keep the kernel queue full.
      while (in_flight < depth) {
        if (pending.empty() && take_blocks(pending, depth - in_flight, in_flight == 0) == 0) break;
        const std::size_t chunk = _config.single_submit ? 1 : std::min(pending.size(), depth - in_flight);
        const std::size_t started = backend.submit(std::span(pending.data(), chunk));
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(started));
        in_flight += started;
        if (started == 0) break;  // the kernel wants completions reaped first
      }
      if (in_flight == 0) {
        if (!pending.empty()) continue;
        std::lock_guard lock(_mutex);
        if (_stopping && _head == nullptr) return;
        continue;
      }
      const std::size_t min = _config.overlap_events ? 1 : in_flight;
      const std::size_t reaped = backend.reap(min, std::span(completions.data(), in_flight));
      in_flight -= reaped;
      for (std::size_t i = 0; i < reaped; ++i) {
        Block& block = *completions[i].block;
        if (complete(block, completions[i].result)) pending.push_back(&block);
      }
    }
  }

  std::string _name;
  AioConfig _config;
  std::mutex _mutex;
  std::condition_variable _work_cv;
  std::condition_variable _done_cv;
  Batch* _head = nullptr;
  Batch* _tail = nullptr;
  bool _stopping = false;
  std::uint64_t _last_id = 0;
  std::vector<std::unique_ptr<Batch>> _pool;
  std::vector<Batch*> _free;
  std::vector<std::thread> _threads;
};

[[maybe_unused]] std::unique_ptr<Backend> not_compiled(const AioConfig&) { return nullptr; }

struct RegistryEntry {
  const char* name;
  bool compiled;
  std::unique_ptr<Backend> (*factory)(const AioConfig&);
  const char* missing;  // what to install when not compiled in
};

const RegistryEntry kRegistry[] = {
#if SWAPCOORD_HAVE_LIBAIO
    {"libaio", true, &make_libaio_backend, ""},
#else
    {"libaio", false, &not_compiled, "libaio-dev"},
#endif
#if SWAPCOORD_HAVE_IO_URING
    {"io_uring", true, &make_io_uring_backend, ""},
#else
    {"io_uring", false, &not_compiled, "liburing-dev"},
#endif
    {"posix", true, &make_posix_backend, ""},
};

}  // namespace
}  // namespace detail

const char* default_engine_name() noexcept { return SWAPCOORD_HAVE_LIBAIO ? "libaio" : "posix"; }

std::vector<EngineInfo> engine_infos() {
  std::vector<EngineInfo> infos;
  for (const auto& entry : detail::kRegistry) {
    EngineInfo info{entry.name, entry.compiled, false, ""};
    if (!entry.compiled) {
      info.reason = fmt::format("not compiled in (this build found no {})", entry.missing);
    } else {
      try {
        AioConfig probe;
        probe.queue_depth = 1;
        entry.factory(probe);
        info.available = true;
      } catch (const std::exception& e) {
        info.reason = e.what();
      }
    }
    infos.push_back(std::move(info));
  }
  return infos;
}

std::unique_ptr<IoEngine> make_engine(std::string_view name, const AioConfig& config) {
  for (const auto& entry : detail::kRegistry) {
    if (name != entry.name) continue;
    if (!entry.compiled)
      throw Error(fmt::format("I/O backend '{}' is not compiled into this build of swapcoord "
                              "(configure found no {}; install it and rebuild)",
                              name, entry.missing));
    return std::make_unique<detail::ThreadedEngine>(entry.name, config, entry.factory);
  }
  std::string known;
  for (const auto& entry : detail::kRegistry) known += std::string(known.empty() ? "" : ", ") + entry.name;
  throw ConfigError(fmt::format("aio.backend: unknown I/O backend '{}' (known: {})", name, known));
}

}  // namespace swapcoord

#include "swapcoord/io/swap_location.hpp"

namespace swapcoord {

IoRequest to_request(IoOp op, const SwapLocation& location, void* buffer, std::uint64_t size_bytes) {
  if (location.file == nullptr)
    throw Error(fmt::format("swap location at offset {} ({} bytes) has no file", location.offset,
                            location.bytes));
  if (size_bytes != location.bytes)
    throw Error(fmt::format("{} of {} bytes does not match the swap location of {} bytes at "
                            "offset {} of '{}'", detail::op_name(op), size_bytes, location.bytes,
                            location.offset, location.file->path()));
  return IoRequest{op, location.file, buffer, location.offset, size_bytes};
}

}  // namespace swapcoord
