#pragma once
// Topology: the job's ranks grouped into nodes, with each node's swap roots.
#include <mpi.h>

#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/plan.hpp"

namespace swapcoord {

// How ranks are grouped into nodes.
//   shared   MPI_Comm_split_type(MPI_COMM_TYPE_SHARED): ranks that share memory
//   slurm    the value of SLURM_NODEID
//   env:VAR  the value of environment variable VAR
// A key lets a job whose "nodes" share one host (a test cluster) still get one group per
// node. Nodes are numbered in the order of their lowest world rank.
struct NodeKey {
  enum class Kind { shared, slurm, env };
  Kind kind = Kind::shared;
  std::string variable;  // for env (SLURM_NODEID for slurm)

  static NodeKey parse(std::string_view text);  // ConfigError naming the value
  std::string to_string() const;
};

class Topology {
 public:
  // Collective over `world`. `roots` are this rank's swap roots (one per NVMe device of
  // its node); ranks of one node must name the same number of roots.
  static Topology discover(MPI_Comm world, const NodeKey& key, std::vector<std::string> roots);

  MPI_Comm world() const noexcept { return _world.get(); }
  MPI_Comm node_comm() const noexcept { return _node_comm.get(); }
  int rank() const noexcept { return _rank; }
  int world_size() const noexcept { return _world_size; }
  int node() const noexcept { return _node_of_rank[static_cast<std::size_t>(_rank)]; }
  int node_count() const noexcept { return _node_count; }
  int local_rank() const noexcept { return _local_rank_of_rank[static_cast<std::size_t>(_rank)]; }
  int local_size() const noexcept { return _local_size; }
  const std::string& host() const noexcept { return _hosts[static_cast<std::size_t>(_rank)]; }
  const std::vector<std::string>& hosts() const noexcept { return _hosts; }  // per rank
  const std::vector<int>& node_of_rank() const noexcept { return _node_of_rank; }
  const std::vector<int>& local_rank_of_rank() const noexcept { return _local_rank_of_rank; }
  const std::vector<std::string>& roots() const noexcept { return _roots; }  // this node's
  // The root this rank writes to: roots()[local_rank % roots().size()].
  const std::string& my_root() const;
  PlanTopology plan_topology() const;

  // Collective: every rank checks that each of its roots exists, is a directory and is
  // writable (creates and removes a probe file). Throws Error on every rank when any rank
  // found a problem, naming the node, host, rank and path of the first.
  void check_roots() const;

 private:
  Comm _world;
  Comm _node_comm;
  int _rank = 0;
  int _world_size = 1;
  int _node_count = 1;
  int _local_size = 1;
  std::vector<std::string> _hosts;
  std::vector<int> _node_of_rank;
  std::vector<int> _local_rank_of_rank;
  std::vector<int> _roots_per_node;
  std::vector<std::string> _roots;
};

// Collective: all ranks compare their plan fingerprints. Throws Error on every rank when
// they differ, naming the first rank whose fingerprint differs from rank 0's.
void check_plan_agreement(MPI_Comm comm, std::uint64_t fingerprint);

// Collective: a message of up to 1 KiB from one rank known to all. Every rank passes its
// own `message` (empty = nothing to report); returns {rank, message} of the lowest rank
// with a non-empty one, or {-1, ""}.
std::pair<int, std::string> first_message(MPI_Comm comm, const std::string& message);

// Collective over the ranks that own shards of one tensor (all ranks of `comm` take part):
// rebuilds the whole tensor in `full` on every rank from the shards in `pieces` (all
// pieces of that tensor, any order, at most one per rank: SwapPlan::shards_of). `local`
// holds this rank's shard (the piece it owns; empty if none). Uses MPI_Allgatherv on host
// memory.
void allgather_tensor(MPI_Comm comm, std::span<const TensorShard> pieces, std::size_t element_size,
                      std::span<const std::byte> local, std::span<std::byte> full);

}  // namespace swapcoord
