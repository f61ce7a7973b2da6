// swapcoord run: the main job, a client of SwapSession. A training-loop emulation on a
// model description: each step swaps in what this rank owns (checking every value against
// what the previous step wrote), swaps out new values and commits; each phase ends with a
// PhaseSync barrier that carries the figures. Output in the nccl-tests style; --json.
//
// Values: the 8-byte word w of tensor t at epoch e (counted from the tensor's first byte,
// so shards and whole tensors agree) is a hash of (t, w, e); padding after a piece is zero.
// Epoch 0 is written before step 1; step s checks epoch s-1 and writes epoch s; a final
// swap-in checks the last epoch.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "model.hpp"
#include "run_cli.hpp"
#include "run_config.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/io/unique_fd.hpp"
#include "swapcoord/session/session.hpp"

namespace swapcoord::app {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::uint64_t value_word(std::uint32_t tensor, std::uint64_t word, int epoch) {
  return mix64((static_cast<std::uint64_t>(tensor) << 40) ^ (word * 0x9e3779b97f4a7c15ULL) ^
             (static_cast<std::uint64_t>(epoch) * 0xd6e8feb86659fd93ULL + 1));
}

// `out` = bytes [offset, offset + out.size()) of a piece's on-disk image at `epoch`.
void fill_piece(const PlanPiece& piece, std::size_t element_size, int epoch, std::uint64_t offset,
                std::span<std::byte> out) {
  const std::uint64_t base = piece.element_offset * element_size;  // tensor byte of piece byte 0
  const std::uint64_t data_end = piece.bytes;
  std::size_t i = 0;
  const std::size_t data = offset < data_end ? static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), data_end - offset)) : 0;
  // base and offset are multiples of 8 (aligned shards and pieces), so words line up.
  for (; i + 8 <= data; i += 8) {
    const std::uint64_t w = value_word(piece.tensor, (base + offset + i) / 8, epoch);
    std::memcpy(out.data() + i, &w, 8);
  }
  if (i < data) {
    const std::uint64_t w = value_word(piece.tensor, (base + offset + i) / 8, epoch);
    std::memcpy(out.data() + i, &w, data - i);
    i = data;
  }
  std::memset(out.data() + i, 0, out.size() - i);
}

// Counts elements of `in` (bytes [offset, ...) of the piece) that differ from epoch's
// values; records the first mismatch's element index in the tensor.
std::uint64_t check_piece(const PlanPiece& piece, std::size_t element_size, int epoch,
                          std::uint64_t offset, std::span<const std::byte> in,
                          std::optional<std::uint64_t>& first_wrong) {
  const std::uint64_t base = piece.element_offset * element_size;
  const std::size_t data = offset < piece.bytes ? static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), piece.bytes - offset)) : 0;
  std::uint64_t wrong = 0;
  for (std::size_t i = 0; i < data; i += 8) {
    const std::size_t n = std::min<std::size_t>(8, data - i);
    const std::uint64_t want = value_word(piece.tensor, (base + offset + i) / 8, epoch);
    std::uint64_t got = 0;
    std::memcpy(&got, in.data() + i, n);
    const std::uint64_t mask = n == 8 ? ~0ULL : ((1ULL << (8 * n)) - 1);
    const std::uint64_t diff = (got ^ want) & mask;
    if (diff == 0) continue;
    for (std::size_t e = 0; e < n; e += element_size) {
      const std::uint64_t element_mask = element_size >= 8 ? ~0ULL : ((1ULL << (8 * element_size)) - 1) << (8 * e);
      if ((diff & element_mask) == 0) continue;
      ++wrong;
      if (!first_wrong) first_wrong = (base + offset + i + e) / element_size;
    }
  }
  return wrong;
}

class Job {
 public:
  Job(const RunCli& cli, const std::vector<std::string>& argv) : _cli(cli), _argv(argv) {}
  int run();

 private:
  // One phase on every rank: runs `work`, reports, prints the row, keeps the figures.
  void phase(int step, const char* name, int epoch, const std::function<void(PhaseReport&)>& work);
  void swap_out(int epoch, PhaseReport& report);
  void swap_in(int epoch, PhaseReport& report);
  void allgather(int epoch, PhaseReport& report);
  void corrupt(std::uint32_t id);
  void crash_if(std::string_view point, int epoch) const;
  void header();
  void report_json() const;
  const PlanPiece& piece(std::uint32_t id) const { return *_session->local_piece(id); }
  std::size_t element_size(std::uint32_t id) const { return dtype_size(_tensors[id].dtype); }

  RunConfig _config;
  const RunCli& _cli;
  std::vector<std::string> _argv;
  std::string _who;  // "rank N@host"
  int _rank = 0;
  std::vector<TensorSpec> _tensors;
  std::optional<SwapSession> _session;
  std::vector<std::uint32_t> _ids;  // this rank's pieces (tensor ids), in plan order
  int _epoch_in_flight = 0;         // for the commit-stage crash seam
  json _phases = json::array();
  std::uint64_t _wrong = 0;
  double _out_gbps_sum = 0, _in_gbps_sum = 0;
  int _out_count = 0, _in_count = 0;
};

void Job::phase(int step, const char* name, int epoch, const std::function<void(PhaseReport&)>& work) {
  PhaseReport report;
  const auto start = Clock::now();
  try {
    work(report);
  } catch (const PhaseError& e) {  // from a collective call: already names the rank
    report.failed = true;
    report.message = fmt::format("{} (phase {}, epoch {})", e.what(), name, epoch);
  } catch (const std::exception& e) {
    report.failed = true;
    report.message = fmt::format("{}: {} (phase {}, epoch {})", _who, e.what(), name, epoch);
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const PhaseStats s = _session->end_phase(name, epoch, report);
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

void Job::swap_out(int epoch, PhaseReport& report) {
  const std::uint32_t crash_at = _ids.empty() ? 0 : _ids[_ids.size() / 2];
  const auto figures = _session->swap_out_stream(_ids, [&](std::uint32_t id, std::uint64_t offset, std::span<std::byte> out) {
    if (offset == 0 && id == crash_at) crash_if("swap-out", epoch);
    fill_piece(piece(id), element_size(id), epoch, offset, out);
  });
  report.bytes = figures.bytes;
  if (epoch == _cli.corrupt_epoch && _rank == 0 && !_ids.empty()) corrupt(_ids.front());
}

void Job::swap_in(int epoch, PhaseReport& report) {
  struct Wrong {
    std::uint32_t id;
    std::uint64_t first, count, offset;
  };
  std::vector<Wrong> wrong;
  const auto figures = _session->swap_in_stream(_ids, [&](std::uint32_t id, std::uint64_t offset, std::span<const std::byte> in) {
    if (!_config.check_values) return;
    std::optional<std::uint64_t> first;
    const auto n = check_piece(piece(id), element_size(id), epoch, offset, in, first);
    report.wrong += n;
    if (n > 0 && wrong.size() < 3) wrong.push_back({id, *first, n, offset});
  });
  report.bytes = figures.bytes;
  std::vector<std::string> notes;
  for (const auto& w : wrong) {
    std::string where = "the resumed catalog's files";
    if (const PieceFile f = _session->where(w.id); !f.path.empty()) where = fmt::format("'{}' at {}", f.path, f.offset + w.offset);
    notes.push_back(fmt::format("'{}' element {} ({} wrong in {})", _tensors[w.id].name, w.first, w.count, where));
  }
  if (!notes.empty()) report.message = _who + ": " + join(notes, "; ");
}

void Job::allgather(int epoch, PhaseReport& report) {
  // Every tensor, shard by shard: read this rank's shard, all-gather, check the whole.
  const SwapPlan& plan = _session->plan();
  std::vector<std::vector<PlanPiece>> by_tensor(_tensors.size());
  for (const auto& p : plan.pieces) by_tensor[p.tensor].push_back(p);
  std::uint64_t largest = 0;
  for (const auto& t : _tensors) largest = std::max(largest, t.size_bytes());
  std::vector<std::byte> full(largest), shard;
  std::vector<std::string> notes;
  for (std::uint32_t t = 0; t < _tensors.size(); ++t) {
    std::span<const std::byte> local;
    if (const PlanPiece* p = _session->local_piece(t)) {
      shard.resize(p->bytes);
      const TensorView view{shard.data(), p->numel, _tensors[t].dtype, Device::cpu()};
      _session->swap_in({&t, 1}, {&view, 1});
      local = shard;
    }
    const std::span<std::byte> out(full.data(), _tensors[t].size_bytes());
    allgather_tensor(_session->topology().world(), by_tensor[t], element_size(t), local, out);
    if (_config.check_values) {
      PlanPiece whole{};
      whole.tensor = t;
      whole.numel = _tensors[t].numel();
      whole.bytes = _tensors[t].size_bytes();
      std::optional<std::uint64_t> first;
      const auto wrong = check_piece(whole, element_size(t), epoch, 0, out, first);
      report.wrong += wrong;
      if (wrong > 0 && notes.size() < 3)
        notes.push_back(fmt::format("all-gathered '{}' element {} ({} wrong)", _tensors[t].name, *first, wrong));
    }
    report.bytes += out.size();
  }
  if (!notes.empty()) report.message = _who + ": " + join(notes, "; ");
}

void Job::corrupt(std::uint32_t id) {
  // Through a separate buffered descriptor, as another program damaging the file would.
  const PieceFile where = _session->where(id);
  const std::uint64_t offset = where.offset + std::min<std::uint64_t>(piece(id).bytes / 2 / 8 * 8, where.bytes - 8);
  UniqueFd fd(::open(where.path.c_str(), O_WRONLY | O_CLOEXEC));
  const std::uint64_t junk = 0x0badc0ffee0ddf00ULL;
  if (!fd || ::pwrite(fd.get(), &junk, sizeof junk, static_cast<off_t>(offset)) != sizeof junk || ::fdatasync(fd.get()) != 0)
    throw SystemError(fmt::format("--inject-corruption: cannot write '{}'", where.path), errno);
  log::warn(fmt::format("--inject-corruption: overwrote 8 bytes at offset {} of '{}'", offset, where.path));
}

void Job::crash_if(std::string_view point, int epoch) const {
  if (_cli.crash_at != point || _cli.crash_epoch != epoch || _cli.crash_rank != _rank) return;
  std::fprintf(stderr, "%s: --crash-at %s: killing this process in epoch %d\n", _who.c_str(), std::string(point).c_str(), epoch);
  std::fflush(stderr);
  ::raise(SIGKILL);
}

void Job::header() {
  const SwapPlan& plan = _session->plan();
  const Topology& topo = _session->topology();
  const auto& c = _config;
  const auto& o = c.session;
  if (_rank == 0) {
    std::uint64_t tensor_bytes = 0;
    for (const auto& t : _tensors) tensor_bytes += t.size_bytes();
    std::printf("# swapcoord run %s (%s)\n", SWAPCOORD_VERSION, mpi_library_version().c_str());
    std::printf("# command: %s\n", join(_argv, " ").c_str());
    std::printf("# model: %s%s, swap %s: %zu tensors, %.1f MB; steps %d\n",
                c.tensors.empty() ? c.preset.c_str() : c.tensors.c_str(),
                c.tensors.empty() ? fmt::format(" scale {}", c.scale).c_str() : "", std::string(to_string(c.swap)).c_str(),
                _tensors.size(), static_cast<double>(tensor_bytes) / 1e6, c.steps);
    std::printf("# plan: policy %s, layout %s, slots %d, %d ranks on %d nodes (node key %s), "
                "fingerprint %016llx, imbalance ranks %.3f nodes %.3f\n",
                std::string(to_string(o.plan.policy)).c_str(), std::string(to_string(o.plan.layout)).c_str(), o.slots,
                topo.world_size(), topo.node_count(), o.node_key.c_str(),
                static_cast<unsigned long long>(plan.fingerprint()), plan.rank_imbalance(), plan.node_imbalance());
    std::printf("# catalog: %s\n", _session->catalog_path().c_str());
    if (const Catalog* r = _session->resumed_from())
      std::printf("# resume: epoch %d from %s (written by %d ranks on %d nodes, policy %s, layout %s, "
                  "fingerprint %s)%s\n", r->epoch, _session->catalog_path().c_str(), r->world_size, r->node_count,
                  r->policy.c_str(), r->layout.c_str(), r->plan_fingerprint.c_str(),
                  _session->repartitioned() ? "; re-partitioned" : "");
    std::printf("# aio: backend %s, block_size %zu, queue_depth %zu, threads %zu, single_submit %d, "
                "overlap_events %d, direct %s, fsync %d; staging %zu x %s pinned per rank; verify %d\n",
                o.backend.c_str(), o.aio.block_size, o.aio.queue_depth, o.aio.intra_op_parallelism,
                o.aio.single_submit, o.aio.overlap_events, std::string(to_string(o.aio.direct)).c_str(), o.aio.fsync,
                o.buffer_count, format_size(o.buffer_size).c_str(), c.check_values);
    std::string per_node;
    for (std::size_t n = 0; n < plan.node_bytes.size(); ++n)
      per_node += fmt::format("{}node {}: {:.1f} MB", n ? ", " : "", n, static_cast<double>(plan.node_bytes[n]) / 1e6);
    std::printf("# bytes per node: %s\n", per_node.c_str());
    std::printf("#\n# %5s %-20s %5s %10s %s\n", "rank", "host", "node", "local_rank", "root, bytes");
  }
  // One line per rank, in rank order (each rank's root is known only to it).
  const std::string line = fmt::format("{} {:.1f} MB", topo.my_root(),
                                       static_cast<double>(plan.rank_bytes[static_cast<std::size_t>(_rank)]) / 1e6);
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

void Job::report_json() const {
  const SwapPlan& plan = _session->plan();
  const Topology& topo = _session->topology();
  json ranks = json::array();
  for (int r = 0; r < topo.world_size(); ++r) {
    const auto ur = static_cast<std::size_t>(r);
    ranks.push_back({{"rank", r}, {"host", topo.hosts()[ur]}, {"node", topo.node_of_rank()[ur]},
                     {"local_rank", topo.local_rank_of_rank()[ur]}, {"bytes", plan.rank_bytes[ur]}});
  }
  const json doc{{"tool", "swapcoord run"}, {"version", SWAPCOORD_VERSION}, {"mpi", mpi_library_version()},
                 {"argv", _argv}, {"config", _config.to_json()}, {"world_size", topo.world_size()},
                 {"node_count", topo.node_count()}, {"tensors", _tensors.size()},
                 {"catalog", _session->catalog_path()},
                 {"plan", {{"fingerprint", fmt::format("{:016x}", plan.fingerprint())},
                           {"total_bytes", plan.total_bytes()}, {"rank_imbalance", plan.rank_imbalance()},
                           {"node_imbalance", plan.node_imbalance()}, {"node_bytes", plan.node_bytes}}},
                 {"ranks", ranks}, {"phases", _phases}, {"wrong", _wrong},
                 {"result", _wrong == 0 ? "ok" : "wrong values"}};
  std::ofstream out(_cli.json);
  out << doc.dump(2) << "\n";
  if (!out) log::error(fmt::format("--json: cannot write '{}'", _cli.json));
}

int Job::run() {
  MPI_Comm world = MPI_COMM_WORLD;
  MPI_Comm_rank(world, &_rank);
  _who = fmt::format("rank {}@{}", _rank, host_name());
  // Set-up that can fail differently per rank: every rank stops with the first message.
  std::string problem;
  bool config_error = false;
  try {
    if (!_cli.config.empty()) _config.load_file(_cli.config);
    _cli.apply(_config);
    _config.validate();
    const auto dtype = _config.deepspeed.detected ? std::optional(_config.deepspeed.param_dtype) : std::nullopt;
    _tensors = _config.tensors.empty() ? preset_tensors(_config.preset, _config.scale, _config.swap, dtype)
                                       : load_tensor_list(_config.tensors, _config.swap, dtype);
  } catch (const ConfigError& e) {
    problem = e.what();
    config_error = true;
  } catch (const std::exception& e) {
    problem = _who + ": " + e.what();
  }
  if (const auto [bad, message] = first_message(world, problem); bad >= 0) {
    if (config_error) throw ConfigError(message);
    throw PhaseError(message, bad);
  }
  SessionOptions options = _config.session;
  options.verify = false;  // run checks every value itself (a stronger check than checksums)
  options.on_stall = [](const std::string& message) {
    std::fprintf(stderr, "%s; ending the job\n", message.c_str());
    std::fflush(stderr);
    ::_exit(kExitError);
  };
  _session.emplace(_cli.resume ? SwapSession::resume(world, _tensors, options)
                               : SwapSession::create(world, _tensors, options));
  _session->set_commit_stage_hook([this](const char* stage) { crash_if(stage, _epoch_in_flight); });
  for (const auto& p : _session->local_pieces()) _ids.push_back(p.tensor);
  header();

  auto commit = [&](int step) {
    _epoch_in_flight = step;
    phase(step, "commit", step, [&](PhaseReport&) { _session->commit(); });
  };
  int first_step = 1;
  if (const Catalog* resumed = _session->resumed_from()) {
    const int epoch = resumed->epoch;
    if (_cli.verify_checksums)
      phase(epoch, "checksums", epoch, [&](PhaseReport& r) {
        const SessionCheck check = _session->verify();  // the same on every rank: rank 0 reports it
        if (_rank != 0) return;
        r.bytes = check.bytes;
        r.wrong = check.mismatches;
        if (!check.notes.empty()) r.message = _who + ": " + join(check.notes, "; ");
      });
    phase(epoch + 1, "swap-in", epoch, [&](PhaseReport& r) { swap_in(epoch, r); });
    first_step = epoch + 1;
  } else {
    phase(0, "swap-out", 0, [&](PhaseReport& r) { swap_out(0, r); });
    commit(0);
  }
  for (int step = first_step; step <= _config.steps; ++step) {
    if (!(_session->resumed_from() && step == first_step)) {
      phase(step, "swap-in", step - 1, [&](PhaseReport& r) { swap_in(step - 1, r); });
      if (_config.allgather) phase(step, "allgather", step - 1, [&](PhaseReport& r) { allgather(step - 1, r); });
    }
    phase(step, "swap-out", step, [&](PhaseReport& r) { swap_out(step, r); });
    commit(step);
  }
  if (!_session->resumed_from() || _config.steps >= first_step)
    phase(_config.steps + 1, "swap-in", _config.steps, [&](PhaseReport& r) { swap_in(_config.steps, r); });
  if (_cli.cleanup) _session->remove_files();
  if (_rank == 0) {
    std::printf("#\n# Wrong values: %llu %s\n", static_cast<unsigned long long>(_wrong), _wrong == 0 ? "OK" : "ERROR");
    std::printf("# Avg swap-out bandwidth: %.2f GB/s  Avg swap-in bandwidth: %.2f GB/s (aggregate over ranks)\n#\n",
                _out_count ? _out_gbps_sum / _out_count : 0.0, _in_count ? _in_gbps_sum / _in_count : 0.0);
    if (!_cli.json.empty()) report_json();
  }
  return _wrong == 0 ? kExitOk : kExitWrongData;
}

}  // namespace

int run_job(const RunCli& cli, const std::vector<std::string>& argv) {
  MpiSession mpi(nullptr, nullptr);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string who = fmt::format("rank {}@{}", rank, host_name());
  try {
    Job job(cli, argv);
    return job.run();
  } catch (const PhaseTimeout& e) {
    std::fprintf(stderr, "%s: %s; aborting the job\n", who.c_str(), e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kExitError);
  } catch (const PhaseError& e) {
    // Every rank knows; the message names the failing rank (or is the same everywhere).
    if (rank == 0) std::fprintf(stderr, "%s\n", e.what());
  } catch (const ConfigError& e) {
    if (rank == 0) std::fprintf(stderr, "%s\n", e.what());
  } catch (const std::exception& e) {
    // Unexpected and possibly on this rank only: the others could wait forever.
    std::fprintf(stderr, "%s: %s; aborting the job\n", who.c_str(), e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kExitError);
  }
  return kExitError;
}

}  // namespace swapcoord::app
