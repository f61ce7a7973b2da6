// The pure, deterministic partitioner (plan.hpp). No MPI here: every rank runs make_plan
// on the same inputs and gets the same plan, which the ranks then compare by fingerprint.
//
// How a plan is built (all policies):
//  1. one pass over the specs: element counts and sizes (checked for overflow) and the
//     digest of names, dtypes and shapes;
//  2. owners: balanced sorts by bytes (a stable radix sort) and places each tensor with a
//     tournament tree over the nodes and one over each node's ranks; round-robin is i mod
//     W; a counting sort then groups the tensor ids by owner, keeping id order. Sharded
//     needs no owner list: rank r gets shard r of every tensor with more than r shards;
//  3. pieces, rank by rank, each written once and in order (no zero-fill, no scatter), so
//     they come out ordered by (owner, file, offset) with slab offsets a running sum;
//     file-per-tensor gives each piece its own file, in the same order as the pieces.
// Cost: O(T log N + T log R) for balanced, O(T + W + pieces) otherwise, no allocation per
// tensor or piece.
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
constexpr std::uint32_t kPlanEncodingVersion = 1;

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

void add_checked(std::uint64_t& sum, std::uint64_t value, const char* what, int index) {
  if (__builtin_add_overflow(sum, value, &sum))
    throw Error(fmt::format("make_plan: the bytes of {} {} overflow 64 bits", what, index));
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

// ---- SwapPlan ----------------------------------------------------------------------------

std::span<const PlanPiece> SwapPlan::pieces_of(int rank) const {
  if (rank < 0 || static_cast<std::size_t>(rank) + 1 >= rank_first_piece.size())
    throw Error(fmt::format("SwapPlan::pieces_of: rank {} is outside 0..{}", rank,
                            static_cast<long long>(rank_first_piece.size()) - 2));
  const auto r = static_cast<std::size_t>(rank);
  return std::span<const PlanPiece>(pieces).subspan(rank_first_piece[r],
                                                    rank_first_piece[r + 1] - rank_first_piece[r]);
}

std::uint64_t SwapPlan::total_bytes() const noexcept {
  return std::accumulate(rank_bytes.begin(), rank_bytes.end(), std::uint64_t{0});
}

namespace {
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
}  // namespace

double SwapPlan::rank_imbalance() const noexcept { return imbalance(rank_bytes); }
double SwapPlan::node_imbalance() const noexcept { return imbalance(node_bytes); }

std::uint64_t SwapPlan::fingerprint() const noexcept {
  HashWriter hash(kPlanSeed);
  hash.u32(kPlanEncodingVersion);
  hash.u8(static_cast<std::uint8_t>(options.policy));
  hash.u8(static_cast<std::uint8_t>(options.layout));
  hash.u64(options.alignment_bytes);
  hash.i32(world_size);
  hash.i32(node_count);
  hash.u64(tensor_digest);
  hash.u64(pieces.size());
  for (const auto& piece : pieces) {
    hash.u32(piece.tensor);
    hash.u32(piece.shard);
    hash.u32(piece.shard_count);
    hash.u64(piece.element_offset);
    hash.u64(piece.numel);
    hash.i32(piece.owner);
    hash.i32(piece.node);
    hash.i32(piece.root);
    hash.u32(piece.file);
    hash.u64(piece.offset);
    hash.u64(piece.bytes);
    hash.u64(piece.aligned_bytes);
  }
  hash.u64(files.size());
  for (const auto& file : files) {
    hash.i32(file.owner);
    hash.i32(file.root);
    hash.i64(file.tensor);
    hash.u64(file.size_bytes);
  }
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

struct KeyId {
  std::uint64_t key;
  std::uint32_t id;
};

// Stable LSD radix sort by key, 11 bits a pass, only over the bits in which keys differ
// (tensor sizes of 1 KiB .. 64 MiB take two passes). Equal keys keep their input order, so
// the result is the same as a comparison sort by (key, input position): deterministic.
void radix_sort(std::vector<KeyId>& items) {
  if (items.size() < 2) return;
  std::uint64_t differ = 0;
  const std::uint64_t key0 = items[0].key;
  for (const auto& item : items) differ |= item.key ^ key0;
  if (differ == 0) return;
  constexpr unsigned kBits = 11;
  constexpr std::size_t kBuckets = std::size_t{1} << kBits;
  const unsigned low = static_cast<unsigned>(std::countr_zero(differ));
  const unsigned high = 64 - static_cast<unsigned>(std::countl_zero(differ));
  std::vector<KeyId> scratch(items.size());
  std::vector<std::size_t> position(kBuckets);
  for (unsigned shift = low; shift < high; shift += kBits) {
    std::fill(position.begin(), position.end(), 0);
    for (const auto& item : items) ++position[(item.key >> shift) & (kBuckets - 1)];
    std::size_t sum = 0;
    for (auto& p : position) sum += std::exchange(p, sum);
    for (const auto& item : items) scratch[position[(item.key >> shift) & (kBuckets - 1)]++] = item;
    items.swap(scratch);
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

// One tree over `slots[0, 2 * leaves)`: slots[1] is the root, slots[leaves + i] leaf i.
template <class Better>
void build_tree(Entry* slots, std::size_t leaves, std::span<const std::uint64_t> weights) {
  for (std::size_t i = 0; i < leaves; ++i)
    slots[leaves + i] = i < weights.size() ? Entry{0, weights[i], i} : kLoser;
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

// Places `order` (largest first, key = ~bytes): each tensor to the node with the least
// bytes per rank, then to that node's least-loaded rank. Writes owner[tensor].
template <class NodeBetter>
void place_balanced(const std::vector<KeyId>& order, std::uint64_t alignment,
                    const PlanTopology& topology, std::vector<int>& owner) {
  const auto nodes = static_cast<std::size_t>(topology.node_count);
  std::vector<std::uint64_t> ranks_on_node(nodes, 0);
  for (int node : topology.node_of_rank) ++ranks_on_node[static_cast<std::size_t>(node)];

  const std::size_t node_leaves = std::bit_ceil(nodes);
  std::vector<Entry> node_tree(2 * node_leaves);
  build_tree<NodeBetter>(node_tree.data(), node_leaves, ranks_on_node);

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
  std::vector<std::uint64_t> ones;
  for (std::size_t n = 0; n < nodes; ++n) {
    ones.assign(ranks_on_node[n], 1);
    build_tree<ByLoad>(rank_trees.data() + tree_first[n], std::bit_ceil(ranks_on_node[n]), ones);
  }

  for (const auto& item : order) {
    const std::uint64_t bytes = align_up(~item.key, alignment);
    const std::uint64_t n = add_to_winner<NodeBetter>(node_tree.data(), node_leaves, bytes, "node");
    const std::size_t leaves = (tree_first[n + 1] - tree_first[n]) / 2;
    const std::uint64_t local =
        add_to_winner<ByLoad>(rank_trees.data() + tree_first[n], leaves, bytes, "rank");
    owner[item.id] = rank_at[rank_first[n] + local];
  }
}

}  // namespace

SwapPlan make_plan(std::span<const TensorSpec> tensors, const PlanTopology& topology,
                   const PlanOptions& options) {
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

  const auto world = static_cast<std::size_t>(topology.world_size);
  const auto nodes = static_cast<std::size_t>(topology.node_count);
  const std::size_t count = tensors.size();
  const bool sharded = options.policy == Policy::sharded;
  const bool slab = options.layout == Layout::slab;

  SwapPlan plan;
  plan.options = options;
  plan.world_size = topology.world_size;
  plan.node_count = topology.node_count;

  // 1. sizes, checked, and the digest of the specs, in one pass over them.
  std::vector<std::uint64_t> numel(count);
  std::vector<std::uint8_t> element_size(count);
  {
    HashWriter digest(kTensorDigestSeed);
    digest.u64(count);
    for (std::size_t t = 0; t < count; ++t) {
      const TensorSpec& tensor = tensors[t];
      numel[t] = checked_numel(tensor, t);
      element_size[t] = static_cast<std::uint8_t>(dtype_size(tensor.dtype));
      std::uint64_t bytes = 0;
      if (__builtin_mul_overflow(numel[t], element_size[t], &bytes) || bytes > kMaxTensorBytes)
        throw Error(
            fmt::format("make_plan: tensor {} ('{}') has {} elements of {}, more than {} bytes",
                        t, tensor.name, numel[t], dtype_name(tensor.dtype), kMaxTensorBytes));
      digest.text(tensor.name);
      digest.u8(static_cast<std::uint8_t>(tensor.dtype));
      digest.u64(tensor.shape.size());
      for (auto dim : tensor.shape) digest.u64(dim);
    }
    plan.tensor_digest = digest.digest();
  }

  std::vector<int> root_of_rank(world);
  for (std::size_t r = 0; r < world; ++r) {
    const auto node = static_cast<std::size_t>(topology.node_of_rank[r]);
    root_of_rank[r] = topology.local_rank_of_rank[r] % topology.roots_per_node[node];
  }

  // 2. owners and per-rank piece counts; `first` becomes rank_first_piece.
  std::vector<std::size_t> first(world + 1, 0);
  // Balanced, round-robin: the tensors grouped by owner, with what their pieces need, so
  // that writing the pieces reads this array in order instead of the sizes at random.
  struct Owned {
    std::uint64_t numel;
    std::uint32_t id;
    std::uint32_t element_size;
  };
  std::vector<Owned> by_owner;
  struct Shards {
    std::uint64_t size;   // elements a shard
    std::uint64_t count;  // nonempty shards, <= world
  };
  std::vector<Shards> shards;  // sharded: per tensor
  if (!sharded) {
    std::vector<int> owner(count, -1);
    if (options.policy == Policy::round_robin) {
      for (std::size_t t = 0; t < count; ++t)
        if (numel[t] > 0) owner[t] = static_cast<int>(t % world);
    } else {
      // Balanced: LPT by bytes (largest first, ties to the lower id), each tensor to the
      // node with the least aligned bytes per rank, then to that node's least-loaded rank.
      std::vector<KeyId> order;
      order.reserve(count);
      for (std::size_t t = 0; t < count; ++t) {
        if (numel[t] == 0) continue;
        const std::uint64_t bytes = numel[t] * element_size[t];
        order.push_back({~bytes, static_cast<std::uint32_t>(t)});  // ascending ~bytes
      }
      radix_sort(order);

      std::vector<int> ranks_on_node(nodes, 0);
      for (int node : topology.node_of_rank) ++ranks_on_node[static_cast<std::size_t>(node)];
      const bool uniform = std::all_of(ranks_on_node.begin(), ranks_on_node.end(),
                                       [&](int r) { return r == ranks_on_node[0]; });
      if (uniform)
        place_balanced<ByLoad>(order, alignment, topology, owner);
      else
        place_balanced<ByLoadPerWeight>(order, alignment, topology, owner);
    }
    // Group the tensor ids by owner (a counting sort, which keeps id order within an owner).
    for (std::size_t t = 0; t < count; ++t)
      if (owner[t] >= 0) ++first[static_cast<std::size_t>(owner[t]) + 1];
    for (std::size_t r = 0; r < world; ++r) first[r + 1] += first[r];
    by_owner.resize(first[world]);
    std::vector<std::size_t> next(first.begin(), first.end() - 1);
    for (std::size_t t = 0; t < count; ++t)
      if (owner[t] >= 0)
        by_owner[next[static_cast<std::size_t>(owner[t])]++] = {
            numel[t], static_cast<std::uint32_t>(t), element_size[t]};
  } else {
    // Sharded: a tensor's n nonempty shards go to ranks 0..n-1, so rank r gets one piece of
    // every tensor with more than r shards. ending[n] counts the tensors of n shards.
    shards.assign(count, Shards{0, 0});
    std::vector<std::size_t> ending(world + 1, 0);
    for (std::size_t t = 0; t < count; ++t) {
      if (numel[t] == 0) {
        ++ending[0];
        continue;
      }
      const std::uint64_t size = element_size[t];
      const std::uint64_t unit = std::lcm(size, alignment) / size;
      const std::uint64_t per_rank = numel[t] / world + (numel[t] % world != 0 ? 1 : 0);
      const std::uint64_t shard = align_up(per_rank, unit);
      const std::uint64_t n = numel[t] / shard + (numel[t] % shard != 0 ? 1 : 0);  // <= world
      shards[t] = {shard, n};
      ++ending[n];
    }
    std::size_t active = count - ending[0];  // ending[0]: the empty tensors
    for (std::size_t r = 0; r < world; ++r) {
      first[r + 1] = first[r] + active;
      active -= ending[r + 1];
    }
  }
  const std::size_t piece_count = first[world];
  if (!slab && piece_count > kMaxIndex)
    throw Error(fmt::format("make_plan: {} pieces need more files than a plan can index ({})",
                            piece_count, kMaxIndex));

  // 3. pieces, rank by rank, each rank's in tensor-id order: written once, in order.
  plan.pieces.reserve(piece_count);
  if (!slab) plan.files.reserve(piece_count);
  plan.rank_bytes.assign(world, 0);
  const std::uint32_t shard_count = sharded ? static_cast<std::uint32_t>(world) : 1;
  // Sharded: the ids of the tensors with more than r shards, in id order, shrunk as r grows.
  std::vector<std::uint32_t> active;
  if (sharded) {
    active.reserve(count);
    for (std::size_t t = 0; t < count; ++t)
      if (shards[t].count > 0) active.push_back(static_cast<std::uint32_t>(t));
  }
  for (std::size_t r = 0; r < world; ++r) {
    PlanPiece piece;
    piece.shard = sharded ? static_cast<std::uint32_t>(r) : 0;
    piece.shard_count = shard_count;
    piece.owner = static_cast<int>(r);
    piece.node = topology.node_of_rank[r];
    piece.root = root_of_rank[r];
    piece.file = static_cast<std::uint32_t>(r);
    std::uint64_t offset = 0;  // slab: the running end of the rank's file
    const auto emit = [&](std::uint32_t t, std::uint64_t element_offset, std::uint64_t piece_numel,
                          std::uint64_t size) {
      piece.tensor = t;
      piece.element_offset = element_offset;
      piece.numel = piece_numel;
      piece.bytes = piece_numel * size;
      piece.aligned_bytes = align_up(piece.bytes, alignment);
      if (slab) {
        piece.offset = offset;
      } else {
        piece.file = static_cast<std::uint32_t>(plan.pieces.size());
        plan.files.push_back(PlanFile{piece.owner, piece.root, t, piece.aligned_bytes});
      }
      if (__builtin_add_overflow(offset, piece.aligned_bytes, &offset))
        throw Error(fmt::format("make_plan: the bytes placed on rank {} overflow 64 bits", r));
      plan.pieces.push_back(piece);
    };
    if (!sharded) {
      for (std::size_t i = first[r]; i < first[r + 1]; ++i)
        emit(by_owner[i].id, 0, by_owner[i].numel, by_owner[i].element_size);
    } else {
      bool any_last = false;
      for (std::uint32_t t : active) {
        const std::uint64_t begin = r * shards[t].size;
        emit(t, begin, std::min(shards[t].size, numel[t] - begin), element_size[t]);
        any_last |= shards[t].count == r + 1;
      }
      if (any_last)
        std::erase_if(active, [&](std::uint32_t t) { return shards[t].count == r + 1; });
    }
    plan.rank_bytes[r] = offset;
  }

  // 4. slab files: one per rank, also for a rank that owns nothing (size 0).
  if (slab) {
    plan.files.resize(world);
    for (std::size_t r = 0; r < world; ++r)
      plan.files[r] = PlanFile{static_cast<int>(r), root_of_rank[r], -1, plan.rank_bytes[r]};
  }

  plan.node_bytes.assign(nodes, 0);
  for (std::size_t r = 0; r < world; ++r) {
    const int node = topology.node_of_rank[r];
    add_checked(plan.node_bytes[static_cast<std::size_t>(node)], plan.rank_bytes[r], "node", node);
  }
  plan.rank_first_piece = std::move(first);
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
