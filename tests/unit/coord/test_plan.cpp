// Unit tests of the partitioner (coord/plan.hpp): every policy and layout on several
// topologies and tensor lists, checked against the properties a user relies on: every byte
// of every tensor has exactly one place, extents are aligned and never overlap, the plan
// is deterministic and its fingerprint tells plans apart.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/dtype.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/plan.hpp"

namespace swapcoord {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr DType kAllDTypes[] = {DType::u8,  DType::i8,   DType::i16, DType::i32, DType::i64,
                                DType::f16, DType::bf16, DType::f32, DType::f64};
constexpr Policy kPolicies[] = {Policy::balanced, Policy::sharded, Policy::round_robin};
constexpr Layout kLayouts[] = {Layout::slab, Layout::file_per_tensor};

// ---- fixtures ----------------------------------------------------------------------------

// A topology from the node of each rank (local ranks in rank order within a node).
PlanTopology topology_from(const std::vector<int>& node_of_rank, std::vector<int> roots) {
  PlanTopology topology;
  topology.world_size = static_cast<int>(node_of_rank.size());
  topology.node_count = static_cast<int>(roots.size());
  topology.node_of_rank = node_of_rank;
  std::vector<int> next(roots.size(), 0);
  for (int node : node_of_rank) topology.local_rank_of_rank.push_back(next[node]++);
  topology.roots_per_node = std::move(roots);
  return topology;
}

// "<prefix><i>" (appended, not operator+(const char*, string&&), which trips a GCC 12
// -Wrestrict false positive).
std::string name_of(const char* prefix, std::size_t i) {
  std::string name = prefix;
  name += std::to_string(i);
  return name;
}

struct NamedTopology {
  std::string name;
  PlanTopology topology;
};

std::vector<NamedTopology> topologies() {
  return {
      {"1x1", PlanTopology::uniform(1, 1)},
      {"1x4", PlanTopology::uniform(1, 4)},
      {"2x2", PlanTopology::uniform(2, 2)},
      {"nodes 1/2/3 ranks", topology_from({0, 1, 1, 2, 2, 2}, {1, 1, 1})},
      {"2x3, 2 roots", PlanTopology::uniform(2, 3, 2)},
      {"interleaved 3 nodes, roots 1/2/3", topology_from({0, 1, 2, 0, 1, 2, 1, 2}, {1, 2, 3})},
  };
}

// Random shapes from a fixed seed (the raw engine only, so it is the same on every
// standard library): empty tensors, scalars, 1-element tensors, every dtype, and now and
// then one far larger than the rest.
std::vector<TensorSpec> random_tensors(std::uint64_t seed, std::size_t count) {
  std::mt19937_64 rng(seed);
  const auto below = [&](std::uint64_t bound) { return rng() % bound; };
  std::vector<TensorSpec> tensors;
  for (std::size_t i = 0; i < count; ++i) {
    TensorSpec tensor;
    tensor.name = "layer." + std::to_string(i) + ".weight";
    tensor.dtype = kAllDTypes[below(std::size(kAllDTypes))];
    switch (below(12)) {
      case 0:
        tensor.shape = {below(5) + 1, 0, 3};
        break;  // empty
      case 1:
        tensor.shape = {};
        break;  // scalar
      case 2:
        tensor.shape = {1};
        break;
      case 3:
        tensor.shape = {1u << 12, (1u << 12) + below(7)};
        break;  // ~16M elements
      default: {
        const auto dims = below(3) + 1;
        for (std::uint64_t d = 0; d < dims; ++d) tensor.shape.push_back(below(300) + 1);
      }
    }
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

std::vector<TensorSpec> equal_tensors(std::size_t count, std::uint64_t numel,
                                      DType dtype = DType::f32) {
  std::vector<TensorSpec> tensors(count);
  for (std::size_t i = 0; i < count; ++i) tensors[i] = {name_of("t", i), {numel}, dtype};
  return tensors;
}

// u8 tensors of the given sizes, for plans with alignment 1 that are easy to work out.
std::vector<TensorSpec> byte_tensors(const std::vector<std::uint64_t>& sizes) {
  std::vector<TensorSpec> tensors;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    tensors.push_back({name_of("b", i), {sizes[i]}, DType::u8});
  return tensors;
}

// Every property a plan must have, whatever the policy.
void check_plan(const SwapPlan& plan, const std::vector<TensorSpec>& tensors,
                const PlanTopology& topology, const PlanOptions& options) {
  const auto world = static_cast<std::size_t>(topology.world_size);
  const std::uint64_t alignment = options.alignment_bytes;
  ASSERT_EQ(plan.options, options);
  ASSERT_EQ(plan.world_size, topology.world_size);
  ASSERT_EQ(plan.node_count, topology.node_count);
  ASSERT_EQ(plan.rank_bytes.size(), world);
  ASSERT_EQ(plan.node_bytes.size(), static_cast<std::size_t>(topology.node_count));

  // rank_first_piece indexes the pieces, which are ordered by (owner, file, offset).
  ASSERT_EQ(plan.rank_first_piece.size(), world + 1);
  EXPECT_EQ(plan.rank_first_piece.front(), 0u);
  EXPECT_EQ(plan.rank_first_piece.back(), plan.pieces.size());
  for (std::size_t r = 0; r < world; ++r) {
    ASSERT_LE(plan.rank_first_piece[r], plan.rank_first_piece[r + 1]);
    const auto mine = plan.pieces_of(static_cast<int>(r));
    EXPECT_EQ(mine.size(), plan.rank_first_piece[r + 1] - plan.rank_first_piece[r]);
    EXPECT_EQ(mine.data(), plan.pieces.data() + plan.rank_first_piece[r]);
    for (const auto& piece : mine) EXPECT_EQ(piece.owner, static_cast<int>(r));
  }
  for (std::size_t i = 1; i < plan.pieces.size(); ++i) {
    const auto& a = plan.pieces[i - 1];
    const auto& b = plan.pieces[i];
    EXPECT_LT(std::tie(a.owner, a.file, a.offset, a.tensor),
              std::tie(b.owner, b.file, b.offset, b.tensor))
        << "pieces " << i - 1 << " and " << i;
  }
  for (std::size_t i = 1; i < plan.files.size(); ++i) {
    const auto& a = plan.files[i - 1];
    const auto& b = plan.files[i];
    EXPECT_LT(std::tie(a.owner, a.tensor), std::tie(b.owner, b.tensor)) << "files " << i;
  }

  // Each piece: where it lives, its sizes, its alignment.
  std::vector<std::uint64_t> rank_bytes(world, 0);
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> extents(plan.files.size());
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> coverage(tensors.size());
  for (std::size_t i = 0; i < plan.pieces.size(); ++i) {
    const PlanPiece& piece = plan.pieces[i];
    SCOPED_TRACE("piece " + std::to_string(i) + " (tensor " + std::to_string(piece.tensor) + ")");
    ASSERT_LT(piece.tensor, tensors.size());
    ASSERT_GE(piece.owner, 0);
    ASSERT_LT(piece.owner, topology.world_size);
    const auto owner = static_cast<std::size_t>(piece.owner);
    const TensorSpec& tensor = tensors[piece.tensor];
    EXPECT_EQ(piece.node, topology.node_of_rank[owner]);
    EXPECT_EQ(piece.root, topology.local_rank_of_rank[owner] %
                              topology.roots_per_node[static_cast<std::size_t>(piece.node)]);
    EXPECT_GT(piece.numel, 0u);
    EXPECT_EQ(piece.bytes, piece.numel * dtype_size(tensor.dtype));
    EXPECT_EQ(piece.aligned_bytes, align_up(piece.bytes, alignment));
    EXPECT_TRUE(is_aligned(piece.aligned_bytes, alignment));
    EXPECT_TRUE(is_aligned(piece.offset, alignment));
    EXPECT_TRUE(is_aligned(piece.element_offset * dtype_size(tensor.dtype), alignment));
    ASSERT_LT(piece.file, plan.files.size());
    const PlanFile& file = plan.files[piece.file];
    EXPECT_EQ(file.owner, piece.owner);
    EXPECT_EQ(file.root, piece.root);
    EXPECT_LE(piece.offset + piece.aligned_bytes, file.size_bytes);
    if (options.layout == Layout::file_per_tensor) {
      EXPECT_EQ(piece.file, i);
      EXPECT_EQ(piece.offset, 0u);
      EXPECT_EQ(file.tensor, static_cast<std::int64_t>(piece.tensor));
      EXPECT_EQ(file.size_bytes, piece.aligned_bytes);
    } else {
      EXPECT_EQ(piece.file, piece.owner);
      EXPECT_EQ(piece.offset, rank_bytes[owner]) << "slab pieces are packed from offset 0";
    }
    const bool cut = options.policy == Policy::sharded && tensor.size_bytes() >= options.shard_threshold_bytes;
    EXPECT_EQ(plan.placement[piece.tensor], cut ? SwapPlan::kSharded : piece.owner);
    if (cut) {
      EXPECT_EQ(piece.shard, static_cast<std::uint32_t>(piece.owner)) << "rank r owns shard r";
      EXPECT_EQ(piece.shard_count, static_cast<std::uint32_t>(topology.world_size));
      const auto ranges = shard_ranges(tensor.numel(), dtype_size(tensor.dtype), topology.world_size, alignment);
      EXPECT_EQ(piece.element_offset, ranges[owner].first);
      EXPECT_EQ(piece.numel, ranges[owner].second);
    } else {
      EXPECT_EQ(piece.shard, 0u);
      EXPECT_EQ(piece.shard_count, 1u);
      EXPECT_EQ(piece.element_offset, 0u);
      EXPECT_EQ(piece.numel, tensor.numel());
    }
    if (options.policy == Policy::round_robin) {
      EXPECT_EQ(piece.owner, static_cast<int>(piece.tensor % world));
    }
    rank_bytes[owner] += piece.aligned_bytes;
    extents[piece.file].emplace_back(piece.offset, piece.offset + piece.aligned_bytes);
    coverage[piece.tensor].emplace_back(piece.element_offset, piece.element_offset + piece.numel);
  }

  // No two extents of a file overlap.
  for (std::size_t f = 0; f < extents.size(); ++f) {
    auto& list = extents[f];
    std::sort(list.begin(), list.end());
    for (std::size_t i = 1; i < list.size(); ++i)
      EXPECT_LE(list[i - 1].second, list[i].first) << "overlap in file " << f;
  }
  // Every element of every tensor has exactly one piece.
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    SCOPED_TRACE("tensor " + std::to_string(t));
    auto& list = coverage[t];
    std::sort(list.begin(), list.end());
    std::uint64_t covered = 0;
    for (const auto& [begin, end] : list) {
      EXPECT_EQ(begin, covered) << "a gap or an overlap";
      covered = end;
    }
    EXPECT_EQ(covered, tensors[t].numel());
    if (options.policy != Policy::sharded || tensors[t].size_bytes() < options.shard_threshold_bytes) {
      EXPECT_LE(list.size(), 1u);
    }
  }
  for (std::size_t t = 0; t < tensors.size(); ++t)
    if (tensors[t].numel() == 0) EXPECT_EQ(plan.placement[t], SwapPlan::kEmpty) << "tensor " << t;

  // Files: slab has one per rank (even an empty one), file-per-tensor one per piece.
  if (options.layout == Layout::slab) {
    ASSERT_EQ(plan.files.size(), world);
    for (std::size_t r = 0; r < world; ++r) {
      EXPECT_EQ(plan.files[r].owner, static_cast<int>(r));
      EXPECT_EQ(plan.files[r].tensor, -1);
      EXPECT_EQ(plan.files[r].root,
                topology.local_rank_of_rank[r] %
                    topology.roots_per_node[static_cast<std::size_t>(topology.node_of_rank[r])]);
      EXPECT_EQ(plan.files[r].size_bytes, rank_bytes[r]);
      EXPECT_TRUE(is_aligned(plan.files[r].size_bytes, alignment));
    }
  } else {
    EXPECT_EQ(plan.files.size(), plan.pieces.size());
  }

  // Byte counts.
  EXPECT_EQ(plan.rank_bytes, rank_bytes);
  std::vector<std::uint64_t> node_bytes(static_cast<std::size_t>(topology.node_count), 0);
  for (std::size_t r = 0; r < world; ++r)
    node_bytes[static_cast<std::size_t>(topology.node_of_rank[r])] += rank_bytes[r];
  EXPECT_EQ(plan.node_bytes, node_bytes);
  EXPECT_EQ(plan.total_bytes(),
            std::accumulate(rank_bytes.begin(), rank_bytes.end(), std::uint64_t{0}));

  // A plan made for one rank holds exactly that rank's part of the whole plan, and has its
  // fingerprint; any rank's pieces can be computed from it (a few ranks of a large world).
  std::vector<int> ranks;
  for (int r = 0; r < topology.world_size; ++r)
    if (topology.world_size <= 16 || r < 2 || r % 97 == 5 || r == topology.world_size - 1) ranks.push_back(r);
  for (int r : ranks) {
    SCOPED_TRACE("the plan of rank " + std::to_string(r));
    const SwapPlan one = make_plan(tensors, topology, options, r);
    EXPECT_EQ(one.holds, r);
    EXPECT_EQ(one.fingerprint(), plan.fingerprint());
    EXPECT_EQ(one.placement, plan.placement);
    EXPECT_EQ(one.rank_bytes, plan.rank_bytes);
    EXPECT_EQ(one.rank_first_piece, plan.rank_first_piece);
    const auto all = plan.pieces_of(r);
    EXPECT_TRUE(std::equal(one.pieces.begin(), one.pieces.end(), all.begin(), all.end()));
    EXPECT_TRUE(std::equal(one.pieces_of(r).begin(), one.pieces_of(r).end(), all.begin(), all.end()));
    if (topology.world_size == 1) continue;
    const int other = (r + 1) % topology.world_size;
    EXPECT_THROW(one.pieces_of(other), Error) << "a rank it does not hold";
    const auto computed = one.compute_pieces(other, tensors);
    const auto expected = plan.pieces_of(other);
    EXPECT_TRUE(std::equal(computed.begin(), computed.end(), expected.begin(), expected.end()));
    if (options.layout == Layout::slab) {
      ASSERT_EQ(one.files.size(), 1u);
      EXPECT_EQ(one.file_base, static_cast<std::size_t>(r));
      EXPECT_EQ(one.files[0], plan.files[static_cast<std::size_t>(r)]);
    } else {
      EXPECT_EQ(one.file_base, plan.rank_first_piece[static_cast<std::size_t>(r)]);
      EXPECT_TRUE(std::equal(one.files.begin(), one.files.end(), plan.files.begin() + static_cast<std::ptrdiff_t>(one.file_base),
                             plan.files.begin() + static_cast<std::ptrdiff_t>(plan.rank_first_piece[static_cast<std::size_t>(r) + 1])));
    }
  }
  // Each tensor's shards, as an all-gather gets them.
  std::vector<std::vector<TensorShard>> expected(tensors.size());
  for (const PlanPiece& piece : plan.pieces) expected[piece.tensor].push_back(shard_of(piece));  // owner order
  for (std::uint32_t t = 0; t < tensors.size(); ++t) EXPECT_EQ(plan.shards_of(t, tensors[t]), expected[t]) << "tensor " << t;
}

// ---- invariants over everything ------------------------------------------------------------

TEST(Plan, EveryPolicyLayoutAndTopologyGivesAConsistentPlan) {
  const std::vector<std::vector<TensorSpec>> lists = {
      {},
      equal_tensors(1, 1),
      equal_tensors(7, 1000, DType::f16),
      random_tensors(1, 40),
      random_tensors(2, 200),
  };
  for (const auto& [topology_name, topology] : topologies()) {
    for (Policy policy : kPolicies) {
      for (Layout layout : kLayouts) {
        for (std::size_t alignment :
             {std::size_t{4096}, std::size_t{512}, std::size_t{1}, std::size_t{2}}) {
          for (std::size_t l = 0; l < lists.size(); ++l) {
           for (std::uint64_t threshold : {kDefaultShardThresholdBytes, std::uint64_t{0}}) {
            if (threshold != kDefaultShardThresholdBytes && policy != Policy::sharded) continue;
            SCOPED_TRACE(topology_name + ", " + std::string(to_string(policy)) + ", " +
                         std::string(to_string(layout)) + ", alignment " +
                         std::to_string(alignment) + ", list " + std::to_string(l) + ", threshold " +
                         std::to_string(threshold));
            const PlanOptions options{policy, layout, alignment, threshold};
            const SwapPlan plan = make_plan(lists[l], topology, options);
            check_plan(plan, lists[l], topology, options);
            if (HasFatalFailure()) return;
           }
          }
        }
      }
    }
  }
}

TEST(Plan, IsDeterministic) {
  const auto tensors = random_tensors(7, 300);
  for (const auto& [topology_name, topology] : topologies()) {
    for (Policy policy : kPolicies) {
      for (Layout layout : kLayouts) {
        SCOPED_TRACE(topology_name + ", " + std::string(to_string(policy)) + ", " +
                     std::string(to_string(layout)));
        const PlanOptions options{policy, layout, 4096};
        const SwapPlan a = make_plan(tensors, topology, options);
        const SwapPlan b = make_plan(tensors, topology, options);
        EXPECT_EQ(a, b);
        EXPECT_EQ(a.fingerprint(), b.fingerprint());
        EXPECT_EQ(a.fingerprint(), a.fingerprint());
        // A copy of the specs (other addresses, same values) plans the same.
        const std::vector<TensorSpec> copy = tensors;
        EXPECT_EQ(make_plan(copy, topology, options).fingerprint(), a.fingerprint());
      }
    }
  }
}

TEST(Plan, EmptyTensorsGetNoPiece) {
  const std::vector<TensorSpec> tensors = {
      {"empty", {3, 0}, DType::f32}, {"one", {1}, DType::f64}, {"also-empty", {0}, DType::u8}};
  for (Policy policy : kPolicies) {
    SCOPED_TRACE(std::string(to_string(policy)));
    const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(2, 2), {policy});
    ASSERT_EQ(plan.pieces.size(), 1u);
    EXPECT_EQ(plan.pieces[0].tensor, 1u);
    EXPECT_EQ(plan.pieces[0].numel, 1u);
    EXPECT_EQ(plan.pieces[0].bytes, 8u);
    EXPECT_EQ(plan.pieces[0].aligned_bytes, 4096u);
  }
}

TEST(Plan, NoTensorsGivesEmptyFilesAndPerfectBalance) {
  const SwapPlan plan = make_plan({}, PlanTopology::uniform(2, 2), {});
  EXPECT_TRUE(plan.pieces.empty());
  ASSERT_EQ(plan.files.size(), 4u);
  for (const auto& file : plan.files) EXPECT_EQ(file.size_bytes, 0u);
  EXPECT_EQ(plan.total_bytes(), 0u);
  EXPECT_EQ(plan.rank_imbalance(), 1.0);
  EXPECT_EQ(plan.node_imbalance(), 1.0);
}

TEST(Plan, ScalarIsOneElement) {
  EXPECT_EQ((TensorSpec{"s", {}, DType::f32}).numel(), 1u);
  EXPECT_EQ((TensorSpec{"s", {}, DType::f32}).size_bytes(), 4u);
  EXPECT_EQ((TensorSpec{"m", {3, 5, 7}, DType::bf16}).numel(), 105u);
  EXPECT_EQ((TensorSpec{"m", {3, 5, 7}, DType::bf16}).size_bytes(), 210u);
  EXPECT_EQ((TensorSpec{"e", {3, 0, 7}, DType::f64}).numel(), 0u);
}

// ---- fingerprint ---------------------------------------------------------------------------

TEST(PlanFingerprint, ChangesWhenAnyInputChanges) {
  const auto tensors = random_tensors(11, 100);
  const auto topology = PlanTopology::uniform(2, 2);
  const PlanOptions options{};
  const std::uint64_t base = make_plan(tensors, topology, options).fingerprint();

  std::map<std::string, std::uint64_t> variants;
  for (Policy policy : {Policy::sharded, Policy::round_robin})
    variants[std::string("policy ") + std::string(to_string(policy))] =
        make_plan(tensors, topology, {policy}).fingerprint();
  variants["layout"] =
      make_plan(tensors, topology, {Policy::balanced, Layout::file_per_tensor}).fingerprint();
  variants["sharded, threshold 0"] =
      make_plan(tensors, topology, {Policy::sharded, Layout::slab, kDefaultAlignmentBytes, 0}).fingerprint();
  variants["alignment 512"] =
      make_plan(tensors, topology, {Policy::balanced, Layout::slab, 512}).fingerprint();
  variants["world size 3"] = make_plan(tensors, PlanTopology::uniform(1, 3), options).fingerprint();
  variants["1 node of 4"] = make_plan(tensors, PlanTopology::uniform(1, 4), options).fingerprint();
  variants["2 roots"] = make_plan(tensors, PlanTopology::uniform(2, 2, 2), options).fingerprint();
  {
    auto changed = tensors;
    changed[3].shape.back() += 1;
    variants["one tensor's numel"] = make_plan(changed, topology, options).fingerprint();
  }
  {
    auto changed = tensors;
    changed[5].shape = {changed[5].numel()};  // same numel, another shape
    ASSERT_NE(changed[5].shape, tensors[5].shape);
    variants["one tensor's shape, same numel"] =
        make_plan(changed, topology, options).fingerprint();
  }
  {
    auto changed = tensors;
    changed[5].dtype = changed[5].dtype == DType::f32 ? DType::i32 : DType::f32;
    variants["one tensor's dtype"] = make_plan(changed, topology, options).fingerprint();
  }
  {
    auto changed = tensors;
    changed[0].name += "x";
    variants["one tensor's name"] = make_plan(changed, topology, options).fingerprint();
  }
  {
    auto changed = tensors;
    std::swap(changed[1], changed[2]);
    variants["tensor order"] = make_plan(changed, topology, options).fingerprint();
  }
  {
    auto changed = tensors;
    changed.push_back({"extra-empty", {0}, DType::f32});
    variants["an extra empty tensor"] = make_plan(changed, topology, options).fingerprint();
  }
  for (const auto& [what, fingerprint] : variants) EXPECT_NE(fingerprint, base) << what;
  std::vector<std::uint64_t> all{base};
  for (const auto& [what, fingerprint] : variants) all.push_back(fingerprint);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "two variants collide";
}

// The fingerprint hashes the job-wide part of a plan, from which every piece and file
// follows (check_plan shows that): each field of it counts.
TEST(PlanFingerprint, CoversTheJobWidePart) {
  const SwapPlan base = make_plan(random_tensors(3, 50), PlanTopology::uniform(2, 2), {});
  ASSERT_GT(base.placement.size(), 2u);
  const std::uint64_t fp = base.fingerprint();
  const auto differs = [&](auto mutate) {
    SwapPlan copy = base;
    mutate(copy);
    return copy.fingerprint() != fp;
  };
  EXPECT_TRUE(differs([](SwapPlan& p) { p.placement[1] ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.placement.pop_back(); }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.node_of_rank[1] ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.root_of_rank[1] ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.rank_bytes[0] ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.node_bytes[0] ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.rank_first_piece[1] ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.tensor_digest ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.world_size ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.node_count ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.options.alignment_bytes ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.options.shard_threshold_bytes ^= 1; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.options.policy = Policy::sharded; }));
  EXPECT_TRUE(differs([](SwapPlan& p) { p.options.layout = Layout::file_per_tensor; }));
  EXPECT_FALSE(differs([](SwapPlan& p) { p.holds = 1; })) << "the same whichever rank it holds";
}

// The canonical encoding is independent of struct layout and host; this value pins it, so
// a change to the encoding (which makes old catalogs' fingerprints unmatchable) is a
// deliberate one: bump kPlanEncodingVersion in plan.cpp and update the value here.
TEST(PlanFingerprint, EncodingIsPinned) {
  const std::vector<TensorSpec> tensors = {
      {"a", {1000}, DType::f32}, {"b", {3, 7}, DType::f16}, {"c", {0}, DType::u8}};
  const SwapPlan plan =
      make_plan(tensors, PlanTopology::uniform(2, 2, 2), {Policy::sharded, Layout::slab, 512});
  EXPECT_EQ(plan.fingerprint(), 0x70f5b3b1cec31641ull) << std::hex << plan.fingerprint();
}

// ---- policies ------------------------------------------------------------------------------

TEST(PlanRoundRobin, TensorIGoesToRankIModW) {
  const auto tensors = equal_tensors(11, 10);
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 4), {Policy::round_robin});
  for (int r = 0; r < 4; ++r) {
    std::vector<std::uint32_t> ids;
    for (const auto& piece : plan.pieces_of(r)) ids.push_back(piece.tensor);
    std::vector<std::uint32_t> expected;
    for (std::uint32_t t = static_cast<std::uint32_t>(r); t < 11; t += 4) expected.push_back(t);
    EXPECT_EQ(ids, expected) << "rank " << r;
  }
}

TEST(PlanRoundRobin, EmptyTensorsKeepTheirTurn) {
  auto tensors = equal_tensors(5, 10);
  tensors[1].shape = {0};
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 2), {Policy::round_robin});
  ASSERT_EQ(plan.pieces.size(), 4u);
  EXPECT_EQ(plan.pieces_of(1).size(), 1u);  // tensor 3; tensor 1 is empty
  EXPECT_EQ(plan.pieces_of(1)[0].tensor, 3u);
}

PlanOptions shard_all(std::size_t alignment = kDefaultAlignmentBytes) {
  return {Policy::sharded, Layout::slab, alignment, 0};
}

TEST(PlanSharded, ShardsAreAlignedContiguousAndRankROwnsShardR) {
  // 16 f32 elements on 4 ranks, alignment 16 bytes (4 elements): a unit each.
  const std::vector<TensorSpec> tensors = {{"t", {16}, DType::f32}};
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 4), shard_all(16));
  ASSERT_EQ(plan.pieces.size(), 4u);
  for (int r = 0; r < 4; ++r) {
    const auto mine = plan.pieces_of(r);
    ASSERT_EQ(mine.size(), 1u);
    EXPECT_EQ(mine[0].shard, static_cast<std::uint32_t>(r));
    EXPECT_EQ(mine[0].shard_count, 4u);
    EXPECT_EQ(mine[0].element_offset, 4u * static_cast<std::uint64_t>(r));
    EXPECT_EQ(mine[0].numel, 4u);
    EXPECT_EQ(mine[0].aligned_bytes, 16u);
  }
}

TEST(PlanSharded, EachRankGetsFloorOrCeilOfTheUnitsTheExtrasInAWindow) {
  // 10 f32 elements on 4 ranks, alignment 16: 3 units (the last of 2 elements), so three
  // consecutive ranks (mod 4) get one unit, in rank order, and the fourth none.
  const std::vector<TensorSpec> tensors = {{"t", {10}, DType::f32}};
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 4), shard_all(16));
  ASSERT_EQ(plan.pieces.size(), 3u);
  int empty = -1;
  for (int r = 0; r < 4; ++r)
    if (plan.pieces_of(r).empty()) empty = r;
  ASSERT_GE(empty, 0);
  EXPECT_EQ(plan.files[static_cast<std::size_t>(empty)].size_bytes, 0u);
  std::uint64_t next = 0;
  for (int r = 0; r < 4; ++r) {
    if (r == empty) continue;
    const PlanPiece& piece = plan.pieces_of(r)[0];
    EXPECT_EQ(piece.element_offset, next) << "rank " << r;
    EXPECT_EQ(piece.numel, next == 8 ? 2u : 4u);
    next += piece.numel;
  }
  EXPECT_EQ(next, 10u);

  // 1000 units on 7 ranks: 142 each and 6 extras on 6 consecutive ranks (mod 7).
  const auto ranges = shard_ranges(1000 * 1024, 4, 7, 4096);
  int extras = 0;
  std::uint64_t at = 0;
  for (const auto& [first, numel] : ranges) {
    EXPECT_EQ(first, at);
    EXPECT_TRUE(numel == 142 * 1024 || numel == 143 * 1024) << numel;
    extras += numel == 143 * 1024;
    at += numel;
  }
  EXPECT_EQ(extras, 6);
  EXPECT_EQ(at, 1000u * 1024);
}

TEST(PlanSharded, TensorsOfOneSizeAreCutAlikeOthersSpreadTheirExtras) {
  // A parameter and its optimizer state are cut alike wherever they are in the list; the
  // extra units of tensors of other sizes start at other ranks.
  std::vector<TensorSpec> tensors;
  for (int i = 0; i < 64; ++i) tensors.push_back({name_of("t", i), {static_cast<std::uint64_t>(1000 + i) * 1024}, DType::f32});
  tensors.push_back({"again", {1000 * 1024}, DType::f32});
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 64), shard_all());
  for (int r = 0; r < 64; ++r) {
    const auto mine = plan.pieces_of(r);
    const auto first = std::find_if(mine.begin(), mine.end(), [](const PlanPiece& p) { return p.tensor == 0; });
    const auto again = std::find_if(mine.begin(), mine.end(), [](const PlanPiece& p) { return p.tensor == 64; });
    ASSERT_TRUE(first != mine.end() && again != mine.end());
    EXPECT_EQ(first->element_offset, again->element_offset);
    EXPECT_EQ(first->numel, again->numel);
  }
  // 1000..1063 units on 64 ranks: every rank gets 15 or 16 units of each (64 tensors'
  // worth of extras), and the extras do not all land on the same ranks.
  EXPECT_LT(plan.rank_imbalance(), 1.01);
}

TEST(PlanSharded, TensorsBelowTheThresholdArePlacedWholeOnTheLeastLoadedRanks) {
  // One tensor of 3 units on 4 ranks leaves one rank without; 2 small tensors then go to
  // the least-loaded ranks: first the empty one.
  std::vector<TensorSpec> tensors = {{"big", {3 * 1024}, DType::f32}, {"a", {10}, DType::f32}, {"b", {7}, DType::u8}};
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 4), {Policy::sharded, Layout::slab, 4096, 4096});
  EXPECT_EQ(plan.placement[0], SwapPlan::kSharded);
  ASSERT_GE(plan.placement[1], 0);
  ASSERT_GE(plan.placement[2], 0);
  int empty = -1;
  for (int r = 0; r < 4; ++r) {
    bool has_big = false;
    for (const auto& p : plan.pieces_of(r)) has_big |= p.tensor == 0;
    if (!has_big) empty = r;
  }
  EXPECT_EQ(plan.placement[1], empty) << "the larger small tensor goes to the rank without a shard";
  EXPECT_EQ(plan.shards_of(1, tensors[1]).size(), 1u);
  EXPECT_EQ(plan.shards_of(1, tensors[1])[0].shard_count, 1u);
  // With the default threshold (256 KiB) all three are whole; with 0 all are cut.
  const SwapPlan whole = make_plan(tensors, PlanTopology::uniform(1, 4), {Policy::sharded});
  EXPECT_EQ(whole.pieces.size(), 3u);
  for (auto p : whole.placement) EXPECT_GE(p, 0);
  const SwapPlan all = make_plan(tensors, PlanTopology::uniform(1, 4), shard_all());
  for (auto p : all.placement) EXPECT_EQ(p, SwapPlan::kSharded);
}

TEST(PlanSharded, ElementsLargerThanTheAlignmentUseTheLcm) {
  // f64 with 4-byte alignment: the shard unit is lcm(8, 4) / 8 = 1 element: 10 units on 4
  // ranks, 2 or 3 each, the last ending at element 10.
  const std::vector<TensorSpec> tensors = {{"t", {10}, DType::f64}};
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, 4), shard_all(4));
  ASSERT_EQ(plan.pieces.size(), 4u);
  EXPECT_EQ(plan.pieces[3].element_offset + plan.pieces[3].numel, 10u);
  for (const auto& p : plan.pieces) EXPECT_TRUE(p.numel == 2 || p.numel == 3);
}

TEST(PlanSharded, TinyTensorsAreWholeAndSpreadOverNodes) {
  const std::vector<TensorSpec> tensors = {{"one", {1}, DType::u8}, {"scalar", {}, DType::f16}};
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(2, 3), {Policy::sharded});
  ASSERT_EQ(plan.pieces.size(), 2u);
  EXPECT_EQ(plan.pieces[0].owner, 0);  // the larger (2 bytes) first: node 0, rank 0
  EXPECT_EQ(plan.pieces[0].tensor, 1u);
  EXPECT_EQ(plan.pieces[1].owner, 3);  // then node 1's first rank
  EXPECT_EQ(plan.files[0].size_bytes, 4096u);
  EXPECT_EQ(plan.files[3].size_bytes, 4096u);
}

TEST(PlanSharded, LargeTensorSpreadsEvenly) {
  const std::vector<TensorSpec> tensors = {{"big", {1u << 20}, DType::f32}};
  const auto topology = topology_from({0, 1, 1, 2, 2, 2}, {1, 1, 1});
  const SwapPlan plan = make_plan(tensors, topology, {Policy::sharded});
  ASSERT_EQ(plan.pieces.size(), 6u);
  EXPECT_LT(plan.rank_imbalance(), 1.01);
}

TEST(PlanSharded, ImbalanceAtFourThousandRanksIsWithinFivePercent) {
  // 10,000 tensors of 1 KiB .. 64 MiB (log-uniform, bench_plan's list) on 512 nodes of 8
  // ranks: the medium tensors' shards and the small tensors placed whole fill the ranks
  // evenly (before the threshold and the spread extras: 3.4).
  std::mt19937_64 rng(20240601);
  std::vector<TensorSpec> tensors;
  for (std::size_t i = 0; i < 10000; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const auto bytes = static_cast<std::uint64_t>(std::exp2(10 + u * 16));
    const DType dtype = i % 2 == 0 ? DType::f16 : DType::f32;
    tensors.push_back({name_of("p", i), {std::max<std::uint64_t>(1, bytes / dtype_size(dtype))}, dtype});
  }
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(512, 8, 2), {Policy::sharded}, 4095);
  EXPECT_LE(plan.rank_imbalance(), 1.05);
  EXPECT_LE(plan.node_imbalance(), 1.05);
}

TEST(PlanSharded, ShardRangesRejectsBadArguments) {
  EXPECT_THROW(shard_ranges(10, 4, 0, 4096), Error);
  EXPECT_THROW(shard_ranges(10, 3, 2, 4096), Error);
  EXPECT_THROW(shard_ranges(10, 4, 2, 3000), ConfigError);
  EXPECT_EQ(shard_ranges(0, 4, 3, 4096), (std::vector<std::pair<std::uint64_t, std::uint64_t>>(3, {0, 0})));
}

// The balanced policy as the header states it, written the slow and obvious way: sort by
// (bytes desc, id asc); scan every node for the least bytes per rank (exact: integer cross
// products), then every rank of that node for the least bytes.
std::vector<int> reference_balanced_owners(const std::vector<TensorSpec>& tensors,
                                           const PlanTopology& topology, std::uint64_t alignment) {
  std::vector<std::uint32_t> order;
  for (std::uint32_t t = 0; t < tensors.size(); ++t)
    if (tensors[t].numel() > 0) order.push_back(t);
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const auto sa = tensors[a].size_bytes();
    const auto sb = tensors[b].size_bytes();
    return sa != sb ? sa > sb : a < b;
  });
  const auto nodes = static_cast<std::size_t>(topology.node_count);
  std::vector<std::uint64_t> node_load(nodes, 0), ranks(nodes, 0);
  std::vector<std::uint64_t> rank_load(static_cast<std::size_t>(topology.world_size), 0);
  for (int node : topology.node_of_rank) ++ranks[static_cast<std::size_t>(node)];
  std::vector<int> owner(tensors.size(), -1);
  for (std::uint32_t t : order) {
    std::size_t best = 0;
    for (std::size_t n = 1; n < nodes; ++n) {
      // node_load[n] / ranks[n] < node_load[best] / ranks[best]; loads here stay < 2^40
      if (node_load[n] * ranks[best] < node_load[best] * ranks[n]) best = n;
    }
    int best_rank = -1;
    for (int r = 0; r < topology.world_size; ++r) {
      if (topology.node_of_rank[static_cast<std::size_t>(r)] != static_cast<int>(best)) continue;
      if (best_rank < 0 ||
          rank_load[static_cast<std::size_t>(r)] < rank_load[static_cast<std::size_t>(best_rank)])
        best_rank = r;
    }
    const std::uint64_t bytes = align_up(tensors[t].size_bytes(), alignment);
    node_load[best] += bytes;
    rank_load[static_cast<std::size_t>(best_rank)] += bytes;
    owner[t] = best_rank;
  }
  return owner;
}

TEST(PlanBalanced, MatchesTheReferenceExactly) {
  auto all = topologies();
  all.push_back({"7 nodes of 1..7 ranks, interleaved",
                 topology_from({6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 6,
                                5, 4, 3, 2, 6, 5, 4, 3, 6, 5, 4, 6, 5, 6},
                               {1, 2, 3, 4, 5, 1, 2})});
  all.push_back({"5x3", PlanTopology::uniform(5, 3)});
  all.push_back({"3x16", PlanTopology::uniform(3, 16)});
  std::vector<std::vector<TensorSpec>> lists = {random_tensors(31, 300), random_tensors(32, 1000),
                                                equal_tensors(101, 1024), byte_tensors({})};
  {
    std::mt19937_64 rng(33);  // many ties: sizes from a small set
    std::vector<std::uint64_t> sizes;
    for (int i = 0; i < 500; ++i) sizes.push_back((rng() % 4) * 4096 + (rng() % 3));
    lists.push_back(byte_tensors(sizes));
  }
  for (const auto& [name, topology] : all) {
    for (std::size_t l = 0; l < lists.size(); ++l) {
      for (std::uint64_t alignment : {4096u, 1u}) {
        SCOPED_TRACE(name + ", list " + std::to_string(l) + ", alignment " +
                     std::to_string(alignment));
        const PlanOptions options{Policy::balanced, Layout::slab, alignment};
        const SwapPlan plan = make_plan(lists[l], topology, options);
        check_plan(plan, lists[l], topology, options);
        std::vector<int> owner(lists[l].size(), -1);
        for (const auto& piece : plan.pieces) owner[piece.tensor] = piece.owner;
        EXPECT_EQ(owner, reference_balanced_owners(lists[l], topology, alignment));
      }
    }
  }
}

TEST(PlanBalanced, FollowsLptOnASmallExample) {
  // 1 node of 2 ranks, alignment 1, largest first (equal sizes: lower id first):
  // t1 (5) -> r0, t3 (4) -> r1, t0 (3) -> r1 (4 < 5), t2 (3) -> r0 (5 < 7).
  const auto tensors = byte_tensors({3, 5, 3, 4});
  const SwapPlan plan =
      make_plan(tensors, PlanTopology::uniform(1, 2), {Policy::balanced, Layout::slab, 1});
  std::vector<int> owner(tensors.size(), -1);
  for (const auto& piece : plan.pieces) owner[piece.tensor] = piece.owner;
  EXPECT_EQ(owner, (std::vector<int>{1, 0, 0, 1}));
  EXPECT_EQ(plan.rank_bytes, (std::vector<std::uint64_t>{8, 7}));
  // Slab offsets in tensor-id order, not placement order.
  const auto r1 = plan.pieces_of(1);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[0].tensor, 0u);
  EXPECT_EQ(r1[0].offset, 0u);
  EXPECT_EQ(r1[1].tensor, 3u);
  EXPECT_EQ(r1[1].offset, 3u);
  EXPECT_DOUBLE_EQ(plan.rank_imbalance(), 8.0 / 7.5);
  EXPECT_DOUBLE_EQ(plan.node_imbalance(), 1.0);
}

TEST(PlanBalanced, NodesFirstThenRanks) {
  // 2 nodes of 2 ranks; a node is chosen by bytes per rank, then its least-loaded rank.
  const auto tensors = byte_tensors({100, 90, 80, 10});
  const SwapPlan plan =
      make_plan(tensors, PlanTopology::uniform(2, 2), {Policy::balanced, Layout::slab, 1});
  std::vector<int> owner(tensors.size(), -1);
  for (const auto& piece : plan.pieces) owner[piece.tensor] = piece.owner;
  // 100 -> n0 r0; 90 -> n1 r2; 80: n0 has 50/rank, n1 45/rank -> n1 r3; 10: n0 50, n1 85 -> n0 r1.
  EXPECT_EQ(owner, (std::vector<int>{0, 2, 3, 1}));
  EXPECT_EQ(plan.node_bytes, (std::vector<std::uint64_t>{110, 170}));
}

TEST(PlanBalanced, EqualTensorsGiveCountsWithinOne) {
  for (const auto& topology : {PlanTopology::uniform(1, 4), PlanTopology::uniform(2, 2),
                               PlanTopology::uniform(4, 3), PlanTopology::uniform(3, 5, 2)}) {
    for (std::size_t count : {1u, 3u, 10u, 17u, 100u, 1001u}) {
      SCOPED_TRACE(std::to_string(topology.node_count) + " nodes, " +
                   std::to_string(topology.world_size) + " ranks, " + std::to_string(count) +
                   " tensors");
      const SwapPlan plan = make_plan(equal_tensors(count, 1000), topology, {});
      std::size_t lo = count, hi = 0;
      for (int r = 0; r < topology.world_size; ++r) {
        lo = std::min(lo, plan.pieces_of(r).size());
        hi = std::max(hi, plan.pieces_of(r).size());
      }
      EXPECT_LE(hi - lo, 1u);
    }
  }
}

TEST(PlanBalanced, ImbalanceIsBoundedByTheLargestTensor) {
  for (const auto& [topology_name, topology] : topologies()) {
    for (std::uint64_t seed = 20; seed < 25; ++seed) {
      SCOPED_TRACE(topology_name + ", seed " + std::to_string(seed));
      const auto tensors = random_tensors(seed, 500);
      const SwapPlan plan = make_plan(tensors, topology, {});
      std::uint64_t largest = 0;
      for (const auto& piece : plan.pieces) largest = std::max(largest, piece.aligned_bytes);
      const double mean = static_cast<double>(plan.total_bytes()) / topology.world_size;
      EXPECT_LE(plan.rank_imbalance(), 1.0 + static_cast<double>(largest) / mean + 1e-12);
    }
  }
}

TEST(PlanBalanced, ManySmallTensorsBalanceAlmostPerfectly) {
  // Sizes 1..64 pages: LPT ends within one small tensor of the mean.
  std::vector<TensorSpec> tensors;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 5000; ++i)
    tensors.push_back(
        {name_of("t", static_cast<std::size_t>(i)), {(rng() % 64 + 1) * 1024}, DType::f32});
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(4, 8), {});
  EXPECT_LT(plan.rank_imbalance(), 1.01);
  EXPECT_LT(plan.node_imbalance(), 1.01);
}

TEST(PlanBalanced, UnequalNodesGetEqualBytesPerRank) {
  // Nodes of 1, 2 and 3 ranks: bytes per rank are about equal on every node, so node bytes
  // go 1 : 2 : 3.
  const auto topology = topology_from({0, 1, 1, 2, 2, 2}, {1, 1, 1});
  const SwapPlan plan = make_plan(equal_tensors(600, 1024), topology, {});
  const double per_rank[] = {plan.node_bytes[0] / 1.0, plan.node_bytes[1] / 2.0,
                             plan.node_bytes[2] / 3.0};
  for (double value : per_rank) EXPECT_NEAR(value, per_rank[0], 4096.0);
  for (int r = 0; r < 6; ++r)
    EXPECT_NEAR(static_cast<double>(plan.pieces_of(r).size()), 100.0, 1.0);
  // And with random sizes, every rank within the largest tensor of the mean.
  const auto tensors = random_tensors(9, 2000);
  const SwapPlan random = make_plan(tensors, topology, {});
  std::uint64_t largest = 0;
  for (const auto& piece : random.pieces) largest = std::max(largest, piece.aligned_bytes);
  const double mean = static_cast<double>(random.total_bytes()) / 6;
  for (auto bytes : random.rank_bytes)
    EXPECT_LE(static_cast<double>(bytes), mean + static_cast<double>(largest));
}

TEST(PlanBalanced, AGiantTensorSitsAloneOnItsRank) {
  auto tensors = equal_tensors(30, 1024);
  tensors.insert(tensors.begin() + 7, TensorSpec{"giant", {1u << 28}, DType::f32});
  const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(2, 2), {});
  const auto r0 = plan.pieces_of(0);
  ASSERT_EQ(r0.size(), 1u);
  EXPECT_EQ(r0[0].tensor, 7u);
  EXPECT_EQ(r0[0].bytes, std::uint64_t{1} << 30);
  // Nodes first: node 0 holds 512 MiB per rank, so every small tensor goes to node 1 and
  // rank 1 stays empty. The largest rank load (the giant) is the same either way.
  EXPECT_TRUE(plan.pieces_of(1).empty());
  EXPECT_EQ(plan.pieces_of(2).size(), 15u);
  EXPECT_EQ(plan.pieces_of(3).size(), 15u);
  EXPECT_DOUBLE_EQ(plan.rank_imbalance(),
                   static_cast<double>(1u << 30) / (static_cast<double>(plan.total_bytes()) / 4));
}

TEST(Plan, RootIsLocalRankModRoots) {
  const auto topology = topology_from({0, 1, 2, 0, 1, 2, 1, 2, 2}, {2, 3, 2});
  for (Policy policy : kPolicies) {
    const SwapPlan plan = make_plan(random_tensors(4, 100), topology, {policy});
    for (const auto& file : plan.files) {
      const auto r = static_cast<std::size_t>(file.owner);
      EXPECT_EQ(file.root,
                topology.local_rank_of_rank[r] %
                    topology.roots_per_node[static_cast<std::size_t>(topology.node_of_rank[r])]);
    }
    // Node 1 has local ranks 0, 1, 2 over 3 roots: each root used once.
    EXPECT_EQ(plan.files[1].root, 0);
    EXPECT_EQ(plan.files[4].root, 1);
    EXPECT_EQ(plan.files[6].root, 2);
    // Node 2 has 4 ranks over 2 roots.
    EXPECT_EQ(plan.files[2].root, 0);
    EXPECT_EQ(plan.files[5].root, 1);
    EXPECT_EQ(plan.files[7].root, 0);
    EXPECT_EQ(plan.files[8].root, 1);
  }
}

TEST(Plan, FilePerTensorGivesOneFilePerPieceAtOffsetZero) {
  const auto tensors = random_tensors(12, 60);
  const SwapPlan plan =
      make_plan(tensors, PlanTopology::uniform(2, 2), {Policy::sharded, Layout::file_per_tensor});
  ASSERT_EQ(plan.files.size(), plan.pieces.size());
  for (std::size_t i = 0; i < plan.pieces.size(); ++i) {
    EXPECT_EQ(plan.pieces[i].file, i);
    EXPECT_EQ(plan.pieces[i].offset, 0u);
    EXPECT_EQ(plan.files[i].tensor, plan.pieces[i].tensor);
  }
}

TEST(Plan, PiecesOfRejectsRanksOutsideTheWorld) {
  const SwapPlan plan = make_plan(equal_tensors(3, 10), PlanTopology::uniform(1, 2), {});
  EXPECT_THROW(plan.pieces_of(-1), Error);
  EXPECT_THROW(plan.pieces_of(2), Error);
  EXPECT_NO_THROW(plan.pieces_of(1));
}

TEST(Plan, ImbalanceIsMaxOverMean) {
  const SwapPlan plan = make_plan(byte_tensors({3, 1}), PlanTopology::uniform(2, 1),
                                  {Policy::round_robin, Layout::slab, 1});
  EXPECT_EQ(plan.rank_bytes, (std::vector<std::uint64_t>{3, 1}));
  EXPECT_DOUBLE_EQ(plan.rank_imbalance(), 1.5);
  EXPECT_DOUBLE_EQ(plan.node_imbalance(), 1.5);
  EXPECT_EQ(plan.total_bytes(), 4u);
}

// ---- errors --------------------------------------------------------------------------------

TEST(Plan, RejectsBadAlignment) {
  const auto tensors = equal_tensors(2, 10);
  for (std::size_t alignment :
       {std::size_t{0}, std::size_t{3}, std::size_t{4095}, std::size_t{1} << 31}) {
    SCOPED_TRACE(alignment);
    try {
      make_plan(tensors, PlanTopology::uniform(1, 1), {Policy::balanced, Layout::slab, alignment});
      ADD_FAILURE() << "no exception";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("alignment"), HasSubstr(std::to_string(alignment))));
    }
  }
}

TEST(Plan, RejectsTensorsWhoseSizeOverflows) {
  std::vector<TensorSpec> tensors = equal_tensors(2, 10);
  tensors.push_back({"huge", {1ull << 40, 1ull << 30}, DType::f32});
  try {
    make_plan(tensors, PlanTopology::uniform(1, 1), {});
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("tensor 2"), HasSubstr("huge")));
  }
  tensors.back().shape = {1ull << 61};  // fits 64 bits as elements, 2^63 bytes does not fit
  EXPECT_THROW(make_plan(tensors, PlanTopology::uniform(1, 1), {}), Error);
  tensors.back().shape = {1ull << 61, 0};  // empty: fine
  EXPECT_NO_THROW(make_plan(tensors, PlanTopology::uniform(1, 1), {}));
}

TEST(Plan, RejectsAnInvalidTopology) {
  PlanTopology topology = PlanTopology::uniform(2, 2);
  topology.node_of_rank[3] = 5;
  EXPECT_THROW(make_plan(equal_tensors(2, 10), topology, {}), Error);
}

// ---- PlanTopology --------------------------------------------------------------------------

TEST(PlanTopology, UniformNumbersRanksNodeByNode) {
  const auto topology = PlanTopology::uniform(3, 2, 4);
  EXPECT_EQ(topology.world_size, 6);
  EXPECT_EQ(topology.node_count, 3);
  EXPECT_EQ(topology.node_of_rank, (std::vector<int>{0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(topology.local_rank_of_rank, (std::vector<int>{0, 1, 0, 1, 0, 1}));
  EXPECT_EQ(topology.roots_per_node, (std::vector<int>{4, 4, 4}));
  EXPECT_NO_THROW(topology.validate());
  EXPECT_NO_THROW(PlanTopology::uniform(1, 1).validate());
}

TEST(PlanTopology, UniformRejectsCountsBelowOne) {
  EXPECT_THROW(PlanTopology::uniform(0, 1), Error);
  EXPECT_THROW(PlanTopology::uniform(1, 0), Error);
  EXPECT_THROW(PlanTopology::uniform(1, 1, 0), Error);
  EXPECT_THROW(PlanTopology::uniform(1 << 16, 1 << 16), Error);
}

void expect_invalid(const PlanTopology& topology, const std::vector<std::string>& parts) {
  try {
    topology.validate();
    ADD_FAILURE() << "validate() accepted it";
  } catch (const Error& e) {
    for (const auto& part : parts) EXPECT_THAT(e.what(), HasSubstr(part));
  }
}

TEST(PlanTopology, ValidateNamesWhatIsWrong) {
  const PlanTopology good = topology_from({0, 0, 1}, {1, 2});
  EXPECT_NO_THROW(good.validate());
  {
    auto t = good;
    t.world_size = 0;
    expect_invalid(t, {"world size 0"});
  }
  {
    auto t = good;
    t.node_count = 0;
    expect_invalid(t, {"node count 0"});
  }
  {
    auto t = good;
    t.node_of_rank.pop_back();
    expect_invalid(t, {"node_of_rank has 2 entries", "world size 3"});
  }
  {
    auto t = good;
    t.local_rank_of_rank.push_back(0);
    expect_invalid(t, {"local_rank_of_rank has 4 entries"});
  }
  {
    auto t = good;
    t.roots_per_node.push_back(1);
    expect_invalid(t, {"roots_per_node has 3 entries", "node count 2"});
  }
  {
    auto t = good;
    t.node_of_rank[2] = 2;
    expect_invalid(t, {"rank 2", "node 2"});
  }
  {
    auto t = good;
    t.node_of_rank[1] = -1;
    expect_invalid(t, {"rank 1", "node -1"});
  }
  {
    auto t = good;
    t.roots_per_node[1] = 0;
    expect_invalid(t, {"node 1", "0 swap roots"});
  }
  {
    auto t = good;  // node 1 loses its only rank
    t.node_of_rank[2] = 0;
    t.local_rank_of_rank[2] = 2;
    expect_invalid(t, {"node 1 has no ranks"});
  }
  {
    auto t = good;
    t.local_rank_of_rank[1] = 0;
    expect_invalid(t, {"ranks 0 and 1", "local rank 0", "node 0"});
  }
  {
    auto t = good;
    t.local_rank_of_rank[1] = 2;
    expect_invalid(t, {"rank 1", "local rank 2", "0..1"});
  }
  {
    auto t = good;
    t.local_rank_of_rank[2] = -1;
    expect_invalid(t, {"rank 2", "local rank -1"});
  }
}

// ---- names and paths -----------------------------------------------------------------------

TEST(PlanNames, PolicyAndLayoutRoundTrip) {
  for (Policy policy : kPolicies) EXPECT_EQ(parse_policy(to_string(policy)), policy);
  for (Layout layout : kLayouts) EXPECT_EQ(parse_layout(to_string(layout)), layout);
  EXPECT_EQ(to_string(Policy::balanced), "balanced");
  EXPECT_EQ(to_string(Policy::sharded), "sharded");
  EXPECT_EQ(to_string(Policy::round_robin), "round-robin");
  EXPECT_EQ(to_string(Layout::slab), "slab");
  EXPECT_EQ(to_string(Layout::file_per_tensor), "file-per-tensor");
}

TEST(PlanNames, ParseRejectsOtherNamesListingTheValidOnes) {
  for (const char* bad : {"", "Balanced", "round_robin", "lpt", "sharded "}) {
    try {
      parse_policy(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("'" + std::string(bad) + "'"), HasSubstr("balanced"),
                                  HasSubstr("sharded"), HasSubstr("round-robin")));
    }
  }
  for (const char* bad : {"", "Slab", "file_per_tensor", "files"}) {
    try {
      parse_layout(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("'" + std::string(bad) + "'"), HasSubstr("slab"),
                                  HasSubstr("file-per-tensor")));
    }
  }
}

TEST(PlanPaths, RelativePaths) {
  EXPECT_EQ(file_relative_path(PlanFile{3, 0, -1, 0}, "job", 1), "job/rank-3/slot-1.swp");
  EXPECT_EQ(file_relative_path(PlanFile{0, 1, 17, 4096}, "job", 0), "job/rank-0/17.0.swp");
  const SwapPlan plan = make_plan(equal_tensors(3, 10), PlanTopology::uniform(1, 2),
                                  {Policy::round_robin, Layout::file_per_tensor});
  ASSERT_EQ(plan.files.size(), 3u);
  EXPECT_EQ(file_relative_path(plan.files[0], "run7", 1), "run7/rank-0/0.1.swp");
  EXPECT_EQ(file_relative_path(plan.files[1], "run7", 1), "run7/rank-0/2.1.swp");
  EXPECT_EQ(file_relative_path(plan.files[2], "run7", 0), "run7/rank-1/1.0.swp");
}

TEST(PlanPaths, RejectsJobNamesThatLeaveTheRoot) {
  const PlanFile file{0, 0, -1, 0};
  for (const char* job : {"", ".", "..", "a/b", "/abs", "../up"}) {
    SCOPED_TRACE(job);
    try {
      file_relative_path(file, job, 0);
      ADD_FAILURE() << "accepted";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr("'" + std::string(job) + "'"));
    }
  }
  EXPECT_THROW(file_relative_path(file, "job", -1), Error);
  EXPECT_NO_THROW(file_relative_path(file, "my.job-2", 0));
}

// ---- larger plans, quickly -----------------------------------------------------------------

TEST(Plan, HundredThousandTensorsOnManyRanks) {
  std::vector<TensorSpec> tensors;
  std::mt19937_64 rng(77);
  for (int i = 0; i < 100000; ++i)
    tensors.push_back({"", {(rng() % 4096 + 1) * 256}, i % 2 ? DType::f16 : DType::f32});
  const auto topology = PlanTopology::uniform(64, 8, 4);
  const PlanOptions options{};
  const SwapPlan plan = make_plan(tensors, topology, options);
  check_plan(plan, tensors, topology, options);
  EXPECT_LT(plan.rank_imbalance(), 1.01);
}

}  // namespace
}  // namespace swapcoord
