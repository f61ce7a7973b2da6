// The pure, deterministic partitioner (plan.hpp). No MPI here: every rank runs make_plan
// on the same inputs and gets the same plan, which the ranks then compare by fingerprint.
//
// How a plan is built (all policies):
//  1. one pass over the specs: sizes (checked for overflow) and the digest of names,
//     dtypes and shapes;
//  2. placement: round-robin is i mod W; sharded cuts each tensor at or above the threshold
//     by a pure function of its size (Cut), adding its bytes and pieces to the ranks
//     through difference arrays; balanced (and sharded's small tensors) sorts the ids by
//     bytes (a stable radix sort of 4-byte ids) and places each with a tournament tree
//     over the nodes and one over each node's ranks, on top of the shards' bytes;
//  3. pieces, only of the held rank (or rank by rank for kAllRanks), each written once and
//     in order, so they come out ordered by (owner, file, offset) with slab offsets a
//     running sum; file-per-tensor gives each piece its own file, in the same order.
// Cost: O(T log N + T log R) for balanced, O(T + W + held pieces) otherwise. Memory: the
// placement (4 bytes a tensor) and the per-rank counts are kept; the sizes and the sort
// (16 bytes a tensor) are freed before the pieces are written.
#include "swapcoord/coord/plan.hpp"

#include <fmt/format.h>

#define XXH_STATIC_LINKING_ONLY  // XXH64_state_t on the stack: fingerprint() is noexcept
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include "swapcoord/common/error.hpp"

namespace swapcoord {
namespace {

// Exact 128-bit products for the bytes-per-rank comparison (GCC and Clang).
__extension__ typedef unsigned __int128 Uint128;

constexpr std::uint64_t kMaxTensorBytes = std::uint64_t{1} << 62;
constexpr std::uint64_t kMaxAlignmentBytes = std::uint64_t{1} << 30;
constexpr std::uint64_t kMaxIndex = std::numeric_limits<std::uint32_t>::max();

constexpr std::string_view kPolicyNames[] = {"balanced", "sharded", "round-robin"};
constexpr std::string_view kLayoutNames[] = {"slab", "file-per-tensor"};

// ---- canonical encoding for XXH64 ------------------------------------------------------

// Fixed-width little-endian fields into a small buffer, handed to the XXH64 streaming
// state when full: the hash never sees struct padding and is the same on every host.
class HashWriter {
 public:
  explicit HashWriter(std::uint64_t seed) noexcept { XXH64_reset(&_state, seed); }
  HashWriter(const HashWriter&) = delete;
  HashWriter& operator=(const HashWriter&) = delete;

  void u8(std::uint8_t value) noexcept { put(&value, 1); }
  void u32(std::uint32_t value) noexcept {
    if constexpr (std::endian::native == std::endian::big) value = __builtin_bswap32(value);
    put(&value, sizeof value);
  }
  void u64(std::uint64_t value) noexcept {
    if constexpr (std::endian::native == std::endian::big) value = __builtin_bswap64(value);
    put(&value, sizeof value);
  }
  void i32(int value) noexcept { u32(static_cast<std::uint32_t>(value)); }
  void i64(std::int64_t value) noexcept { u64(static_cast<std::uint64_t>(value)); }
  void text(std::string_view value) noexcept {
    u64(value.size());
    if (value.size() > sizeof _buffer - _used) {
      flush();
      XXH64_update(&_state, value.data(), value.size());
    } else {
      put(value.data(), value.size());
    }
  }
  std::uint64_t digest() noexcept {
    flush();
    return XXH64_digest(&_state);
  }

 private:
  void put(const void* data, std::size_t size) noexcept {
    if (size > sizeof _buffer - _used) flush();
    std::memcpy(_buffer + _used, data, size);
    _used += size;
  }
  void flush() noexcept {
    if (_used > 0) XXH64_update(&_state, _buffer, _used);
    _used = 0;
  }

  XXH64_state_t _state;
  std::size_t _used = 0;
  unsigned char _buffer[8192];
};

constexpr std::uint64_t kTensorDigestSeed = 0x73776170'74656e73ULL;  // "swaptens"
constexpr std::uint64_t kPlanSeed = 0x73776170'706c616eULL;          // "swapplan"
constexpr std::uint32_t kPlanEncodingVersion = 2;  // 2: the job-wide part, not every piece

// ---- per-tensor sizes --------------------------------------------------------------------

std::uint64_t checked_numel(const TensorSpec& tensor, std::size_t id) {
  std::uint64_t numel = 1;
  for (std::size_t d = 0; d < tensor.shape.size(); ++d) {
    if (tensor.shape[d] == 0) return 0;
  }
  for (std::size_t d = 0; d < tensor.shape.size(); ++d) {
    if (__builtin_mul_overflow(numel, tensor.shape[d], &numel))
      throw Error(
          fmt::format("make_plan: tensor {} ('{}'): the element count of its shape "
                      "overflows 64 bits (dimension {} is {})",
                      id, tensor.name, d, tensor.shape[d]));
  }
  return numel;
}


}  // namespace

// ---- TensorSpec, Policy, Layout ---------------------------------------------------------

std::uint64_t TensorSpec::numel() const noexcept {
  std::uint64_t numel = 1;
  for (auto dim : shape) numel *= dim;
  return numel;
}

std::string_view to_string(Policy policy) noexcept {
  const auto index = static_cast<std::size_t>(policy);
  return index < std::size(kPolicyNames) ? kPolicyNames[index] : "unknown";
}

std::string_view to_string(Layout layout) noexcept {
  const auto index = static_cast<std::size_t>(layout);
  return index < std::size(kLayoutNames) ? kLayoutNames[index] : "unknown";
}

Policy parse_policy(std::string_view text) {
  for (std::size_t i = 0; i < std::size(kPolicyNames); ++i)
    if (text == kPolicyNames[i]) return static_cast<Policy>(i);
  throw ConfigError(
      fmt::format("swap policy '{}' is not one of balanced, sharded, round-robin", text));
}

Layout parse_layout(std::string_view text) {
  for (std::size_t i = 0; i < std::size(kLayoutNames); ++i)
    if (text == kLayoutNames[i]) return static_cast<Layout>(i);
  throw ConfigError(fmt::format("swap layout '{}' is not one of slab, file-per-tensor", text));
}

// ---- PlanTopology ------------------------------------------------------------------------

PlanTopology PlanTopology::uniform(int nodes, int ranks_per_node, int roots) {
  if (nodes < 1)
    throw Error(fmt::format("PlanTopology::uniform: node count {} is less than 1", nodes));
  if (ranks_per_node < 1)
    throw Error(
        fmt::format("PlanTopology::uniform: ranks per node {} is less than 1", ranks_per_node));
  if (roots < 1)
    throw Error(fmt::format("PlanTopology::uniform: roots per node {} is less than 1", roots));
  int world = 0;
  if (__builtin_mul_overflow(nodes, ranks_per_node, &world))
    throw Error(fmt::format("PlanTopology::uniform: {} nodes x {} ranks overflows an int", nodes,
                            ranks_per_node));
  PlanTopology topology;
  topology.world_size = world;
  topology.node_count = nodes;
  topology.node_of_rank.resize(static_cast<std::size_t>(world));
  topology.local_rank_of_rank.resize(static_cast<std::size_t>(world));
  for (int rank = 0; rank < world; ++rank) {
    topology.node_of_rank[static_cast<std::size_t>(rank)] = rank / ranks_per_node;
    topology.local_rank_of_rank[static_cast<std::size_t>(rank)] = rank % ranks_per_node;
  }
  topology.roots_per_node.assign(static_cast<std::size_t>(nodes), roots);
  return topology;
}

void PlanTopology::validate() const {
  if (world_size < 1)
    throw Error(fmt::format("plan topology: world size {} is less than 1", world_size));
  if (node_count < 1)
    throw Error(fmt::format("plan topology: node count {} is less than 1", node_count));
  const auto world = static_cast<std::size_t>(world_size);
  const auto nodes = static_cast<std::size_t>(node_count);
  if (node_of_rank.size() != world)
    throw Error(fmt::format("plan topology: node_of_rank has {} entries for world size {}",
                            node_of_rank.size(), world_size));
  if (local_rank_of_rank.size() != world)
    throw Error(fmt::format("plan topology: local_rank_of_rank has {} entries for world size {}",
                            local_rank_of_rank.size(), world_size));
  if (roots_per_node.size() != nodes)
    throw Error(fmt::format("plan topology: roots_per_node has {} entries for node count {}",
                            roots_per_node.size(), node_count));
  for (std::size_t node = 0; node < nodes; ++node) {
    if (roots_per_node[node] < 1)
      throw Error(fmt::format("plan topology: node {} has {} swap roots (at least 1 needed)", node,
                              roots_per_node[node]));
  }
  std::vector<int> ranks_on_node(nodes, 0);
  for (std::size_t rank = 0; rank < world; ++rank) {
    const int node = node_of_rank[rank];
    if (node < 0 || node >= node_count)
      throw Error(fmt::format("plan topology: rank {} is on node {}, outside 0..{}", rank, node,
                              node_count - 1));
    ++ranks_on_node[static_cast<std::size_t>(node)];
  }
  for (std::size_t node = 0; node < nodes; ++node) {
    if (ranks_on_node[node] == 0)
      throw Error(fmt::format("plan topology: node {} has no ranks", node));
  }
  // Local ranks on each node must be exactly 0..k-1: mark each one seen, per node.
  std::vector<std::size_t> first(nodes + 1, 0);
  for (std::size_t node = 0; node < nodes; ++node)
    first[node + 1] = first[node] + static_cast<std::size_t>(ranks_on_node[node]);
  std::vector<int> seen(world, -1);  // seen[first[node] + local] = the rank that has it
  for (std::size_t rank = 0; rank < world; ++rank) {
    const auto node = static_cast<std::size_t>(node_of_rank[rank]);
    const int local = local_rank_of_rank[rank];
    if (local < 0 || local >= ranks_on_node[node])
      throw Error(
          fmt::format("plan topology: rank {} has local rank {} on node {}, which has "
                      "{} ranks (local ranks must be 0..{})",
                      rank, local, node, ranks_on_node[node], ranks_on_node[node] - 1));
    int& slot = seen[first[node] + static_cast<std::size_t>(local)];
    if (slot >= 0)
      throw Error(fmt::format("plan topology: ranks {} and {} both have local rank {} on node {}",
                              slot, rank, local, node));
    slot = static_cast<int>(rank);
  }
}

// ---- the sharded cut -----------------------------------------------------------------------

namespace {

constexpr std::uint64_t kCutSeed = 0x73776170'63757473ULL;  // "swapcuts"

// One sharded tensor's cut (plan.hpp): `units` units of `unit` elements, `base` per rank
// and the `extra` = units mod world ones on ranks start, start + 1, ... (mod world).
struct Cut {
  std::uint64_t numel = 0;
  std::uint64_t unit = 1;
  std::uint64_t base = 0;
  std::uint64_t extra = 0;
  std::uint64_t start = 0;
  std::uint64_t world = 1;

  Cut(std::uint64_t numel_, std::uint64_t element_size, std::uint64_t world_, std::uint64_t alignment)
      : numel(numel_), unit(std::lcm(element_size, alignment) / element_size), world(world_) {
    const std::uint64_t units = numel / unit + (numel % unit != 0 ? 1 : 0);
    base = units / world;
    extra = units % world;
    if (extra != 0) {
      std::uint64_t key[2] = {numel, element_size};
      if constexpr (std::endian::native == std::endian::big)
        for (auto& k : key) k = __builtin_bswap64(k);
      start = XXH64(key, sizeof key, kCutSeed) % world;
    }
  }
  bool in_window(std::uint64_t r) const noexcept { return (r + world - start) % world < extra; }
  std::uint64_t units_of(std::uint64_t r) const noexcept { return base + (in_window(r) ? 1 : 0); }
  // Extra units on ranks 0 .. r-1.
  std::uint64_t extras_before(std::uint64_t r) const noexcept {
    if (start + extra <= world) return r <= start ? 0 : std::min(r - start, extra);
    return std::min(r, start + extra - world) + (r > start ? r - start : 0);
  }
  // Rank r's elements: [first, first + count).
  std::pair<std::uint64_t, std::uint64_t> range_of(std::uint64_t r) const noexcept {
    const std::uint64_t n = units_of(r);
    if (n == 0) return {0, 0};
    const std::uint64_t first = (r * base + extras_before(r)) * unit;
    return {first, std::min(numel, first + n * unit) - first};
  }
  // The rank that holds the last unit (the only shard that may end short of a unit).
  std::uint64_t last_rank() const noexcept {
    return base > 0 || start + extra > world ? world - 1 : start + extra - 1;
  }
};

double imbalance(const std::vector<std::uint64_t>& bytes) noexcept {
  if (bytes.empty()) return 1.0;
  std::uint64_t max = 0;
  double sum = 0;
  for (auto b : bytes) {
    max = std::max(max, b);
    sum += static_cast<double>(b);
  }
  if (sum == 0) return 1.0;  // nothing to balance: perfectly balanced
  return static_cast<double>(max) / (sum / static_cast<double>(bytes.size()));
}

std::uint64_t tensor_digest_of(std::span<const TensorSpec> tensors) noexcept {
  HashWriter digest(kTensorDigestSeed);
  digest.u64(tensors.size());
  for (const TensorSpec& tensor : tensors) {
    digest.text(tensor.name);
    digest.u8(static_cast<std::uint8_t>(tensor.dtype));
    digest.u64(tensor.shape.size());
    for (auto dim : tensor.shape) digest.u64(dim);
  }
  return digest.digest();
}

// Appends rank r's pieces to `out` (and, file-per-tensor, its files to `files`): its whole
// tensors (`whole`, ascending ids, all owned by r) merged with its shards of the `sharded`
// tensors (ascending ids; a tensor whose share on r is empty is skipped), in id order.
void append_rank_pieces(const SwapPlan& plan, std::span<const TensorSpec> tensors, int rank,
                        std::span<const std::uint32_t> whole, std::span<const std::uint32_t> sharded,
                        std::vector<PlanPiece>& out, std::vector<PlanFile>& files) {
  const auto r = static_cast<std::size_t>(rank);
  const std::uint64_t alignment = plan.options.alignment_bytes;
  const bool slab = plan.options.layout == Layout::slab;
  const auto world = static_cast<std::uint64_t>(plan.world_size);
  PlanPiece piece;
  piece.owner = rank;
  piece.node = plan.node_of_rank[r];
  piece.root = plan.root_of_rank[r];
  piece.file = static_cast<std::uint32_t>(r);
  std::uint64_t offset = 0;  // slab: the running end of the rank's file
  std::size_t index = plan.rank_first_piece[r];
  const auto emit = [&](std::uint32_t t, std::uint32_t shard, std::uint32_t shard_count, std::uint64_t first,
                        std::uint64_t numel) {
    piece.tensor = t;
    piece.shard = shard;
    piece.shard_count = shard_count;
    piece.element_offset = first;
    piece.numel = numel;
    piece.bytes = numel * dtype_size(tensors[t].dtype);
    piece.aligned_bytes = align_up(piece.bytes, alignment);
    if (slab) {
      piece.offset = offset;
    } else {
      piece.file = static_cast<std::uint32_t>(index);
      files.push_back(PlanFile{rank, piece.root, t, piece.aligned_bytes});
    }
    ++index;
    offset += piece.aligned_bytes;  // <= rank_bytes[r], which fits: no overflow
    out.push_back(piece);
  };
  std::size_t w = 0, s = 0;
  while (w < whole.size() || s < sharded.size()) {
    if (s == sharded.size() || (w < whole.size() && whole[w] < sharded[s])) {
      const std::uint32_t t = whole[w++];
      emit(t, 0, 1, 0, tensors[t].numel());
    } else {
      const std::uint32_t t = sharded[s++];
      const Cut cut(tensors[t].numel(), dtype_size(tensors[t].dtype), world, alignment);
      const auto [first, numel] = cut.range_of(r);
      if (numel > 0) emit(t, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(world), first, numel);
    }
  }
  if (index != plan.rank_first_piece[r + 1] || offset != plan.rank_bytes[r])
    throw Error(fmt::format("make_plan: internal error: rank {} has {} pieces and {} bytes, the counts said {} and {}",
                            rank, index - plan.rank_first_piece[r], offset,
                            plan.rank_first_piece[r + 1] - plan.rank_first_piece[r], plan.rank_bytes[r]));
}

}  // namespace

TensorShard shard_of(const PlanPiece& piece) noexcept {
  return {piece.tensor, piece.shard, piece.shard_count, piece.owner, piece.element_offset, piece.numel, piece.bytes};
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> shard_ranges(std::uint64_t numel, std::size_t element_size,
                                                                  int world_size, std::size_t alignment_bytes) {
  if (world_size < 1) throw Error(fmt::format("shard_ranges: world size {} is less than 1", world_size));
  if (element_size == 0 || !std::has_single_bit(element_size) || element_size > 8)
    throw Error(fmt::format("shard_ranges: element size {} is not 1, 2, 4 or 8", element_size));
  if (alignment_bytes == 0 || !std::has_single_bit(alignment_bytes) || alignment_bytes > kMaxAlignmentBytes)
    throw ConfigError(fmt::format("shard_ranges: alignment_bytes {} is not a power of two between 1 and {}",
                                  alignment_bytes, kMaxAlignmentBytes));
  const auto world = static_cast<std::size_t>(world_size);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out(world, {0, 0});
  if (numel == 0) return out;
  const Cut cut(numel, element_size, world, alignment_bytes);
  for (std::size_t r = 0; r < world; ++r) out[r] = cut.range_of(r);
  return out;
}

// ---- SwapPlan ----------------------------------------------------------------------------

std::span<const PlanPiece> SwapPlan::pieces_of(int rank) const {
  if (rank < 0 || rank >= world_size || rank_first_piece.size() != static_cast<std::size_t>(world_size) + 1)
    throw Error(fmt::format("SwapPlan::pieces_of: rank {} is outside 0..{}", rank, world_size - 1));
  if (holds == rank) return pieces;
  if (holds != kAllRanks)
    throw Error(fmt::format("SwapPlan::pieces_of: this plan holds rank {}'s pieces, not rank {}'s "
                            "(compute_pieces gives any rank's)", holds, rank));
  const auto r = static_cast<std::size_t>(rank);
  return std::span<const PlanPiece>(pieces).subspan(rank_first_piece[r], rank_first_piece[r + 1] - rank_first_piece[r]);
}

std::vector<PlanPiece> SwapPlan::compute_pieces(int rank, std::span<const TensorSpec> tensors) const {
  if (rank < 0 || rank >= world_size || rank_first_piece.size() != static_cast<std::size_t>(world_size) + 1)
    throw Error(fmt::format("SwapPlan::compute_pieces: rank {} is outside 0..{}", rank, world_size - 1));
  if (tensors.size() != placement.size() || tensor_digest_of(tensors) != tensor_digest)
    throw Error(fmt::format("SwapPlan::compute_pieces: the {} tensors given are not the {} the plan was made from "
                            "(their names, dtypes or shapes differ)", tensors.size(), placement.size()));
  std::vector<std::uint32_t> whole, sharded;
  for (std::size_t t = 0; t < placement.size(); ++t) {
    if (placement[t] == rank) whole.push_back(static_cast<std::uint32_t>(t));
    else if (placement[t] == kSharded) sharded.push_back(static_cast<std::uint32_t>(t));
  }
  std::vector<PlanPiece> out;
  std::vector<PlanFile> unused;  // the files are the plan's to hold
  out.reserve(rank_first_piece[static_cast<std::size_t>(rank) + 1] - rank_first_piece[static_cast<std::size_t>(rank)]);
  append_rank_pieces(*this, tensors, rank, whole, sharded, out, unused);
  return out;
}

std::vector<TensorShard> SwapPlan::shards_of(std::uint32_t tensor, const TensorSpec& spec) const {
  if (tensor >= placement.size())
    throw Error(fmt::format("SwapPlan::shards_of: tensor {} is outside the plan's {} tensors", tensor, placement.size()));
  const std::int32_t where = placement[tensor];
  const std::uint64_t size = dtype_size(spec.dtype);
  std::vector<TensorShard> out;
  if (where == kEmpty) return out;
  if (where >= 0) {
    out.push_back({tensor, 0, 1, where, 0, spec.numel(), spec.numel() * size});
    return out;
  }
  const auto world = static_cast<std::uint64_t>(world_size);
  const Cut cut(spec.numel(), size, world, options.alignment_bytes);
  for (std::uint64_t r = 0; r < world; ++r) {
    const auto [first, numel] = cut.range_of(r);
    if (numel > 0)
      out.push_back({tensor, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(world), static_cast<int>(r),
                     first, numel, numel * size});
  }
  return out;
}

std::uint64_t SwapPlan::total_bytes() const noexcept {
  return std::accumulate(rank_bytes.begin(), rank_bytes.end(), std::uint64_t{0});
}

double SwapPlan::rank_imbalance() const noexcept { return imbalance(rank_bytes); }
double SwapPlan::node_imbalance() const noexcept { return imbalance(node_bytes); }

std::size_t SwapPlan::memory_bytes() const noexcept {
  return pieces.capacity() * sizeof(PlanPiece) + files.capacity() * sizeof(PlanFile) +
         placement.capacity() * sizeof(std::int32_t) + (node_of_rank.capacity() + root_of_rank.capacity()) * sizeof(int) +
         (rank_bytes.capacity() + node_bytes.capacity()) * sizeof(std::uint64_t) +
         rank_first_piece.capacity() * sizeof(std::size_t);
}

std::uint64_t SwapPlan::fingerprint() const noexcept {
  HashWriter hash(kPlanSeed);
  hash.u32(kPlanEncodingVersion);
  hash.u8(static_cast<std::uint8_t>(options.policy));
  hash.u8(static_cast<std::uint8_t>(options.layout));
  hash.u64(options.alignment_bytes);
  hash.u64(options.shard_threshold_bytes);
  hash.i32(world_size);
  hash.i32(node_count);
  hash.u64(tensor_digest);
  hash.u64(placement.size());
  for (auto p : placement) hash.i32(p);
  hash.u64(node_of_rank.size());
  for (auto n : node_of_rank) hash.i32(n);
  hash.u64(root_of_rank.size());
  for (auto r : root_of_rank) hash.i32(r);
  hash.u64(rank_bytes.size());
  for (auto bytes : rank_bytes) hash.u64(bytes);
  hash.u64(node_bytes.size());
  for (auto bytes : node_bytes) hash.u64(bytes);
  hash.u64(rank_first_piece.size());
  for (auto first : rank_first_piece) hash.u64(first);
  return hash.digest();
}

// ---- make_plan ---------------------------------------------------------------------------

namespace {

// Sorts tensor ids by bytes, largest first, ties to the lower id: a stable LSD radix sort
// of the ids, 11 bits a pass, keyed by ~bytes[id] and only over the bits in which the keys
// differ (sizes of 1 KiB .. 64 MiB take two passes). Sorting the 4-byte ids, not (key, id)
// pairs, keeps the peak memory of a plan of a million tensors at a few MB.
void sort_largest_first(std::vector<std::uint32_t>& ids, const std::vector<std::uint64_t>& bytes) {
  if (ids.size() < 2) return;
  std::uint64_t differ = 0;
  const std::uint64_t key0 = bytes[ids[0]];
  for (auto id : ids) differ |= bytes[id] ^ key0;
  if (differ == 0) return;
  constexpr unsigned kBits = 11;
  constexpr std::size_t kBuckets = std::size_t{1} << kBits;
  const unsigned low = static_cast<unsigned>(std::countr_zero(differ));
  const unsigned high = 64 - static_cast<unsigned>(std::countl_zero(differ));
  std::vector<std::uint32_t> scratch(ids.size());
  std::vector<std::size_t> position(kBuckets);
  for (unsigned shift = low; shift < high; shift += kBits) {
    const auto digit = [&](std::uint32_t id) { return (~bytes[id] >> shift) & (kBuckets - 1); };
    std::fill(position.begin(), position.end(), 0);
    for (auto id : ids) ++position[digit(id)];
    std::size_t sum = 0;
    for (auto& p : position) sum += std::exchange(p, sum);
    for (auto id : ids) scratch[position[digit(id)]++] = id;
    ids.swap(scratch);
  }
}

// ---- balanced placement ------------------------------------------------------------------
//
// Least-loaded selection uses tournament (winner) trees that carry the entries themselves:
// leaves are the candidates, padded to a power of two with entries that always lose, and
// every inner slot holds the better of its two children, so the root is the choice. After
// the root's load grows, its path to the root is replayed: log2(n) comparisons of the
// climbing entry with a sibling loaded from memory, which compile to conditional moves.
// A binary heap's sift-down does the same work but stops at an unpredictable level, and
// a tree of indices makes every level wait for a load; both were slower here.

struct Entry {
  std::uint64_t load;    // aligned bytes placed
  std::uint64_t weight;  // nodes: ranks on the node; ranks: 1
  std::uint64_t index;   // position among the tree's candidates (ties go to the lower)
};

constexpr Entry kLoser{std::numeric_limits<std::uint64_t>::max(), 1,
                       std::numeric_limits<std::uint64_t>::max()};

// a before b when a.load / a.weight < b.load / b.weight, compared exactly as 128-bit
// cross products, ties to the lower index.
struct ByLoadPerWeight {
  bool operator()(const Entry& a, const Entry& b) const noexcept {
    const Uint128 lhs = static_cast<Uint128>(a.load) * b.weight;
    const Uint128 rhs = static_cast<Uint128>(b.load) * a.weight;
    return (lhs < rhs) | ((lhs == rhs) & (a.index < b.index));  // no short circuit: no branch
  }
};
// The same order when all weights are equal.
struct ByLoad {
  bool operator()(const Entry& a, const Entry& b) const noexcept {
    return (a.load < b.load) | ((a.load == b.load) & (a.index < b.index));
  }
};

// One tree over `slots[0, 2 * leaves)`: slots[1] is the root, slots[leaves + i] leaf i,
// candidate i starting with loads[i].
template <class Better>
void build_tree(Entry* slots, std::size_t leaves, std::span<const std::uint64_t> weights,
                std::span<const std::uint64_t> loads) {
  for (std::size_t i = 0; i < leaves; ++i)
    slots[leaves + i] = i < weights.size() ? Entry{loads[i], weights[i], i} : kLoser;
  for (std::size_t k = leaves - 1; k >= 1; --k) {
    const Entry& a = slots[2 * k];
    const Entry& b = slots[2 * k + 1];
    slots[k] = Better{}(a, b) ? a : b;
  }
}

// Adds `bytes` to the root's candidate and replays its path; returns the candidate's index.
template <class Better>
std::uint64_t add_to_winner(Entry* slots, std::size_t leaves, std::uint64_t bytes,
                            const char* what) {
  Entry climbing = slots[1];
  if (__builtin_add_overflow(climbing.load, bytes, &climbing.load))
    throw Error(
        fmt::format("make_plan: the bytes placed on {} {} overflow 64 bits", what, climbing.index));
  std::size_t k = leaves + climbing.index;
  slots[k] = climbing;
  const std::uint64_t index = climbing.index;
  Entry best = climbing;
  for (; k > 1; k >>= 1) {
    const Entry sibling = slots[k ^ 1];
    // Select with masks: a conditional branch here is mispredicted half of the time.
    const std::uint64_t keep =
        std::uint64_t{0} - static_cast<std::uint64_t>(Better{}(best, sibling));
    best.load = (best.load & keep) | (sibling.load & ~keep);
    best.weight = (best.weight & keep) | (sibling.weight & ~keep);
    best.index = (best.index & keep) | (sibling.index & ~keep);
    slots[k >> 1] = best;
  }
  return index;
}

// Places `order` (largest first) on top of the loads already in `rank_bytes`: each tensor
// to the node with the least bytes per rank, then to that node's least-loaded rank.
// Writes placement[tensor] and adds to rank_bytes.
template <class NodeBetter>
void place_balanced(const std::vector<std::uint32_t>& order, const std::vector<std::uint64_t>& bytes,
                    std::uint64_t alignment, const PlanTopology& topology,
                    std::vector<std::uint64_t>& rank_bytes, std::vector<std::int32_t>& placement) {
  const auto nodes = static_cast<std::size_t>(topology.node_count);
  std::vector<std::uint64_t> ranks_on_node(nodes, 0), node_loads(nodes, 0);
  for (std::size_t r = 0; r < topology.node_of_rank.size(); ++r) {
    const auto n = static_cast<std::size_t>(topology.node_of_rank[r]);
    ++ranks_on_node[n];
    node_loads[n] += rank_bytes[r];  // the total fits (checked by make_plan)
  }

  const std::size_t node_leaves = std::bit_ceil(nodes);
  std::vector<Entry> node_tree(2 * node_leaves);
  build_tree<NodeBetter>(node_tree.data(), node_leaves, ranks_on_node, node_loads);

  // One tree per node over its ranks (ascending, so a lower index is a lower rank).
  std::vector<std::size_t> tree_first(nodes + 1, 0), rank_first(nodes + 1, 0);
  for (std::size_t n = 0; n < nodes; ++n) {
    tree_first[n + 1] = tree_first[n] + 2 * std::bit_ceil(ranks_on_node[n]);
    rank_first[n + 1] = rank_first[n] + ranks_on_node[n];
  }
  std::vector<int> rank_at(topology.node_of_rank.size());
  {
    std::vector<std::size_t> next(rank_first.begin(), rank_first.end() - 1);
    for (std::size_t r = 0; r < rank_at.size(); ++r)
      rank_at[next[static_cast<std::size_t>(topology.node_of_rank[r])]++] = static_cast<int>(r);
  }
  std::vector<Entry> rank_trees(tree_first[nodes]);
  std::vector<std::uint64_t> ones, loads;
  for (std::size_t n = 0; n < nodes; ++n) {
    ones.assign(ranks_on_node[n], 1);
    loads.clear();
    for (std::size_t i = rank_first[n]; i < rank_first[n + 1]; ++i)
      loads.push_back(rank_bytes[static_cast<std::size_t>(rank_at[i])]);
    build_tree<ByLoad>(rank_trees.data() + tree_first[n], std::bit_ceil(ranks_on_node[n]), ones, loads);
  }

  for (const std::uint32_t t : order) {
    const std::uint64_t aligned = align_up(bytes[t], alignment);
    const std::uint64_t n = add_to_winner<NodeBetter>(node_tree.data(), node_leaves, aligned, "node");
    const std::size_t leaves = (tree_first[n + 1] - tree_first[n]) / 2;
    const std::uint64_t local =
        add_to_winner<ByLoad>(rank_trees.data() + tree_first[n], leaves, aligned, "rank");
    const int owner = rank_at[rank_first[n] + local];
    placement[t] = owner;
    rank_bytes[static_cast<std::size_t>(owner)] += aligned;
  }
}

// Adds `value` to ranks [first, first + count) mod world of a difference array (world + 1
// entries; unsigned wrap-around is exact once summed).
void add_window(std::vector<std::uint64_t>& diff, std::uint64_t first, std::uint64_t count, std::uint64_t value) {
  const std::uint64_t world = diff.size() - 1;
  if (count == 0) return;
  const std::uint64_t end = first + count;
  if (end <= world) {
    diff[first] += value;
    diff[end] -= value;
  } else {
    diff[first] += value;
    diff[world] -= value;
    diff[0] += value;
    diff[end - world] -= value;
  }
}

}  // namespace

SwapPlan make_plan(std::span<const TensorSpec> tensors, const PlanTopology& topology,
                   const PlanOptions& options, int rank) {
  topology.validate();
  const std::uint64_t alignment = options.alignment_bytes;
  if (alignment == 0 || !std::has_single_bit(alignment) || alignment > kMaxAlignmentBytes)
    throw ConfigError(
        fmt::format("make_plan: alignment_bytes {} is not a power of two between 1 and {}",
                    alignment, kMaxAlignmentBytes));
  if (tensors.size() > kMaxIndex)
    throw Error(fmt::format("make_plan: {} tensors are more than a plan can index ({})",
                            tensors.size(), kMaxIndex));
  if (options.policy != Policy::balanced && options.policy != Policy::sharded &&
      options.policy != Policy::round_robin)
    throw ConfigError(
        fmt::format("make_plan: unknown policy value {}", static_cast<int>(options.policy)));
  if (options.layout != Layout::slab && options.layout != Layout::file_per_tensor)
    throw ConfigError(
        fmt::format("make_plan: unknown layout value {}", static_cast<int>(options.layout)));
  if (rank != kAllRanks && (rank < 0 || rank >= topology.world_size))
    throw Error(fmt::format("make_plan: rank {} is outside 0..{}", rank, topology.world_size - 1));

  const auto world = static_cast<std::size_t>(topology.world_size);
  const auto nodes = static_cast<std::size_t>(topology.node_count);
  const std::size_t count = tensors.size();
  const bool slab = options.layout == Layout::slab;

  SwapPlan plan;
  plan.options = options;
  plan.world_size = topology.world_size;
  plan.node_count = topology.node_count;
  plan.holds = rank;
  plan.node_of_rank = topology.node_of_rank;
  plan.root_of_rank.resize(world);
  for (std::size_t r = 0; r < world; ++r) {
    const auto node = static_cast<std::size_t>(topology.node_of_rank[r]);
    plan.root_of_rank[r] = topology.local_rank_of_rank[r] % topology.roots_per_node[node];
  }

  // 1. sizes, checked, and the digest of the specs. `total` bounds every sum below: a
  //    tensor's aligned bytes plus, sharded, an alignment unit of rounding per rank.
  std::vector<std::uint64_t> bytes(count);
  {
    std::uint64_t total = 0;
    for (std::size_t t = 0; t < count; ++t) {
      const TensorSpec& tensor = tensors[t];
      const std::uint64_t numel = checked_numel(tensor, t);
      const std::uint64_t size = dtype_size(tensor.dtype);
      if (__builtin_mul_overflow(numel, size, &bytes[t]) || bytes[t] > kMaxTensorBytes)
        throw Error(
            fmt::format("make_plan: tensor {} ('{}') has {} elements of {}, more than {} bytes",
                        t, tensor.name, numel, dtype_name(tensor.dtype), kMaxTensorBytes));
      std::uint64_t most = align_up(bytes[t], alignment);
      if (options.policy == Policy::sharded) most += world * std::lcm(size, alignment);
      if (__builtin_add_overflow(total, most, &total))
        throw Error(fmt::format("make_plan: the bytes of tensors 0..{} add up to more than 64 bits", t));
    }
    plan.tensor_digest = tensor_digest_of(tensors);
  }

  // 2. placement, rank bytes and piece counts (sharded tensors through difference arrays:
  //    O(1) a tensor, not O(world)).
  plan.placement.assign(count, SwapPlan::kEmpty);
  plan.rank_bytes.assign(world, 0);
  std::vector<std::uint64_t> piece_count(world, 0);
  if (options.policy == Policy::round_robin) {
    for (std::size_t t = 0; t < count; ++t) {
      if (bytes[t] == 0) continue;
      const std::size_t r = t % world;
      plan.placement[t] = static_cast<std::int32_t>(r);
      plan.rank_bytes[r] += align_up(bytes[t], alignment);
      ++piece_count[r];
    }
  } else {
    std::vector<std::uint32_t> order;  // the tensors placed whole
    if (options.policy == Policy::sharded) {
      std::vector<std::uint64_t> bytes_diff(world + 1, 0), count_diff(world + 1, 0);
      std::uint64_t all_bytes = 0, all_count = 0;  // what every rank gets
      for (std::size_t t = 0; t < count; ++t) {
        if (bytes[t] == 0 || bytes[t] < options.shard_threshold_bytes) continue;
        plan.placement[t] = SwapPlan::kSharded;
        const std::uint64_t size = dtype_size(tensors[t].dtype);
        const Cut cut(bytes[t] / size, size, world, alignment);
        const std::uint64_t unit_bytes = cut.unit * size;  // a multiple of the alignment
        all_bytes += cut.base * unit_bytes;
        add_window(bytes_diff, cut.start, cut.extra, unit_bytes);
        if (cut.base > 0) ++all_count;
        else add_window(count_diff, cut.start, cut.extra, 1);
        // The last shard may end short of a whole unit.
        const std::uint64_t last = cut.last_rank();
        const std::uint64_t short_by =
            cut.units_of(last) * unit_bytes - align_up(cut.range_of(last).second * size, alignment);
        bytes_diff[last] -= short_by;
        bytes_diff[last + 1] += short_by;
      }
      std::uint64_t b = 0, c = 0;
      for (std::size_t r = 0; r < world; ++r) {
        b += bytes_diff[r];
        c += count_diff[r];
        plan.rank_bytes[r] = all_bytes + b;
        piece_count[r] = all_count + c;
      }
    }
    order.reserve(count);
    for (std::size_t t = 0; t < count; ++t)
      if (bytes[t] > 0 && plan.placement[t] == SwapPlan::kEmpty) order.push_back(static_cast<std::uint32_t>(t));
    sort_largest_first(order, bytes);
    std::vector<int> ranks_on_node(nodes, 0);
    for (int node : topology.node_of_rank) ++ranks_on_node[static_cast<std::size_t>(node)];
    const bool uniform = std::all_of(ranks_on_node.begin(), ranks_on_node.end(),
                                     [&](int r) { return r == ranks_on_node[0]; });
    if (uniform)
      place_balanced<ByLoad>(order, bytes, alignment, topology, plan.rank_bytes, plan.placement);
    else
      place_balanced<ByLoadPerWeight>(order, bytes, alignment, topology, plan.rank_bytes, plan.placement);
    for (const std::uint32_t t : order) ++piece_count[static_cast<std::size_t>(plan.placement[t])];
  }
  bytes = {};  // the largest transient: freed before the pieces are written

  plan.rank_first_piece.assign(world + 1, 0);
  for (std::size_t r = 0; r < world; ++r) plan.rank_first_piece[r + 1] = plan.rank_first_piece[r] + piece_count[r];
  piece_count = {};
  if (!slab && plan.rank_first_piece[world] > kMaxIndex)
    throw Error(fmt::format("make_plan: {} pieces need more files than a plan can index ({})",
                            plan.rank_first_piece[world], kMaxIndex));
  plan.node_bytes.assign(nodes, 0);
  for (std::size_t r = 0; r < world; ++r)
    plan.node_bytes[static_cast<std::size_t>(topology.node_of_rank[r])] += plan.rank_bytes[r];

  // 3. the held pieces and files: each rank's in tensor-id order, written once, in order.
  std::vector<std::uint32_t> sharded;
  for (std::size_t t = 0; t < count; ++t)
    if (plan.placement[t] == SwapPlan::kSharded) sharded.push_back(static_cast<std::uint32_t>(t));
  if (rank != kAllRanks) {
    const auto r = static_cast<std::size_t>(rank);
    std::vector<std::uint32_t> whole;
    whole.reserve(plan.rank_first_piece[r + 1] - plan.rank_first_piece[r]);
    for (std::size_t t = 0; t < count; ++t)
      if (plan.placement[t] == rank) whole.push_back(static_cast<std::uint32_t>(t));
    plan.pieces.reserve(plan.rank_first_piece[r + 1] - plan.rank_first_piece[r]);
    append_rank_pieces(plan, tensors, rank, whole, sharded, plan.pieces, plan.files);
    if (slab) plan.files.push_back(PlanFile{rank, plan.root_of_rank[r], -1, plan.rank_bytes[r]});
    plan.file_base = slab ? r : plan.rank_first_piece[r];
  } else {
    // The whole tensors grouped by owner (a counting sort, which keeps id order).
    std::vector<std::size_t> first(world + 1, 0);
    for (std::size_t t = 0; t < count; ++t)
      if (plan.placement[t] >= 0) ++first[static_cast<std::size_t>(plan.placement[t]) + 1];
    for (std::size_t r = 0; r < world; ++r) first[r + 1] += first[r];
    std::vector<std::uint32_t> by_owner(first[world]);
    std::vector<std::size_t> next(first.begin(), first.end() - 1);
    for (std::size_t t = 0; t < count; ++t)
      if (plan.placement[t] >= 0) by_owner[next[static_cast<std::size_t>(plan.placement[t])]++] = static_cast<std::uint32_t>(t);
    plan.pieces.reserve(plan.rank_first_piece[world]);
    for (std::size_t r = 0; r < world; ++r)
      append_rank_pieces(plan, tensors, static_cast<int>(r),
                         std::span<const std::uint32_t>(by_owner).subspan(first[r], first[r + 1] - first[r]), sharded,
                         plan.pieces, plan.files);
    if (slab)
      for (std::size_t r = 0; r < world; ++r)
        plan.files.push_back(PlanFile{static_cast<int>(r), plan.root_of_rank[r], -1, plan.rank_bytes[r]});
  }
  return plan;
}

// ---- paths -------------------------------------------------------------------------------

std::string file_relative_path(const PlanFile& file, std::string_view job, int slot) {
  if (job.empty() || job == "." || job == ".." ||
      job.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos)
    throw ConfigError(
        fmt::format("job name '{}' is not a single path component (it must be "
                    "non-empty, not '.' or '..', without '/')",
                    job));
  if (slot < 0) throw Error(fmt::format("file_relative_path: slot {} is negative", slot));
  if (file.tensor < 0) return fmt::format("{}/rank-{}/slot-{}.swp", job, file.owner, slot);
  return fmt::format("{}/rank-{}/{}.{}.swp", job, file.owner, file.tensor, slot);
}

}  // namespace swapcoord
