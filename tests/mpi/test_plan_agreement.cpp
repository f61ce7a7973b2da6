// MPI tests of the cross-rank checks in coord/topology.hpp: check_plan_agreement (all ranks
// compare their plan fingerprints; a rank that computed another plan fails the job on every
// rank, named) and first_message (one rank's message known to all).
//
// Every test runs at 1, 2 and 4 ranks. Every rank makes the same collective calls in the
// same order; an expected exception is checked on every rank and the result is combined
// over ranks, so a rank that does not throw fails the test instead of hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
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
using ::testing::Not;

using namespace test;  // the MPI helpers of mpi_test_support.hpp

// ---- helpers (collective unless said otherwise) -------------------------------------------

// Every rank's value.
std::vector<std::uint64_t> allgather(std::uint64_t mine) {
  std::vector<std::uint64_t> all(static_cast<std::size_t>(world_size()));
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  return all;
}

std::string hex16(std::uint64_t value) {
  char text[32];
  std::snprintf(text, sizeof text, "%016" PRIx64, value);
  return text;
}

// A small model with tensors of several sizes and dtypes.
std::vector<TensorSpec> model() {
  return {
      {"embed.weight", {5000, 64}, DType::f16},   {"layer0.attn.qkv", {64, 192}, DType::f32},
      {"layer0.attn.out", {64, 64}, DType::bf16}, {"layer0.mlp.fc1", {64, 256}, DType::f32},
      {"layer0.mlp.fc2", {256, 64}, DType::f32},  {"layer0.norm", {64}, DType::f32},
      {"scalar", {}, DType::f64},                 {"empty", {0, 7}, DType::f32},
  };
}

// ---- check_plan_agreement -------------------------------------------------------------------

TEST(CheckPlanAgreement, EqualFingerprintsPass) {
  expect_no_throw_on_all_ranks([] { check_plan_agreement(MPI_COMM_WORLD, 0x0123456789abcdefULL); });
  expect_no_throw_on_all_ranks([] { check_plan_agreement(MPI_COMM_WORLD, 0); });
  expect_no_throw_on_all_ranks([] { check_plan_agreement(MPI_COMM_WORLD, ~0ULL); });
}

TEST(CheckPlanAgreement, TheLastRankDifferingFailsOnAllRanksNamingIt) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  const std::uint64_t common = 0x1111222233334444ULL, other = 0xdeadbeefcafef00dULL;
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { check_plan_agreement(MPI_COMM_WORLD, rank == size - 1 ? other : common); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank " + std::to_string(size - 1)), HasSubstr(hex16(other)),
                             HasSubstr(hex16(common))));
}

TEST(CheckPlanAgreement, TheFirstDifferingRankIsNamed) {
  // Ranks 1 and the last (the same at two ranks) each compute a plan of their own.
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  std::uint64_t mine = 42;
  if (rank == 1) mine = 1001;
  if (rank == size - 1 && size > 2) mine = 1003;
  const std::string message =
      expect_throw_on_all_ranks<Error>([&] { check_plan_agreement(MPI_COMM_WORLD, mine); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank 1 "), HasSubstr(hex16(1001)), HasSubstr(hex16(42))));
  EXPECT_THAT(message, Not(HasSubstr(hex16(1003))));
}

TEST(CheckPlanAgreement, RankZeroDifferingNamesRankOne) {
  // The reference is rank 0's fingerprint: when rank 0 is the odd one out, rank 1 is named.
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { check_plan_agreement(MPI_COMM_WORLD, rank == 0 ? 7 : 8); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank 1 "), HasSubstr(hex16(7)), HasSubstr(hex16(8))));
}

TEST(CheckPlanAgreement, RealPlansAgreeOnEveryRank) {
  const auto tensors = model();
  for (const char* key : {"shared", "env:SWAPCOORD_TEST_PLAN_NODE"}) {
    ::setenv("SWAPCOORD_TEST_PLAN_NODE", std::to_string(world_rank() / 2).c_str(), 1);
    const Topology topology =
        Topology::discover(MPI_COMM_WORLD, NodeKey::parse(key), {"/swap/nvme0", "/swap/nvme1"});
    ::unsetenv("SWAPCOORD_TEST_PLAN_NODE");
    for (Policy policy : {Policy::balanced, Policy::sharded, Policy::round_robin}) {
      for (Layout layout : {Layout::slab, Layout::file_per_tensor}) {
        PlanOptions options;
        options.policy = policy;
        options.layout = layout;
        const SwapPlan plan = make_plan(tensors, topology.plan_topology(), options);
        const std::uint64_t fingerprint = plan.fingerprint();
        SCOPED_TRACE(std::string(key) + " " + std::string(to_string(policy)) + " " +
                     std::string(to_string(layout)));
        const auto all = allgather(fingerprint);
        for (std::size_t r = 0; r < all.size(); ++r) EXPECT_EQ(all[r], all[0]) << "rank " << r;
        expect_no_throw_on_all_ranks([&] { check_plan_agreement(MPI_COMM_WORLD, fingerprint); });
        expect_no_throw_on_all_ranks([&] { check_plan_agreement(topology.world(), fingerprint); });
        EXPECT_EQ(plan.world_size, world_size());
        EXPECT_EQ(plan.node_count, topology.node_count());
      }
    }
  }
}

TEST(CheckPlanAgreement, ARankWithAnotherModelIsCaught) {
  // The last rank sees one tensor renamed: equal pieces, different specs, caught anyway.
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  auto tensors = model();
  if (rank == size - 1) tensors[3].name = "layer0.mlp.fc1_renamed";
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});
  const SwapPlan plan = make_plan(tensors, topology.plan_topology());
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { check_plan_agreement(topology.world(), plan.fingerprint()); });
  EXPECT_THAT(message, HasSubstr("rank " + std::to_string(size - 1)));
}

TEST(CheckPlanAgreement, WorksOnANodeCommunicator) {
  // Nodes of two ranks; the second rank of the last node disagrees, only its node fails.
  const int rank = world_rank(), size = world_size();
  ::setenv("SWAPCOORD_TEST_PLAN_NODE2", std::to_string(rank / 2).c_str(), 1);
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_PLAN_NODE2"), {"/swap/a"});
  ::unsetenv("SWAPCOORD_TEST_PLAN_NODE2");
  const bool last_node_has_two = size % 2 == 0;
  const bool on_last_node = rank / 2 == (size - 1) / 2;
  const std::uint64_t mine = (last_node_has_two && rank == size - 1) ? 2 : 1;
  bool threw = false;
  std::string message;
  try {
    check_plan_agreement(topology.node_comm(), mine);
  } catch (const Error& e) {
    threw = true;
    message = e.what();
  }
  const bool expect_throw = last_node_has_two && on_last_node;
  EXPECT_EQ(threw, expect_throw) << "rank " << rank << ": " << message;
  if (expect_throw) {
    EXPECT_THAT(message, HasSubstr("rank 1 "));  // the node communicator's rank
  }
}

// ---- first_message --------------------------------------------------------------------------

TEST(FirstMessage, NoneGivesMinusOneAndEmpty) {
  const auto [rank, message] = first_message(MPI_COMM_WORLD, "");
  EXPECT_EQ(rank, -1);
  EXPECT_EQ(message, "");
}

TEST(FirstMessage, TheLowestRankWithAMessageWins) {
  // Ranks 1 and 2 (where they exist) have messages; everyone gets rank 1's.
  const int rank = world_rank(), size = world_size();
  const std::string mine = rank == 1 || rank == 2 ? "problem on rank " + std::to_string(rank) : "";
  const auto [from, message] = first_message(MPI_COMM_WORLD, mine);
  if (size >= 2) {
    EXPECT_EQ(from, 1);
    EXPECT_EQ(message, "problem on rank 1");
  } else {
    EXPECT_EQ(from, -1);
    EXPECT_EQ(message, "");
  }
}

TEST(FirstMessage, RankZeroAndTheLastRank) {
  const int rank = world_rank(), size = world_size();
  {
    const auto [from, message] = first_message(MPI_COMM_WORLD, rank == 0 ? "from zero" : "");
    EXPECT_EQ(from, 0);
    EXPECT_EQ(message, "from zero");
  }
  {
    const auto [from, message] =
        first_message(MPI_COMM_WORLD, rank == size - 1 ? "from the last rank" : "");
    EXPECT_EQ(from, size - 1);
    EXPECT_EQ(message, "from the last rank");
  }
  {
    const auto [from, message] = first_message(MPI_COMM_WORLD, "everyone " + std::to_string(rank));
    EXPECT_EQ(from, 0);
    EXPECT_EQ(message, "everyone 0");
  }
}

TEST(FirstMessage, ALongMessageIsCutToOneKibibyte) {
  const int rank = world_rank(), size = world_size();
  std::string long_message;
  for (int i = 0; long_message.size() < 3000; ++i) long_message += std::to_string(i) + ",";
  const auto [from, message] = first_message(MPI_COMM_WORLD, rank == size - 1 ? long_message : "");
  EXPECT_EQ(from, size - 1);
  EXPECT_GE(message.size(), 1000u);
  EXPECT_LE(message.size(), 1024u);
  EXPECT_EQ(long_message.compare(0, message.size(), message), 0) << "not a prefix";
}

TEST(FirstMessage, ManyCallsInARow) {
  // Each call is independent: the reporting rank changes every round.
  const int rank = world_rank(), size = world_size();
  for (int round = 0; round < 50; ++round) {
    const int reporter = round % size;
    const std::string mine = rank == reporter ? "round " + std::to_string(round) : "";
    const auto [from, message] = first_message(MPI_COMM_WORLD, mine);
    EXPECT_EQ(from, reporter) << "round " << round;
    EXPECT_EQ(message, "round " + std::to_string(round));
  }
}

}  // namespace
}  // namespace swapcoord
