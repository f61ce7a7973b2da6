#pragma once
// SwapPlan: where every piece of every swapped tensor lives, computed by a pure,
// deterministic partitioner from (tensor specs, topology, options). Every rank computes
// the same placement on its own, keeps its own pieces, and the ranks compare fingerprints
// (coord/topology.hpp).
// No MPI in this header: plans are unit-tested and benchmarked without mpirun.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/dtype.hpp"

namespace swapcoord {

struct TensorSpec {
  std::string name;
  std::vector<std::uint64_t> shape;
  DType dtype = DType::f32;

  std::uint64_t numel() const noexcept;          // product of shape (1 for a scalar)
  std::uint64_t size_bytes() const noexcept { return numel() * dtype_size(dtype); }
};

enum class Policy { balanced, sharded, round_robin };
enum class Layout { slab, file_per_tensor };

std::string_view to_string(Policy policy) noexcept;
std::string_view to_string(Layout layout) noexcept;
Policy parse_policy(std::string_view text);   // "balanced|sharded|round-robin"; ConfigError
Layout parse_layout(std::string_view text);   // "slab|file-per-tensor"; ConfigError

// What the partitioner needs to know of the job's ranks and nodes.
struct PlanTopology {
  int world_size = 1;
  int node_count = 1;
  std::vector<int> node_of_rank;        // world_size entries, 0 <= node < node_count
  std::vector<int> local_rank_of_rank;  // world_size entries, 0-based within the node
  std::vector<int> roots_per_node;      // node_count entries, >= 1 (swap roots on that node)

  // A uniform topology: `nodes` nodes of `ranks_per_node` ranks (ranks numbered node by
  // node), each node with `roots` roots.
  static PlanTopology uniform(int nodes, int ranks_per_node, int roots = 1);
  // Throws Error when the vectors disagree with the counts.
  void validate() const;

  friend bool operator==(const PlanTopology&, const PlanTopology&) = default;
};

// Sharded: tensors of fewer bytes than this are placed whole, by the balanced rule, after
// the sharded tensors (see make_plan). 256 KiB, about DeepSpeed's default
// stage3_param_persistence_threshold of 1e5 elements.
inline constexpr std::uint64_t kDefaultShardThresholdBytes = std::uint64_t{256} << 10;

struct PlanOptions {
  Policy policy = Policy::balanced;
  Layout layout = Layout::slab;
  std::size_t alignment_bytes = kDefaultAlignmentBytes;  // offsets, shard boundaries, sizes
                                                         // (a power of two, <= 1 GiB)
  std::uint64_t shard_threshold_bytes = kDefaultShardThresholdBytes;  // sharded only; 0: shard all

  friend bool operator==(const PlanOptions&, const PlanOptions&) = default;
};

// One file of the plan. Its path on disk is
//   <root>/<job>/rank-<owner>/slot-<s>.swp           (slab: one file per rank and slot)
//   <root>/<job>/rank-<owner>/<tensor>.<s>.swp       (file-per-tensor: `tensor` = tensor id)
// where <root> is root index `root` of the owner's node; see file_relative_path().
struct PlanFile {
  int owner = 0;
  int root = 0;
  std::int64_t tensor = -1;        // file-per-tensor: the tensor id; slab: -1
  std::uint64_t size_bytes = 0;    // the file's preallocated size

  friend bool operator==(const PlanFile&, const PlanFile&) = default;
};

// One swapped piece: elements [element_offset, element_offset + numel) of a tensor.
// A whole tensor is one piece, shard 0 of 1; a sharded tensor has up to world_size pieces,
// shard r owned by rank r (shard_count is world_size; a rank whose share is empty has no
// piece, so some shard indices may be missing).
struct PlanPiece {
  std::uint32_t tensor = 0;        // index into the tensor specs
  std::uint32_t shard = 0;
  std::uint32_t shard_count = 1;
  std::uint64_t element_offset = 0;
  std::uint64_t numel = 0;
  int owner = 0;                   // rank
  int node = 0;
  int root = 0;                    // root index on that node
  std::uint32_t file = 0;          // index among all files of the plan (see SwapPlan::files)
  std::uint64_t offset = 0;        // byte offset in the file (aligned)
  std::uint64_t bytes = 0;         // numel * dtype size
  std::uint64_t aligned_bytes = 0; // bytes rounded up to the alignment (what is on disk)

  friend bool operator==(const PlanPiece&, const PlanPiece&) = default;
};

// Where one piece of a tensor is in memory and which rank holds it, without its place in
// a file (which needs the owner's other pieces): what an all-gather needs.
struct TensorShard {
  std::uint32_t tensor = 0;
  std::uint32_t shard = 0;
  std::uint32_t shard_count = 1;
  int owner = 0;
  std::uint64_t element_offset = 0;
  std::uint64_t numel = 0;
  std::uint64_t bytes = 0;         // numel * dtype size

  friend bool operator==(const TensorShard&, const TensorShard&) = default;
};
TensorShard shard_of(const PlanPiece& piece) noexcept;

// make_plan's `rank` for a plan that holds every rank's pieces and files.
inline constexpr int kAllRanks = -1;

// A plan keeps, for the whole job, one placement entry per tensor and a few per rank; the
// pieces and files themselves only of the rank it was made for (`holds`), or of every rank
// (kAllRanks: tests, tools, small jobs). Any rank's pieces can be computed from it on
// demand (compute_pieces), and the fingerprint is the same whichever rank a plan holds.
struct SwapPlan {
  // What `placement` says of a tensor that is not one rank's whole.
  static constexpr std::int32_t kSharded = -1;
  static constexpr std::int32_t kEmpty = -2;   // no elements: no piece

  PlanOptions options;
  int world_size = 1;
  int node_count = 1;
  int holds = kAllRanks;            // whose pieces and files are below: a rank, or kAllRanks
  std::vector<PlanPiece> pieces;    // holds's pieces, ordered by (owner, file, offset)
  std::vector<PlanFile> files;      // holds's files, ordered by (owner, tensor); files[i] is
  std::size_t file_base = 0;        // file file_base + i of the whole plan (PlanPiece::file)
  std::vector<std::int32_t> placement;    // per tensor: its owner, kSharded or kEmpty
  std::vector<int> node_of_rank;          // world_size entries
  std::vector<int> root_of_rank;          // world_size entries
  std::vector<std::uint64_t> rank_bytes;  // aligned bytes owned per rank
  std::vector<std::uint64_t> node_bytes;  // aligned bytes per node
  std::vector<std::size_t> rank_first_piece;  // world_size + 1 entries: in the whole plan,
                                              // rank r's pieces are [rank_first_piece[r],
                                              // rank_first_piece[r+1]) (file-per-tensor: and
                                              // its files)
  // XXH64 of the tensor specs (count, and each name, dtype and shape): two tensor lists
  // that differ only in names, dtypes of equal size or the split of numel into dimensions
  // make equal pieces, and this keeps their fingerprints apart.
  std::uint64_t tensor_digest = 0;

  // A held rank's pieces (Error for a rank this plan does not hold: see compute_pieces).
  std::span<const PlanPiece> pieces_of(int rank) const;
  // Any rank's pieces, as make_plan(..., rank) would hold them. `tensors` must be the list
  // the plan was made from (checked: count and digest; Error otherwise). O(tensors).
  std::vector<PlanPiece> compute_pieces(int rank, std::span<const TensorSpec> tensors) const;
  // The pieces of tensor `tensor` (`spec` is its spec), in owner order. O(world_size).
  std::vector<TensorShard> shards_of(std::uint32_t tensor, const TensorSpec& spec) const;
  std::uint64_t total_bytes() const noexcept;   // sum of aligned bytes
  double rank_imbalance() const noexcept;       // max / mean of rank_bytes (1 = perfect)
  double node_imbalance() const noexcept;       // max / mean of node_bytes
  std::size_t memory_bytes() const noexcept;    // what this object holds on the heap
  // A 64-bit hash of the job-wide part (options, sizes, tensor digest, every tensor's
  // placement, the ranks' nodes, roots, bytes and piece counts), from which every piece
  // and file follows: equal plans have equal fingerprints, whichever rank they hold.
  std::uint64_t fingerprint() const noexcept;

  friend bool operator==(const SwapPlan&, const SwapPlan&) = default;
};

// The sharded policy's cut of one tensor of `numel` elements of `element_size` bytes (one
// at or above the shard threshold): the (element_offset, numel) of each rank's shard,
// world_size entries, numel 0 for a rank that has none. A pure function of its arguments,
// so that tensors of one size are cut alike (a parameter and its optimizer state).
std::vector<std::pair<std::uint64_t, std::uint64_t>> shard_ranges(std::uint64_t numel,
                                                                  std::size_t element_size,
                                                                  int world_size,
                                                                  std::size_t alignment_bytes);

// The partitioner. Deterministic: the same inputs give the same plan on every rank.
// `rank`: the rank whose pieces and files the plan holds, or kAllRanks. Memory: O(tensors)
// bytes of placement plus the held rank's pieces (about 20 bytes per tensor at the peak).
// Throws Error for an invalid topology or a `rank` outside it; an empty tensor (a 0
// dimension) is allowed and gets no piece. Also throws Error for more than 2^32 - 1 tensors
// or files, a tensor whose element count or size overflows (more than 2^62 bytes), all
// tensors' bytes together overflowing 64 bits, and ConfigError for an alignment that is
// not a power of two of at most 1 GiB.
// Slab layout: every rank gets its file, also a rank that owns nothing (size 0). Sizes are
// aligned bytes (what is on disk).
//  - balanced: whole tensors, largest first (ties: lower tensor id), each to the node
//    with the least bytes per rank (ties: lower node), then to that node's least-loaded
//    rank (ties: lower rank).
//  - sharded: a tensor of at least shard_threshold_bytes is cut into world_size shards of
//    whole alignment units (a unit is lcm(dtype size, alignment) bytes), rank r owning
//    shard r: each rank gets floor(U / W) or ceil(U / W) of its U units, the U mod W extra
//    units going to the ranks from XXH64(numel, dtype size) mod W on, wrapping (so the
//    extras of different tensors land on different ranks, and tensors of one size are cut
//    alike); shards are contiguous in rank order and the last ends at numel. Smaller
//    tensors are placed whole by the balanced rule, starting from the shards' bytes.
//  - round-robin: tensor i to rank i mod world_size.
// A rank's root is local_rank mod roots_per_node[node]. Slab layout: each rank's pieces
// are laid out in one file, in tensor-id order, at aligned offsets; file-per-tensor: one
// file per piece at offset 0.
SwapPlan make_plan(std::span<const TensorSpec> tensors, const PlanTopology& topology,
                   const PlanOptions& options = {}, int rank = kAllRanks);

// The file's path relative to its root, e.g. "job/rank-3/slot-1.swp" (slab) or
// "job/rank-0/17.1.swp" (file-per-tensor). Throws ConfigError for a job name that is not
// one path component (empty, ".", "..", or containing '/' or NUL) and Error for a
// negative slot.
std::string file_relative_path(const PlanFile& file, std::string_view job, int slot);

}  // namespace swapcoord
