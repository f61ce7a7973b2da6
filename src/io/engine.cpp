// The threaded I/O engine shared by every backend, and the backend registry.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "detail/backend.hpp"

namespace swapcoord {
namespace detail {

struct Batch {
  std::uint64_t id = 0;         // 0 while free; guarded by the engine mutex
  Batch* next = nullptr;        // in the engine's queue of batches with blocks to start
  std::vector<IoRequest> requests;
  std::vector<Block> blocks;
  std::size_t next_block = 0;   // guarded by the engine mutex
  std::atomic<std::size_t> unfinished{0};
  bool done = false;            // guarded by the engine mutex
  bool claimed = false;         // a waiter has it (guarded): one wait per batch
  std::size_t undescribed = 0;  // failed blocks whose IoFailure could not be made (guarded)
  std::vector<IoFailure> failures;  // guarded by the engine mutex
  std::vector<SwapFileRef> written; // with fsync: the files to fdatasync (wait() only)
  std::uint64_t bytes = 0;
};

const char* op_name(IoOp op) { return op == IoOp::read ? "read" : "write"; }

namespace {

// An exception as a failure cause: its message and errno (0 when it has none).
struct Cause {
  std::string message;
  int errno_value = 0;
};

Cause cause_of(std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const SystemError& e) {
    return {e.what(), e.code()};
  } catch (const std::exception& e) {
    return {e.what(), 0};
  } catch (...) {
    return {"an exception that is not a std::exception", 0};
  }
}

// When the kernel refuses new requests (EAGAIN) while this thread has none in flight,
// there is no completion to wait for: sleep, doubling from the first to the last delay.
constexpr std::chrono::microseconds kFirstBackoff{50};
constexpr std::chrono::microseconds kLastBackoff{5000};

class ThreadedEngine final : public IoEngine {
 public:
  ThreadedEngine(std::string name, const AioConfig& config, BackendFactory factory)
      : _name(std::move(name)), _config(config), _factory(std::move(factory)) {
    _config.validate();
    std::vector<std::unique_ptr<Backend>> backends;
    for (std::size_t t = 0; t < _config.intra_op_parallelism; ++t)
      backends.push_back(_factory(_config));  // throws if the kernel refuses
    _live_workers = backends.size();
    for (auto& backend : backends)
      _threads.emplace_back([this, b = std::move(backend)]() mutable { worker(std::move(b)); });
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
    try {
      batch->requests.assign(requests.begin(), requests.end());
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
    } catch (...) {
      release_batch(batch);
      throw;
    }
    batch->unfinished.store(batch->blocks.size());
    std::uint64_t id = 0;
    {
      std::lock_guard lock(_mutex);
      if (_live_workers == 0) {
        const std::string why = _stopped_because;
        reset_locked(batch);
        throw Error(fmt::format("{} I/O engine cannot take new work: its I/O threads stopped ({})",
                                _name, why));
      }
      if (_registering) {
        reset_locked(batch);
        throw Error(fmt::format("{} I/O: submit() while register_buffers() or register_files() "
                                "runs; registration must not overlap I/O", _name));
      }
      if (batch->blocks.empty()) {
        batch->done = true;
      } else {
        batch->next = nullptr;
        (_tail ? _tail->next : _head) = batch;
        _tail = batch;
      }
      id = batch->id;
    }
    _work_cv.notify_all();
    return make_ticket(id);
  }

 protected:
  IoBatchResult wait_batch(std::uint64_t id) override {
    Batch* batch = claim(id);
    const IoBatchResult result{batch->requests.size(), batch->bytes};
    std::vector<IoFailure> failures;
    std::size_t undescribed = 0;
    {
      std::lock_guard lock(_mutex);
      std::swap(failures, batch->failures);
      undescribed = batch->undescribed;
    }
    std::exception_ptr sync_error;
    if (failures.empty() && undescribed == 0 && _config.fsync && !batch->written.empty()) {
      auto& files = batch->written;
      auto by_file = [](const SwapFileRef& a, const SwapFileRef& b) { return a.get() < b.get(); };
      std::sort(files.begin(), files.end(), by_file);
      files.erase(std::unique(files.begin(), files.end()), files.end());
      try {
        for (const SwapFileRef& file : files) file->sync();
      } catch (...) {
        sync_error = std::current_exception();
      }
    }
    release_batch(batch);
    if (sync_error) std::rethrow_exception(sync_error);
    if (!failures.empty() || undescribed > 0)
      throw make_error(std::move(failures), undescribed, result.requests);
    return result;
  }

  bool register_buffers(std::span<const std::span<std::byte>> regions) override {
    std::vector<std::span<std::byte>> buffers = split_regions(regions);
    Quiesced quiesced(*this, "register_buffers");
    auto next = std::make_shared<Registration>(*_registration);
    next->buffers = std::move(buffers);
    const Round round = run_round(next);
    if (round.error.empty()) {
      if (!round.supported) return forget_registration();
      _regions.assign(regions.begin(), regions.end());
      return true;
    }
    auto without = std::make_shared<Registration>(*_registration);
    without->buffers.clear();
    (void)run_round(without);
    _regions.clear();
    std::uint64_t bytes = 0;
    for (const auto& region : regions) bytes += region.size();
    throw Error(fmt::format("{} I/O: register_buffers of {} regions ({} bytes) failed, and no "
                            "buffer is registered: {}", _name, regions.size(), bytes, round.error));
  }

  bool register_files(std::span<const SwapFileRef> files) override {
    std::vector<int> fds;
    for (std::size_t i = 0; i < files.size(); ++i) {
      if (!files[i] || files[i]->fd() < 0)
        throw Error(fmt::format("{} I/O: register_files: file {} is not open", _name, i));
      fds.push_back(files[i]->fd());
    }
    Quiesced quiesced(*this, "register_files");
    auto next = std::make_shared<Registration>(*_registration);
    next->fds = std::move(fds);
    const Round round = run_round(next);
    if (round.error.empty()) {
      if (!round.supported) return forget_registration();
      _files.assign(files.begin(), files.end());
      return true;
    }
    auto without = std::make_shared<Registration>(*_registration);
    without->fds.clear();
    (void)run_round(without);
    _files.clear();
    throw Error(fmt::format("{} I/O: register_files of {} files (the first '{}') failed, and no file "
                            "is registered: {}", _name, files.size(), files.empty() ? "" : files[0]->path(),
                            round.error));
  }

  IoRegistration registration() const override {
    std::lock_guard lock(_mutex);
    IoRegistration r;
    r.regions = _regions.size();
    r.buffers = _registration->buffers.size();
    for (const auto& region : _regions) r.bytes += region.size();
    r.files = _files.size();
    return r;
  }

  void abandon_batch(std::uint64_t id) noexcept override {
    try {
      (void)wait_batch(id);
    } catch (const std::exception& e) {
      log::warn(fmt::format("an I/O ticket was dropped without wait(); its batch failed: {}",
                            e.what()));
    } catch (...) {
      log::warn("an I/O ticket was dropped without wait(); its batch failed");
    }
  }

 private:
  // ---- registered I/O --------------------------------------------------------------------
  // The owner's registration goes to each I/O thread's backend in a round: the caller
  // publishes the new Registration and waits until every live I/O thread has applied it
  // on its own thread (between batches, so that a ring is only ever used by its thread).

  // The regions as the kernel takes them: sorted, disjoint, in buffers of at most
  // kMaxRegisteredBufferBytes. Throws Error for an empty or overlapping region, or too many.
  std::vector<std::span<std::byte>> split_regions(std::span<const std::span<std::byte>> regions) const {
    std::vector<std::span<std::byte>> sorted;
    for (std::size_t i = 0; i < regions.size(); ++i) {
      if (regions[i].data() == nullptr || regions[i].empty())
        throw Error(fmt::format("{} I/O: register_buffers: region {} is empty", _name, i));
      sorted.push_back(regions[i]);
    }
    auto start = [](const std::span<std::byte>& r) { return reinterpret_cast<std::uintptr_t>(r.data()); };
    std::sort(sorted.begin(), sorted.end(), [&](const auto& a, const auto& b) { return start(a) < start(b); });
    std::vector<std::span<std::byte>> buffers;
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      if (i > 0 && start(sorted[i]) < start(sorted[i - 1]) + sorted[i - 1].size())
        throw Error(fmt::format("{} I/O: register_buffers: the regions at {} ({} bytes) and {} ({} "
                                "bytes) overlap", _name, static_cast<const void*>(sorted[i - 1].data()),
                                sorted[i - 1].size(), static_cast<const void*>(sorted[i].data()),
                                sorted[i].size()));
      for (std::size_t at = 0; at < sorted[i].size(); at += kMaxRegisteredBufferBytes)
        buffers.push_back(sorted[i].subspan(at, std::min<std::size_t>(kMaxRegisteredBufferBytes, sorted[i].size() - at)));
    }
    if (buffers.size() > kMaxRegisteredBuffers)
      throw Error(fmt::format("{} I/O: register_buffers: {} regions take {} kernel buffers (at most "
                              "{} bytes each), over the limit of {}", _name, regions.size(),
                              buffers.size(), kMaxRegisteredBufferBytes, kMaxRegisteredBuffers));
    return buffers;
  }

  // Holds off submit() and other registrations while a registration runs; refuses while
  // a batch is in flight or when no I/O thread is left.
  class Quiesced {
   public:
    Quiesced(ThreadedEngine& engine, const char* what) : _engine(engine) {
      std::lock_guard lock(engine._mutex);
      if (engine._registering)
        throw Error(fmt::format("{} I/O: {}() while another registration runs", engine._name, what));
      if (engine._live_workers == 0)
        throw Error(fmt::format("{} I/O engine cannot register: its I/O threads stopped ({})",
                                engine._name, engine._stopped_because));
      std::size_t in_flight = 0;
      for (const auto& batch : engine._pool) in_flight += batch->id != 0 && !batch->done;
      if (in_flight > 0)
        throw Error(fmt::format("{} I/O: {}() with {} batches in flight; wait for them first",
                                engine._name, what, in_flight));
      engine._registering = true;
    }
    Quiesced(const Quiesced&) = delete;
    Quiesced& operator=(const Quiesced&) = delete;
    ~Quiesced() {
      std::lock_guard lock(_engine._mutex);
      _engine._registering = false;
    }

   private:
    ThreadedEngine& _engine;
  };

  struct Round {
    bool supported = true;  // every backend has registered I/O
    std::string error;      // the first refusal, empty when none
  };

  // Publishes `next` and waits until every live I/O thread has applied it.
  Round run_round(std::shared_ptr<const Registration> next) {
    std::unique_lock lock(_mutex);
    _registration = std::move(next);
    _round.store(_round.load() + 1);
    _round_acks = 0;
    _round_result = Round{};
    lock.unlock();
    _work_cv.notify_all();
    lock.lock();
    _registered_cv.wait(lock, [this] { return _round_acks >= _live_workers; });
    return _round_result;
  }

  // A backend without registered I/O: nothing is registered (or kept open).
  bool forget_registration() {
    std::lock_guard lock(_mutex);
    _registration = std::make_shared<Registration>();
    _regions.clear();
    _files.clear();
    return false;
  }

  // Per I/O thread: the last round its backend applied (0 for a new backend) and the
  // last it reported.
  struct Rounds {
    std::uint64_t applied = 0;
    std::uint64_t reported = 0;
  };

  // Applies the current registration to this thread's backend (nothing in flight).
  void sync_registration(Backend& backend, Rounds& rounds) {
    std::shared_ptr<const Registration> registration;
    std::uint64_t round = 0;
    {
      std::lock_guard lock(_mutex);
      registration = _registration;
      round = _round.load();
    }
    bool supported = false;
    std::string error;
    try {
      supported = backend.set_registration(*registration);
    } catch (...) {
      error = cause_of(std::current_exception()).message;
    }
    rounds.applied = round;
    bool reported = false;
    {
      std::lock_guard lock(_mutex);
      if (round == _round.load() && rounds.reported != round) {
        rounds.reported = round;
        reported = true;
        ++_round_acks;
        if (!supported && error.empty()) _round_result.supported = false;
        if (!error.empty() && _round_result.error.empty()) _round_result.error = error;
      }
    }
    if (reported) {
      _registered_cv.notify_all();
    } else if (!error.empty()) {  // a restarted backend: nobody waits for it
      log::warn(fmt::format("{} I/O thread: registering buffers and files again after a restart "
                            "failed, it goes on without: {}", _name, error));
    }
  }

  void validate(const IoRequest& r, std::size_t index) const {
    auto where = [&] {
      return fmt::format("{} request {} ({} bytes at offset {} of '{}')", op_name(r.op), index,
                         r.size_bytes, r.offset, r.file ? r.file->path() : std::string("?"));
    };
    if (!r.file || r.file->fd() < 0)
      throw Error(fmt::format("{} request {} has no file", op_name(r.op), index));
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

  // Back to the free list, holding no file references (capacity kept: no allocation in
  // the steady state).
  void reset_locked(Batch* batch) {
    batch->id = 0;
    batch->next = nullptr;
    batch->requests.clear();
    batch->blocks.clear();
    batch->written.clear();
    batch->failures.clear();
    batch->next_block = 0;
    batch->done = false;
    batch->claimed = false;
    batch->undescribed = 0;
    batch->bytes = 0;
    _free.push_back(batch);
  }

  void release_batch(Batch* batch) {
    std::lock_guard lock(_mutex);
    reset_locked(batch);
  }

  // The batch of ticket `id`, once done; one waiter per batch.
  Batch* claim(std::uint64_t id) {
    std::unique_lock lock(_mutex);
    Batch* batch = nullptr;
    for (auto& b : _pool)
      if (id != 0 && b->id == id) batch = b.get();
    if (batch == nullptr || batch->claimed)
      throw Error(fmt::format("wait() on I/O ticket {} that is unknown or already waited for", id));
    batch->claimed = true;
    _done_cv.wait(lock, [batch] { return batch->done; });
    return batch;
  }

  IoError make_error(std::vector<IoFailure> failures, std::size_t undescribed,
                     std::size_t requests) const {
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
      if (!f.message.empty()) {
        message += "the I/O thread failed: " + f.message;
      } else if (f.errno_value == 0) {
        message += "the file ended first (short file)";
      } else {
        char text[256];
        message += fmt::format("{} (errno {})", strerror_r(f.errno_value, text, sizeof text),
                               f.errno_value);
      }
    }
    if (failures.size() > kShown) message += fmt::format("; and {} more", failures.size() - kShown);
    if (undescribed > 0)
      message += fmt::format("; {} more blocks failed in the I/O thread and could not be "
                             "described (out of memory)", undescribed);
    const int code = failures.empty() ? ENOMEM : failures.front().errno_value;
    return IoError(message, code, std::move(failures));
  }

  // Takes up to `max` blocks from the queue; blocks the thread while there are none and
  // `wait_for_work` is set. Returns 0 when stopping (or nothing to take without waiting).
  // Also returns when a registration round starts that `rounds` has not applied.
  std::size_t take_blocks(std::vector<Block*>& out, std::size_t max, bool wait_for_work,
                          const Rounds& rounds) {
    std::unique_lock lock(_mutex);
    if (wait_for_work)
      _work_cv.wait(lock, [&] {
        return _head != nullptr || _stopping || _round.load() != rounds.applied;
      });
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

  void fail(Block& block, int errno_value, std::string message = {}) {
    const IoRequest& r = block.batch->requests[block.request];
    // Only the error path allocates (the path string).
    IoFailure failure{block.request, block.op, r.file->path(), block.offset, block.remaining,
                      errno_value, std::move(message)};
    finish(block, &failure);
  }

  // Fails a block for an exception of its I/O thread; never throws (when even the
  // failure cannot be made, the batch still fails, with a count).
  void fail_noexcept(Block& block, const Cause& cause) noexcept {
    try {
      fail(block, cause.errno_value, cause.message);
      return;
    } catch (...) {
    }
    {
      std::lock_guard lock(_mutex);
      ++block.batch->undescribed;
    }
    try {
      finish(block, nullptr);
    } catch (...) {
    }
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

  // What one I/O thread holds: blocks to (re)start, and the blocks the kernel has, each
  // in a slot so that they can all be failed if the thread's backend throws.
  struct Held {
    explicit Held(std::size_t depth) : completions(depth), slots(depth, nullptr) {
      pending.reserve(2 * depth);
      free_slots.reserve(depth);
      for (std::size_t i = depth; i-- > 0;) free_slots.push_back(static_cast<std::uint32_t>(i));
    }
    std::size_t in_flight() const { return slots.size() - free_slots.size(); }
    void track(Block* block) {
      block->slot = free_slots.back();
      free_slots.pop_back();
      slots[block->slot] = block;
    }
    void untrack(Block* block) {
      slots[block->slot] = nullptr;
      free_slots.push_back(block->slot);
    }
    std::vector<Block*> pending;
    std::vector<Completion> completions;
    std::vector<Block*> slots;
    std::vector<std::uint32_t> free_slots;
    Block* current = nullptr;  // the completion being handled
  };

  // Drives `backend` until the engine stops; throws what the backend (or handling a
  // completion) throws, leaving every block it had in `held`.
  void drive(Backend& backend, Held& held, Rounds& rounds) {
    const std::size_t depth = _config.queue_depth;
    auto backoff = kFirstBackoff;
    for (;;) {
      // A registration round (or a new backend) with nothing in flight: apply it here.
      if (held.in_flight() == 0 && held.pending.empty() && _round.load() != rounds.applied)
        sync_registration(backend, rounds);
      // Keep the kernel queue full.
      while (held.in_flight() < depth) {
        const std::size_t room = depth - held.in_flight();
        if (held.pending.empty() &&
            take_blocks(held.pending, room, held.in_flight() == 0, rounds) == 0)
          break;
        const std::size_t chunk = _config.single_submit ? 1 : std::min(held.pending.size(), room);
        const std::size_t started = backend.submit(std::span(held.pending.data(), chunk));
        for (std::size_t i = 0; i < started; ++i) held.track(held.pending[i]);
        held.pending.erase(held.pending.begin(), held.pending.begin() + static_cast<std::ptrdiff_t>(started));
        if (started > 0) {
          backoff = kFirstBackoff;
          continue;
        }
        // The kernel wants completions reaped first (EAGAIN). With none in flight there
        // is nothing to reap: back off instead of asking again at once.
        if (held.in_flight() == 0) {
          std::this_thread::sleep_for(backoff);
          backoff = std::min(backoff * 2, kLastBackoff);
        }
        break;
      }
      if (held.in_flight() == 0) {
        if (!held.pending.empty()) continue;
        std::lock_guard lock(_mutex);
        if (_stopping && _head == nullptr) return;
        continue;
      }
      const std::size_t min = _config.overlap_events ? 1 : held.in_flight();
      const std::size_t reaped = backend.reap(min, std::span(held.completions.data(), held.in_flight()));
      for (std::size_t i = 0; i < reaped; ++i) {
        Block& block = *held.completions[i].block;
        held.untrack(&block);
        held.current = &block;
        if (complete(block, held.completions[i].result)) held.pending.push_back(&block);
        held.current = nullptr;
      }
    }
  }

  void worker(std::unique_ptr<Backend> backend) {
    Held held(_config.queue_depth);
    Rounds rounds;
    for (;;) {
      try {
        drive(*backend, held, rounds);
        return;
      } catch (...) {
        const Cause cause = cause_of(std::current_exception());
        // The kernel queue goes first, with what it still has (io_destroy waits for the
        // requests in flight), so that no buffer is reported done while in use.
        backend.reset();
        std::size_t failed = 0;
        for (Block* block : held.pending) fail_noexcept(*block, cause), ++failed;
        for (Block* block : held.slots) {
          if (block == nullptr) continue;
          held.untrack(block);  // before failing it: a failed batch may be reused at once
          fail_noexcept(*block, cause), ++failed;
        }
        if (held.current != nullptr) fail_noexcept(*held.current, cause), ++failed;
        held.pending.clear();
        held.current = nullptr;
        try {
          backend = _factory(_config);
          rounds.applied = 0;  // the new kernel queue registers what the owner registered
          log::warn(fmt::format("{} I/O thread: {}; {} blocks in its hands failed, and it "
                                "restarted its kernel queue", _name, cause.message, failed));
        } catch (...) {
          stop_worker(fmt::format("{}; then restarting its kernel queue failed: {}",
                                  cause.message, cause_of(std::current_exception()).message));
          return;
        }
      }
    }
  }

  // An I/O thread that cannot go on. When it was the last one, the blocks still queued
  // fail and submit() refuses from now on, saying why.
  void stop_worker(const std::string& why) noexcept {
    log::error(fmt::format("{} I/O thread stopped: {}", _name, why));
    std::vector<Block*> orphans;
    {
      std::lock_guard lock(_mutex);
      if (_stopped_because.empty()) _stopped_because = why;
      const bool others_left = --_live_workers > 0;
      _registered_cv.notify_all();  // a registration round no longer waits for this thread
      if (others_left) return;
      try {
        for (Batch* batch = _head; batch != nullptr; batch = batch->next)
          for (; batch->next_block < batch->blocks.size(); ++batch->next_block)
            orphans.push_back(&batch->blocks[batch->next_block]);
      } catch (...) {
      }
      _head = _tail = nullptr;
    }
    const Cause cause{"no I/O thread is left to run it: " + why, 0};
    for (Block* block : orphans) fail_noexcept(*block, cause);
  }

  std::string _name;
  AioConfig _config;
  BackendFactory _factory;
  mutable std::mutex _mutex;
  std::condition_variable _work_cv;
  std::condition_variable _done_cv;
  // Registered I/O (guarded by _mutex; _round is also read without it by the I/O threads).
  std::shared_ptr<const Registration> _registration = std::make_shared<Registration>();
  std::vector<std::span<std::byte>> _regions;  // as the owner gave them
  std::vector<SwapFileRef> _files;             // kept open while registered
  std::atomic<std::uint64_t> _round{0};
  std::size_t _round_acks = 0;
  Round _round_result;
  bool _registering = false;
  std::condition_variable _registered_cv;
  Batch* _head = nullptr;
  Batch* _tail = nullptr;
  bool _stopping = false;
  std::size_t _live_workers = 0;   // I/O threads still running
  std::string _stopped_because;    // why the first one stopped
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

std::unique_ptr<IoEngine> make_threaded_engine(std::string name, const AioConfig& config,
                                               BackendFactory factory) {
  return std::make_unique<ThreadedEngine>(std::move(name), config, std::move(factory));
}

}  // namespace detail

IoBatchResult IoEngine::wait(IoTicket ticket) {
  if (!ticket.valid())
    throw Error("wait() on an empty I/O ticket (already waited for, moved from, or never "
                "submitted)");
  if (ticket._engine != this)
    throw Error(fmt::format("wait() on I/O ticket {} of another engine ('{}', not '{}')",
                            ticket._id, ticket._engine->name(), name()));
  ticket._engine = nullptr;
  return wait_batch(std::exchange(ticket._id, 0));
}

IoBatchResult IoTicket::wait() {
  if (!valid())
    throw Error("wait() on an empty I/O ticket (already waited for, moved from, or never "
                "submitted)");
  IoEngine* engine = _engine;
  return engine->wait(std::move(*this));
}

void IoTicket::abandon() noexcept {
  if (_engine == nullptr) return;
  std::exchange(_engine, nullptr)->abandon_batch(std::exchange(_id, 0));
}

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
    return detail::make_threaded_engine(entry.name, config, entry.factory);
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
