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
#include "run_report.hpp"
#include "values.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/watchdog.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/device/nccl.hpp"
#include "swapcoord/io/unique_fd.hpp"
#include "swapcoord/session/session.hpp"

namespace swapcoord::app {
namespace {

using Clock = std::chrono::steady_clock;

class Job {
 public:
  Job(const RunCli& cli, const std::vector<std::string>& argv) : _cli(cli), _argv(argv) {}
  int run();

 private:
  // One phase on every rank: runs `work`, reports, prints the row, keeps the figures.
  // Runs `work`, then the phase's barrier; returns this rank's own time in `work`.
  double phase(int step, const char* name, int epoch, const std::function<void(PhaseReport&)>& work);
  // The swap-out of `step` and its commit, and what coordinating them cost (RunReport).
  void swap_out_and_commit(int step);
  void swap_out(int epoch, PhaseReport& report);
  void swap_in(int epoch, PhaseReport& report);
  void allgather(int epoch, PhaseReport& report);
  // --device cuda: this rank's pieces live in one GPU arena.
  bool on_gpu() const { return _config.device == "cuda"; }
  void setup_gpu();
  void upload(int epoch);  // the step's update: new values into the GPU pieces (not timed)
  std::span<std::byte> host_scratch(std::uint64_t bytes);
  void corrupt(std::uint32_t id);
  void crash_if(std::string_view point, int epoch) const;
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
  std::optional<RunReport> _report;
  std::optional<Watchdog> _watchdog;
  int _gpu = -1;
  device::DeviceMemory _arena;                 // this rank's pieces, 256-byte aligned
  std::vector<std::uint64_t> _arena_offset;    // per tensor id (of this rank's pieces)
  std::vector<TensorView> _gpu_views;          // per entry of _ids
  device::DeviceMemory _gpu_full;              // --allgather: the largest whole tensor
  std::optional<device::NcclComm> _nccl;
  std::vector<std::byte> _scratch;             // host copies for values and checks
};

std::span<std::byte> Job::host_scratch(std::uint64_t bytes) {
  if (_scratch.size() < bytes) _scratch.resize(bytes);
  return {_scratch.data(), static_cast<std::size_t>(bytes)};
}

void Job::setup_gpu() {
  const Topology& topo = _session->topology();
  _gpu = device::device_for_local_rank(topo.local_rank(), "--device cuda");
  _arena_offset.assign(_tensors.size(), 0);
  std::uint64_t total = 0;
  for (const auto id : _ids) {
    _arena_offset[id] = total;
    total += align_up(piece(id).bytes, 256);
  }
  _arena = device::DeviceMemory(_gpu, static_cast<std::size_t>(total));
  for (const auto id : _ids)
    _gpu_views.push_back({_arena.data() + _arena_offset[id], piece(id).numel, _tensors[id].dtype, Device::cuda(_gpu)});
  if (_config.allgather) {
    std::uint64_t largest = 0;
    for (const auto& t : _tensors) largest = std::max(largest, t.size_bytes());
    _gpu_full = device::DeviceMemory(_gpu, static_cast<std::size_t>(largest));
    _nccl.emplace(topo.world(), _gpu,
                  std::chrono::milliseconds(static_cast<long long>(_config.session.phase_timeout_s * 1000)));
  }
}

void Job::upload(int epoch) {
  for (const auto id : _ids) {
    const auto host = host_scratch(piece(id).bytes);
    fill_piece(piece(id), element_size(id), epoch, 0, host);
    _arena.copy_from_host(_arena_offset[id], host);
  }
}

double Job::phase(int step, const char* name, int epoch, const std::function<void(PhaseReport&)>& work) {
  PhaseReport report;
  const auto start = Clock::now();
  try {
    work(report);
  } catch (const PhaseTimeout&) {  // names the missing ranks; the job ends (main)
    throw;
  } catch (const PhaseError& e) {  // from a collective call: already names the rank
    report.failed = true;
    report.message = fmt::format("{} (phase {}, epoch {})", e.what(), name, epoch);
  } catch (const std::exception& e) {
    report.failed = true;
    report.message = fmt::format("{}: {} (phase {}, epoch {})", _who, e.what(), name, epoch);
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const PhaseStats s = _session->end_phase(name, epoch, report);
  _report->row(step, name, epoch, s);
  return report.seconds;
}

void Job::swap_out_and_commit(int step) {
  if (on_gpu()) upload(step);  // the values to swap out: not part of the swap-out
  const auto start = Clock::now();
  const double own = phase(step, "swap-out", step, [&](PhaseReport& r) { swap_out(step, r); });
  _epoch_in_flight = step;
  phase(step, "commit", step, [&](PhaseReport&) { _session->commit(); });
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  // The slowest rank's figures (outside the time measured above), through phase barriers,
  // which have the deadline and name a rank that does not arrive; rows and catalog are
  // rank 0's.
  const CommitFigures c = _session->last_commit();
  const auto slowest = [&](const char* what, double seconds) {
    PhaseReport r;
    r.seconds = seconds;
    return _session->end_phase(what, step, r).seconds_max;
  };
  const double wall_max = slowest("coordination: wall", wall);
  const double io_max = slowest("coordination: I/O", own + c.sync_seconds);
  const double sync_max = slowest("coordination: sync", c.sync_seconds);
  _report->coordination({step, wall_max, io_max, sync_max, c.rows_seconds, c.catalog_seconds});
}

void Job::swap_out(int epoch, PhaseReport& report) {
  if (on_gpu()) {
    if (!_ids.empty()) crash_if("swap-out", epoch);  // before the swap-out (GPU views go in one call)
    report.bytes = _session->swap_out(_ids, _gpu_views).bytes;
    if (epoch == _cli.corrupt_epoch && _rank == 0 && !_ids.empty()) corrupt(_ids.front());
    return;
  }
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
    std::uint64_t first, count;
  };
  std::vector<Wrong> wrong;
  if (on_gpu()) {  // swap into the GPU, then check a host copy of each piece
    report.bytes = _session->swap_in(_ids, _gpu_views).bytes;
    for (const auto id : _ids) {
      if (!_config.check_values) break;
      const auto host = host_scratch(piece(id).bytes);
      _arena.copy_to_host(_arena_offset[id], host);
      std::optional<std::uint64_t> first;
      const auto n = check_piece(piece(id), element_size(id), epoch, 0, host, first);
      report.wrong += n;
      if (n > 0 && wrong.size() < 3) wrong.push_back({id, *first, n});
    }
  }
  const auto figures = on_gpu() ? SwapFigures{} : _session->swap_in_stream(_ids, [&](std::uint32_t id, std::uint64_t offset, std::span<const std::byte> in) {
    if (!_config.check_values) return;
    std::optional<std::uint64_t> first;
    const auto n = check_piece(piece(id), element_size(id), epoch, offset, in, first);
    report.wrong += n;
    if (n > 0 && wrong.size() < 3) wrong.push_back({id, *first, n});
  });
  if (!on_gpu()) report.bytes = figures.bytes;
  std::vector<std::string> notes;
  for (const auto& w : wrong) {
    std::string where = "the resumed catalog's files";
    if (const PieceFile f = _session->where(w.id); !f.path.empty())  // the first wrong element's byte
      where = fmt::format("'{}' at {}", f.path,
                          f.offset + (w.first - piece(w.id).element_offset) * element_size(w.id));
    notes.push_back(fmt::format("'{}' element {} ({} wrong in {})", _tensors[w.id].name, w.first, w.count, where));
  }
  if (!notes.empty()) report.message = _who + ": " + join(notes, "; ");
}

void Job::allgather(int epoch, PhaseReport& report) {
  // Every tensor, shard by shard: read this rank's shard, all-gather (NCCL on the GPU, MPI
  // on the host), check the whole.
  const SwapPlan& plan = _session->plan();
  std::uint64_t largest = 0;
  for (const auto& t : _tensors) largest = std::max(largest, t.size_bytes());
  std::vector<std::byte> full(on_gpu() ? 0 : largest), shard;
  std::vector<std::string> notes;
  for (std::uint32_t t = 0; t < _tensors.size(); ++t) {
    std::span<const std::byte> local;
    if (const PlanPiece* p = _session->local_piece(t)) {
      if (!on_gpu()) shard.resize(p->bytes);
      const TensorView view = on_gpu() ? TensorView{_arena.data() + _arena_offset[t], p->numel, _tensors[t].dtype,
                                                    Device::cuda(_gpu)}
                                       : TensorView{shard.data(), p->numel, _tensors[t].dtype, Device::cpu()};
      _session->swap_in({&t, 1}, {&view, 1});
      local = {view.bytes(), view.size_bytes()};
    }
    std::span<std::byte> out(on_gpu() ? _gpu_full.data() : full.data(), _tensors[t].size_bytes());
    const std::vector<TensorShard> shards = plan.shards_of(t, _tensors[t]);
    if (on_gpu()) _nccl->allgather_tensor(shards, element_size(t), local, out);
    else allgather_tensor(_session->topology().world(), shards, element_size(t), local, out);
    report.bytes += out.size();
    if (!_config.check_values) continue;
    if (on_gpu()) {
      const auto host = host_scratch(out.size());
      _gpu_full.copy_to_host(0, host);
      out = host;
    }
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

int Job::run() {
  MPI_Comm world = MPI_COMM_WORLD;
  MPI_Comm_rank(world, &_rank);
  _who = fmt::format("rank {}@{}", _rank, host_name());
  // Set-up that can fail differently per rank: every rank stops with the first message.
  std::string problem;
  bool config_error = false;
  try {
    if (!_cli.config.empty()) _config.load_file(_cli.config, _rank == 0);  // one log line per job
    _cli.apply(_config);
    _config.validate();
    const auto dtype = _config.deepspeed.detected ? std::optional(_config.deepspeed.param_dtype) : std::nullopt;
    _tensors = _config.tensors.empty() ? preset_tensors(_config.preset, _config.scale, _config.swap, dtype)
                                       : load_tensor_list(_config.tensors, _config.swap, dtype);
    if (_config.device == "cuda") {
      device::require_device("--device cuda");
      if (_config.allgather && !device::nccl_built())
        throw ConfigError("run.allgather with run.device cuda: swapcoord was built without NCCL (the MPI all-gather "
                          "needs run.device cpu)");
    }
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
  {  // the whole effective configuration (less the node-local roots) is the same on every rank
    auto mine = _config.to_json();
    mine["swap"].erase("roots");
    mine["flags"] = {{"resume", _cli.resume}, {"verify_checksums", _cli.verify_checksums}, {"cleanup", _cli.cleanup}};
    check_config_agreement(world, mine, "configuration");
  }
  SessionOptions options = _config.session;
  options.verify = false;  // run checks every value itself (a stronger check than checksums)
  options.on_stall = [](const std::string& message) {
    std::fprintf(stderr, "%s; ending the job\n", message.c_str());
    std::fflush(stderr);
    ::_exit(kExitError);
  };
  _watchdog.emplace(_who, options.on_stall);  // the all-gather cannot take a deadline either
  _session.emplace(_cli.resume ? SwapSession::resume(world, _tensors, options)
                               : SwapSession::create(world, _tensors, options));
  _session->set_commit_stage_hook([this](const char* stage) { crash_if(stage, _epoch_in_flight); });
  for (const auto& p : _session->local_pieces()) _ids.push_back(p.tensor);
  if (on_gpu()) setup_gpu();
  _report.emplace(_config, *_session, _tensors, _argv);

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
    swap_out_and_commit(0);
  }
  for (int step = first_step; step <= _config.steps; ++step) {
    if (!(_session->resumed_from() && step == first_step)) {
      phase(step, "swap-in", step - 1, [&](PhaseReport& r) { swap_in(step - 1, r); });
      if (_config.allgather)
        phase(step, "allgather", step - 1, [&](PhaseReport& r) {
          Watchdog::Scope guard(*_watchdog, fmt::format("phase allgather of epoch {}", step - 1),
                                std::chrono::milliseconds(static_cast<long long>(_config.session.phase_timeout_s * 1000)));
          allgather(step - 1, r);
        });
    }
    swap_out_and_commit(step);
  }
  if (!_session->resumed_from() || _config.steps >= first_step)
    phase(_config.steps + 1, "swap-in", _config.steps, [&](PhaseReport& r) { swap_in(_config.steps, r); });
  if (_cli.cleanup) _session->remove_files();
  _report->footer(_cli.json);
  return _report->wrong() == 0 ? kExitOk : kExitWrongData;
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
