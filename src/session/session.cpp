// SwapSession: the epoch protocol of DESIGN.md ("On disk", "Catalog") as a library.
//
// Piece states (per local piece; see session.hpp):
//   none        never swapped out (a fresh session): swap_in and commit refuse it
//   inherited   a re-partitioned resume: the committed copy is described by the old
//               catalog (other ranks' files, other offsets); swap_in reads it from there,
//               commit copies it into this generation's files first
//   committed   the committed copy is in slot c
//   pending     swapped out since the last commit, into slot p (p != c with two slots);
//               swap_in reads slot p; commit makes p the committed slot
//   lost        a swap-out of it failed midway: swap_in and commit refuse it until it is
//               swapped out again
#include "swapcoord/session/session.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/catalog/catalog_paths.hpp"
#include "swapcoord/common/checksum.hpp"
#include "swapcoord/common/host.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/watchdog.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/job_lock.hpp"
#include "swapcoord/io/private_fs.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/async_tensor_swapper.hpp"

namespace swapcoord {

// ---- handles -------------------------------------------------------------------------

namespace {

// Errors of operations whose handle was dropped without wait(): raised by the next call.
struct ErrorSink {
  std::mutex mutex;
  std::exception_ptr first;
  void record(std::exception_ptr e) {
    std::lock_guard lock(mutex);
    if (!first) first = std::move(e);
  }
  void rethrow() {
    std::exception_ptr e;
    {
      std::lock_guard lock(mutex);
      e = std::exchange(first, nullptr);
    }
    if (e) std::rethrow_exception(e);
  }
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

struct SwapHandle::Op {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  bool observed = false;
  SwapFigures figures;
  std::exception_ptr error;
  std::shared_ptr<ErrorSink> sink;

  void finish(SwapFigures f, std::exception_ptr e) {
    {
      std::lock_guard lock(mutex);
      figures = f;
      error = std::move(e);
      done = true;
    }
    cv.notify_all();
  }
  void block() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return done; });
  }
};

SwapHandle::SwapHandle(SwapHandle&& other) noexcept : _op(std::move(other._op)) {}

SwapHandle& SwapHandle::operator=(SwapHandle&& other) noexcept {
  if (this != &other) {
    SwapHandle old(std::move(*this));
    _op = std::move(other._op);
  }
  return *this;
}

SwapHandle::~SwapHandle() {
  if (!_op) return;
  _op->block();
  if (_op->error && !_op->observed && _op->sink) _op->sink->record(_op->error);
}

SwapFigures SwapHandle::wait() {
  if (!_op) throw Error("SwapHandle::wait: the handle holds no operation (moved from, or waited already)");
  const auto op = std::move(_op);
  op->block();
  op->observed = true;
  if (op->error) std::rethrow_exception(op->error);
  return op->figures;
}

bool SwapHandle::ready() const {
  if (!_op) return true;
  std::lock_guard lock(_op->mutex);
  return _op->done;
}

// ---- the I/O thread ------------------------------------------------------------------

namespace {

class Worker {
 public:
  Worker() : _thread([this] { run(); }) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    {
      std::lock_guard lock(_mutex);
      _stop = true;
    }
    _cv.notify_all();
    _thread.join();  // runs what is queued first
  }

  void post(std::shared_ptr<SwapHandle::Op> op, std::function<SwapFigures()> work) {
    {
      std::lock_guard lock(_mutex);
      _queue.emplace_back(std::move(op), std::move(work));
      ++_pending;
    }
    _cv.notify_all();
  }
  void wait_idle() {
    std::unique_lock lock(_mutex);
    _idle.wait(lock, [&] { return _pending == 0; });
  }

 private:
  void run() {
    std::unique_lock lock(_mutex);
    for (;;) {
      _cv.wait(lock, [&] { return _stop || !_queue.empty(); });
      if (_queue.empty()) return;  // stopping, nothing left
      auto [op, work] = std::move(_queue.front());
      _queue.pop_front();
      lock.unlock();
      SwapFigures figures;
      std::exception_ptr error;
      try {
        figures = work();
      } catch (...) {
        error = std::current_exception();
      }
      op->finish(figures, error);
      lock.lock();
      --_pending;
      if (_pending == 0) _idle.notify_all();
    }
  }

  std::mutex _mutex;
  std::condition_variable _cv, _idle;
  std::deque<std::pair<std::shared_ptr<SwapHandle::Op>, std::function<SwapFigures()>>> _queue;
  std::size_t _pending = 0;
  bool _stop = false;
  std::thread _thread;
};

std::string absolute_path(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

std::string broadcast_string(MPI_Comm comm, std::string text, int root = 0) {
  unsigned long long length = text.size();
  mpi_check(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, root, comm), "MPI_Bcast (length)");
  text.resize(length);
  mpi_check(MPI_Bcast(text.data(), static_cast<int>(length), MPI_CHAR, root, comm), "MPI_Bcast (text)");
  return text;
}

// Runs `fn` on every rank; if it throws on any rank, every rank throws the same: a
// ConfigError when the first failing rank's was one, else a PhaseError naming that rank.
template <class Fn>
void collectively(MPI_Comm comm, const std::string& who, Fn&& fn) {
  std::string problem;  // "C" or "E" (the kind), then the message
  try {
    fn();
  } catch (const ConfigError& e) {
    problem = std::string("C") + e.what();
  } catch (const std::exception& e) {
    problem = "E" + who + ": " + e.what();
  } catch (...) {
    problem = "E" + who + ": an exception that is not a std::exception";
  }
  const auto [rank, message] = first_message(comm, problem);
  if (rank < 0) return;
  if (message.front() == 'C') throw ConfigError(message.substr(1));
  throw PhaseError(message.substr(1), rank);
}

struct PieceState {
  enum class Kind : std::uint8_t { none, inherited, committed, pending, lost };
  Kind kind = Kind::none;
  std::int8_t committed_slot = -1;  // also kept while pending
  std::int8_t pending_slot = -1;
  std::uint64_t committed_checksum = 0, pending_checksum = 0;
  std::int32_t committed_version = 0, pending_version = 0;
};

constexpr std::uint64_t kNotPrefetched = ~std::uint64_t{0};
// Bytes copied (or produced) and then hashed in one step on the swap path: small enough to
// be hashed while still in the core's cache, so the checksum costs no second pass over
// memory. Copies to and from a GPU go a staging chunk at a time instead.
constexpr std::size_t kHashStep = 256 << 10;
constexpr int kCatalogPartTag = 7801;  // on Impl::parts_comm

// The buffers of sends given up on: never freed (MPI may still read them), and reachable,
// so that leak checkers do not count them.
void keep_for_ever(std::vector<std::byte> bytes) {
  static std::mutex mutex;
  static auto* kept = new std::vector<std::vector<std::byte>>;
  const std::lock_guard lock(mutex);
  kept->push_back(std::move(bytes));
}

// A rank's catalog rows on their way to rank 0: the buffer lives until the send is done.
class PartSend {
 public:
  PartSend() = default;
  PartSend(const PartSend&) = delete;
  PartSend& operator=(const PartSend&) = delete;
  ~PartSend() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized || _request == MPI_REQUEST_NULL) return;
    int done = 0;
    MPI_Test(&_request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    // A commit that failed before rank 0 took these rows. A send may not be cancellable,
    // and rank 0 may never take it (it stopped, which is why the commit failed): rather
    // than wait for it (and keep this rank, and so the job, alive past every deadline),
    // free the request as PhaseSync does and keep its buffer, which MPI may still read.
    MPI_Cancel(&_request);
    MPI_Test(&_request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    MPI_Request_free(&_request);
    keep_for_ever(std::move(_bytes));
  }
  void start(std::vector<std::byte> bytes, MPI_Comm comm) {
    _bytes = std::move(bytes);
    if (_bytes.size() > static_cast<std::size_t>(INT_MAX))
      throw Error(fmt::format("catalog: this rank's rows take {} bytes, more than one message carries", _bytes.size()));
    mpi_check(MPI_Isend(_bytes.data(), static_cast<int>(_bytes.size()), MPI_BYTE, 0, kCatalogPartTag, comm, &_request),
              "MPI_Isend (catalog rows)");
  }
  // Rank 0 takes every part it is sent, a late one of a failed commit included.
  void wait() {
    if (_request != MPI_REQUEST_NULL) mpi_check(MPI_Wait(&_request, MPI_STATUS_IGNORE), "MPI_Wait (catalog rows)");
  }

 private:
  std::vector<std::byte> _bytes;
  MPI_Request _request = MPI_REQUEST_NULL;
};

// Rank 0: every rank's packed rows of epoch `epoch` (its own first), each waited for until
// `timeout` has passed; rows of an earlier, failed commit are dropped. Throws naming the
// ranks whose rows did not come.
std::vector<std::vector<std::byte>> receive_catalog_parts(MPI_Comm comm, int epoch, std::vector<std::byte> own,
                                                          std::chrono::milliseconds timeout) {
  int size = 1;
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  std::vector<std::vector<std::byte>> parts(static_cast<std::size_t>(size));
  std::vector<bool> got(static_cast<std::size_t>(size), false);
  parts[0] = std::move(own);
  got[0] = true;
  int missing = size - 1;
  const auto waiting_since = Clock::now(), deadline = waiting_since + timeout;
  while (missing > 0) {
    int flag = 0;
    MPI_Status status{};
    mpi_check(MPI_Iprobe(MPI_ANY_SOURCE, kCatalogPartTag, comm, &flag, &status), "MPI_Iprobe (catalog rows)");
    if (!flag) {
      if (Clock::now() > deadline) break;
      std::this_thread::sleep_for(poll_pause(Clock::now() - waiting_since));
      continue;
    }
    int count = 0;
    mpi_check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count (catalog rows)");
    std::vector<std::byte> bytes(static_cast<std::size_t>(count));
    mpi_check(MPI_Recv(bytes.data(), count, MPI_BYTE, status.MPI_SOURCE, kCatalogPartTag, comm, MPI_STATUS_IGNORE),
              "MPI_Recv (catalog rows)");
    const auto from = static_cast<std::size_t>(status.MPI_SOURCE);
    if (catalog_part_epoch(bytes) != epoch || got[from]) continue;  // a failed commit's
    parts[from] = std::move(bytes);
    got[from] = true;
    --missing;
  }
  if (missing > 0) {
    std::string ranks;
    for (int r = 0; r < size; ++r)
      if (!got[static_cast<std::size_t>(r)]) ranks += fmt::format("{}{}", ranks.empty() ? "" : ",", r);
    throw Error(fmt::format("the catalog rows of ranks {} did not reach rank 0 within {:.3g} s", ranks,
                            std::chrono::duration<double>(timeout).count()));
  }
  return parts;
}
constexpr const char* kJobLockName = ".swapcoord.lock";             // in <root>/<job>
constexpr const char* kCatalogLockName = ".swapcoord-catalog.lock";  // in the catalog directory

}  // namespace

// ---- the session ---------------------------------------------------------------------

struct SwapSession::Impl {
  std::vector<JobLock> locks;  // first: released last, after the files are closed
  SessionOptions options;
  std::vector<TensorSpec> tensors;
  std::string who;  // "rank N@host"
  std::optional<Topology> topo;
  std::vector<std::string> roots;  // this node's, absolute: the only ones a resumed catalog may be read from
  SwapPlan plan;
  std::span<const PlanPiece> mine;
  std::vector<std::int32_t> local_of_tensor;  // tensor id -> index into mine, or -1
  std::size_t first_file = 0;                 // index of plan.files[0] among all files of the plan
  std::size_t file_count = 0;
  std::string catalog_dir;
  int generation = 0;
  int committed_epoch = -1;
  std::array<std::vector<SwapFile>, 2> files;           // per slot, this rank's plan files
  std::array<std::vector<unsigned char>, 2> dirty;      // written since the last commit
  std::vector<PieceState> states;
  std::optional<Catalog> resumed;
  std::optional<CatalogIndex> resumed_index;
  std::vector<std::optional<SwapFile>> resumed_files;
  bool repartitioned = false;
  std::unique_ptr<IoEngine> engine;
  PinnedAllocation staging_pinned;
  std::unique_ptr<std::byte, decltype(&std::free)> staging_plain{nullptr, &std::free};
  std::vector<TensorView> staging;
  std::optional<AsyncTensorSwapper> swapper;
  PinnedAllocation prefetch_area;
  // Per CUDA device index: the stream and event that copy device tensors to and from
  // staging (made by the caller's thread in check_views, used by the I/O thread).
  std::map<int, device::DeviceStager> stagers;
  std::mutex stagers_mutex;
  device::DeviceStager& stager(int index) {
    std::lock_guard lock(stagers_mutex);
    auto it = stagers.find(index);
    if (it == stagers.end()) it = stagers.emplace(index, device::DeviceStager(index)).first;
    return it->second;
  }
  std::vector<std::uint64_t> prefetched;  // per local piece: offset in prefetch_area
  // Pieces put in the area (local piece, offset), oldest first; an entry whose piece is no
  // longer at that offset (taken by swap_in, dropped, prefetched again) is stale.
  std::deque<std::pair<std::uint32_t, std::uint64_t>> prefetch_live;
  std::uint64_t prefetch_head = 0;           // where the next prefetched piece goes
  std::optional<PhaseSync> sync;
  Comm parts_comm;     // the commit's rows to rank 0
  PartSend part_send;  // this rank's rows of the last commit (ranks other than 0)
  std::optional<Watchdog> watchdog;
  std::chrono::milliseconds timeout{0};
  mutable std::mutex stats_mutex;
  SessionStats stats;
  CommitFigures last_commit;
  std::shared_ptr<ErrorSink> sink = std::make_shared<ErrorSink>();
  std::function<void(const char*)> commit_stage;
  // Scratch of the I/O thread (sized once).
  std::vector<SwapLocation> locations;
  std::vector<std::uint32_t> order;  // local piece of each location
  std::vector<std::uint64_t> digests;
  // The job's checksum (swap.checksum, or the resumed catalog's): `hash` for the swap
  // path, `row_hash` for the old rows read_inherited checks as they go by.
  Checksum hash, row_hash;
  std::vector<CatalogSegment> segments;
  Worker worker;  // last: destroyed first, after running what is queued

  MPI_Comm world() const { return topo->world(); }
  int physical_slot(int slot) const { return 2 * (generation % 2) + slot; }
  std::string file_path(std::size_t k, int slot) const {
    const PlanFile& f = plan.files[k];
    return (std::filesystem::path(absolute_path(topo->roots().at(static_cast<std::size_t>(f.root)))) /
            file_relative_path(f, options.job, physical_slot(slot)))
        .string();
  }
  void ensure_files(int slot);
  void write_zeros(SwapFile& file);  // swap.prepare "write", through the staging memory
  void register_io(std::size_t staging_bytes);
  SwapLocation location(std::size_t li, int slot) {
    const PlanPiece& p = mine[li];
    return {&files[static_cast<std::size_t>(slot)].at(p.file - first_file), p.offset, p.aligned_bytes};
  }
  std::size_t local_index(std::uint32_t id) const;
  // Checks a call's ids (range, owned by this rank, none twice) and views (sizes, host
  // memory). Called from the caller's thread (one caller thread at a time).
  void check_ids(std::span<const std::uint32_t> ids);
  void check_views(std::span<const std::uint32_t> ids, std::span<const TensorView> views);
  std::vector<std::uint32_t> seen;  // check_ids: marks per local piece
  std::uint32_t stamp = 0;
  int target_slot(const PieceState& s) const {
    if (s.kind == PieceState::Kind::pending) return s.pending_slot;
    if (s.committed_slot < 0) return 0;
    return options.slots == 2 ? 1 - s.committed_slot : s.committed_slot;
  }
  int readable_slot(std::size_t li) const;
  SwapHandle post(std::function<SwapFigures()> work);
  void wait_all();
  // fill / drain move the bytes of location i at an offset; `step` bytes at most per call
  // (kHashStep, or the whole staging chunk for device copies).
  // `in_place`: empty, or per id the part moved straight from and to the caller's memory
  // (AsyncTensorSwapper's rule; fill and drain see that memory itself there).
  SwapFigures do_swap_out(std::vector<std::uint32_t> ids, FunctionRef<void(std::size_t, std::uint64_t, std::span<std::byte>)> fill,
                          std::size_t step = kHashStep, std::span<const InPlace> in_place = {});
  SwapFigures do_swap_in(std::vector<std::uint32_t> ids, FunctionRef<void(std::size_t, std::uint64_t, std::span<const std::byte>)> drain,
                         std::size_t step = kHashStep, std::span<const InPlace> in_place = {});
  // Host views aligned to the plan's alignment move in place: their aligned part.
  std::vector<InPlace> in_place_of(std::span<const TensorView> views) const;
  SwapFigures do_prefetch(std::vector<std::uint32_t> ids);
  void read_inherited(std::size_t li, FunctionRef<void(std::uint64_t, std::span<const std::byte>)> sink, std::uint64_t& bytes);
  void migrate(std::size_t li);
  void committed(int epoch);  // a commit is in place: pending copies become committed
  // A commit failed and rank 0 could not tell whether its rename happened: pending copies
  // may be what the catalog on disk calls committed, so they must not be rewritten.
  bool commit_uncertain = false;
  std::string missing_inherited(const PlanPiece& p, std::uint32_t file, const std::string& why) const;
  void check_resumed_files();
  void add_stats(SessionStats::Kind SessionStats::*kind, const SwapFigures& f) {
    std::lock_guard lock(stats_mutex);
    auto& k = stats.*kind;
    ++k.calls;
    k.bytes += f.bytes;
    k.seconds += f.seconds;
  }
  void stage(const char* name) const {
    if (commit_stage) commit_stage(name);
  }
};

std::size_t SwapSession::Impl::local_index(std::uint32_t id) const {
  if (id >= tensors.size())
    throw Error(fmt::format("{}: tensor id {} is out of range (the session has {} tensors)", who, id, tensors.size()));
  const auto li = local_of_tensor[id];
  if (li < 0)
    throw Error(fmt::format("{}: tensor {} ('{}') has no piece on rank {} (see local_pieces())", who, id,
                            tensors[id].name, topo->rank()));
  return static_cast<std::size_t>(li);
}

void SwapSession::Impl::check_ids(std::span<const std::uint32_t> ids) {
  if (++stamp == 0) {  // wrapped: start the marks again
    std::fill(seen.begin(), seen.end(), 0);
    stamp = 1;
  }
  for (const auto id : ids) {
    const std::size_t li = local_index(id);
    if (seen[li] == stamp)
      throw Error(fmt::format("{}: tensor {} ('{}') is named twice in one call", who, id, tensors[id].name));
    seen[li] = stamp;
  }
}

void SwapSession::Impl::check_views(std::span<const std::uint32_t> ids, std::span<const TensorView> views) {
  if (ids.size() != views.size())
    throw Error(fmt::format("{}: {} tensor ids but {} views", who, ids.size(), views.size()));
  check_ids(ids);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const PlanPiece& p = mine[local_index(ids[i])];
    const TensorSpec& t = tensors[ids[i]];
    const TensorView& v = views[i];
    if (!v.device.is_cpu()) {
      try {
        stager(v.device.index);
        device::check_device_pointer(v.data, v.size_bytes(), v.device.index, "its memory");
      } catch (const std::exception& e) {
        throw Error(fmt::format("{}: the view of tensor '{}' is on {}: {}", who, t.name, to_string(v.device), e.what()));
      }
    }
    if (v.size_bytes() != p.bytes || (v.data == nullptr && p.bytes > 0))
      throw Error(fmt::format("{}: the view of tensor '{}' has {} bytes ({} x {}) but this rank's piece is {} "
                              "elements ({} bytes) from element {}", who, t.name, v.size_bytes(), v.numel,
                              dtype_name(v.dtype), p.numel, p.bytes, p.element_offset));
  }
}

int SwapSession::Impl::readable_slot(std::size_t li) const {
  const PieceState& s = states[li];
  switch (s.kind) {
    case PieceState::Kind::pending: return s.pending_slot;
    case PieceState::Kind::committed: return s.committed_slot;
    case PieceState::Kind::inherited: return -1;
    case PieceState::Kind::lost:
      throw Error(fmt::format("{}: tensor '{}': its last swap-out failed, so it holds no usable copy; swap it "
                              "out again", who, tensors[mine[li].tensor].name));
    case PieceState::Kind::none: break;
  }
  throw Error(fmt::format("{}: tensor '{}' was never swapped out (nothing to swap in)", who,
                          tensors[mine[li].tensor].name));
}

// aio.register: the staging buffers and this rank's files (every slot's, made at set-up)
// registered with the engine, for io_uring's fixed buffers and files. A refusal (a locked-
// memory limit, memory the kernel cannot pin) is a warning: the session goes on without.
void SwapSession::Impl::register_io(std::size_t staging_bytes) {
  const std::vector<std::span<std::byte>> regions{{staging.front().bytes(), staging_bytes}};
  std::vector<SwapFileRef> refs;
  for (const auto& slot : files)
    for (const auto& f : slot) refs.push_back(f);
  try {
    if (!engine->register_buffers(regions) || !engine->register_files(refs))
      log::warn(fmt::format("{}: aio.register: the {} backend has no registered I/O; going on without", who,
                            engine->name()));
  } catch (const Error& e) {
    const IoRegistration now = engine->registration();
    log::warn(fmt::format("{}: aio.register: {}; going on with {} registered buffers and {} files", who, e.what(),
                          now.buffers, now.files));
  }
}

void SwapSession::Impl::ensure_files(int slot) {
  auto& out = files[static_cast<std::size_t>(slot)];
  if (!out.empty() || file_count == 0) return;
  std::vector<SwapFile> made;
  made.reserve(file_count);
  std::map<std::string, std::pair<UniqueFd, bool>> dirs;  // rank directory -> (open, holds a new file)
  std::vector<std::string> created;                       // files this call made (removed if it fails)
  std::vector<unsigned char> fresh(file_count, 0);         // ... by index
  try {
    for (std::size_t k = 0; k < file_count; ++k) {
      const PlanFile& f = plan.files[k];
      const std::string root = absolute_path(topo->roots().at(static_cast<std::size_t>(f.root)));
      const std::string relative_dir =
          std::filesystem::path(file_relative_path(f, options.job, physical_slot(slot))).parent_path().string();
      auto dir = dirs.find(root + "/" + relative_dir);
      if (dir == dirs.end())
        dir = dirs.emplace(root + "/" + relative_dir,
                           std::pair{open_private_subdirs(root, relative_dir, "swap files"), false}).first;
      const std::string path = file_path(k, slot);
      struct stat st {};
      const bool existed = ::lstat(path.c_str(), &st) == 0;
      if (!existed) created.push_back(path);
      fresh[k] = !existed;
      made.push_back(SwapFile::create(path, f.size_bytes, options.aio.direct));
      if (::fchmod(made.back().fd(), 0600) != 0) throw SystemError(fmt::format("cannot chmod 0600 '{}'", path), errno);
      if (!existed) dir->second.second = true;
    }
    // swap.prepare "write": each new file is written once with zeros and synced, now, so
    // that its blocks are allocated and written (ext4 and XFS convert a preallocated,
    // unwritten extent on its first write, and the next fdatasync journals that): the
    // first swap-out into the slot is then an overwrite.
    if (options.prepare == "write")
      for (std::size_t k = 0; k < file_count; ++k)
        if (fresh[k]) {
          write_zeros(made[k]);
          fresh[k] = 0;  // its allocation is durable now
        }
    // New names are durable before any catalog can name them.
    for (const auto& [path, dir] : dirs)
      if (dir.second) fsync_fd(dir.first.get(), path);
  } catch (...) {
    made.clear();
    for (const auto& path : created) ::unlink(path.c_str());  // a full disk keeps no half-made file
    throw;
  }
  out = std::move(made);
  // A new file's allocation is made durable by the next commit, with the files written.
  dirty[static_cast<std::size_t>(slot)] = std::move(fresh);
}

void SwapSession::Impl::write_zeros(SwapFile& file) {
  // The whole staging memory, zeroed, written over the file in staging-sized requests.
  const std::size_t chunk = staging.size() * staging.front().size_bytes();
  std::byte* zeros = staging.front().bytes();
  std::memset(zeros, 0, chunk);
  std::vector<IoRequest> writes;
  for (std::uint64_t offset = 0; offset < file.size_bytes(); offset += chunk)
    writes.push_back({IoOp::write, &file, zeros, offset,
                      static_cast<std::size_t>(std::min<std::uint64_t>(chunk, file.size_bytes() - offset))});
  engine->run(writes);
  file.sync();
}

std::vector<InPlace> SwapSession::Impl::in_place_of(std::span<const TensorView> views) const {
  std::vector<InPlace> in_place;
  for (const auto& v : views) in_place.push_back(in_place_part(v, plan.options.alignment_bytes));  // the swapper's
  return in_place;
}

SwapHandle SwapSession::Impl::post(std::function<SwapFigures()> work) {
  auto op = std::make_shared<SwapHandle::Op>();
  op->sink = sink;
  worker.post(op, std::move(work));
  return SwapHandle(op);
}

void SwapSession::Impl::wait_all() {
  worker.wait_idle();
  sink->rethrow();
}

SwapFigures SwapSession::Impl::do_swap_out(std::vector<std::uint32_t> ids,
                                           FunctionRef<void(std::size_t, std::uint64_t, std::span<std::byte>)> fill,
                                           std::size_t step, std::span<const InPlace> in_place) {
  const auto start = Clock::now();
  locations.clear();
  order.clear();
  std::array<bool, 2> need{false, false};
  for (const auto id : ids) {
    const PieceState& st = states[local_index(id)];
    if (commit_uncertain && st.kind == PieceState::Kind::pending)
      throw Error(fmt::format("{}: tensor '{}': the last commit failed after its catalog may have been renamed "
                              "into place, so its copy may be the committed one; commit again before swapping it "
                              "out", who, tensors[id].name));
    need[static_cast<std::size_t>(target_slot(st))] = true;
  }
  for (int s = 0; s < 2; ++s)
    if (need[static_cast<std::size_t>(s)]) ensure_files(s);
  for (const auto id : ids) {
    const std::size_t li = local_index(id);
    locations.push_back(location(li, target_slot(states[li])));
    order.push_back(static_cast<std::uint32_t>(li));
    prefetched[li] = kNotPrefetched;
  }
  digests.assign(ids.size(), 0);
  Checksum& h = hash;
  try {
    swapper->write_stream(locations, [&](std::size_t i, std::uint64_t chunk_offset, std::span<std::byte> chunk) {
      const PlanPiece& p = mine[order[i]];
      if (chunk_offset == 0) h.reset();
      for (std::size_t k = 0; k < chunk.size(); k += step) {  // filled, then hashed while in cache
        const auto out = chunk.subspan(k, std::min(step, chunk.size() - k));
        const std::uint64_t offset = chunk_offset + k;
        fill(i, offset, out);
        if (offset >= p.bytes) continue;
        const auto data = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), p.bytes - offset));
        h.update(out.data(), data);
        if (offset + data == p.bytes) digests[i] = h.digest();
      }
    }, in_place);
  } catch (...) {
    for (const auto li : order) states[li].kind = PieceState::Kind::lost;
    throw;
  }
  SwapFigures f;
  for (std::size_t i = 0; i < order.size(); ++i) {
    PieceState& s = states[order[i]];
    const int slot = target_slot(s);  // as above: each piece is named once per call
    s.kind = PieceState::Kind::pending;
    s.pending_slot = static_cast<std::int8_t>(slot);
    s.pending_checksum = digests[i];
    s.pending_version = committed_epoch + 1;
    dirty[static_cast<std::size_t>(slot)][mine[order[i]].file - first_file] = 1;
    f.bytes += locations[i].bytes;
  }
  f.pieces = order.size();
  f.seconds = seconds_since(start);
  add_stats(&SessionStats::swap_out, f);
  return f;
}

std::string SwapSession::Impl::missing_inherited(const PlanPiece& p, std::uint32_t file, const std::string& why) const {
  const CatalogFile& f = resumed->files.at(file);
  int node = -1;
  for (const auto& r : resumed->ranks)
    if (r.rank == f.owner) node = r.node;
  return fmt::format("resume: tensor '{}' needs '{}' (written by rank {} on node {} of the catalog), which this rank "
                     "(node {}) cannot read: {}. Swap roots are node-local: a resume that moves pieces between "
                     "nodes needs the old files on a shared filesystem", tensors[p.tensor].name,
                     resumed->file_path(file), f.owner, node, topo->node(), why);
}

void SwapSession::Impl::read_inherited(std::size_t li, FunctionRef<void(std::uint64_t, std::span<const std::byte>)> out,
                                       std::uint64_t& bytes) {
  // Reads the piece's bytes from the resumed catalog's files in staging-buffer chunks.
  // Each old row that this piece holds whole is checked against its recorded checksum as
  // it goes by (rows cut by the new piece boundaries are checked by verify()).
  const PlanPiece& p = mine[li];
  const std::uint64_t begin = p.element_offset * dtype_size(tensors[p.tensor].dtype);
  const std::size_t chunk = staging.front().size_bytes();
  // Reads are rounded up to the smaller of the two alignments: within the row, and within
  // the chunk (chunks and rows start at multiples of it).
  const std::uint64_t unit = std::min<std::uint64_t>(resumed->alignment, plan.options.alignment_bytes);
  std::byte* buffer = staging.front().bytes();
  Checksum& h = row_hash;
  constexpr std::size_t kNone = ~std::size_t{0};
  std::size_t hashing = kNone;  // the old row being hashed
  for (std::uint64_t done = 0; done < p.bytes; done += chunk) {
    const std::uint64_t length = std::min<std::uint64_t>(chunk, p.bytes - done);
    segments.clear();
    resumed_index->locate(p.tensor, begin + done, begin + done + length, segments);
    for (const CatalogSegment& seg : segments) {
      auto& file = resumed_files.at(seg.file);
      if (!file) {
        try {
          file.emplace(SwapFile::open(checked_file_path(*resumed, seg.file, roots), options.aio.direct));
        } catch (const std::exception& e) {
          throw Error(missing_inherited(p, seg.file, e.what()));
        }
      }
      std::byte* at = buffer + (seg.tensor_offset - begin - done);
      const IoRequest read{IoOp::read, &*file, at, seg.file_offset, std::min(seg.read_bytes, align_up(seg.bytes, unit))};
      engine->run({&read, 1});
      bytes += read.size_bytes;
      const CatalogRow& row = resumed->tensors[seg.row];
      const std::uint64_t row_begin = row.element_offset * dtype_size(row.dtype);
      if (seg.tensor_offset == row_begin) {
        h.reset();
        hashing = seg.row;
      }
      if (hashing != seg.row) continue;
      h.update(at, static_cast<std::size_t>(seg.bytes));
      if (seg.tensor_offset + seg.bytes == row_begin + row.bytes) {
        hashing = kNone;
        if (const auto got = h.digest(); got != row.checksum)
          throw Error(fmt::format("{}: resume: tensor '{}' shard {} ({} bytes at offset {} of '{}'): checksum {:016x}, "
                                  "the catalog says {:016x}", who, row.name, row.shard, row.bytes, row.offset,
                                  file->path(), got, row.checksum));
      }
    }
    out(done, {buffer, static_cast<std::size_t>(length)});
  }
}

SwapFigures SwapSession::Impl::do_swap_in(std::vector<std::uint32_t> ids,
                                          FunctionRef<void(std::size_t, std::uint64_t, std::span<const std::byte>)> drain,
                                          std::size_t step, std::span<const InPlace> in_place) {
  const auto start = Clock::now();
  SwapFigures f;
  locations.clear();
  order.clear();
  std::vector<std::size_t> index_of;  // per location: index into ids
  std::vector<InPlace> direct;        // per location, if in_place is given
  std::vector<std::size_t> from_prefetch, from_catalog;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::size_t li = local_index(ids[i]);
    const int slot = readable_slot(li);
    if (slot < 0) {
      from_catalog.push_back(i);
    } else if (prefetched[li] != kNotPrefetched) {
      from_prefetch.push_back(i);
    } else {
      locations.push_back(location(li, slot));
      order.push_back(static_cast<std::uint32_t>(li));
      index_of.push_back(i);
      if (!in_place.empty()) direct.push_back(in_place[i]);
    }
  }
  auto expected = [&](std::size_t li) {
    const PieceState& s = states[li];
    return s.kind == PieceState::Kind::pending ? s.pending_checksum : s.committed_checksum;
  };
  auto mismatch = [&](std::size_t li, std::uint64_t got, const std::string& where) {
    const PlanPiece& p = mine[li];
    return Error(fmt::format("{}: tensor '{}' ({} bytes at offset {} of '{}'): checksum {:016x} after swap-in, "
                             "{:016x} at swap-out", who, tensors[p.tensor].name, p.bytes, p.offset, where, got,
                             expected(li)));
  };
  Checksum& h = hash;
  const bool verify = options.verify;
  if (!locations.empty()) {
    swapper->read_stream(locations, [&](std::size_t i, std::uint64_t chunk_offset, std::span<const std::byte> chunk) {
      const std::size_t li = order[i];
      const PlanPiece& p = mine[li];
      if (!verify) return drain(index_of[i], chunk_offset, chunk);
      if (chunk_offset == 0) h.reset();
      for (std::size_t k = 0; k < chunk.size(); k += step) {  // drained, then hashed while in cache
        const auto in = chunk.subspan(k, std::min(step, chunk.size() - k));
        const std::uint64_t offset = chunk_offset + k;
        drain(index_of[i], offset, in);
        if (offset >= p.bytes) continue;
        const auto data = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), p.bytes - offset));
        h.update(in.data(), data);
        if (offset + data == p.bytes) {
          const auto got = h.digest();
          if (got != expected(li)) throw mismatch(li, got, locations[i].file->path());
        }
      }
    }, direct);
    for (const auto& l : locations) f.bytes += l.bytes;
  }
  for (const std::size_t i : from_prefetch) {
    const std::size_t li = local_index(ids[i]);
    const PlanPiece& p = mine[li];
    const std::span<const std::byte> whole(prefetch_area.data() + prefetched[li], p.aligned_bytes);
    if (verify) h.reset();
    for (std::size_t k = 0; k < whole.size(); k += verify ? step : whole.size()) {
      const auto in = whole.subspan(k, verify ? std::min(step, whole.size() - k) : whole.size());
      drain(i, k, in);
      if (verify && k < p.bytes) h.update(in.data(), static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), p.bytes - k)));
    }
    if (verify) {
      const auto got = h.digest();
      if (got != expected(li)) throw mismatch(li, got, "the prefetched copy");
    }
    f.bytes += p.aligned_bytes;
    f.prefetched_bytes += p.aligned_bytes;
    prefetched[li] = kNotPrefetched;
  }
  for (const std::size_t i : from_catalog)
    read_inherited(local_index(ids[i]), [&](std::uint64_t offset, std::span<const std::byte> in) { drain(i, offset, in); },
                   f.bytes);
  f.pieces = ids.size();
  f.seconds = seconds_since(start);
  add_stats(&SessionStats::swap_in, f);
  return f;
}

SwapFigures SwapSession::Impl::do_prefetch(std::vector<std::uint32_t> ids) {
  // The prefetch area is a ring: new pieces go after the last ones and, when the end is
  // reached, from the start again, dropping only the oldest pieces they overlap (the
  // live pieces, oldest first, lie in ring order from the head on). So a prefetch of the
  // next group does not discard the current group's pieces that a swap_in has yet to take,
  // as long as both fit.
  const auto start = Clock::now();
  std::vector<int> slot_of(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) slot_of[i] = readable_slot(local_index(ids[i]));  // throws first
  if (prefetch_area.empty()) {
    const std::uint64_t bytes = options.prefetch_bytes ? options.prefetch_bytes : options.buffer_count * options.buffer_size;
    prefetch_area = PinnedAllocation(static_cast<std::size_t>(bytes));
  }
  const std::uint64_t capacity = prefetch_area.size_bytes();
  std::vector<IoRequest> reads;
  std::vector<std::uint32_t> added;
  SwapFigures f;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::size_t li = local_index(ids[i]);
    const PlanPiece& p = mine[li];
    if (slot_of[i] < 0 || prefetched[li] != kNotPrefetched || p.aligned_bytes > capacity) continue;
    if (prefetch_head + p.aligned_bytes > capacity) prefetch_head = 0;
    const std::uint64_t begin = prefetch_head, end = begin + p.aligned_bytes;
    auto overlaps = [&](std::uint32_t other) {
      const std::uint64_t at = prefetched[other];
      return at != kNotPrefetched && at < end && at + mine[other].aligned_bytes > begin;
    };
    // The ring came round to this call's first piece: the group is larger than the area.
    if (!added.empty() && overlaps(added.front())) break;
    while (!prefetch_live.empty()) {  // drop what is gone (taken, dropped, moved) or overlapped
      const auto [other, at] = prefetch_live.front();
      const bool stale = prefetched[other] != at;
      if (!stale && !overlaps(other)) break;
      if (!stale) prefetched[other] = kNotPrefetched;
      prefetch_live.pop_front();
    }
    const SwapLocation where = location(li, slot_of[i]);
    reads.push_back({IoOp::read, where.file, prefetch_area.data() + begin, where.offset, where.bytes});
    added.push_back(static_cast<std::uint32_t>(li));
    prefetched[li] = begin;
    prefetch_head = end;
    f.bytes += p.aligned_bytes;
  }
  try {
    if (!reads.empty()) engine->run(reads);
  } catch (...) {
    for (const auto li : added) prefetched[li] = kNotPrefetched;
    throw;
  }
  for (const auto li : added) prefetch_live.push_back({li, prefetched[li]});
  f.pieces = added.size();
  f.seconds = seconds_since(start);
  add_stats(&SessionStats::prefetch, f);
  return f;
}

void SwapSession::Impl::migrate(std::size_t li) {
  // An inherited piece that was not swapped out since the resume: copy its committed bytes
  // from the old files into this generation's files (through staging buffer 1).
  const PlanPiece& p = mine[li];
  const int slot = target_slot(states[li]);
  ensure_files(slot);
  const SwapLocation where = location(li, slot);
  std::byte* out = staging.at(1).bytes();
  Checksum& h = hash;
  h.reset();
  std::uint64_t read_bytes = 0;
  read_inherited(li, [&](std::uint64_t offset, std::span<const std::byte> in) {
    const std::uint64_t length = align_up(in.size(), plan.options.alignment_bytes);
    std::memcpy(out, in.data(), in.size());
    std::memset(out + in.size(), 0, static_cast<std::size_t>(length - in.size()));
    h.update(in.data(), in.size());
    const IoRequest write{IoOp::write, where.file, out, where.offset + offset, length};
    engine->run({&write, 1});
  }, read_bytes);
  PieceState& s = states[li];
  s.kind = PieceState::Kind::pending;
  s.pending_slot = static_cast<std::int8_t>(slot);
  s.pending_checksum = h.digest();
  s.pending_version = committed_epoch + 1;
  dirty[static_cast<std::size_t>(slot)][p.file - first_file] = 1;
}

void SwapSession::Impl::check_resumed_files() {
  // Every file this rank will read its committed pieces from must be there, whole.
  auto need = [&](const std::string& path, std::uint64_t size, const std::function<std::string(const std::string&)>& what) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw Error(what(errno_message("stat", errno)));
    if (!S_ISREG(st.st_mode)) throw Error(what("not a regular file"));
    if (static_cast<std::uint64_t>(st.st_size) < size)
      throw Error(what(fmt::format("it has {} bytes, the catalog expects {}", st.st_size, size)));
  };
  if (!repartitioned) {
    std::array<bool, 2> used{false, false};
    for (const auto& st : states) used[static_cast<std::size_t>(st.committed_slot)] = true;
    for (int slot = 0; slot < 2; ++slot)
      if (used[static_cast<std::size_t>(slot)])
        for (std::size_t k = 0; k < file_count; ++k) {
          const std::string path = file_path(k, slot);
          need(path, plan.files[k].size_bytes, [&](const std::string& why) {
            return fmt::format("resume: catalog '{}/catalog.h5' needs '{}': {}", catalog_dir, path, why);
          });
        }
    return;
  }
  std::vector<unsigned char> checked(resumed->files.size(), 0);
  for (const PlanPiece& p : mine) {
    const std::uint64_t begin = p.element_offset * dtype_size(tensors[p.tensor].dtype);
    segments.clear();
    resumed_index->locate(p.tensor, begin, begin + p.bytes, segments);
    for (const auto& seg : segments) {
      if (checked[seg.file]++) continue;
      const auto what = [&](const std::string& why) { return missing_inherited(p, seg.file, why); };
      std::string path;
      try {
        path = checked_file_path(*resumed, seg.file, roots);
      } catch (const Error& e) {
        throw Error(what(e.what()));
      }
      need(path, resumed->files[seg.file].size, what);
    }
  }
}

// ---- creation ------------------------------------------------------------------------

namespace {

// Every rank of a node must name the same roots: compare with the node's local rank 0.
std::string check_node_roots(const Topology& topo, const std::vector<std::string>& roots) {
  std::string joined;
  for (const auto& r : roots) joined += absolute_path(r) + ",";
  if (!joined.empty()) joined.pop_back();
  const std::string first = broadcast_string(topo.node_comm(), joined);
  if (first == joined) return {};
  int node_root_rank = 0;
  for (int r = 0; r < topo.world_size(); ++r)
    if (topo.node_of_rank()[static_cast<std::size_t>(r)] == topo.node() &&
        topo.local_rank_of_rank()[static_cast<std::size_t>(r)] == 0)
      node_root_rank = r;
  return fmt::format("swap.roots: ranks of node {} (host {}) name different roots: rank {} has '{}', rank {} has "
                     "'{}' (every rank of a node must give the node's roots in the same order)",
                     topo.node(), topo.host(), node_root_rank, first, topo.rank(), joined);
}

// Rank 0 writes a token into the catalog directory; every rank must read it back.
void check_catalog_dir(const Topology& topo, const std::string& dir, bool defaulted) {
  std::string name, token, problem;
  if (topo.rank() == 0) {
    std::random_device random;
    token = fmt::format("{:08x}{:08x}{:08x}", random(), random(), random());
    name = fmt::format(".swapcoord-token-{}", token.substr(0, 8));
    try {
      make_private_dirs(dir, "swap.catalog_dir");
      if (const std::string bad = check_private_dir(dir, "the catalog directory"); !bad.empty()) throw Error(bad);
      const std::string path = dir + "/" + name;
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) throw SystemError(fmt::format("cannot write a token into the catalog directory '{}'", path), errno);
      const bool written = ::write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size()) && ::fsync(fd) == 0;
      const int saved = errno;
      ::close(fd);
      if (!written) throw SystemError(fmt::format("cannot write '{}'", path), saved);
    } catch (const std::exception& e) {
      problem = e.what();
    }
  }
  {
    const auto [bad, message] = first_message(topo.world(), problem);
    if (bad >= 0) throw ConfigError(fmt::format("swap.catalog_dir: {}", message));
  }
  name = broadcast_string(topo.world(), name);
  token = broadcast_string(topo.world(), token);
  const std::string path = dir + "/" + name;
  std::string seen;
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      char buffer[64] = {};
      const auto n = ::read(fd, buffer, sizeof buffer - 1);
      if (n > 0) seen.assign(buffer, static_cast<std::size_t>(n));
      ::close(fd);
    }
  }
  if (seen != token)
    problem = fmt::format("rank {} (host {}, node {}) does not see rank 0's catalog directory '{}' (the token file "
                          "rank 0 wrote there is {} on this rank)", topo.rank(), topo.host(), topo.node(), dir,
                          seen.empty() ? "missing" : "different");
  const auto [bad, message] = first_message(topo.world(), problem);
  mpi_check(MPI_Barrier(topo.world()), "MPI_Barrier (catalog directory check)");
  if (topo.rank() == 0) ::unlink(path.c_str());
  if (bad >= 0)
    throw ConfigError(fmt::format(
        "swap.catalog_dir: {}. Every rank must reach the catalog directory: set swap.catalog_dir "
        "(--catalog-dir) to a directory on a filesystem shared by all nodes{}", message,
        defaulted ? " (the default, rank 0's first root, is node-local)" : ""));
}

// Two jobs must not write the same files: rank 0 locks the catalog directory, and every
// rank locks its byte of the job directory's lock file in each root it writes. (Per rank,
// not per node: two nodes of one job may share a root.)
void lock_job(SwapSession::Impl& s) {
  collectively(s.world(), s.who, [&] {
    const int rank = s.topo->rank();
    if (rank == 0)
      s.locks.push_back(JobLock::acquire(s.catalog_dir, kCatalogLockName, 0,
                                         fmt::format("the catalog directory of job '{}'", s.options.job)));
    std::set<std::int32_t> roots;
    for (std::size_t k = 0; k < s.file_count; ++k) roots.insert(s.plan.files[k].root);
    for (const std::int32_t i : roots) {
      const std::string root = absolute_path(s.topo->roots().at(static_cast<std::size_t>(i)));
      (void)open_private_subdirs(root, s.options.job, "swap files");
      s.locks.push_back(JobLock::acquire(root + "/" + s.options.job, kJobLockName, static_cast<std::uint32_t>(rank),
                                         fmt::format("job '{}', rank {}", s.options.job, rank)));
    }
    for (const JobLock& lock : s.locks)
      if (!lock.took_over().empty())
        log::warn(fmt::format("{}: took over the lock '{}' from a job that did not end cleanly ({})", s.who,
                              lock.path(), lock.took_over()));
  });
}

std::string gib(std::uint64_t bytes) { return fmt::format("{:.3f} GiB", static_cast<double>(bytes) / (1ULL << 30)); }

// Before any file is made: the plan must fit in each node's roots. Each rank adds what its
// files will take in each root (both slots; less what files already there hold), the
// node adds its ranks up, and the node's first rank compares each filesystem's sum with
// what statvfs says is free. A job that does not fit stops here, not with a full disk.
void check_free_space(const SwapSession::Impl& s) {
  const Topology& t = *s.topo;
  std::vector<std::uint64_t> need(t.roots().size(), 0);
  for (std::size_t k = 0; k < s.file_count; ++k) {
    const PlanFile& f = s.plan.files[k];
    for (int slot = 0; slot < s.options.slots; ++slot) {
      std::uint64_t held = 0;
      struct stat st {};
      if (::stat(s.file_path(k, slot).c_str(), &st) == 0 && S_ISREG(st.st_mode))
        held = std::min<std::uint64_t>(static_cast<std::uint64_t>(st.st_blocks) * 512, f.size_bytes);
      need.at(static_cast<std::size_t>(f.root)) += f.size_bytes - held;
    }
  }
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, need.data(), static_cast<int>(need.size()), MPI_UINT64_T, MPI_SUM,
                          t.node_comm()),
            "MPI_Allreduce (free space)");
  std::string problem;
  if (t.local_rank() == 0) {
    std::map<dev_t, std::pair<std::uint64_t, std::vector<std::size_t>>> per_fs;  // device -> (need, roots)
    for (std::size_t i = 0; i < need.size(); ++i) {
      struct stat st {};
      if (::stat(t.roots()[i].c_str(), &st) != 0) continue;  // check_roots said why already
      per_fs[st.st_dev].first += need[i];
      per_fs[st.st_dev].second.push_back(i);
    }
    for (const auto& [dev, entry] : per_fs) {
      const std::string& root = t.roots()[entry.second.front()];
      struct statvfs fs {};
      if (::statvfs(root.c_str(), &fs) != 0) {
        problem = errno_message(fmt::format("statvfs of swap root '{}'", root), errno);
        break;
      }
      const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
      if (entry.first > free_bytes) {
        std::string roots;
        for (const std::size_t i : entry.second) roots += fmt::format("{}'{}'", roots.empty() ? "" : ", ", t.roots()[i]);
        problem = fmt::format("swap.roots: the plan puts {} ({} bytes, {} slot{}) in swap root {} on node {} (host {}), "
                              "whose filesystem has {} ({} bytes) free: the job does not fit; free space there, give "
                              "more roots or nodes, or use fewer slots", gib(entry.first), entry.first, s.options.slots,
                              s.options.slots == 1 ? "" : "s", roots, t.node(), t.host(), gib(free_bytes), free_bytes);
        break;
      }
    }
  }
  const auto [bad, message] = first_message(t.world(), problem);
  if (bad >= 0) throw ConfigError(message);
}

// The first key path where `a` and `b` differ ("" when they are equal), with both values.
bool first_difference(const nlohmann::json& a, const nlohmann::json& b, const std::string& path, std::string& key,
                      std::string& va, std::string& vb) {
  if (a.is_object() && b.is_object()) {
    for (const auto& [name, value] : a.items()) {
      const std::string sub = path.empty() ? name : path + "." + name;
      const auto other = b.find(name);
      if (other == b.end()) {
        key = sub, va = value.dump(), vb = "(none)";
        return true;
      }
      if (first_difference(value, *other, sub, key, va, vb)) return true;
    }
    for (const auto& [name, value] : b.items())
      if (!a.contains(name)) {
        key = path.empty() ? name : path + "." + name, va = "(none)", vb = value.dump();
        return true;
      }
    return false;
  }
  if (a == b) return false;
  key = path, va = a.dump(), vb = b.dump();
  return true;
}

// A new session over a committed catalog: refused (the catalog's data would be
// overwritten before the first commit), unless options.overwrite, which removes the old
// catalog first so that a crash before the first commit leaves no catalog that describes
// the new data.
void refuse_or_replace_catalog(const SwapSession::Impl& s) {
  const std::string path = s.catalog_dir + "/catalog.h5";
  std::string problem;
  if (s.topo->rank() == 0) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      std::string what;
      try {
        const Catalog c = load_catalog(path);
        what = fmt::format("the committed catalog of job '{}', epoch {} ({} ranks, {})", c.job, c.epoch, c.world_size,
                           c.created);
      } catch (const std::exception& e) {
        what = fmt::format("a catalog that cannot be read ({})", e.what());
      }
      if (!s.options.overwrite) {
        problem = fmt::format("swap.catalog_dir: '{}' holds {}: continue from it with resume (--resume), or start "
                              "fresh with overwrite (--overwrite, swap.overwrite), which replaces it", path, what);
      } else if (::unlink(path.c_str()) != 0) {
        problem = errno_message(fmt::format("overwrite: cannot remove '{}'", path), errno);
      } else {
        const int fd = ::open(s.catalog_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
          ::fsync(fd);
          ::close(fd);
        }
        log::warn(fmt::format("overwrite: removed '{}', which held {}", path, what));
      }
    }
  }
  const auto [bad, message] = first_message(s.topo->world(), problem);
  if (bad >= 0) throw ConfigError(message);
}

}  // namespace

void check_config_agreement(MPI_Comm comm, const nlohmann::json& config, std::string_view what) {
  const std::string mine = config.dump();
  const std::string first = broadcast_string(comm, mine);
  std::string problem;
  if (first != mine) {
    int rank = 0;
    mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
    std::string key, theirs, ours;
    first_difference(nlohmann::json::parse(first), config, "", key, theirs, ours);
    problem = fmt::format("ranks disagree on the {}: rank {} has {} = {}, rank 0 has {} (every rank must be given "
                          "the same configuration)", what, rank, key.empty() ? "(the whole)" : key, ours, theirs);
  }
  const auto [bad, message] = first_message(comm, problem);
  if (bad >= 0) throw ConfigError(message);
}

SwapSession::SwapSession(std::unique_ptr<Impl> impl) noexcept : _impl(std::move(impl)) {}
SwapSession::SwapSession(SwapSession&&) noexcept = default;
SwapSession& SwapSession::operator=(SwapSession&&) noexcept = default;
SwapSession::~SwapSession() = default;

namespace {

std::unique_ptr<SwapSession::Impl> open_session(MPI_Comm comm, std::vector<TensorSpec> tensors, SessionOptions options,
                                                bool resume);

}  // namespace

SwapSession SwapSession::create(MPI_Comm comm, std::vector<TensorSpec> tensors, SessionOptions options) {
  return SwapSession(open_session(comm, std::move(tensors), std::move(options), false));
}

SwapSession SwapSession::resume(MPI_Comm comm, std::vector<TensorSpec> tensors, SessionOptions options) {
  return SwapSession(open_session(comm, std::move(tensors), std::move(options), true));
}

namespace {

// Resume: decides whether the catalog's pieces are this plan's pieces in this generation's
// files (then each piece continues from its committed slot) or not (re-partitioned).
bool adopt_catalog(SwapSession::Impl& s) {
  const Catalog& c = *s.resumed;
  bool same = c.plan_fingerprint == fmt::format("{:016x}", s.plan.fingerprint()) &&
              c.world_size == s.topo->world_size() && c.job == s.options.job;
  std::vector<PieceState> states(s.mine.size());
  std::size_t matched = 0;
  s.generation = c.generation;
  if (same) {
    std::vector<std::array<std::string, 2>> paths(s.file_count);
    for (std::size_t k = 0; k < s.file_count; ++k)
      for (int slot = 0; slot < 2; ++slot) paths[k][static_cast<std::size_t>(slot)] = s.file_path(k, slot);
    for (const CatalogRow& r : c.tensors) {
      if (r.owner != s.topo->rank()) continue;
      const std::int32_t li = r.id < s.local_of_tensor.size() ? s.local_of_tensor[r.id] : -1;
      if (li < 0) { same = false; break; }
      const PlanPiece& p = s.mine[static_cast<std::size_t>(li)];
      if (p.element_offset != r.element_offset || p.numel != r.numel || p.offset != r.offset) { same = false; break; }
      std::string path;
      try {
        path = absolute_path(c.file_path(r.file));
      } catch (const std::exception&) {
        same = false;
        break;
      }
      const auto k = p.file - s.first_file;
      int slot = -1;
      for (int sl = 0; sl < 2; ++sl)
        if (paths[k][static_cast<std::size_t>(sl)] == path) slot = sl;
      if (slot < 0) { same = false; break; }
      PieceState& st = states[static_cast<std::size_t>(li)];
      st.kind = PieceState::Kind::committed;
      st.committed_slot = static_cast<std::int8_t>(slot);
      st.committed_checksum = r.checksum;
      st.committed_version = r.epoch;
      ++matched;
    }
    if (matched != s.mine.size()) same = false;
  }
  int all_same = same ? 1 : 0;
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, &all_same, 1, MPI_INT, MPI_MIN, s.world()), "MPI_Allreduce (resume)");
  if (all_same) {
    s.states = std::move(states);
    return true;
  }
  s.generation = c.generation + 1;
  s.states.assign(s.mine.size(), PieceState{});
  for (auto& st : s.states) st.kind = PieceState::Kind::inherited;
  return false;
}

std::unique_ptr<SwapSession::Impl> open_session(MPI_Comm comm, std::vector<TensorSpec> tensors, SessionOptions options,
                                                bool resume) {
  auto s = std::make_unique<SwapSession::Impl>();
  int rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  s->who = fmt::format("rank {}@{}", rank, host_name());
  s->options = std::move(options);
  s->tensors = std::move(tensors);
  SessionOptions& o = s->options;
  collectively(comm, s->who, [&] {
    o.validate();
    // What the catalog holds in fixed-size strings is checked now, not at the first commit.
    for (std::size_t i = 0; i < s->tensors.size(); ++i)
      if (s->tensors[i].name.size() >= kCatalogNameBytes)
        throw ConfigError(fmt::format("tensor {} ('{}...'): its name has {} bytes; the catalog holds names of up "
                                      "to {} bytes", i, s->tensors[i].name.substr(0, 40), s->tensors[i].name.size(),
                                      kCatalogNameBytes - 1));
    if (o.job.size() > kCatalogNameBytes - 64)
      throw ConfigError(fmt::format("swap.job: '{}...' has {} bytes; at most {} (file paths in the catalog hold up "
                                    "to {} bytes)", o.job.substr(0, 40), o.job.size(), kCatalogNameBytes - 64,
                                    kCatalogNameBytes - 1));
    for (const auto& root : o.roots)
      if (absolute_path(root).size() > 1023)
        throw ConfigError(fmt::format("swap.roots: '{}...' has {} bytes as an absolute path; the catalog holds root "
                                      "paths of up to 1023 bytes", root.substr(0, 60), absolute_path(root).size()));
    if (o.create_roots)
      for (const auto& root : o.roots) make_private_dirs(root, "swap.roots");
  });
  {  // every rank must be given the same options (the roots may differ between nodes) and call
     // the same function: a difference would give an unusable catalog or a hang
    nlohmann::json mine = o.to_json();
    mine["swap"].erase("roots");
    mine["call"] = resume ? "resume" : "create";
    mine["tensors"] = {{"count", s->tensors.size()}};
    check_config_agreement(comm, mine, "session options");
  }
  s->timeout = std::chrono::milliseconds(static_cast<long long>(o.phase_timeout_s * 1000));
  s->watchdog.emplace(s->who, o.on_stall);
  Watchdog::Scope guard(*s->watchdog, "start-up (topology, roots, plan agreement, catalog)", s->timeout);
  try {
    s->topo.emplace(Topology::discover(comm, NodeKey::parse(o.node_key), o.roots));
    {
      const auto [bad, message] = first_message(s->world(), check_node_roots(*s->topo, o.roots));
      if (bad >= 0) throw ConfigError(message);
    }
    s->topo->check_roots();
    for (const auto& root : s->topo->roots()) s->roots.push_back(absolute_path(root));
    s->plan = make_plan(s->tensors, s->topo->plan_topology(), o.plan, s->topo->rank());
    check_plan_agreement(s->world(), s->plan.fingerprint());
  } catch (const MpiError&) {
    throw;
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw PhaseError(e.what(), -1);
  }
  const int me = s->topo->rank();
  s->mine = s->plan.pieces_of(me);
  s->local_of_tensor.assign(s->tensors.size(), -1);
  for (std::size_t i = 0; i < s->mine.size(); ++i) s->local_of_tensor[s->mine[i].tensor] = static_cast<std::int32_t>(i);
  s->first_file = s->plan.file_base;
  s->file_count = s->plan.files.size();
  s->prefetched.assign(s->mine.size(), kNotPrefetched);
  s->seen.assign(s->mine.size(), 0);
  s->states.assign(s->mine.size(), PieceState{});

  // The catalog directory: given, or rank 0's first root (one node only); all must see it.
  const bool defaulted = o.catalog_dir.empty();
  if (defaulted && s->topo->node_count() > 1)
    throw ConfigError(fmt::format(
        "swap.catalog_dir (--catalog-dir) is not set, and the job's {} ranks are on {} nodes: swap roots are "
        "node-local, so the catalog needs a directory every rank reaches (a shared filesystem)",
        s->topo->world_size(), s->topo->node_count()));
  s->catalog_dir = broadcast_string(
      s->world(), absolute_path(defaulted ? s->topo->my_root() + "/" + o.job : o.catalog_dir));
  check_catalog_dir(*s->topo, s->catalog_dir, defaulted);
  lock_job(*s);
  if (!resume) {
    check_free_space(*s);  // before overwrite removes anything
    refuse_or_replace_catalog(*s);
  }

  if (resume) {
    try {  // the same on every rank: rank 0 loaded it
      s->resumed.emplace(load_catalog_collective(s->world(), s->catalog_dir + "/catalog.h5"));
    } catch (const MpiError&) {
      throw;
    } catch (const Error& e) {
      throw PhaseError(e.what(), 0);
    }
    collectively(s->world(), s->who, [&] { s->resumed_index.emplace(*s->resumed, s->tensors); });
    if (s->resumed->job != o.job)
      throw ConfigError(fmt::format("swap.job: the catalog '{}/catalog.h5' is job '{}', this session's job is '{}'",
                                    s->catalog_dir, s->resumed->job, o.job));
    s->resumed_files.resize(s->resumed->files.size());
    s->committed_epoch = s->resumed->epoch;
    s->repartitioned = !adopt_catalog(*s);
    check_free_space(*s);  // after adopt_catalog: which files exist depends on the generation
  }
  // A new job's checksum is the options'; a resumed one keeps its catalog's (every row of a
  // catalog has the same kind, and a resume carries the committed rows over).
  if (s->resumed) o.checksum = s->resumed->checksum;  // and the config the catalog records says so
  s->hash = Checksum(o.checksum);
  s->row_hash = Checksum(o.checksum);
  collectively(s->world(), s->who, [&] {
    if (s->resumed) s->check_resumed_files();
    AioConfig aio = o.aio;
    aio.fsync = false;  // commit() syncs each written file once
    s->engine = make_engine(o.backend, aio);
    const std::size_t total = o.buffer_count * o.buffer_size;
    std::byte* base = nullptr;
    if (o.pin_memory) {
      // With a GPU, staging is CUDA-pinned (cudaHostAlloc) in the context of this rank's
      // GPU, so that copies of device tensors are DMA.
      if (device::visible_device_count() > 0)
        device::use_cuda_host_memory(device::device_for_local_rank(s->topo->local_rank(), "staging memory"));
      s->staging_pinned = PinnedAllocation(total);
      base = s->staging_pinned.data();
    } else {
      s->staging_plain.reset(static_cast<std::byte*>(std::aligned_alloc(kDefaultAlignmentBytes, total)));
      if (!s->staging_plain) throw SystemError(fmt::format("cannot allocate {} bytes of staging memory", total), ENOMEM);
      base = s->staging_plain.get();
    }
    for (std::size_t i = 0; i < o.buffer_count; ++i)
      s->staging.push_back({base + i * o.buffer_size, o.buffer_size, DType::u8, Device::cpu()});
    s->swapper.emplace(*s->engine, s->staging, s->plan.options.alignment_bytes);
    // Every slot's files, now (after the engine and staging, which swap.prepare "write"
    // uses): a resumed file keeps its data (same size, no truncation); new ones are created,
    // preallocated and prepared here, at set-up, so that the first swap-out into a slot does
    // not pay for making its files (and a full disk shows up now, on every rank, rather than
    // in some later swap-out).
    for (int slot = 0; slot < o.slots; ++slot) s->ensure_files(slot);
    if (o.register_io) s->register_io(total);
    s->locations.reserve(s->mine.size());
    s->order.reserve(s->mine.size());
    s->digests.reserve(s->mine.size());
  });
  s->sync.emplace(s->world(), s->timeout);
  s->parts_comm = Comm::dup(s->world());
  return s;
}

}  // namespace

// ---- calls ---------------------------------------------------------------------------

SwapFigures SwapSession::swap_out(std::span<const std::uint32_t> ids, std::span<const TensorView> views) {
  return swap_out_async(ids, views).wait();
}

SwapFigures SwapSession::swap_in(std::span<const std::uint32_t> ids, std::span<const TensorView> views) {
  return swap_in_async(ids, views).wait();
}

SwapHandle SwapSession::swap_out_async(std::span<const std::uint32_t> ids, std::span<const TensorView> views) {
  Impl& s = *_impl;
  s.sink->rethrow();
  s.check_views(ids, views);
  std::vector<std::uint32_t> list(ids.begin(), ids.end());
  std::vector<TensorView> copy(views.begin(), views.end());
  const bool on_device = std::any_of(copy.begin(), copy.end(), [](const TensorView& v) { return !v.device.is_cpu(); });
  return s.post([&s, on_device, list = std::move(list), copy = std::move(copy)]() mutable {
    const std::vector<InPlace> in_place = s.in_place_of(copy);
    return s.do_swap_out(list, [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) {
      const TensorView& v = copy[i];
      const std::uint64_t size = v.size_bytes();
      const auto data = offset < size ? static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size - offset)) : 0;
      const std::byte* from = v.bytes() + offset;
      if (data && v.device.is_cpu() && out.data() != from) std::memcpy(out.data(), from, data);  // else in place
      if (data && !v.device.is_cpu()) s.stager(v.device.index).to_host(out.first(data), from);
      std::memset(out.data() + data, 0, out.size() - data);
    }, on_device ? ~std::size_t{0} : kHashStep, in_place);
  });
}

SwapHandle SwapSession::swap_in_async(std::span<const std::uint32_t> ids, std::span<const TensorView> views) {
  Impl& s = *_impl;
  s.sink->rethrow();
  s.check_views(ids, views);
  std::vector<std::uint32_t> list(ids.begin(), ids.end());
  std::vector<TensorView> copy(views.begin(), views.end());
  const bool on_device = std::any_of(copy.begin(), copy.end(), [](const TensorView& v) { return !v.device.is_cpu(); });
  return s.post([&s, on_device, list = std::move(list), copy = std::move(copy)]() mutable {
    const std::vector<InPlace> in_place = s.in_place_of(copy);
    return s.do_swap_in(list, [&](std::size_t i, std::uint64_t offset, std::span<const std::byte> in) {
      const TensorView& v = copy[i];
      const std::uint64_t size = v.size_bytes();
      if (offset >= size) return;
      const auto part = in.first(static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), size - offset)));
      std::byte* to = v.bytes() + offset;
      if (v.device.is_cpu() && part.data() != to) std::memcpy(to, part.data(), part.size());  // else read in place
      if (!v.device.is_cpu()) s.stager(v.device.index).to_device(to, part);
    }, on_device ? ~std::size_t{0} : kHashStep, in_place);
  });
}

SwapHandle SwapSession::prefetch(std::span<const std::uint32_t> ids) {
  Impl& s = *_impl;
  s.sink->rethrow();
  s.check_ids(ids);
  std::vector<std::uint32_t> list(ids.begin(), ids.end());
  return s.post([&s, list = std::move(list)]() mutable { return s.do_prefetch(std::move(list)); });
}

SwapFigures SwapSession::swap_out_stream(std::span<const std::uint32_t> ids, PieceFill fill) {
  Impl& s = *_impl;
  s.sink->rethrow();
  s.check_ids(ids);
  std::vector<std::uint32_t> list(ids.begin(), ids.end());
  return s.post([&s, &fill, list = std::move(list)]() mutable {
    const std::vector<std::uint32_t>& l = list;
    return s.do_swap_out(list, [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) { fill(l[i], offset, out); });
  }).wait();
}

SwapFigures SwapSession::swap_in_stream(std::span<const std::uint32_t> ids, PieceDrain drain) {
  Impl& s = *_impl;
  s.sink->rethrow();
  s.check_ids(ids);
  std::vector<std::uint32_t> list(ids.begin(), ids.end());
  return s.post([&s, &drain, list = std::move(list)]() mutable {
    const std::vector<std::uint32_t>& l = list;
    return s.do_swap_in(list, [&](std::size_t i, std::uint64_t offset, std::span<const std::byte> in) { drain(l[i], offset, in); });
  }).wait();
}

void SwapSession::wait_all() { _impl->wait_all(); }

// The commit, in three steps, each wait with the phase deadline (PhaseSync names the
// ranks that do not arrive, rank 0 included): (1) every rank syncs the files it wrote and
// packs its catalog rows, and all agree that every rank did; (2) each rank sends its rows
// to rank 0 (point to point; rank 0 waits for them with the deadline); (3) rank 0 writes
// the catalog and renames it into place (the commit), and every rank learns the outcome.
int SwapSession::commit(std::string_view metadata) {
  Impl& s = *_impl;
  const auto start = Clock::now();
  const int epoch = s.committed_epoch + 1;
  // A backstop only: every wait below has the deadline. A rank stuck in the kernel (an
  // fsync on a dead disk) is what this catches.
  Watchdog::Scope guard(*s.watchdog, fmt::format("the commit of epoch {}", epoch),
                        s.timeout * 3 + std::chrono::duration_cast<std::chrono::milliseconds>(PhaseSync::kGrace) * 3);
  const Topology& t = *s.topo;
  Catalog header;
  std::vector<std::byte> packed;
  PhaseReport local;
  CommitFigures figures;
  auto rows_start = start;
  // The data files' fdatasync runs on a thread of its own while this one packs the rows and
  // rank 0 writes the catalog's temporary file; the catalog is renamed into place only
  // after every rank's sync is done (the "commit: synced" barrier).
  std::thread syncer;
  std::exception_ptr sync_error;
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{syncer};
  try {
    s.wait_all();
    for (std::size_t li = 0; li < s.mine.size(); ++li) {
      const PieceState& st = s.states[li];
      if (st.kind == PieceState::Kind::inherited) s.migrate(li);
      else (void)s.readable_slot(li);  // throws for none / lost, naming the tensor
    }
    s.stage("sync");
    if (s.options.aio.fsync) {
      std::vector<const SwapFile*> written;
      for (std::size_t slot = 0; slot < 2; ++slot)
        for (std::size_t k = 0; k < s.dirty[slot].size(); ++k)
          if (s.dirty[slot][k]) written.push_back(&s.files[slot][k]);
      syncer = std::thread([written = std::move(written), &figures, &sync_error] {
        const auto sync_start = Clock::now();
        try {
          for (const SwapFile* f : written) f->sync();
        } catch (...) {
          sync_error = std::current_exception();
        }
        figures.sync_seconds = seconds_since(sync_start);
      });
    }
    rows_start = Clock::now();
    std::array<bool, 2> used{false, false};  // slots holding a piece after this commit
    for (const auto& st : s.states)
      used[static_cast<std::size_t>(st.kind == PieceState::Kind::pending ? st.pending_slot : st.committed_slot)] = true;
    header.job = s.options.job;
    header.epoch = epoch;
    header.slots = s.options.slots;
    header.slot = epoch % s.options.slots;
    header.generation = s.generation;
    header.world_size = t.world_size();
    header.node_count = t.node_count();
    header.layout = std::string(to_string(s.plan.options.layout));
    header.policy = std::string(to_string(s.plan.options.policy));
    header.alignment = s.plan.options.alignment_bytes;
    header.plan_fingerprint = fmt::format("{:016x}", s.plan.fingerprint());
    header.config_json = s.options.to_json().dump();
    header.created = utc_now();
    header.checksum = s.options.checksum;
    if (t.rank() == 0) {  // rank 0's is the one written; a bad one fails the commit on every rank
      if (metadata.size() > kCatalogMetadataBytes)
        throw ConfigError(fmt::format("commit: the metadata has {} bytes, more than the catalog's {} (an HDF5 "
                                      "attribute)", metadata.size(), kCatalogMetadataBytes));
      if (metadata.find('\0') != std::string_view::npos)
        throw ConfigError(fmt::format("commit: the metadata holds a NUL byte at offset {} (it is stored as a string)",
                                      metadata.find('\0')));
      header.metadata = std::string(metadata);
    }
    // This rank's rows; a row's file is its index among this rank's files (rank 0 numbers
    // them across ranks).
    CatalogPart part;
    const std::array<std::uint64_t, 2> slot_base{0, used[0] ? s.file_count : 0};
    for (std::size_t li = 0; li < s.mine.size(); ++li) {
      const PlanPiece& p = s.mine[li];
      const PieceState& st = s.states[li];
      const bool pending = st.kind == PieceState::Kind::pending;
      const auto slot = static_cast<std::size_t>(pending ? st.pending_slot : st.committed_slot);
      part.tensors.push_back({p.tensor, s.tensors[p.tensor].name, s.tensors[p.tensor].dtype, p.numel,
                              p.element_offset, p.shard, p.shard_count, p.owner, p.node, p.root,
                              static_cast<std::uint32_t>(slot_base[slot] + (p.file - s.first_file)), p.offset,
                              p.bytes, p.aligned_bytes, pending ? st.pending_checksum : st.committed_checksum,
                              pending ? st.pending_version : st.committed_version});
    }
    for (std::size_t slot = 0; slot < 2; ++slot)
      if (used[slot])
        for (std::size_t k = 0; k < s.file_count; ++k) {
          const PlanFile& f = s.plan.files[k];
          part.files.push_back({file_relative_path(f, s.options.job, s.physical_slot(static_cast<int>(slot))),
                                f.owner, f.root, f.size_bytes});
        }
    if (t.local_rank() == 0)
      for (std::size_t i = 0; i < t.roots().size(); ++i)
        part.roots.push_back({t.node(), static_cast<std::int32_t>(i), absolute_path(t.roots()[i])});
    {
      std::lock_guard lock(s.stats_mutex);
      part.rank = {t.rank(), t.node(), t.local_rank(), t.host(), s.plan.rank_bytes[static_cast<std::size_t>(t.rank())],
                   s.stats.swap_out.seconds, s.stats.swap_in.seconds};
    }
    packed = pack_catalog_part(epoch, part);
  } catch (const std::exception& e) {
    local.failed = true;
    local.message = fmt::format("{}: {}", s.who, e.what());
  }
  s.sync->end_phase("commit: rows", epoch, local);  // PhaseError on every rank if one failed
  figures.rows_seconds = seconds_since(rows_start);
  const auto catalog_start = Clock::now();

  // Rank 0 has the commit's outcome in `written.wrong`: 0 committed, 1 failed with the
  // previous catalog in place, 2 failed and cannot tell, 3 committed but a later step failed.
  PhaseReport written;
  bool temp_written = false;
  if (t.rank() != 0) {
    s.part_send.wait();  // the previous commit's rows (taken long ago)
    s.part_send.start(std::move(packed), s.parts_comm.get());
  } else {
    try {
      std::vector<std::vector<std::byte>> parts = receive_catalog_parts(s.parts_comm.get(), epoch, std::move(packed),
                                                                        s.timeout);
      write_catalog_temp(s.catalog_dir, header, parts);
      temp_written = true;
    } catch (const std::exception& e) {
      written.message = fmt::format("{}: {}", s.who, e.what());
      written.wrong = 1;  // the previous catalog is in place
    }
  }
  figures.catalog_seconds = seconds_since(catalog_start);
  if (syncer.joinable()) syncer.join();
  PhaseReport synced;
  if (sync_error) {
    synced.failed = true;
    try {
      std::rethrow_exception(sync_error);
    } catch (const std::exception& e) {
      synced.message = fmt::format("{}: {}", s.who, e.what());
    } catch (...) {
      synced.message = fmt::format("{}: the fdatasync of its files failed", s.who);
    }
  }
  s.stage("commit");
  try {
    s.sync->end_phase("commit: synced", epoch, synced);  // PhaseError on every rank if one failed
  } catch (...) {
    std::error_code ignored;  // best effort: the PhaseError is what to report
    if (temp_written) std::filesystem::remove(s.catalog_dir + "/catalog.h5.tmp", ignored);  // never renamed
    throw;
  }
  if (temp_written) {
    const auto rename_start = Clock::now();
    try {
      rename_catalog_temp(s.catalog_dir, s.commit_stage);
    } catch (const std::exception& e) {
      written.message = fmt::format("{}: {}", s.who, e.what());
      try {
        written.wrong = load_catalog(catalog_path()).epoch == epoch ? 3 : 1;
      } catch (const std::exception&) {
        written.wrong = std::filesystem::exists(catalog_path()) ? 2 : 1;
      }
    }
    figures.catalog_seconds += seconds_since(rename_start);
  }
  const PhaseStats outcome = s.sync->end_phase("commit: catalog", epoch, written);
  s.commit_uncertain = outcome.wrong == 2;
  if (outcome.wrong == 0 || outcome.wrong == 3) s.committed(epoch);
  if (outcome.wrong != 0)
    throw PhaseError(fmt::format("catalog commit of epoch {} failed: {}", epoch, outcome.notes), 0);
  SwapFigures f;
  f.seconds = seconds_since(start);
  s.add_stats(&SessionStats::commit, f);
  figures.seconds = f.seconds;
  s.last_commit = figures;
  return epoch;
}

void SwapSession::Impl::committed(int epoch) {
  for (auto& st : states)
    if (st.kind == PieceState::Kind::pending) {
      st.kind = PieceState::Kind::committed;
      st.committed_slot = st.pending_slot;
      st.committed_checksum = st.pending_checksum;
      st.committed_version = st.pending_version;
      st.pending_slot = -1;
    }
  for (auto& d : dirty) std::fill(d.begin(), d.end(), 0);
  committed_epoch = epoch;
  if (repartitioned) {  // the old catalog's files are no longer referenced
    resumed_files.clear();
    resumed_index.reset();
    repartitioned = false;
  }
}

SessionCheck SwapSession::verify() {
  Impl& s = *_impl;
  collectively(s.world(), s.who, [&] {
    s.wait_all();
    if (s.committed_epoch < 0) throw Error("verify: nothing was committed yet");
  });
  Watchdog::Scope guard(*s.watchdog, "verify", s.timeout);
  try {  // both throw alike on every rank
    const Catalog c = load_catalog_collective(s.world(), catalog_path());
    const CatalogCheck check =
        verify_catalog_collective(s.world(), c, *s.engine, s.options.buffer_size, s.options.aio.direct, s.roots);
    return {check.pieces, check.bytes, check.mismatches, check.notes};
  } catch (const MpiError&) {
    throw;
  } catch (const Error& e) {
    throw PhaseError(e.what(), 0);
  }
}

PhaseStats SwapSession::end_phase(std::string_view phase, int epoch, const PhaseReport& report) {
  return _impl->sync->end_phase(phase, epoch, report);
}

const CommitFigures& SwapSession::last_commit() const noexcept { return _impl->last_commit; }
const SwapPlan& SwapSession::plan() const noexcept { return _impl->plan; }
const Topology& SwapSession::topology() const noexcept { return *_impl->topo; }
const std::vector<TensorSpec>& SwapSession::tensors() const noexcept { return _impl->tensors; }
const SessionOptions& SwapSession::options() const noexcept { return _impl->options; }
std::span<const PlanPiece> SwapSession::local_pieces() const noexcept { return _impl->mine; }
const PlanPiece* SwapSession::local_piece(std::uint32_t id) const noexcept {
  if (id >= _impl->local_of_tensor.size() || _impl->local_of_tensor[id] < 0) return nullptr;
  return &_impl->mine[static_cast<std::size_t>(_impl->local_of_tensor[id])];
}
PieceFile SwapSession::where(std::uint32_t id) {
  Impl& s = *_impl;
  s.wait_all();
  const std::size_t li = s.local_index(id);
  const int slot = s.readable_slot(li);
  if (slot < 0) return {};  // still in the resumed catalog's files
  const SwapLocation l = s.location(li, slot);
  return {l.file->path(), l.offset, l.bytes};
}

int SwapSession::committed_epoch() const noexcept { return _impl->committed_epoch; }
const Catalog* SwapSession::resumed_from() const noexcept { return _impl->resumed ? &*_impl->resumed : nullptr; }
bool SwapSession::repartitioned() const noexcept { return _impl->repartitioned; }
std::string SwapSession::catalog_path() const { return _impl->catalog_dir + "/catalog.h5"; }

SessionStats SwapSession::statistics() const {
  std::lock_guard lock(_impl->stats_mutex);
  return _impl->stats;
}

std::vector<std::string> SwapSession::local_files() const {
  std::vector<std::string> out;
  for (int slot = 0; slot < 2; ++slot)
    for (std::size_t k = 0; k < _impl->file_count; ++k) out.push_back(_impl->file_path(k, slot));
  return out;
}

void SwapSession::set_commit_stage_hook(std::function<void(const char*)> hook) { _impl->commit_stage = std::move(hook); }

void SwapSession::remove_files() {
  Impl& s = *_impl;
  collectively(s.world(), s.who, [&] { s.wait_all(); });
  if (s.engine->registration().files > 0) {  // the engine holds registered files open: let them close
    try {
      s.engine->unregister_files();
    } catch (const Error& e) {  // a stopped engine: its rings, and their registrations, are gone
      log::warn(fmt::format("{}: remove_files: {}", s.who, e.what()));
    }
  }
  for (auto& f : s.files) f.clear();
  // Both generations' file names of this rank, then its directory.
  const int me = s.topo->rank();
  std::set<std::string> dirs;
  for (int g = 0; g < 2; ++g)
    for (int slot = 0; slot < 2; ++slot)
      for (std::size_t k = 0; k < s.file_count; ++k) {
        const PlanFile& f = s.plan.files[k];
        const auto path = std::filesystem::path(absolute_path(s.topo->roots().at(static_cast<std::size_t>(f.root)))) /
                          file_relative_path(f, s.options.job, 2 * g + slot);
        ::unlink(path.c_str());
        dirs.insert(path.parent_path().string());
      }
  // After a re-partitioned resume, the resumed catalog's files (of ranks that may no
  // longer exist) belong to this job too: each node's first rank removes those it sees.
  if (s.resumed && s.topo->local_rank() == 0)
    for (std::uint32_t i = 0; i < s.resumed->files.size(); ++i) {
      try {
        const std::filesystem::path path = checked_file_path(*s.resumed, i, s.roots);
        ::unlink(path.c_str());
        dirs.insert(path.parent_path().string());
      } catch (const std::exception&) {
      }
    }
  mpi_check(MPI_Barrier(s.world()), "MPI_Barrier (remove_files)");
  for (const auto& d : dirs) ::rmdir(d.c_str());
  mpi_check(MPI_Barrier(s.world()), "MPI_Barrier (remove_files)");
  if (me == 0) {
    ::unlink((s.catalog_dir + "/catalog.h5").c_str());
    ::unlink((s.catalog_dir + "/catalog.h5.tmp").c_str());
    ::unlink((s.catalog_dir + "/" + kCatalogLockName).c_str());
    ::rmdir(s.catalog_dir.c_str());
  }
  if (s.topo->local_rank() == 0)
    for (const auto& root : s.topo->roots()) {
      const auto job_dir = std::filesystem::path(absolute_path(root)) / s.options.job;
      ::unlink((job_dir / kJobLockName).c_str());
      ::rmdir(job_dir.c_str());
    }
  mpi_check(MPI_Barrier(s.world()), "MPI_Barrier (remove_files)");
}

}  // namespace swapcoord
