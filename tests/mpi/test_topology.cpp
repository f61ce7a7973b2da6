// MPI tests of Topology (coord/topology.hpp): grouping ranks into nodes by shared memory, by
// an environment variable and by SLURM_NODEID; the plan topology it hands to the
// partitioner; NodeKey parsing; and check_roots, which must fail on every rank (never on one
// rank while the others wait) and name the rank, node and path of the bad root.
//
// Every test runs at 1, 2 and 4 ranks on one machine. Every rank makes the same collective
// calls in the same order; an expected exception is checked on every rank and the result is
// combined over ranks, so a rank that does not throw fails the test instead of hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/coord/topology.hpp"
#include "mpi_test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using namespace test;  // the MPI helpers of mpi_test_support.hpp

// ---- helpers (local) ------------------------------------------------------------------------

// Sets (or unsets, with nullopt) an environment variable of this process for the lifetime
// of the object, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::optional<std::string>& value) : _name(std::move(name)) {
    if (const char* old = std::getenv(_name.c_str())) _old = old;
    if (value)
      ::setenv(_name.c_str(), value->c_str(), 1);
    else
      ::unsetenv(_name.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() {
    if (_old)
      ::setenv(_name.c_str(), _old->c_str(), 1);
    else
      ::unsetenv(_name.c_str());
  }

 private:
  std::string _name;
  std::optional<std::string> _old;
};

std::string host_name() {
  char buffer[256] = {};
  ::gethostname(buffer, sizeof buffer - 1);
  return buffer;
}

// ---- NodeKey (local) ------------------------------------------------------------------------

TEST(NodeKey, ParsesTheThreeKinds) {
  const NodeKey shared = NodeKey::parse("shared");
  EXPECT_EQ(shared.kind, NodeKey::Kind::shared);
  EXPECT_EQ(shared.to_string(), "shared");

  const NodeKey slurm = NodeKey::parse("slurm");
  EXPECT_EQ(slurm.kind, NodeKey::Kind::slurm);
  EXPECT_EQ(slurm.variable, "SLURM_NODEID");
  EXPECT_EQ(slurm.to_string(), "slurm");

  const NodeKey env = NodeKey::parse("env:MY_NODE");
  EXPECT_EQ(env.kind, NodeKey::Kind::env);
  EXPECT_EQ(env.variable, "MY_NODE");
  EXPECT_EQ(env.to_string(), "env:MY_NODE");
}

TEST(NodeKey, ToStringRoundTrips) {
  for (const char* text : {"shared", "slurm", "env:X", "env:SLURM_NODEID", "env:node_name_1"}) {
    const NodeKey key = NodeKey::parse(text);
    EXPECT_EQ(key.to_string(), text);
    const NodeKey again = NodeKey::parse(key.to_string());
    EXPECT_EQ(again.kind, key.kind) << text;
    EXPECT_EQ(again.variable, key.variable) << text;
  }
}

TEST(NodeKey, RejectsOtherValuesNamingThem) {
  for (const char* text : {"", "env:", "env", "hostname", "Shared", "shared ", "slurm:", "ENV:X"}) {
    try {
      NodeKey::parse(text);
      ADD_FAILURE() << "'" << text << "' was accepted";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("node_key"), HasSubstr(std::string("'") + text + "'")))
          << text;
    }
  }
}

// ---- discover: shared memory --------------------------------------------------------------

TEST(TopologyShared, OneNodeOnOneMachine) {
  const int rank = world_rank(), size = world_size();
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/a"});

  EXPECT_EQ(topology.rank(), rank);
  EXPECT_EQ(topology.world_size(), size);
  EXPECT_EQ(topology.node_count(), 1);
  EXPECT_EQ(topology.node(), 0);
  EXPECT_EQ(topology.local_rank(), rank);
  EXPECT_EQ(topology.local_size(), size);
  EXPECT_EQ(topology.node_of_rank(), std::vector<int>(static_cast<std::size_t>(size), 0));
  std::vector<int> identity(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) identity[static_cast<std::size_t>(r)] = r;
  EXPECT_EQ(topology.local_rank_of_rank(), identity);

  ASSERT_EQ(topology.hosts().size(), static_cast<std::size_t>(size));
  for (const auto& host : topology.hosts()) {
    EXPECT_FALSE(host.empty());
    EXPECT_EQ(host, host_name()) << "all ranks run on this machine";
  }
  EXPECT_EQ(topology.host(), host_name());

  // Communicators: a duplicate of the world (not the world itself) and the node's.
  int world_compare = MPI_UNEQUAL;
  MPI_Comm_compare(topology.world(), MPI_COMM_WORLD, &world_compare);
  EXPECT_EQ(world_compare, MPI_CONGRUENT);
  int node_size = 0, node_rank = -1;
  MPI_Comm_size(topology.node_comm(), &node_size);
  MPI_Comm_rank(topology.node_comm(), &node_rank);
  EXPECT_EQ(node_size, size);
  EXPECT_EQ(node_rank, rank);

  ASSERT_EQ(topology.roots().size(), 1u);
  EXPECT_EQ(topology.my_root(), "/swap/a");
}

TEST(TopologyShared, PlanTopologyIsConsistent) {
  const int size = world_size();
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"/swap/nvme0", "/swap/nvme1"});
  const PlanTopology plan = topology.plan_topology();
  EXPECT_NO_THROW(plan.validate());
  EXPECT_EQ(plan.world_size, size);
  EXPECT_EQ(plan.node_count, 1);
  EXPECT_EQ(plan.node_of_rank, topology.node_of_rank());
  EXPECT_EQ(plan.local_rank_of_rank, topology.local_rank_of_rank());
  EXPECT_EQ(plan.roots_per_node, std::vector<int>{2});
  EXPECT_EQ(plan, PlanTopology::uniform(1, size, 2));
}

TEST(TopologyShared, MyRootAlternatesOverTwoRoots) {
  const std::vector<std::string> roots = {"/swap/nvme0", "/swap/nvme1"};
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), roots);
  EXPECT_EQ(topology.roots(), roots);
  EXPECT_EQ(topology.my_root(), roots[static_cast<std::size_t>(topology.local_rank() % 2)]);
}

TEST(TopologyShared, WorksOnASubCommunicator) {
  // Even and odd world ranks form two jobs of their own; each discovers its own topology.
  const int rank = world_rank(), size = world_size();
  MPI_Comm half = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half), MPI_SUCCESS);
  {
    const Topology topology = Topology::discover(half, NodeKey::parse("shared"), {"/swap/a"});
    const int expected_size = (size - rank % 2 + 1) / 2;
    EXPECT_EQ(topology.world_size(), expected_size);
    EXPECT_EQ(topology.rank(), rank / 2);
    EXPECT_EQ(topology.node_count(), 1);
    EXPECT_EQ(topology.local_rank(), rank / 2);
    EXPECT_EQ(topology.local_size(), expected_size);
    EXPECT_NO_THROW(topology.plan_topology().validate());
  }
  MPI_Comm_free(&half);
}

TEST(TopologyShared, NoRootOnOneRankIsAConfigErrorOnAllRanks) {
  const int rank = world_rank(), size = world_size();
  std::vector<std::string> roots;
  if (rank != size - 1) roots = {"/swap/a"};
  const std::string message = expect_throw_on_all_ranks<ConfigError>(
      [&] { Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), roots); });
  EXPECT_THAT(message, AllOf(HasSubstr("swap.roots"), HasSubstr("rank " + std::to_string(size - 1)),
                             HasSubstr("no swap root")));
}

TEST(TopologyShared, DifferentRootCountsOnOneNodeAreAConfigErrorOnAllRanks) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks on one node";  // same decision on every rank
  std::vector<std::string> roots = {"/swap/nvme0"};
  if (rank == size - 1) roots.push_back("/swap/nvme1");
  const std::string message = expect_throw_on_all_ranks<ConfigError>(
      [&] { Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), roots); });
  EXPECT_THAT(message, AllOf(HasSubstr("swap.roots"), HasSubstr("node 0"),
                             HasSubstr("different numbers of roots"),
                             HasSubstr("rank " + std::to_string(size - 1))));
}

// ---- discover: env:VAR ----------------------------------------------------------------------

TEST(TopologyEnv, PairsOfRanksFormNodes) {
  const int rank = world_rank(), size = world_size();
  const ScopedEnv env("SWAPCOORD_TEST_NODE_PAIRS", std::to_string(rank / 2));
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_NODE_PAIRS"), {"/swap/a"});

  EXPECT_EQ(topology.node_count(), (size + 1) / 2);
  EXPECT_EQ(topology.node(), rank / 2);
  EXPECT_EQ(topology.local_rank(), rank % 2);
  const int local_size = std::min(2, size - 2 * (rank / 2));
  EXPECT_EQ(topology.local_size(), local_size);
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(topology.node_of_rank()[static_cast<std::size_t>(r)], r / 2) << "rank " << r;
    EXPECT_EQ(topology.local_rank_of_rank()[static_cast<std::size_t>(r)], r % 2) << "rank " << r;
  }
  int node_size = 0, node_rank = -1;
  MPI_Comm_size(topology.node_comm(), &node_size);
  MPI_Comm_rank(topology.node_comm(), &node_rank);
  EXPECT_EQ(node_size, local_size);
  EXPECT_EQ(node_rank, rank % 2);

  const PlanTopology plan = topology.plan_topology();
  EXPECT_NO_THROW(plan.validate());
  EXPECT_EQ(plan.roots_per_node, std::vector<int>(static_cast<std::size_t>((size + 1) / 2), 1));
  if (size % 2 == 0) {
    EXPECT_EQ(plan, PlanTopology::uniform(size / 2, 2, 1));
  }
}

TEST(TopologyEnv, InterleavedNodesAreNumberedByTheirLowestRank) {
  // Even ranks on one "node", odd ranks on another: node 0 is the node of rank 0.
  const int rank = world_rank(), size = world_size();
  const ScopedEnv env("SWAPCOORD_TEST_NODE_PARITY", std::to_string(rank % 2));
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_NODE_PARITY"), {"/swap/a"});

  EXPECT_EQ(topology.node_count(), std::min(size, 2));
  EXPECT_EQ(topology.node(), rank % 2);
  EXPECT_EQ(topology.local_rank(), rank / 2);
  const int local_size = (size - rank % 2 + 1) / 2;
  EXPECT_EQ(topology.local_size(), local_size);
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(topology.node_of_rank()[static_cast<std::size_t>(r)], r % 2) << "rank " << r;
    EXPECT_EQ(topology.local_rank_of_rank()[static_cast<std::size_t>(r)], r / 2) << "rank " << r;
  }
  int node_size = 0;
  MPI_Comm_size(topology.node_comm(), &node_size);
  EXPECT_EQ(node_size, local_size);
  EXPECT_NO_THROW(topology.plan_topology().validate());
}

TEST(TopologyEnv, NodeNumbersFollowRanksNotKeyValues) {
  // Key values that sort opposite to the ranks ("9", "8", ...): node 0 is still rank 0's.
  const int rank = world_rank(), size = world_size();
  const ScopedEnv env("SWAPCOORD_TEST_NODE_DESC", "host-" + std::to_string(9 - rank / 2));
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_NODE_DESC"), {"/swap/a"});
  for (int r = 0; r < size; ++r)
    EXPECT_EQ(topology.node_of_rank()[static_cast<std::size_t>(r)], r / 2) << "rank " << r;
}

TEST(TopologyEnv, MyRootUsesTheLocalRank) {
  const int rank = world_rank();
  const ScopedEnv env("SWAPCOORD_TEST_NODE_ROOTS", std::to_string(rank / 2));
  const std::vector<std::string> roots = {"/swap/nvme0", "/swap/nvme1"};
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_NODE_ROOTS"), roots);
  // Local ranks are 0/1 on every node, so each node's two ranks use different roots.
  EXPECT_EQ(topology.my_root(), roots[static_cast<std::size_t>(rank % 2)]);
  EXPECT_EQ(topology.plan_topology().roots_per_node,
            std::vector<int>(static_cast<std::size_t>(topology.node_count()), 2));
}

TEST(TopologyEnv, UnsetVariableIsAConfigErrorOnAllRanks) {
  const ScopedEnv env("SWAPCOORD_TEST_NODE_UNSET", std::nullopt);
  const std::string message = expect_throw_on_all_ranks<ConfigError>([&] {
    Topology::discover(MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_NODE_UNSET"), {"/swap/a"});
  });
  EXPECT_THAT(message, AllOf(HasSubstr("SWAPCOORD_TEST_NODE_UNSET"), HasSubstr("rank 0")));
}

// ---- discover: slurm ------------------------------------------------------------------------

TEST(TopologySlurm, GroupsBySlurmNodeId) {
  const int rank = world_rank(), size = world_size();
  const ScopedEnv env("SLURM_NODEID", std::to_string(rank / 2));
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("slurm"), {"/swap/a"});
  EXPECT_EQ(topology.node_count(), (size + 1) / 2);
  EXPECT_EQ(topology.node(), rank / 2);
  EXPECT_EQ(topology.local_rank(), rank % 2);
  EXPECT_NO_THROW(topology.plan_topology().validate());
}

TEST(TopologySlurm, MissingSlurmNodeIdOnOneRankIsAConfigErrorOnAllRanks) {
  // Unset on the last rank only (at one rank: on rank 0, the last).
  const int rank = world_rank(), size = world_size();
  std::optional<std::string> value;
  if (rank != size - 1) value = std::to_string(rank / 2);
  const ScopedEnv env("SLURM_NODEID", value);
  const std::string message = expect_throw_on_all_ranks<ConfigError>(
      [&] { Topology::discover(MPI_COMM_WORLD, NodeKey::parse("slurm"), {"/swap/a"}); });
  EXPECT_THAT(message, AllOf(HasSubstr("SLURM_NODEID"), HasSubstr("rank " + std::to_string(size - 1)),
                             HasSubstr(host_name())));
}

// ---- check_roots ----------------------------------------------------------------------------

TEST(CheckRoots, GoodRootsPassAndLeaveNothingBehind) {
  const SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string a = dir.path() + "/nvme0", b = dir.path() + "/nvme1";
  if (world_rank() == 0) {
    std::filesystem::create_directory(a);
    std::filesystem::create_directory(b);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {
    const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {a, b});
    expect_no_throw_on_all_ranks([&] { topology.check_roots(); });
    // Twice: the probe files were removed, so a second check does not trip over them.
    expect_no_throw_on_all_ranks([&] { topology.check_roots(); });
  }
  MPI_Barrier(MPI_COMM_WORLD);
  EXPECT_TRUE(std::filesystem::is_empty(a)) << "probe files left in " << a;
  EXPECT_TRUE(std::filesystem::is_empty(b)) << "probe files left in " << b;
}

TEST(CheckRoots, MissingRootOnTheLastRankFailsOnAllRanksNamingIt) {
  // Pairs of ranks per node, so the last rank is not always on node 0.
  const int rank = world_rank(), size = world_size();
  const SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string good = dir.path() + "/nvme0";
  const std::string missing = dir.path() + "/no-such-root";
  if (rank == 0) std::filesystem::create_directory(good);
  MPI_Barrier(MPI_COMM_WORLD);

  const ScopedEnv env("SWAPCOORD_TEST_NODE_ROOTCHECK", std::to_string(rank / 2));
  const Topology topology = Topology::discover(
      MPI_COMM_WORLD, NodeKey::parse("env:SWAPCOORD_TEST_NODE_ROOTCHECK"), {rank == size - 1 ? missing : good});
  const std::string message = expect_throw_on_all_ranks<Error>([&] { topology.check_roots(); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank " + std::to_string(size - 1)),
                             HasSubstr("node " + std::to_string((size - 1) / 2)), HasSubstr(missing),
                             HasSubstr(host_name())));
  EXPECT_THAT(message, HasSubstr("No such file or directory"));
}

TEST(CheckRoots, RegularFileIsNotADirectory) {
  const int rank = world_rank(), size = world_size();
  const SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string good = dir.path() + "/nvme0";
  const std::string file = dir.path() + "/a-file";
  if (rank == 0) {
    std::filesystem::create_directory(good);
    std::ofstream(file) << "not a directory\n";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const Topology topology =
      Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {good, rank == size - 1 ? file : good});
  const std::string message = expect_throw_on_all_ranks<Error>([&] { topology.check_roots(); });
  EXPECT_THAT(message, AllOf(HasSubstr("not a directory"), HasSubstr(file),
                             HasSubstr("rank " + std::to_string(size - 1)), HasSubstr("node 0")));
}

TEST(CheckRoots, TheLowestBadRankIsReported) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  const SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string good = dir.path() + "/nvme0";
  if (rank == 0) std::filesystem::create_directory(good);
  MPI_Barrier(MPI_COMM_WORLD);
  // Ranks 1 and the last (the same rank at two ranks) name missing roots of their own.
  const std::string mine = rank >= 1 && (rank == 1 || rank == size - 1)
                               ? dir.path() + "/missing-" + std::to_string(rank)
                               : good;
  const Topology topology = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {mine});
  const std::string message = expect_throw_on_all_ranks<Error>([&] { topology.check_roots(); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank 1"), HasSubstr(dir.path() + "/missing-1")));
  if (size > 2) {
    EXPECT_THAT(message, ::testing::Not(HasSubstr("missing-" + std::to_string(size - 1))));
  }
}

}  // namespace
}  // namespace swapcoord
