#include "swapcoord/coord/topology.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>

#include <fmt/format.h>
#include <xxhash.h>

#include "swapcoord/common/host.hpp"
#include "swapcoord/io/private_fs.hpp"

namespace swapcoord {
namespace {

constexpr std::size_t kNameBytes = 256;
constexpr std::size_t kMessageBytes = 1024;

// Every rank's fixed-size string, gathered.
std::vector<std::string> allgather_strings(MPI_Comm comm, const std::string& mine, std::size_t width) {
  int size = 0;
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  std::vector<char> send(width, '\0'), receive(width * static_cast<std::size_t>(size), '\0');
  std::memcpy(send.data(), mine.data(), std::min(mine.size(), width - 1));
  mpi_check(MPI_Allgather(send.data(), static_cast<int>(width), MPI_CHAR, receive.data(),
                          static_cast<int>(width), MPI_CHAR, comm),
            "MPI_Allgather (strings)");
  std::vector<std::string> out;
  for (int r = 0; r < size; ++r) out.emplace_back(receive.data() + static_cast<std::size_t>(r) * width);
  return out;
}

std::vector<int> allgather_int(MPI_Comm comm, int mine) {
  int size = 0;
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  std::vector<int> out(static_cast<std::size_t>(size));
  mpi_check(MPI_Allgather(&mine, 1, MPI_INT, out.data(), 1, MPI_INT, comm), "MPI_Allgather (int)");
  return out;
}

// Problem with one root, or "".
std::string check_root(const std::string& root, int rank) {
  if (std::string problem = check_private_dir(root, "swap root"); !problem.empty()) return problem;
  const std::string probe = fmt::format("{}/.swapcoord-probe-{}-{}", root, rank, ::getpid());
  const int fd = ::open(probe.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return errno_message(fmt::format("swap root '{}' is not writable", root), errno);
  ::close(fd);
  ::unlink(probe.c_str());
  return {};
}

}  // namespace

NodeKey NodeKey::parse(std::string_view text) {
  if (text == "shared") return {Kind::shared, ""};
  if (text == "slurm") return {Kind::slurm, "SLURM_NODEID"};
  if (text.substr(0, 4) == "env:" && text.size() > 4) return {Kind::env, std::string(text.substr(4))};
  throw ConfigError(fmt::format("node_key: '{}' is not one of shared, slurm, env:VARIABLE", text));
}

std::string NodeKey::to_string() const {
  switch (kind) {
    case Kind::shared: return "shared";
    case Kind::slurm: return "slurm";
    case Kind::env: return "env:" + variable;
  }
  return "?";
}

Topology Topology::discover(MPI_Comm world_in, const NodeKey& key, std::vector<std::string> roots) {
  Topology t;
  t._world = Comm::dup(world_in);
  MPI_Comm world = t._world.get();
  t._rank = t._world.rank();
  t._world_size = t._world.size();
  t._hosts = allgather_strings(world, host_name(), kNameBytes);

  // The lowest world rank of each rank's node stands for the node.
  int leader = t._rank;
  if (key.kind == NodeKey::Kind::shared) {
    MPI_Comm shared = MPI_COMM_NULL;
    mpi_check(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, t._rank, MPI_INFO_NULL, &shared),
              "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
    Comm owned(shared);
    mpi_check(MPI_Allreduce(&t._rank, &leader, 1, MPI_INT, MPI_MIN, shared), "MPI_Allreduce (node leader)");
  } else {
    const char* value = std::getenv(key.variable.c_str());
    // The text is cut to kNameBytes for the exchange; its hash tells long keys apart.
    const std::string full = value ? value : "";
    const std::string mine =
        full.empty() ? full
                     : fmt::format("{:016x}:{}", XXH64(full.data(), full.size(), 0), full).substr(0, kNameBytes - 1);
    const auto keys = allgather_strings(world, mine, kNameBytes);
    for (int r = 0; r < t._world_size; ++r) {
      if (keys[static_cast<std::size_t>(r)].empty())
        throw ConfigError(fmt::format("node_key {}: {} is not set on rank {} (host {})",
                                      key.to_string(), key.variable, r, t._hosts[static_cast<std::size_t>(r)]));
    }
    leader = static_cast<int>(std::find(keys.begin(), keys.end(), mine) - keys.begin());
  }
  const auto leaders = allgather_int(world, leader);
  std::vector<int> distinct = leaders;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  t._node_count = static_cast<int>(distinct.size());
  t._node_of_rank.resize(leaders.size());
  for (std::size_t r = 0; r < leaders.size(); ++r)
    t._node_of_rank[r] = static_cast<int>(std::lower_bound(distinct.begin(), distinct.end(), leaders[r]) - distinct.begin());

  MPI_Comm node_comm = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split(world, t.node(), t._rank, &node_comm), "MPI_Comm_split (node)");
  t._node_comm = Comm(node_comm);
  MPI_Comm_set_errhandler(node_comm, MPI_ERRORS_RETURN);
  t._local_size = t._node_comm.size();
  t._local_rank_of_rank = allgather_int(world, t._node_comm.rank());

  // Ranks of one node must agree on the number of roots.
  const auto counts = allgather_int(world, static_cast<int>(roots.size()));
  t._roots_per_node.assign(static_cast<std::size_t>(t._node_count), 0);
  for (int r = 0; r < t._world_size; ++r) {
    auto& n = t._roots_per_node[static_cast<std::size_t>(t._node_of_rank[static_cast<std::size_t>(r)])];
    const int c = counts[static_cast<std::size_t>(r)];
    if (c == 0)
      throw ConfigError(fmt::format("swap.roots: rank {} (host {}) has no swap root", r,
                                    t._hosts[static_cast<std::size_t>(r)]));
    if (n == 0) n = c;
    if (n != c)
      throw ConfigError(fmt::format("swap.roots: ranks of node {} name different numbers of roots "
                                    "({} and {}, rank {} on host {})",
                                    t._node_of_rank[static_cast<std::size_t>(r)], n, c, r,
                                    t._hosts[static_cast<std::size_t>(r)]));
  }
  t._roots = std::move(roots);
  return t;
}

const std::string& Topology::my_root() const {
  return _roots[static_cast<std::size_t>(local_rank()) % _roots.size()];
}

PlanTopology Topology::plan_topology() const {
  PlanTopology p;
  p.world_size = _world_size;
  p.node_count = _node_count;
  p.node_of_rank = _node_of_rank;
  p.local_rank_of_rank = _local_rank_of_rank;
  p.roots_per_node = _roots_per_node;
  return p;
}

void Topology::check_roots() const {
  std::string problem;
  for (const auto& root : _roots) {
    problem = check_root(root, _rank);
    if (!problem.empty()) break;
  }
  const auto [rank, message] = first_message(world(), problem);
  if (rank >= 0)
    throw Error(fmt::format("node {} (host {}, rank {}): {}", _node_of_rank[static_cast<std::size_t>(rank)],
                            _hosts[static_cast<std::size_t>(rank)], rank, message));
}

std::pair<int, std::string> first_message(MPI_Comm comm, const std::string& message) {
  const auto has = allgather_int(comm, message.empty() ? 0 : 1);
  const auto it = std::find(has.begin(), has.end(), 1);
  if (it == has.end()) return {-1, {}};
  const int from = static_cast<int>(it - has.begin());
  std::vector<char> text(kMessageBytes, '\0');
  std::memcpy(text.data(), message.data(), std::min(message.size(), kMessageBytes - 1));
  mpi_check(MPI_Bcast(text.data(), static_cast<int>(kMessageBytes), MPI_CHAR, from, comm), "MPI_Bcast (message)");
  return {from, std::string(text.data())};
}

void check_plan_agreement(MPI_Comm comm, std::uint64_t fingerprint) {
  int size = 0;
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size));
  mpi_check(MPI_Allgather(&fingerprint, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm),
            "MPI_Allgather (plan fingerprint)");
  for (int r = 1; r < size; ++r) {
    if (all[static_cast<std::size_t>(r)] != all[0])
      throw Error(fmt::format("swap plans differ: rank {} computed plan fingerprint {:016x}, rank 0 "
                              "computed {:016x} (do all ranks see the same model, config and "
                              "ranks?)", r, all[static_cast<std::size_t>(r)], all[0]));
  }
}

void allgather_tensor(MPI_Comm comm, std::span<const TensorShard> pieces, std::size_t element_size,
                      std::span<const std::byte> local, std::span<std::byte> full) {
  int size = 0, rank = 0;
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  std::vector<int> counts(static_cast<std::size_t>(size), 0), displs(static_cast<std::size_t>(size), 0);
  for (const auto& p : pieces) {
    const std::uint64_t offset = p.element_offset * element_size;
    if (p.owner < 0 || p.owner >= size || p.bytes > INT_MAX || offset > INT_MAX)
      throw Error(fmt::format("allgather_tensor: shard {} of tensor {} (owner {}, {} bytes at {}) "
                              "is out of range for MPI_Allgatherv (2 GiB per call)",
                              p.shard, p.tensor, p.owner, p.bytes, offset));
    if (offset + p.bytes > full.size())
      throw Error(fmt::format("allgather_tensor: shard {} of tensor {} ends at byte {}, past the "
                              "{}-byte output", p.shard, p.tensor, offset + p.bytes, full.size()));
    counts[static_cast<std::size_t>(p.owner)] = static_cast<int>(p.bytes);
    displs[static_cast<std::size_t>(p.owner)] = static_cast<int>(offset);
  }
  // Collective-safe: every rank learns whether any rank passed the wrong size.
  const bool wrong_size = static_cast<std::size_t>(counts[static_cast<std::size_t>(rank)]) != local.size();
  const auto [bad_rank, problem] = first_message(
      comm, wrong_size ? fmt::format("allgather_tensor: rank {} passes {} bytes but owns a shard of {}",
                                     rank, local.size(), counts[static_cast<std::size_t>(rank)])
                       : std::string());
  if (bad_rank >= 0) throw Error(problem);
  mpi_check(MPI_Allgatherv(local.data(), static_cast<int>(local.size()), MPI_BYTE, full.data(),
                           counts.data(), displs.data(), MPI_BYTE, comm),
            "MPI_Allgatherv (tensor shards)");
}

}  // namespace swapcoord
