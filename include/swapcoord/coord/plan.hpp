#pragma once
// SwapPlan: where every piece of every swapped tensor lives, computed by a pure,
// deterministic partitioner from (tensor specs, topology, options). Every rank computes
// the same plan on its own and the ranks compare fingerprints (coord/topology.hpp).
// No MPI in this header: plans are unit-tested and benchmarked without mpirun.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
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

struct PlanOptions {
  Policy policy = Policy::balanced;
  Layout layout = Layout::slab;
  std::size_t alignment_bytes = kDefaultAlignmentBytes;  // offsets, shard boundaries, sizes
                                                         // (a power of two, <= 1 GiB)

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
// `balanced` and `round-robin` make one piece per tensor (shard 0 of 1); `sharded` makes
// up to world_size pieces per tensor (shard r is owned by rank r; empty shards are left
// out, so shard_count is world_size and some shard indices may be missing).
struct PlanPiece {
  std::uint32_t tensor = 0;        // index into the tensor specs
  std::uint32_t shard = 0;
  std::uint32_t shard_count = 1;
  std::uint64_t element_offset = 0;
  std::uint64_t numel = 0;
  int owner = 0;                   // rank
  int node = 0;
  int root = 0;                    // root index on that node
  std::uint32_t file = 0;          // index into SwapPlan::files
  std::uint64_t offset = 0;        // byte offset in the file (aligned)
  std::uint64_t bytes = 0;         // numel * dtype size
  std::uint64_t aligned_bytes = 0; // bytes rounded up to the alignment (what is on disk)

  friend bool operator==(const PlanPiece&, const PlanPiece&) = default;
};

struct SwapPlan {
  PlanOptions options;
  int world_size = 1;
  int node_count = 1;
  std::vector<PlanPiece> pieces;   // ordered by (owner, file, offset)
  std::vector<PlanFile> files;     // ordered by (owner, tensor)
  std::vector<std::uint64_t> rank_bytes;  // aligned bytes owned per rank
  std::vector<std::uint64_t> node_bytes;  // aligned bytes per node
  std::vector<std::size_t> rank_first_piece;  // world_size + 1 entries: rank r owns
                                              // pieces [rank_first_piece[r], rank_first_piece[r+1])
  // XXH64 of the tensor specs (count, and each name, dtype and shape): two tensor lists
  // that differ only in names, dtypes of equal size or the split of numel into dimensions
  // make equal pieces, and this keeps their fingerprints apart.
  std::uint64_t tensor_digest = 0;

  std::span<const PlanPiece> pieces_of(int rank) const;
  std::uint64_t total_bytes() const noexcept;   // sum of aligned bytes
  double rank_imbalance() const noexcept;       // max / mean of rank_bytes (1 = perfect)
  double node_imbalance() const noexcept;       // max / mean of node_bytes
  // A 64-bit hash of everything above (options, sizes, every piece and file); equal
  // plans have equal fingerprints, and any difference changes it with near certainty.
  std::uint64_t fingerprint() const noexcept;

  friend bool operator==(const SwapPlan&, const SwapPlan&) = default;
};

// The partitioner. Deterministic: the same inputs give the same plan on every rank.
// Throws Error for an invalid topology, an empty tensor list entry with a 0 dimension is
// allowed (an empty tensor gets no piece), and a tensor with more than 2^32 pieces is not.
// Also throws Error for more than 2^32 - 1 tensors or files, a tensor whose element count
// or size overflows (more than 2^62 bytes), and ConfigError for an alignment that is not a
// power of two of at most 1 GiB.
// Slab layout: every rank gets its file, also a rank that owns nothing (size 0). Balanced
// sorts by bytes and balances aligned bytes (what is on disk).
//  - balanced: whole tensors, largest first (ties: lower tensor id), each to the node
//    with the least bytes per rank (ties: lower node), then to that node's least-loaded
//    rank (ties: lower rank).
//  - sharded: tensor cut into world_size contiguous shards of
//    align_up(ceil(numel / world_size) elements, alignment) each; rank r owns shard r.
//    (The alignment in elements is lcm(dtype size, alignment_bytes) / dtype size, so every
//    shard starts at an aligned byte offset of the tensor.)
//  - round-robin: tensor i to rank i mod world_size.
// A rank's root is local_rank mod roots_per_node[node]. Slab layout: each rank's pieces
// are laid out in one file, in tensor-id order, at aligned offsets; file-per-tensor: one
// file per piece at offset 0.
SwapPlan make_plan(std::span<const TensorSpec> tensors, const PlanTopology& topology,
                   const PlanOptions& options = {});

// The file's path relative to its root, e.g. "job/rank-3/slot-1.swp" (slab) or
// "job/rank-0/17.1.swp" (file-per-tensor). Throws ConfigError for a job name that is not
// one path component (empty, ".", "..", or containing '/' or NUL) and Error for a
// negative slot.
std::string file_relative_path(const PlanFile& file, std::string_view job, int slot);

}  // namespace swapcoord
