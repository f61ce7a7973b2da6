#include "run_report.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "cli_util.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/io/private_fs.hpp"

namespace swapcoord::app {

using nlohmann::json;

RunReport::RunReport(const RunConfig& config, const SwapSession& session, const std::vector<TensorSpec>& tensors,
                     std::vector<std::string> argv)
    : _config(config), _session(session), _argv(std::move(argv)), _tensors(tensors.size()) {
  const SwapPlan& plan = session.plan();
  const Topology& topo = session.topology();
  _rank = topo.rank();
  const auto& c = config;
  const auto& o = c.session;
  if (_rank == 0) {
    std::uint64_t tensor_bytes = 0;
    for (const auto& t : tensors) tensor_bytes += t.size_bytes();
    std::printf("# swapcoord run %s (%s)\n", SWAPCOORD_VERSION, mpi_library_version().c_str());
    std::printf("# command: %s\n", join(_argv, " ").c_str());
    std::printf("# model: %s%s, swap %s: %zu tensors, %.1f MB; steps %d\n",
                c.tensors.empty() ? c.preset.c_str() : c.tensors.c_str(),
                c.tensors.empty() ? fmt::format(" scale {}", c.scale).c_str() : "", std::string(to_string(c.swap)).c_str(),
                tensors.size(), static_cast<double>(tensor_bytes) / 1e6, c.steps);
    std::printf("# plan: policy %s, layout %s, slots %d, %d ranks on %d nodes (node key %s), "
                "fingerprint %016llx, imbalance ranks %.3f nodes %.3f\n",
                std::string(to_string(o.plan.policy)).c_str(), std::string(to_string(o.plan.layout)).c_str(), o.slots,
                topo.world_size(), topo.node_count(), o.node_key.c_str(),
                static_cast<unsigned long long>(plan.fingerprint()), plan.rank_imbalance(), plan.node_imbalance());
    std::printf("# catalog: %s\n", session.catalog_path().c_str());
    if (const Catalog* r = session.resumed_from())
      std::printf("# resume: epoch %d from %s (written by %d ranks on %d nodes, policy %s, layout %s, "
                  "fingerprint %s)%s\n", r->epoch, session.catalog_path().c_str(), r->world_size, r->node_count,
                  r->policy.c_str(), r->layout.c_str(), r->plan_fingerprint.c_str(),
                  session.repartitioned() ? "; re-partitioned" : "");
    std::printf("# aio: backend %s, block_size %zu, queue_depth %zu, threads %zu, single_submit %d, "
                "overlap_events %d, direct %s, fsync %d; staging %zu x %s pinned per rank; verify %d\n",
                o.backend.c_str(), o.aio.block_size, o.aio.queue_depth, o.aio.intra_op_parallelism,
                o.aio.single_submit, o.aio.overlap_events, std::string(to_string(o.aio.direct)).c_str(), o.aio.fsync,
                o.buffer_count, format_size(o.buffer_size).c_str(), c.check_values);
    if (c.device == "cuda")
      std::printf("# device: tensors in GPU memory, GPU local_rank %% %d; rank 0's: %s; %s; allgather %s\n",
                  device::visible_device_count(), device::describe_device(device::device_for_local_rank(
                                                      topo.local_rank(), "--device cuda")).c_str(),
                  device::build_description().c_str(), c.allgather ? "NCCL" : "off");
    std::string per_node;
    for (std::size_t n = 0; n < plan.node_bytes.size(); ++n)
      per_node += fmt::format("{}node {}: {:.1f} MB", n ? ", " : "", n, static_cast<double>(plan.node_bytes[n]) / 1e6);
    std::printf("# bytes per node: %s\n", per_node.c_str());
    std::printf("#\n# %5s %-20s %5s %10s %s\n", "rank", "host", "node", "local_rank", "root, bytes");
  }
  // One line per rank, in rank order (each rank's root is known only to it).
  std::string line = fmt::format("{} {:.1f} MB", topo.my_root(),
                                 static_cast<double>(plan.rank_bytes[static_cast<std::size_t>(_rank)]) / 1e6);
  if (c.device == "cuda") line += fmt::format(", cuda:{}", device::device_for_local_rank(topo.local_rank(), "--device cuda"));
  constexpr int kWidth = 512;
  std::vector<char> mine(kWidth, '\0'), all(static_cast<std::size_t>(kWidth) * static_cast<std::size_t>(topo.world_size()));
  std::memcpy(mine.data(), line.data(), std::min<std::size_t>(line.size(), kWidth - 1));
  mpi_check(MPI_Gather(mine.data(), kWidth, MPI_CHAR, all.data(), kWidth, MPI_CHAR, 0, topo.world()), "MPI_Gather (header)");
  if (_rank != 0) return;
  for (int r = 0; r < topo.world_size(); ++r) {
    const auto ur = static_cast<std::size_t>(r);
    std::printf("# %5d %-20s %5d %10d %s\n", r, topo.hosts()[ur].c_str(), topo.node_of_rank()[ur],
                topo.local_rank_of_rank()[ur], all.data() + ur * kWidth);
  }
  std::printf("#\n# %5s %9s %6s %14s %9s %9s %9s %9s %9s %9s %8s\n", "step", "phase", "epoch", "bytes", "time", "agg",
              "rank_min", "rank_mean", "rank_max", "imbalance", "#wrong");
  std::printf("# %5s %9s %6s %14s %9s %9s %9s %9s %9s %9s %8s\n", "", "", "", "(B)", "(s)", "(GB/s)", "(GB/s)",
              "(GB/s)", "(GB/s)", "", "");
  std::fflush(stdout);
}

void RunReport::row(int step, const char* name, int epoch, const PhaseStats& s) {
  _wrong += s.wrong;
  const std::string_view kind = name;
  if (kind == "swap-out") _out_gbps_sum += s.aggregate_gbps, ++_out_count;
  if (kind == "swap-in") _in_gbps_sum += s.aggregate_gbps, ++_in_count;
  _phases.push_back({{"step", step}, {"phase", name}, {"epoch", epoch}, {"bytes", s.bytes},
                     {"seconds_min", s.seconds_min}, {"seconds_mean", s.seconds_mean},
                     {"seconds_max", s.seconds_max}, {"aggregate_gbps", s.aggregate_gbps},
                     {"rank_gbps_min", s.gbps_min}, {"rank_gbps_mean", s.gbps_mean},
                     {"rank_gbps_max", s.gbps_max}, {"imbalance", s.imbalance}, {"wrong", s.wrong}});
  if (_rank == 0) {
    std::printf("  %5d %9s %6d %14llu %9.4f %9.2f %9.2f %9.2f %9.2f %9.2f %8llu\n", step, name, epoch,
                static_cast<unsigned long long>(s.bytes), s.seconds_max, s.aggregate_gbps, s.gbps_min,
                s.gbps_mean, s.gbps_max, s.imbalance, static_cast<unsigned long long>(s.wrong));
    if (s.wrong > 0 && !s.notes.empty()) std::printf("#   wrong values: %s\n", s.notes.c_str());
    std::fflush(stdout);
  }
}

void RunReport::coordination(const Coordination& c) {
  if (_rank == 0) _coordination.push_back(c);
}

namespace {
double median_overhead(const std::vector<RunReport::Coordination>& list) {
  std::vector<double> v;
  for (const auto& c : list) v.push_back(c.overhead());
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}
}  // namespace

void RunReport::footer(const std::string& json_path) const {
  if (_rank != 0) return;
  std::printf("#\n# Wrong values: %llu %s\n", static_cast<unsigned long long>(_wrong), _wrong == 0 ? "OK" : "ERROR");
  if (!_coordination.empty()) {
    std::string steps;
    for (const auto& c : _coordination) steps += fmt::format("{}{:+.1f}%", steps.empty() ? "" : " ", 100 * c.overhead());
    std::printf("# Coordination: swap-out + commit wall time over the slowest rank's own I/O (swap-out + fdatasync): "
                "median %+.1f%% (per step: %s)\n",
                100 * median_overhead(_coordination), steps.c_str());
  }
  std::printf("# Avg swap-out bandwidth: %.2f GB/s  Avg swap-in bandwidth: %.2f GB/s (aggregate over ranks)\n#\n",
              _out_count ? _out_gbps_sum / _out_count : 0.0, _in_count ? _in_gbps_sum / _in_count : 0.0);
  if (!json_path.empty()) write_json(json_path);
}

void RunReport::write_json(const std::string& path) const {
  const SwapPlan& plan = _session.plan();
  const Topology& topo = _session.topology();
  json ranks = json::array();
  for (int r = 0; r < topo.world_size(); ++r) {
    const auto ur = static_cast<std::size_t>(r);
    ranks.push_back({{"rank", r}, {"host", topo.hosts()[ur]}, {"node", topo.node_of_rank()[ur]},
                     {"local_rank", topo.local_rank_of_rank()[ur]}, {"bytes", plan.rank_bytes[ur]}});
  }
  json coordination = json::array();
  for (const auto& c : _coordination)
    coordination.push_back({{"step", c.step}, {"wall_s", c.wall_s}, {"io_s", c.io_s}, {"sync_s", c.sync_s},
                            {"rows_s", c.rows_s}, {"catalog_s", c.catalog_s}, {"overhead", c.overhead()}});
  const json doc{{"tool", "swapcoord run"}, {"version", SWAPCOORD_VERSION}, {"mpi", mpi_library_version()},
                 {"argv", _argv}, {"config", _config.to_json()}, {"world_size", topo.world_size()},
                 {"node_count", topo.node_count()}, {"tensors", _tensors},
                 {"catalog", _session.catalog_path()},
                 {"plan", {{"fingerprint", fmt::format("{:016x}", plan.fingerprint())},
                           {"total_bytes", plan.total_bytes()}, {"rank_imbalance", plan.rank_imbalance()},
                           {"node_imbalance", plan.node_imbalance()}, {"node_bytes", plan.node_bytes}}},
                 {"ranks", ranks}, {"phases", _phases}, {"coordination", coordination},
                 {"coordination_overhead_median", median_overhead(_coordination)}, {"wrong", _wrong},
                 {"result", _wrong == 0 ? "ok" : "wrong values"}};
  try {
    write_private_file(path, doc.dump(2) + "\n");
  } catch (const Error& e) {
    log::error(fmt::format("--json: {}", e.what()));
  }
}

}  // namespace swapcoord::app
