// swapcoord run: the main job. A training-loop emulation on a model description: every
// rank computes the same SwapPlan, then for each step swaps in what it owns (verifying
// every value against what the previous step wrote) and swaps out new values, each phase
// ending with a PhaseSync. Output in the nccl-tests style; --json for every figure.
//
// Values: the 8-byte word w of tensor t at epoch e (counted from the tensor's first byte,
// so shards and whole tensors agree) is a hash of (t, w, e); padding after a piece is zero.
// Epoch 0 is written before step 1; step s verifies epoch s-1 and writes epoch s into
// slot s % slots; a final swap-in verifies the last epoch.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <CLI/CLI.hpp>
#include <xxhash.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "model.hpp"
#include "run_config.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/phase_sync.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/coord/watchdog.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/async_tensor_swapper.hpp"

namespace swapcoord::app {

// Raw flags; those given override the config file (apply()).
struct RunCli {
  std::string config, json, roots, job, layout, policy, preset, tensors, swap, backend, direct,
      node_key, buffer_size, block_size;
  double scale = 0, phase_timeout = 0;
  int steps = 0, slots = 0;
  std::size_t buffer_count = 0, queue_depth = 0, threads = 0;
  bool verify = true, fsync = true, allgather = false, cleanup = false;
  int corrupt_epoch = -1;  // testing aid: damage one word on disk after this swap-out
  bool resume = false, verify_checksums = false;
  std::string crash_at;    // testing aid: where to SIGKILL this process
  int crash_epoch = 0, crash_rank = 0;
  std::vector<std::pair<CLI::Option*, void (*)(const RunCli&, RunConfig&)>> overrides;

  void apply(RunConfig& c) const {
    for (const auto& [option, set] : overrides)
      if (option->count() > 0) set(*this, c);
  }
};

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

// This rank's swap files and the locations of its pieces, per slot. A slot's files are
// created (preallocated) by the first swap-out into that slot, so that a resumed job does
// not truncate files it still has to read, and a full disk shows up in that swap-out.
struct RankFiles {
  bool ready[2] = {false, false};
  std::vector<SwapFile> files[2];
  std::vector<SwapLocation> locations[2];  // per owned piece
  std::size_t first_file = 0;              // the index of this rank's first file in the plan

  void create(int slot, const SwapPlan& plan, const Topology& topo, const RunConfig& config) {
    if (ready[slot]) return;
    const int rank = topo.rank();
    const auto first = std::lower_bound(plan.files.begin(), plan.files.end(), rank,
                                        [](const PlanFile& f, int r) { return f.owner < r; });
    first_file = static_cast<std::size_t>(first - plan.files.begin());
    auto& out = files[slot];
    out.clear();
    for (auto it = first; it != plan.files.end() && it->owner == rank; ++it) {
      const std::string& root = topo.roots().at(static_cast<std::size_t>(it->root));
      const std::filesystem::path path = std::filesystem::path(root) / file_relative_path(*it, config.job, slot);
      std::error_code ec;
      std::filesystem::create_directories(path.parent_path(), ec);
      if (ec)
        throw SystemError(fmt::format("cannot create directory '{}'", path.parent_path().string()), ec.value());
      out.push_back(SwapFile::create(path.string(), it->size_bytes, config.aio.direct));
    }
    auto& where = locations[slot];
    where.clear();
    for (const auto& p : plan.pieces_of(rank)) where.push_back({&out.at(p.file - first_file), p.offset, p.aligned_bytes});
    ready[slot] = true;
  }
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string absolute_path(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

// Rank 0's `text` on every rank.
std::string broadcast_string(MPI_Comm comm, std::string text) {
  unsigned long long length = text.size();
  mpi_check(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, comm), "MPI_Bcast (length)");
  text.resize(length);
  mpi_check(MPI_Bcast(text.data(), static_cast<int>(length), MPI_CHAR, 0, comm), "MPI_Bcast (text)");
  return text;
}

std::string format_rank_bytes(std::uint64_t bytes) {
  return fmt::format("{:.1f} MB", static_cast<double>(bytes) / 1e6);
}

void add_flags(CLI::App* cmd, RunCli& c) {
  auto flag = [&](CLI::Option* option, void (*set)(const RunCli&, RunConfig&)) {
    c.overrides.emplace_back(option, set);
  };
  cmd->add_option("--config", c.config, "JSON config file (sections aio, swap, run)");
  cmd->add_option("--json", c.json, "Also write every figure (and argv) to this JSON file");
  cmd->add_flag("--cleanup", c.cleanup, "Remove the swap files at the end");
  flag(cmd->add_option("--preset", c.preset, "Model preset: gpt-125m, gpt-1.3b, gpt-6.7b, llama-7b"),
       [](const RunCli& f, RunConfig& r) { r.preset = f.preset; r.tensors.clear(); });
  flag(cmd->add_option("--tensors", c.tensors, "JSON tensor list instead of a preset"),
       [](const RunCli& f, RunConfig& r) { r.tensors = f.tensors; });
  flag(cmd->add_option("--scale", c.scale, "Shrink (or grow) the preset's dimensions"),
       [](const RunCli& f, RunConfig& r) { r.scale = f.scale; });
  flag(cmd->add_option("--swap", c.swap, "What is swapped: params, optimizer, both"),
       [](const RunCli& f, RunConfig& r) { r.swap = parse_swap_what(f.swap); });
  flag(cmd->add_option("--steps", c.steps, "Training steps"),
       [](const RunCli& f, RunConfig& r) { r.steps = f.steps; });
  flag(cmd->add_option("--roots", c.roots, "Swap roots of this node, comma-separated (one per NVMe device)"),
       [](const RunCli& f, RunConfig& r) {
         r.roots.clear();
         std::size_t start = 0;
         while (start <= f.roots.size()) {
           const auto end = std::min(f.roots.find(',', start), f.roots.size());
           r.roots.push_back(f.roots.substr(start, end - start));
           start = end + 1;
         }
       });
  flag(cmd->add_option("--job", c.job, "Job name (directory under each root)"),
       [](const RunCli& f, RunConfig& r) { r.job = f.job; });
  flag(cmd->add_option("--layout", c.layout, "slab or file-per-tensor"),
       [](const RunCli& f, RunConfig& r) { r.layout = parse_layout(f.layout); });
  flag(cmd->add_option("--slots", c.slots, "1 (in place) or 2 (A/B)"),
       [](const RunCli& f, RunConfig& r) { r.slots = f.slots; });
  flag(cmd->add_option("--policy", c.policy, "balanced, sharded or round-robin"),
       [](const RunCli& f, RunConfig& r) { r.policy = parse_policy(f.policy); });
  flag(cmd->add_option("--buffer-count", c.buffer_count, "Pinned staging buffers per rank"),
       [](const RunCli& f, RunConfig& r) { r.buffer_count = f.buffer_count; });
  flag(cmd->add_option("--buffer-size", c.buffer_size, "Bytes per staging buffer (e.g. 16M)"),
       [](const RunCli& f, RunConfig& r) { r.buffer_size = parse_size(f.buffer_size, "--buffer-size"); });
  flag(cmd->add_flag("--verify,!--no-verify", c.verify, "Check every value swapped in"),
       [](const RunCli& f, RunConfig& r) { r.verify = f.verify; });
  flag(cmd->add_option("--backend", c.backend, "I/O backend: libaio, io_uring, posix"),
       [](const RunCli& f, RunConfig& r) { r.backend = f.backend; });
  flag(cmd->add_option("--block-size", c.block_size, "aio.block_size (e.g. 1M)"),
       [](const RunCli& f, RunConfig& r) { r.aio.block_size = parse_size(f.block_size, "--block-size"); });
  flag(cmd->add_option("--queue-depth", c.queue_depth, "aio.queue_depth"),
       [](const RunCli& f, RunConfig& r) { r.aio.queue_depth = f.queue_depth; });
  flag(cmd->add_option("--threads", c.threads, "aio.intra_op_parallelism"),
       [](const RunCli& f, RunConfig& r) { r.aio.intra_op_parallelism = f.threads; });
  flag(cmd->add_option("--direct", c.direct, "auto, on or off"),
       [](const RunCli& f, RunConfig& r) { r.aio.direct = parse_direct_mode(f.direct); });
  flag(cmd->add_flag("--fsync,!--no-fsync", c.fsync, "fdatasync at the end of each swap-out"),
       [](const RunCli& f, RunConfig& r) { r.aio.fsync = f.fsync; });
  flag(cmd->add_option("--phase-timeout", c.phase_timeout, "Seconds a phase may wait for all ranks"),
       [](const RunCli& f, RunConfig& r) { r.phase_timeout_s = f.phase_timeout; });
  flag(cmd->add_option("--node-key", c.node_key, "How ranks form nodes: shared, slurm, env:VAR"),
       [](const RunCli& f, RunConfig& r) { r.node_key = f.node_key; });
  cmd->add_flag("--resume", c.resume, "Continue from the last committed epoch in the catalog");
  cmd->add_flag("--verify-checksums", c.verify_checksums,
                "With --resume: also check every piece's checksum before starting");
  cmd->add_option("--crash-at", c.crash_at,
                  "Testing aid: SIGKILL --crash-rank at swap-out (halfway), sync, commit, written or renamed")
      ->group("Testing")
      ->check(CLI::IsMember({"swap-out", "sync", "commit", "written", "renamed"}));
  cmd->add_option("--crash-epoch", c.crash_epoch, "Testing aid: the epoch of --crash-at")->group("Testing");
  cmd->add_option("--crash-rank", c.crash_rank, "Testing aid: the rank of --crash-at")->group("Testing");
  cmd->add_option("--inject-corruption", c.corrupt_epoch,
                  "Testing aid: after the swap-out of this epoch, rank 0 overwrites 8 bytes of its "
                  "first piece on disk, which the next swap-in must report")
      ->group("Testing");
  flag(cmd->add_flag("--allgather", c.allgather, "Sharded policy: rebuild every tensor on every rank after each swap-in"),
       [](const RunCli& f, RunConfig& r) { r.allgather = f.allgather; });
}

// Runs `fn` on every rank; if it throws on any rank, every rank throws the same Error
// carrying the first failing rank's message (for steps before the phases start).
template <class Fn>
void collectively(MPI_Comm comm, const std::string& who, Fn&& fn) {
  std::string problem;
  bool config_error = false;
  try {
    fn();
  } catch (const ConfigError& e) {
    problem = e.what();
    config_error = true;
  } catch (const std::exception& e) {
    problem = e.what();
  }
  const auto [rank, message] = first_message(comm, problem.empty() ? problem : who + ": " + problem);
  if (rank < 0) return;
  if (config_error) throw ConfigError(message);
  throw PhaseError(message, rank);
}

class Job {
 public:
  Job(const RunConfig& config, const RunCli& cli, const std::vector<std::string>& argv)
      : _config(config), _cli(cli), _argv(argv) {}

  int run();

 private:
  void print(const char* format_text, const std::string& text) const {
    if (_topo->rank() == 0) std::printf(format_text, text.c_str());
  }
  // One phase on every rank: runs `work`, reports, prints the row, keeps the figures.
  void phase(int step, const char* name, int epoch, const std::function<void(PhaseReport&)>& work);
  void swap_out(int epoch, PhaseReport& report);
  void swap_in(int epoch, PhaseReport& report);
  void allgather(int epoch, PhaseReport& report);
  void corrupt(const SwapLocation& where) const;
  void commit(int epoch);
  void resume_swap_in(int epoch, PhaseReport& report);
  void crash_if(std::string_view point, int epoch) const;
  std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> _hash{XXH64_createState(), &XXH64_freeState};
  void header();

  RunConfig _config;
  const RunCli& _cli;
  std::vector<std::string> _argv;
  std::optional<Topology> _topo;
  std::string _who;  // "rank N@host"
  std::vector<TensorSpec> _tensors;
  SwapPlan _plan;
  std::span<const PlanPiece> _mine;
  std::unique_ptr<IoEngine> _engine;
  std::optional<SwapBufferManager> _staging;
  std::optional<AsyncTensorSwapper> _swapper;
  RankFiles _files;
  std::vector<std::uint64_t> _checksums;  // XXH64 of each owned piece, from the last swap-out
  std::string _catalog_dir;               // rank 0's first root / job, absolute
  std::optional<Catalog> _resumed;        // the catalog a --resume started from
  std::optional<CatalogIndex> _resume_index;  // its rows by tensor
  double _last_out_s = 0, _last_in_s = 0;
  std::optional<PhaseSync> _sync;
  std::optional<Watchdog> _watchdog;  // bounds the collective calls PhaseSync does not cover
  std::chrono::milliseconds _timeout{0};
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
  } catch (const std::exception& e) {
    report.failed = true;
    report.message = fmt::format("{}: {} (phase {}, epoch {})", _who, e.what(), name, epoch);
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (std::string_view(name) == "swap-out") _last_out_s = report.seconds;
  if (std::string_view(name) == "swap-in") _last_in_s = report.seconds;
  const PhaseStats s = _sync->end_phase(name, epoch, report);
  _wrong += s.wrong;
  if (std::string_view(name) == "swap-out") {
    _out_gbps_sum += s.aggregate_gbps;
    ++_out_count;
  } else if (std::string_view(name) == "swap-in") {
    _in_gbps_sum += s.aggregate_gbps;
    ++_in_count;
  }
  _phases.push_back({{"step", step}, {"phase", name}, {"epoch", epoch}, {"bytes", s.bytes},
                     {"seconds_min", s.seconds_min}, {"seconds_mean", s.seconds_mean},
                     {"seconds_max", s.seconds_max}, {"aggregate_gbps", s.aggregate_gbps},
                     {"rank_gbps_min", s.gbps_min}, {"rank_gbps_mean", s.gbps_mean},
                     {"rank_gbps_max", s.gbps_max}, {"imbalance", s.imbalance}, {"wrong", s.wrong}});
  if (_topo->rank() == 0) {
    std::printf("  %5d %9s %6d %14llu %9.4f %9.2f %9.2f %9.2f %9.2f %9.2f %8llu\n", step, name, epoch,
                static_cast<unsigned long long>(s.bytes), s.seconds_max, s.aggregate_gbps, s.gbps_min,
                s.gbps_mean, s.gbps_max, s.imbalance, static_cast<unsigned long long>(s.wrong));
    if (s.wrong > 0 && !s.notes.empty()) std::printf("#   wrong values: %s\n", s.notes.c_str());
    std::fflush(stdout);
  }
}

void Job::swap_out(int epoch, PhaseReport& report) {
  const int slot = epoch % _config.slots;
  _files.create(slot, _plan, *_topo, _config);
  const auto& locations = _files.locations[slot];
  XXH64_state_t* hash = _hash.get();
  _swapper->write_stream(locations, [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) {
    const PlanPiece& p = _mine[i];
    if (offset == 0 && i == _mine.size() / 2) crash_if("swap-out", epoch);
    fill_piece(p, dtype_size(_tensors[p.tensor].dtype), epoch, offset, out);
    // The checksum covers the piece's data bytes, not the padding after them.
    if (offset == 0) XXH64_reset(hash, 0);
    if (offset < p.bytes) {
      const auto data = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), p.bytes - offset));
      XXH64_update(hash, out.data(), data);
      if (offset + data == p.bytes) _checksums[i] = XXH64_digest(hash);
    }
  });
  crash_if("sync", epoch);
  if (_config.aio.fsync)
    for (const auto& file : _files.files[slot]) file.sync();
  for (const auto& l : locations) report.bytes += l.bytes;
  if (epoch == _cli.corrupt_epoch && _topo->rank() == 0 && !locations.empty()) corrupt(locations.front());
}

void Job::commit(int epoch) {
  crash_if("commit", epoch);
  const int slot = epoch % _config.slots;
  Catalog header;
  header.job = _config.job;
  header.epoch = epoch;
  header.slot = slot;
  header.slots = _config.slots;
  header.world_size = _topo->world_size();
  header.node_count = _topo->node_count();
  header.layout = std::string(to_string(_config.layout));
  header.policy = std::string(to_string(_config.policy));
  header.alignment = _plan.options.alignment_bytes;
  header.plan_fingerprint = fmt::format("{:016x}", _plan.fingerprint());
  header.config_json = _config.to_json().dump();
  header.created = utc_now();
  CatalogPart part;
  for (std::size_t i = 0; i < _mine.size(); ++i) {
    const PlanPiece& p = _mine[i];
    part.tensors.push_back({p.tensor, _tensors[p.tensor].name, _tensors[p.tensor].dtype, p.numel, p.element_offset,
                            p.shard, p.shard_count, p.owner, p.node, p.root, p.file, p.offset, p.bytes,
                            p.aligned_bytes, _checksums[i], epoch});
  }
  for (std::size_t k = 0; k < _files.files[slot].size(); ++k) {
    const PlanFile& f = _plan.files[_files.first_file + k];
    part.files.push_back({file_relative_path(f, _config.job, slot), f.owner, f.root, f.size_bytes});
  }
  if (_topo->local_rank() == 0)
    for (std::size_t i = 0; i < _topo->roots().size(); ++i)
      part.roots.push_back({_topo->node(), static_cast<std::int32_t>(i), absolute_path(_topo->roots()[i])});
  part.rank = {_topo->rank(), _topo->node(), _topo->local_rank(), _topo->host(),
               _plan.rank_bytes[static_cast<std::size_t>(_topo->rank())], _last_out_s, _last_in_s};
  Watchdog::Scope guard(*_watchdog, fmt::format("phase commit of epoch {}", epoch), _timeout);
  commit_catalog(_topo->world(), _catalog_dir, header, part, [&](const char* stage) { crash_if(stage, epoch); });
}

void Job::crash_if(std::string_view point, int epoch) const {
  if (_cli.crash_at != point || _cli.crash_epoch != epoch || _cli.crash_rank != _topo->rank()) return;
  std::fprintf(stderr, "%s: --crash-at %s: killing this process in epoch %d\n", _who.c_str(),
               std::string(point).c_str(), epoch);
  std::fflush(stderr);
  ::raise(SIGKILL);
}

void Job::resume_swap_in(int epoch, PhaseReport& report) {
  // Read what this rank now owns from wherever the catalog says it is (the old layout,
  // possibly of another world size), in staging-buffer chunks, and check every value.
  const CatalogIndex& index = *_resume_index;
  const Catalog& c = *_resumed;
  std::vector<std::optional<SwapFile>> files(c.files.size());
  PinnedAllocation buffer(_config.buffer_size);
  std::vector<CatalogSegment> segments;
  std::vector<std::string> notes;
  for (const PlanPiece& p : _mine) {
    const std::size_t element = dtype_size(_tensors[p.tensor].dtype);
    const std::uint64_t begin = p.element_offset * element;
    segments.clear();
    index.locate(p.tensor, begin, begin + p.bytes, segments);
    for (const CatalogSegment& seg : segments) {
      if (!files[seg.file]) files[seg.file].emplace(SwapFile::open(c.file_path(seg.file), _config.aio.direct));
      for (std::uint64_t done = 0; done < seg.read_bytes; done += _config.buffer_size) {
        const std::uint64_t length = std::min<std::uint64_t>(_config.buffer_size, seg.read_bytes - done);
        const IoRequest read{IoOp::read, &*files[seg.file], buffer.data(), seg.file_offset + done, length};
        _engine->run({&read, 1});
        report.bytes += length;
        if (!_config.verify || done >= seg.bytes) continue;
        const std::uint64_t data = std::min<std::uint64_t>(length, seg.bytes - done);
        std::optional<std::uint64_t> first;
        const auto wrong = check_piece(p, element, epoch, seg.tensor_offset - begin + done,
                                       {buffer.data(), static_cast<std::size_t>(data)}, first);
        report.wrong += wrong;
        if (wrong > 0 && notes.size() < 3)
          notes.push_back(fmt::format("'{}' element {} ({} wrong in '{}' at {})", _tensors[p.tensor].name, *first,
                                      wrong, files[seg.file]->path(), seg.file_offset + done));
      }
    }
  }
  if (!notes.empty()) report.message = _who + ": " + join(notes, "; ");
}

void Job::corrupt(const SwapLocation& where) const {
  // Through a separate buffered descriptor, as another program damaging the file would.
  const std::uint64_t offset = where.offset + std::min<std::uint64_t>(_mine.front().bytes / 2 / 8 * 8, where.bytes - 8);
  UniqueFd fd(::open(where.file->path().c_str(), O_WRONLY | O_CLOEXEC));
  const std::uint64_t junk = 0x0badc0ffee0ddf00ULL;
  if (!fd || ::pwrite(fd.get(), &junk, sizeof junk, static_cast<off_t>(offset)) != sizeof junk ||
      ::fdatasync(fd.get()) != 0)
    throw SystemError(fmt::format("--inject-corruption: cannot write '{}'", where.file->path()), errno);
  log::warn(fmt::format("--inject-corruption: overwrote 8 bytes at offset {} of '{}'", offset,
                        where.file->path()));
}

void Job::swap_in(int epoch, PhaseReport& report) {
  const int slot = epoch % _config.slots;
  if (!_files.ready[slot]) throw Error(fmt::format("swap-in of epoch {}: slot {} was never written", epoch, slot));
  const auto& locations = _files.locations[slot];
  std::vector<std::string> notes;
  _swapper->read_stream(locations, [&](std::size_t i, std::uint64_t offset, std::span<const std::byte> in) {
    if (!_config.verify) return;
    const PlanPiece& p = _mine[i];
    std::optional<std::uint64_t> first;
    const auto wrong = check_piece(p, dtype_size(_tensors[p.tensor].dtype), epoch, offset, in, first);
    report.wrong += wrong;
    if (wrong > 0 && notes.size() < 3)
      notes.push_back(fmt::format("'{}' element {} ({} wrong in bytes {}..{} of {})", _tensors[p.tensor].name,
                                  *first, wrong, offset, offset + in.size(), locations[i].file->path()));
  });
  for (const auto& l : locations) report.bytes += l.bytes;
  if (!notes.empty()) report.message = _who + ": " + join(notes, "; ");
}

void Job::allgather(int epoch, PhaseReport& report) {
  // Every tensor, shard by shard: read this rank's shard, all-gather, check the whole.
  std::vector<std::vector<const PlanPiece*>> by_tensor(_tensors.size());
  for (const auto& p : _plan.pieces) by_tensor[p.tensor].push_back(&p);
  std::uint64_t largest = 0, largest_shard = 0;
  for (const auto& t : _tensors) largest = std::max(largest, t.size_bytes());
  for (const auto& p : _mine) largest_shard = std::max(largest_shard, p.aligned_bytes);
  std::vector<std::byte> full(largest);
  PinnedAllocation shard(largest_shard);
  const int slot = epoch % _config.slots;
  std::vector<std::string> notes;
  for (std::uint32_t t = 0; t < _tensors.size(); ++t) {
    std::vector<PlanPiece> pieces;
    std::span<const std::byte> local;
    for (const PlanPiece* p : by_tensor[t]) {
      pieces.push_back(*p);
      if (p->owner != _topo->rank()) continue;
      const auto i = static_cast<std::size_t>(p - _mine.data());
      const IoRequest read = to_request(IoOp::read, _files.locations[slot][i], shard.data(), p->aligned_bytes);
      _engine->run({&read, 1});
      local = {shard.data(), p->bytes};
    }
    const std::size_t element = dtype_size(_tensors[t].dtype);
    const std::span<std::byte> out(full.data(), _tensors[t].size_bytes());
    allgather_tensor(_topo->world(), pieces, element, local, out);
    if (_config.verify) {
      PlanPiece whole{};
      whole.tensor = t;
      whole.numel = _tensors[t].numel();
      whole.bytes = _tensors[t].size_bytes();
      std::optional<std::uint64_t> first;
      const auto wrong = check_piece(whole, element, epoch, 0, out, first);
      report.wrong += wrong;
      if (wrong > 0 && notes.size() < 3)
        notes.push_back(fmt::format("all-gathered '{}' element {} ({} wrong)", _tensors[t].name, *first, wrong));
    }
    report.bytes += out.size();
  }
  if (!notes.empty()) report.message = _who + ": " + join(notes, "; ");
}

void Job::header() {
  const auto& c = _config;
  if (_topo->rank() == 0) {
    std::uint64_t tensor_bytes = 0;
    for (const auto& t : _tensors) tensor_bytes += t.size_bytes();
    std::printf("# swapcoord run %s (%s)\n", SWAPCOORD_VERSION, mpi_library_version().c_str());
    std::printf("# command: %s\n", join(_argv, " ").c_str());
    if (c.tensors.empty())
      std::printf("# model: %s scale %g, swap %s: %zu tensors, %s; steps %d\n", c.preset.c_str(), c.scale,
                  std::string(to_string(c.swap)).c_str(), _tensors.size(), format_rank_bytes(tensor_bytes).c_str(), c.steps);
    else
      std::printf("# model: %s, swap %s: %zu tensors, %s; steps %d\n", c.tensors.c_str(),
                  std::string(to_string(c.swap)).c_str(), _tensors.size(), format_rank_bytes(tensor_bytes).c_str(), c.steps);
    std::printf("# plan: policy %s, layout %s, slots %d, %d ranks on %d nodes (node key %s), "
                "fingerprint %016llx, imbalance ranks %.3f nodes %.3f\n",
                std::string(to_string(c.policy)).c_str(), std::string(to_string(c.layout)).c_str(), c.slots,
                _topo->world_size(), _topo->node_count(), c.node_key.c_str(),
                static_cast<unsigned long long>(_plan.fingerprint()), _plan.rank_imbalance(), _plan.node_imbalance());
    if (_resumed)
      std::printf("# resume: epoch %d from %s/catalog.h5 (written by %d ranks on %d nodes, policy %s, layout %s, "
                  "fingerprint %s)%s\n", _resumed->epoch, _catalog_dir.c_str(), _resumed->world_size,
                  _resumed->node_count, _resumed->policy.c_str(), _resumed->layout.c_str(),
                  _resumed->plan_fingerprint.c_str(),
                  _resumed->plan_fingerprint == fmt::format("{:016x}", _plan.fingerprint()) ? "" : "; re-partitioned");
    std::printf("# aio: backend %s, block_size %zu, queue_depth %zu, threads %zu, single_submit %d, "
                "overlap_events %d, direct %s, fsync %d; staging %zu x %s pinned per rank; verify %d\n",
                c.backend.c_str(), c.aio.block_size, c.aio.queue_depth, c.aio.intra_op_parallelism,
                c.aio.single_submit, c.aio.overlap_events, std::string(to_string(c.aio.direct)).c_str(),
                c.aio.fsync, c.buffer_count, format_size(c.buffer_size).c_str(), c.verify);
    std::string per_node;
    for (std::size_t n = 0; n < _plan.node_bytes.size(); ++n)
      per_node += fmt::format("{}node {}: {}", n ? ", " : "", n, format_rank_bytes(_plan.node_bytes[n]));
    std::printf("# bytes per node: %s\n", per_node.c_str());
    std::printf("#\n# %5s %-20s %5s %10s %s\n", "rank", "host", "node", "local_rank", "root, bytes");
  }
  // One line per rank, in rank order (each rank's root is known only to it).
  const std::string line = fmt::format("{} {}", _topo->my_root(), format_rank_bytes(_plan.rank_bytes[static_cast<std::size_t>(_topo->rank())]));
  constexpr int kWidth = 512;
  std::vector<char> mine(kWidth, '\0'), all(static_cast<std::size_t>(kWidth) * static_cast<std::size_t>(_topo->world_size()));
  std::memcpy(mine.data(), line.data(), std::min<std::size_t>(line.size(), kWidth - 1));
  mpi_check(MPI_Gather(mine.data(), kWidth, MPI_CHAR, all.data(), kWidth, MPI_CHAR, 0, _topo->world()), "MPI_Gather (header)");
  if (_topo->rank() == 0) {
    for (int r = 0; r < _topo->world_size(); ++r) {
      const auto ur = static_cast<std::size_t>(r);
      std::printf("# %5d %-20s %5d %10d %s\n", r, _topo->hosts()[ur].c_str(), _topo->node_of_rank()[ur],
                  _topo->local_rank_of_rank()[ur], all.data() + ur * kWidth);
    }
    std::printf("#\n# %5s %9s %6s %14s %9s %9s %9s %9s %9s %9s %8s\n", "step", "phase", "epoch", "bytes",
                "time", "agg", "rank_min", "rank_mean", "rank_max", "imbalance", "#wrong");
    std::printf("# %5s %9s %6s %14s %9s %9s %9s %9s %9s %9s %8s\n", "", "", "", "(B)", "(s)", "(GB/s)",
                "(GB/s)", "(GB/s)", "(GB/s)", "", "");
    std::fflush(stdout);
  }
}

int Job::run() {
  MPI_Comm world = MPI_COMM_WORLD;
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  _who = fmt::format("rank {}@{}", rank, host_name());

  // Set-up steps that can fail differently per rank run collectively, so that every rank
  // stops with the first rank's message instead of waiting for the others.
  collectively(world, _who, [&] {
    if (!_cli.config.empty()) _config.load_file(_cli.config);
    _cli.apply(_config);
    _config.validate();
    _tensors = _config.tensors.empty() ? preset_tensors(_config.preset, _config.scale, _config.swap)
                                       : load_tensor_list(_config.tensors, _config.swap);
  });
  _timeout = std::chrono::milliseconds(static_cast<long long>(_config.phase_timeout_s * 1000));
  _watchdog.emplace(_who, kExitError);
  _watchdog->arm("start-up (topology, roots, plan agreement)", _timeout);
  // These fail alike on every rank (their checks are collective): report once, exit.
  try {
    _topo.emplace(Topology::discover(world, NodeKey::parse(_config.node_key), _config.roots));
    _topo->check_roots();
    _sync.emplace(_topo->world(), _timeout);
    PlanOptions options;
    options.policy = _config.policy;
    options.layout = _config.layout;
    _plan = make_plan(_tensors, _topo->plan_topology(), options);
    check_plan_agreement(_topo->world(), _plan.fingerprint());
  } catch (const MpiError&) {
    throw;
  } catch (const Error& e) {
    throw PhaseError(e.what(), -1);
  }
  _mine = _plan.pieces_of(_topo->rank());
  _checksums.assign(_mine.size(), 0);
  _catalog_dir = broadcast_string(_topo->world(), absolute_path(_topo->my_root() + "/" + _config.job));
  if (_cli.resume) {
    // Every rank reads the catalog and checks it against the model and the files.
    collectively(_topo->world(), _who, [&] {
      const std::string path = _catalog_dir + "/catalog.h5";
      _resumed.emplace(load_catalog(path));
      _resume_index.emplace(*_resumed, _tensors);  // checks the catalog against the model
      for (std::uint32_t i = 0; i < _resumed->files.size(); ++i) {
        const std::string file = _resumed->file_path(i);
        std::error_code ec;
        const auto size = std::filesystem::file_size(file, ec);
        if (ec) throw Error(fmt::format("--resume: catalog '{}' needs '{}', which cannot be read: {}", path, file, ec.message()));
        if (size < _resumed->files[i].size)
          throw Error(fmt::format("--resume: '{}' has {} bytes, the catalog '{}' expects {}", file, size, path,
                                  _resumed->files[i].size));
      }
    });
  }
  header();
  _watchdog->disarm();

  phase(0, "setup", 0, [&](PhaseReport&) {
    AioConfig aio = _config.aio;
    aio.fsync = false;  // the job syncs each rank's files once per swap-out phase
    _engine = make_engine(_config.backend, aio);
    _staging.emplace(_config.buffer_size, _config.buffer_count, DType::u8);
    _swapper.emplace(*_engine, _staging->allocate_all(_config.buffer_size));
  });
  // Each swap-out is committed to the catalog; the first swap-in of a resumed job reads the
  // committed epoch from wherever the catalog says it is.
  int first_step = 1;
  if (_resumed) {
    const int epoch = _resumed->epoch;
    if (_cli.verify_checksums)
      phase(epoch, "checksums", epoch, [&](PhaseReport& r) {
        const auto result = verify_catalog(*_resumed, *_engine, _config.buffer_size, _topo->rank(), _topo->world_size());
        r.bytes = result.bytes;
        r.wrong = result.mismatches;
        if (!result.notes.empty()) r.message = _who + ": " + join(result.notes, "; ");
      });
    phase(epoch + 1, "swap-in", epoch, [&](PhaseReport& r) { resume_swap_in(epoch, r); });
    first_step = epoch + 1;
  } else {
    phase(0, "swap-out", 0, [&](PhaseReport& r) { swap_out(0, r); });
    phase(0, "commit", 0, [&](PhaseReport&) { commit(0); });
  }
  for (int step = first_step; step <= _config.steps; ++step) {
    if (!(_resumed && step == first_step)) {
      phase(step, "swap-in", step - 1, [&](PhaseReport& r) { swap_in(step - 1, r); });
      if (_config.allgather)
        phase(step, "allgather", step - 1, [&](PhaseReport& r) {
          Watchdog::Scope guard(*_watchdog, fmt::format("phase allgather of epoch {}", step - 1), _timeout);
          allgather(step - 1, r);
        });
    }
    phase(step, "swap-out", step, [&](PhaseReport& r) { swap_out(step, r); });
    phase(step, "commit", step, [&](PhaseReport&) { commit(step); });
  }
  if (!_resumed || _config.steps >= first_step)
    phase(_config.steps + 1, "swap-in", _config.steps, [&](PhaseReport& r) { swap_in(_config.steps, r); });

  if (_cli.cleanup) {
    for (int slot = 0; slot < _config.slots; ++slot)
      for (const auto& f : _files.files[slot]) ::unlink(f.path().c_str());
  }
  if (_topo->rank() == 0) {
    std::printf("#\n# Wrong values: %llu %s\n", static_cast<unsigned long long>(_wrong), _wrong == 0 ? "OK" : "ERROR");
    std::printf("# Avg swap-out bandwidth: %.2f GB/s  Avg swap-in bandwidth: %.2f GB/s (aggregate over ranks)\n#\n",
                _out_count ? _out_gbps_sum / _out_count : 0.0, _in_count ? _in_gbps_sum / _in_count : 0.0);
    if (!_cli.json.empty()) {
      json ranks = json::array();
      for (int r = 0; r < _topo->world_size(); ++r) {
        const auto ur = static_cast<std::size_t>(r);
        ranks.push_back({{"rank", r}, {"host", _topo->hosts()[ur]}, {"node", _topo->node_of_rank()[ur]},
                         {"local_rank", _topo->local_rank_of_rank()[ur]}, {"bytes", _plan.rank_bytes[ur]}});
      }
      json nodes = json::array();
      for (auto b : _plan.node_bytes) nodes.push_back(b);
      const json doc{{"tool", "swapcoord run"}, {"version", SWAPCOORD_VERSION}, {"mpi", mpi_library_version()},
                     {"argv", _argv}, {"config", _config.to_json()}, {"world_size", _topo->world_size()},
                     {"node_count", _topo->node_count()}, {"tensors", _tensors.size()},
                     {"plan", {{"fingerprint", fmt::format("{:016x}", _plan.fingerprint())},
                               {"total_bytes", _plan.total_bytes()}, {"rank_imbalance", _plan.rank_imbalance()},
                               {"node_imbalance", _plan.node_imbalance()}, {"node_bytes", nodes}}},
                     {"ranks", ranks}, {"phases", _phases}, {"wrong", _wrong},
                     {"result", _wrong == 0 ? "ok" : "wrong values"}};
      std::ofstream out(_cli.json);
      out << doc.dump(2) << "\n";
      if (!out) log::error(fmt::format("--json: cannot write '{}'", _cli.json));
    }
  }
  return _wrong == 0 ? kExitOk : kExitWrongData;
}

}  // namespace

std::shared_ptr<RunCli> add_run_command(CLI::App& app) {
  auto cli = std::make_shared<RunCli>();
  auto* cmd = app.add_subcommand("run", "The main job: a training loop that swaps a model's tensors "
                                        "out and in across all MPI ranks, verifying every value");
  add_flags(cmd, *cli);
  return cli;
}

int run_job(const RunCli& cli, const std::vector<std::string>& argv) {
  MpiSession mpi(nullptr, nullptr);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string who = fmt::format("rank {}@{}", rank, host_name());
  try {
    Job job(RunConfig{}, cli, argv);
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
