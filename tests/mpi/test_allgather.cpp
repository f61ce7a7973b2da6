// MPI tests of allgather_tensor (coord/topology.hpp): after a sharded swap-in every rank
// holds only its own shard; the all-gather rebuilds the whole tensor on every rank. Shards
// come from a real sharded plan (make_plan on the discovered topology), including tensors
// so small that some ranks own nothing. Every byte of every rebuilt tensor is checked.
//
// Every test runs at 1, 2 and 4 ranks. Every rank makes the same collective calls in the
// same order; an expected exception is checked on every rank and the result is combined
// over ranks, so a rank that does not throw fails the test instead of hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "swapcoord/common/dtype.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/coord/topology.hpp"
#include "mpi_test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using namespace test;  // the MPI helpers of mpi_test_support.hpp

// ---- helpers ----------------------------------------------------------------------------------

// The byte at `offset` of tensor `tensor` (local: a pure function).
std::byte pattern(std::uint32_t tensor, std::uint64_t offset) {
  std::uint64_t x = (static_cast<std::uint64_t>(tensor) + 1) * 0x9e3779b97f4a7c15ULL + offset;
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 29;
  return static_cast<std::byte>(x);
}

// Tensors of the brief: one element, a small and an odd-sized f32, a large f16, and ones
// with fewer elements than ranks x alignment (some shards empty), plus an empty tensor.
std::vector<TensorSpec> tensors() {
  return {
      {"one", {1}, DType::f32},          {"small", {1000}, DType::f32},
      {"odd", {4097}, DType::f32},       {"large", {100000}, DType::f16},
      {"tiny", {3}, DType::i64},         {"few", {5, 3}, DType::f64},
      {"empty", {0}, DType::f32},        {"bytes", {12345}, DType::u8},
  };
}

// The pieces of tensor `t` in `plan`.
std::vector<TensorShard> pieces_of_tensor(const SwapPlan& plan, std::uint32_t t) {
  return plan.shards_of(t, tensors()[t]);
}

// A sharded plan of tensors() on the topology of MPI_COMM_WORLD, every tensor cut into
// shards (threshold 0), or, `whole_below` > 0, the tensors smaller than it placed whole.
SwapPlan sharded_plan(const Topology& topology, std::size_t alignment_bytes, std::uint64_t whole_below = 0) {
  PlanOptions options;
  options.policy = Policy::sharded;
  options.alignment_bytes = alignment_bytes;
  options.shard_threshold_bytes = whole_below;
  return make_plan(tensors(), topology.plan_topology(), options, topology.rank());
}

// Gathers every tensor of `plan` with this rank's shard filled by pattern(); checks every
// byte on every rank. `reverse` hands the pieces over in reverse order.
void gather_and_check(const Topology& topology, const SwapPlan& plan, bool reverse) {
  const int rank = topology.rank(), size = topology.world_size();
  const auto specs = tensors();
  int tensors_with_empty_shards = 0;
  for (std::uint32_t t = 0; t < specs.size(); ++t) {
    SCOPED_TRACE("tensor " + specs[t].name);
    const std::size_t element_size = dtype_size(specs[t].dtype);
    const std::uint64_t total = specs[t].size_bytes();
    auto pieces = pieces_of_tensor(plan, t);
    if (reverse) std::reverse(pieces.begin(), pieces.end());

    // The shards cover the tensor exactly once; shard r belongs to rank r (a whole tensor:
    // shard 0 of 1, on any rank).
    std::uint64_t covered = 0;
    for (const auto& piece : pieces) {
      covered += piece.bytes;
      if (piece.shard_count > 1) {
        EXPECT_EQ(piece.owner, static_cast<int>(piece.shard));
        EXPECT_EQ(piece.shard_count, static_cast<std::uint32_t>(size));
      }
      EXPECT_EQ(piece.bytes, piece.numel * element_size);
    }
    EXPECT_EQ(covered, total);
    if (specs[t].numel() > 0 && pieces.size() < static_cast<std::size_t>(size)) ++tensors_with_empty_shards;

    // This rank's shard, as a sharded swap-in leaves it.
    std::vector<std::byte> local;
    for (const auto& piece : pieces) {
      if (piece.owner != rank) continue;
      const std::uint64_t start = piece.element_offset * element_size;
      for (std::uint64_t i = 0; i < piece.bytes; ++i) local.push_back(pattern(t, start + i));
    }
    std::vector<std::byte> full(total, std::byte{0xEE});
    bool ok = true;
    try {
      allgather_tensor(topology.world(), pieces, element_size, local, full);
    } catch (const std::exception& e) {
      ok = false;
      ADD_FAILURE() << "rank " << rank << ": " << e.what();
    }
    std::uint64_t wrong = 0, first_wrong = total;
    for (std::uint64_t i = 0; i < total; ++i) {
      if (full[i] != pattern(t, i)) {
        if (wrong == 0) first_wrong = i;
        ++wrong;
      }
    }
    EXPECT_EQ(wrong, 0u) << "rank " << rank << ": " << wrong << " of " << total
                         << " bytes wrong, the first at byte " << first_wrong;
    EXPECT_TRUE(all_ranks(ok && wrong == 0)) << "some rank got a wrong tensor";
  }
  // With more than one rank the small tensors leave some ranks without a shard.
  if (size > 1) {
    EXPECT_GT(tensors_with_empty_shards, 0);
  }
}

// ---- rebuilding tensors ---------------------------------------------------------------------

TEST(AllgatherTensor, RebuildsEveryTensorOfAShardedPlan) {
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  gather_and_check(topology, sharded_plan(topology, 4096), false);
}

TEST(AllgatherTensor, TensorsBelowTheShardThresholdAreWholeOnOneRank) {
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = sharded_plan(topology, 4096, 20000);  // "large" (200000 bytes) is cut
  for (std::uint32_t t = 0; t < tensors().size(); ++t)
    if (t != 3 && tensors()[t].numel() > 0) {
      EXPECT_EQ(pieces_of_tensor(plan, t).size(), 1u) << tensors()[t].name;
    }
  gather_and_check(topology, plan, false);
}

TEST(AllgatherTensor, PiecesInAnyOrder) {
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  gather_and_check(topology, sharded_plan(topology, 4096), true);
}

TEST(AllgatherTensor, SmallAlignmentGivesEveryRankAShard) {
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = sharded_plan(topology, 64);
  gather_and_check(topology, plan, false);
  // "large" (100000 x f16) is cut into one shard per rank at this alignment.
  EXPECT_EQ(pieces_of_tensor(plan, 3).size(), static_cast<std::size_t>(topology.world_size()));
}

TEST(AllgatherTensor, OnATopologyOfSeveralNodes) {
  // Pairs of ranks as nodes (env key): shards still go to rank r, whatever its node.
  ::setenv("SWAPCOORD_TEST_GATHER_NODE", std::to_string(world_rank() / 2).c_str(), 1);
  const Topology topology = Topology::discover(
      MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_GATHER_NODE"), {"/swap/a", "/swap/b"});
  ::unsetenv("SWAPCOORD_TEST_GATHER_NODE");
  gather_and_check(topology, sharded_plan(topology, 512), false);
}

TEST(AllgatherTensor, ManyRoundsReuseTheBuffers) {
  // A training loop gathers the same tensor every step: the output is rewritten each time.
  const int rank = world_rank();
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = sharded_plan(topology, 4096);
  const std::uint32_t t = 3;  // "large"
  const auto pieces = pieces_of_tensor(plan, t);
  const std::size_t element_size = 2;
  std::vector<std::byte> full(100000 * element_size);
  std::vector<std::byte> local;
  std::uint64_t start = 0;
  for (const auto& piece : pieces)
    if (piece.owner == rank) {
      start = piece.element_offset * element_size;
      local.resize(piece.bytes);
    }
  int bad_rounds = 0;
  for (std::uint32_t round = 0; round < 20; ++round) {
    for (std::size_t i = 0; i < local.size(); ++i) local[i] = pattern(t + 100 * round, start + i);
    allgather_tensor(MPI_COMM_WORLD, pieces, element_size, local, full);
    for (std::size_t i = 0; i < full.size(); ++i)
      if (full[i] != pattern(t + 100 * round, i)) {
        ++bad_rounds;
        break;
      }
  }
  EXPECT_EQ(bad_rounds, 0);
}

TEST(AllgatherTensor, AnEmptyTensorIsANoOp) {
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = sharded_plan(topology, 4096);
  const auto pieces = pieces_of_tensor(plan, 6);  // "empty"
  EXPECT_TRUE(pieces.empty());
  bool ok = true;
  try {
    allgather_tensor(MPI_COMM_WORLD, pieces, 4, {}, {});
  } catch (const std::exception& e) {
    ok = false;
    ADD_FAILURE() << e.what();
  }
  EXPECT_TRUE(all_ranks(ok));
}

// ---- errors ---------------------------------------------------------------------------------

TEST(AllgatherTensor, ALocalShardOfTheWrongSizeIsAnError) {
  // One byte too many on every rank (also on ranks that own no shard), so that every rank
  // throws before the collective.
  const int rank = world_rank();
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = sharded_plan(topology, 4096);
  const std::uint32_t t = 2;  // "odd"
  const auto pieces = pieces_of_tensor(plan, t);
  std::uint64_t owned = 0;
  for (const auto& piece : pieces)
    if (piece.owner == rank) owned = piece.bytes;
  std::vector<std::byte> local(owned + 1), full(4097 * 4);
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { allgather_tensor(MPI_COMM_WORLD, pieces, 4, local, full); });
  // Every rank reports the lowest rank that passed a wrong size: rank 0.
  std::uint64_t owned_by_0 = 0;
  for (const auto& piece : pieces)
    if (piece.owner == 0) owned_by_0 = piece.bytes;
  EXPECT_THAT(message, AllOf(HasSubstr("allgather_tensor"), HasSubstr("rank 0 "),
                             HasSubstr(std::to_string(owned_by_0 + 1) + " bytes"),
                             HasSubstr("shard of " + std::to_string(owned_by_0))));

  // And a correct call right after still works.
  local.resize(owned);
  for (const auto& piece : pieces)
    if (piece.owner == rank)
      for (std::uint64_t i = 0; i < owned; ++i) local[i] = pattern(t, piece.element_offset * 4 + i);
  allgather_tensor(MPI_COMM_WORLD, pieces, 4, local, full);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < full.size(); ++i) wrong += full[i] != pattern(t, i);
  EXPECT_EQ(wrong, 0u);
}

TEST(AllgatherTensor, AnOutputTooSmallIsAnError) {
  // Same pieces on every rank, so every rank finds the same problem.
  const int rank = world_rank();
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = sharded_plan(topology, 64);
  const std::uint32_t t = 3;  // "large", 200000 bytes
  const auto pieces = pieces_of_tensor(plan, t);
  std::vector<std::byte> local;
  for (const auto& piece : pieces)
    if (piece.owner == rank) local.resize(piece.bytes);
  std::vector<std::byte> full(200000 - 1);
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { allgather_tensor(MPI_COMM_WORLD, pieces, 2, local, full); });
  EXPECT_THAT(message, AllOf(HasSubstr("allgather_tensor"), HasSubstr("199999")));
}

}  // namespace
}  // namespace swapcoord
