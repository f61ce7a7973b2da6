#pragma once
// SwapSession: the coordinator as a library. One per job and process, made collectively
// over an MPI communicator. It owns the job's topology, plan, swap files, pinned staging
// ring, phase sync and catalog, and offers what a training loop calls:
//
//   swap_out(ids, views)   this rank's pieces of tensors `ids` from the caller's memory
//   swap_in(ids, views)    ... back into the caller's memory
//   prefetch(ids)          start reading pieces into pinned memory; a later swap_in of them
//                          only copies (overlaps the caller's work on the current group)
//   commit()               collective: everything swapped out so far becomes durable and is
//                          recorded in the catalog; a crash at any moment leaves the last
//                          committed state readable
//
// Each rank owns at most one piece of each tensor (a whole tensor for the balanced and
// round-robin policies, one shard for sharded): `ids` are tensor indices into the list
// given to create(), and views[i] is this rank's piece of tensor ids[i] (local_piece(id)
// gives its element range). Caller memory may be at any address alignment, in host memory
// or on a CUDA device (Device::cuda(k)): a device tensor is copied to and from the pinned
// staging buffers on a stream of its GPU, each staging buffer written as soon as its copy
// is done, each copy to the GPU overlapping the next reads (device/device.hpp). Built
// without CUDA, or with no GPU visible, a device view is refused, saying why.
//
// Versions are per piece. Each piece has a committed copy (in one of two slots) and,
// once swapped out after the last commit, a pending copy in the other slot; swap_in reads
// the pending copy when there is one. commit() makes the pending copies the committed
// ones. With slots = 1 the piece is rewritten in place (cheaper; a crash during a
// swap-out loses the piece's committed copy).
//
// Threads: swap and prefetch calls run in order on one I/O thread of the session; the
// async forms return a handle at once. Collective calls (create, resume, commit, verify,
// end_phase) must come from the thread that initialised MPI, on every rank, in the same
// order. A failure in a local call (swap_out, swap_in, prefetch) raises on that rank only.
// A swap-out that failed midway leaves its pieces without a usable copy ("lost") until
// they are swapped out again, and the error of an async call whose handle was dropped
// without wait() is raised by the next call; either way the next commit() then raises
// the same PhaseError on every rank, naming the rank.
// A session must be destroyed before MPI_Finalize.
#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/common/function_ref.hpp"
#include "swapcoord/common/tensor_view.hpp"
#include "swapcoord/coord/phase_sync.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/session/options.hpp"

namespace swapcoord {

// What one swap call moved on this rank.
struct SwapFigures {
  std::size_t pieces = 0;
  std::uint64_t bytes = 0;         // as on disk (aligned)
  double seconds = 0;              // from the start of the operation to its end
  std::uint64_t prefetched_bytes = 0;  // swap_in: bytes served from prefetch()
};

// Where this rank's time in its last commit() went.
struct CommitFigures {
  double sync_seconds = 0;     // fdatasync of the files written since the previous commit
  double rows_seconds = 0;     // the catalog rows packed, and the barrier over every rank
  double catalog_seconds = 0;  // rank 0: receiving the rows, writing, syncing and renaming
                               // catalog.h5; other ranks: sending theirs
  double seconds = 0;          // all of it, to the end of the barrier on the outcome
};

// Cumulative figures of this rank, per kind of call.
struct SessionStats {
  struct Kind {
    std::uint64_t calls = 0, bytes = 0;
    double seconds = 0;
  };
  Kind swap_out, swap_in, prefetch, commit;
};

// The result of verify(): collective, the same on every rank.
struct SessionCheck {
  std::uint64_t pieces = 0, bytes = 0, mismatches = 0;  // over all ranks
  std::vector<std::string> notes;  // the first mismatches, each naming tensor, file, offset
};

// Where a piece's bytes are on disk (aligned bytes at an offset of a file).
struct PieceFile {
  std::string path;
  std::uint64_t offset = 0, bytes = 0;
};

class SwapSession;

// A swap or prefetch in flight. Its destructor waits (and, should the operation fail,
// keeps the error for the session's next call to raise). wait() returns the figures or
// throws the operation's error.
class [[nodiscard]] SwapHandle {
 public:
  SwapHandle() noexcept = default;
  SwapHandle(SwapHandle&& other) noexcept;
  SwapHandle& operator=(SwapHandle&& other) noexcept;
  SwapHandle(const SwapHandle&) = delete;
  SwapHandle& operator=(const SwapHandle&) = delete;
  ~SwapHandle();

  SwapFigures wait();
  bool ready() const;               // done (wait() will not block)
  bool valid() const noexcept { return _op != nullptr; }

  struct Op;  // shared with the session's I/O thread

 private:
  friend class SwapSession;
  explicit SwapHandle(std::shared_ptr<Op> op) noexcept : _op(std::move(op)) {}
  std::shared_ptr<Op> _op;
};

// Streaming forms: the caller fills (or consumes) each piece directly in pinned staging
// memory. fill(id, offset, out): write out.size() bytes of the piece of tensor `id`
// starting `offset` bytes into it (bytes past the piece's data are padding: write zeros).
// drain(id, offset, in): consume them. Called on the session's I/O thread, in order of
// offsets within a piece; a callback must not call the session (it would wait for itself).
using PieceFill = FunctionRef<void(std::uint32_t, std::uint64_t, std::span<std::byte>)>;
using PieceDrain = FunctionRef<void(std::uint32_t, std::uint64_t, std::span<const std::byte>)>;

class SwapSession {
 public:
  // Collective over `comm` (duplicated): topology, plan, plan agreement, catalog
  // directory check, swap files (created and preallocated). Refuses nothing that is
  // committed: use resume() to continue from a catalog.
  static SwapSession create(MPI_Comm comm, std::vector<TensorSpec> tensors, SessionOptions options);
  // Collective: as create(), then loads the last committed catalog (rank 0 reads it, then
  // broadcasts), checks it against `tensors` and re-partitions for the current world size
  // and policy. Every piece then reads as its committed copy until it is swapped out.
  static SwapSession resume(MPI_Comm comm, std::vector<TensorSpec> tensors, SessionOptions options);

  SwapSession(SwapSession&&) noexcept;
  SwapSession& operator=(SwapSession&&) noexcept;
  SwapSession(const SwapSession&) = delete;
  SwapSession& operator=(const SwapSession&) = delete;
  ~SwapSession();  // waits for work in flight; not collective; never throws

  // Swap calls (local to this rank). Blocking forms return when done.
  SwapFigures swap_out(std::span<const std::uint32_t> ids, std::span<const TensorView> views);
  SwapFigures swap_in(std::span<const std::uint32_t> ids, std::span<const TensorView> views);
  SwapHandle swap_out_async(std::span<const std::uint32_t> ids, std::span<const TensorView> views);
  SwapHandle swap_in_async(std::span<const std::uint32_t> ids, std::span<const TensorView> views);
  // Reads the pieces (whole pieces, in order, while they fit in prefetch_bytes) into pinned
  // memory in the background. A later swap_in of a prefetched piece copies from there; a
  // swap_out of it drops the prefetched copy. The prefetch memory is a ring: a new
  // prefetch goes after the previous ones and drops only the oldest pieces it overlaps.
  SwapHandle prefetch(std::span<const std::uint32_t> ids);
  SwapFigures swap_out_stream(std::span<const std::uint32_t> ids, PieceFill fill);
  SwapFigures swap_in_stream(std::span<const std::uint32_t> ids, PieceDrain drain);
  // Blocks until every call in flight is done; raises the first error of one whose handle
  // was dropped without wait().
  void wait_all();

  // Collective. Makes every piece swapped out since the last commit durable (fdatasync of
  // the files written) and records the whole state in <catalog_dir>/catalog.h5 (atomic
  // rename). Every piece must have been swapped out once (or come from resume()).
  // `metadata`: the application's own record of this epoch (e.g. JSON with its training
  // step), stored as the catalog's `metadata` attribute (rank 0's argument is written) and
  // read back by resume() in resumed_from()->metadata. At most kCatalogMetadataBytes
  // (32 KiB), no NUL byte: otherwise the commit fails on every rank, naming rank 0.
  // Returns the new committed epoch.
  int commit(std::string_view metadata = {});
  // This rank's figures of its last commit() (zeros before the first).
  const CommitFigures& last_commit() const noexcept;
  // Collective: reads every committed piece on the node that holds it and compares its
  // checksum with the catalog's (of the catalog's kind).
  SessionCheck verify();
  // Collective: a PhaseSync barrier with figures (as `swapcoord run` prints per phase).
  PhaseStats end_phase(std::string_view phase, int epoch, const PhaseReport& report);

  // What this session knows.
  const SwapPlan& plan() const noexcept;
  const Topology& topology() const noexcept;
  const std::vector<TensorSpec>& tensors() const noexcept;
  const SessionOptions& options() const noexcept;
  std::span<const PlanPiece> local_pieces() const noexcept;
  // This rank's piece of tensor `id`, or nullptr when it owns none.
  const PlanPiece* local_piece(std::uint32_t id) const noexcept;
  // Where the copy of tensor `id` that swap_in would read lives, once the calls in flight
  // are done (waits for them). An empty path: the piece is still in the files of the
  // catalog resume() started from. Throws for a piece with no copy.
  PieceFile where(std::uint32_t id);
  int committed_epoch() const noexcept;    // -1 before the first commit
  const Catalog* resumed_from() const noexcept;  // the catalog resume() started from
  bool repartitioned() const noexcept;     // resume() found another plan than the catalog's
  std::string catalog_path() const;        // <catalog_dir>/catalog.h5, absolute
  SessionStats statistics() const;
  // The files of this rank's current generation (for clean-up): every slot's.
  std::vector<std::string> local_files() const;
  // Collective: removes this job's swap files, catalog and now-empty directories.
  void remove_files();

  // A seam for crash tests: called on every rank with "sync" (before the files written
  // since the last commit are fdatasync'ed) and "commit" (before the catalog write), and on
  // rank 0 with "written" (catalog written, not renamed) and "renamed" (committed).
  void set_commit_stage_hook(std::function<void(const char* stage)> hook);

  struct Impl;

 private:
  explicit SwapSession(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> _impl;
};

}  // namespace swapcoord
