#include "run_cli.hpp"

#include <fmt/format.h>

#include "cli_util.hpp"
#include "commands.hpp"

namespace swapcoord::app {
namespace {

// A byte count as parse_size reads it back, for --help: 16777216 -> "16M".
std::string size_text(std::uint64_t bytes) {
  static constexpr std::pair<std::uint64_t, const char*> units[] = {
      {1ULL << 40, "T"}, {1ULL << 30, "G"}, {1ULL << 20, "M"}, {1ULL << 10, "k"}};
  for (const auto& [unit, suffix] : units)
    if (bytes >= unit && bytes % unit == 0) return fmt::format("{}{}", bytes / unit, suffix);
  return std::to_string(bytes);
}

// Flags show their default in the description: CLI11 prints no default for flags, and a
// flag's default_str() would become its value when given ("--cleanup" would read "false").
const char* on_off(bool value) { return value ? "on" : "off"; }

}  // namespace

void add_run_flags(CLI::App* cmd, RunCli& c) {
  auto flag = [&](CLI::Option* option, void (*set)(const RunCli&, RunConfig&)) {
    c.overrides.emplace_back(option, set);
  };
  // --help shows RunConfig's defaults (what applies when neither the config file nor the
  // flag sets a value); the RunCli fields only hold what was given.
  const RunConfig d;
  const SessionOptions& s = d.session;
  cmd->add_option("--config", c.config,
                  "JSON config file: sections aio, swap, run; or a DeepSpeed ds_config.json");
  cmd->add_option("--json", c.json, "Also write every figure (and argv) to this JSON file");
  cmd->add_flag("--cleanup", c.cleanup, "At the end, remove the swap files, the catalog and the job's empty directories");
  flag(cmd->add_option("--preset", c.preset, "Model preset: gpt-125m, gpt-1.3b, gpt-6.7b, llama-7b")
           ->default_str(d.preset),
       [](const RunCli& f, RunConfig& r) { r.preset = f.preset; r.tensors.clear(); });
  flag(cmd->add_option("--tensors", c.tensors, "JSON tensor list instead of a preset"),
       [](const RunCli& f, RunConfig& r) { r.tensors = f.tensors; });
  flag(cmd->add_option("--scale", c.scale, "Shrink (or grow) the preset's dimensions, in (0, 4]")
           ->default_str(fmt::format("{}", d.scale)),
       [](const RunCli& f, RunConfig& r) { r.scale = f.scale; });
  flag(cmd->add_option("--swap", c.swap, "What is swapped: params, optimizer, both")
           ->default_str(std::string(to_string(d.swap))),
       [](const RunCli& f, RunConfig& r) { r.swap = parse_swap_what(f.swap); });
  flag(cmd->add_option("--steps", c.steps, "Training steps")
           ->transform(decimal_integer(true))
           ->default_str(std::to_string(d.steps)),
       [](const RunCli& f, RunConfig& r) { r.steps = f.steps; });
  flag(cmd->add_option("--roots", c.roots, "Swap roots of this node, comma-separated (one per NVMe device)")
           ->default_str(join(s.roots, ",")),
       [](const RunCli& f, RunConfig& r) {
         r.session.roots.clear();
         std::size_t start = 0;
         while (start <= f.roots.size()) {
           const auto end = std::min(f.roots.find(',', start), f.roots.size());
           r.session.roots.push_back(f.roots.substr(start, end - start));
           start = end + 1;
         }
       });
  flag(cmd->add_option("--catalog-dir", c.catalog_dir,
                       "Where catalog.h5 lives, reachable by every rank (a shared filesystem); "
                       "default: <rank 0's first root>/<job>, single-node jobs only"),
       [](const RunCli& f, RunConfig& r) { r.session.catalog_dir = f.catalog_dir; });
  flag(cmd->add_option("--job", c.job, "Job name (directory under each root)")->default_str(s.job),
       [](const RunCli& f, RunConfig& r) { r.session.job = f.job; });
  flag(cmd->add_option("--layout", c.layout, "slab or file-per-tensor")
           ->default_str(std::string(to_string(s.plan.layout))),
       [](const RunCli& f, RunConfig& r) { r.session.plan.layout = parse_layout(f.layout); });
  flag(cmd->add_option("--slots", c.slots, "1 (in place) or 2 (A/B)")
           ->transform(decimal_integer(true))
           ->default_str(std::to_string(s.slots)),
       [](const RunCli& f, RunConfig& r) { r.session.slots = f.slots; });
  flag(cmd->add_option("--prepare", c.prepare,
                       "swap.prepare: new swap files written with zeros at set-up (write) or only reserved (allocate)")
           ->check(CLI::IsMember({"write", "allocate"}))
           ->default_str(s.prepare),
       [](const RunCli& f, RunConfig& r) { r.session.prepare = f.prepare; });
  flag(cmd->add_option("--policy", c.policy, "balanced, sharded or round-robin")
           ->default_str(std::string(to_string(s.plan.policy))),
       [](const RunCli& f, RunConfig& r) { r.session.plan.policy = parse_policy(f.policy); });
  flag(cmd->add_option("--shard-threshold", c.shard_threshold,
                       "Sharded policy: tensors smaller than this (e.g. 256K) are placed whole; 0 shards all")
           ->default_str(size_text(s.plan.shard_threshold_bytes)),
       [](const RunCli& f, RunConfig& r) {
         r.session.plan.shard_threshold_bytes = parse_size(f.shard_threshold, "--shard-threshold");
       });
  flag(cmd->add_option("--buffer-count", c.buffer_count, "Pinned staging buffers per rank")
           ->transform(decimal_integer(false))
           ->default_str(std::to_string(s.buffer_count)),
       [](const RunCli& f, RunConfig& r) { r.session.buffer_count = f.buffer_count; });
  flag(cmd->add_option("--buffer-size", c.buffer_size, "Bytes per staging buffer (e.g. 16M, 1GiB)")
           ->default_str(size_text(s.buffer_size)),
       [](const RunCli& f, RunConfig& r) { r.session.buffer_size = parse_size(f.buffer_size, "--buffer-size"); });
  flag(cmd->add_option("--prefetch-bytes", c.prefetch_bytes,
                       "Pinned memory for prefetch (e.g. 64M); 0: buffer count x buffer size")
           ->default_str(size_text(s.prefetch_bytes)),
       [](const RunCli& f, RunConfig& r) {
         r.session.prefetch_bytes = parse_size(f.prefetch_bytes, "--prefetch-bytes");
       });
  flag(cmd->add_flag("--verify,!--no-verify", c.verify,
                     fmt::format("Check every value swapped in (default: {})", on_off(d.check_values))),
       [](const RunCli& f, RunConfig& r) { r.check_values = f.verify; });
  flag(cmd->add_option("--backend", c.backend, "I/O backend: libaio, io_uring, posix")->default_str(s.backend),
       [](const RunCli& f, RunConfig& r) { r.session.backend = f.backend; });
  flag(cmd->add_flag("--register,!--no-register", c.register_io,
                     "aio.register: io_uring fixed buffers and files (the staging buffers and the swap files)"),
       [](const RunCli& f, RunConfig& r) { r.session.register_io = f.register_io; });
  flag(cmd->add_option("--block-size", c.block_size, "aio.block_size: bytes per kernel request (e.g. 1M)")
           ->default_str(size_text(s.aio.block_size)),
       [](const RunCli& f, RunConfig& r) {
         r.session.aio.block_size = static_cast<std::size_t>(parse_size(f.block_size, "--block-size"));
       });
  flag(cmd->add_option("--queue-depth", c.queue_depth, "aio.queue_depth")
           ->transform(decimal_integer(false))
           ->default_str(std::to_string(s.aio.queue_depth)),
       [](const RunCli& f, RunConfig& r) { r.session.aio.queue_depth = f.queue_depth; });
  flag(cmd->add_option("--threads", c.threads, "aio.intra_op_parallelism")
           ->transform(decimal_integer(false))
           ->default_str(std::to_string(s.aio.intra_op_parallelism)),
       [](const RunCli& f, RunConfig& r) { r.session.aio.intra_op_parallelism = f.threads; });
  flag(cmd->add_option("--direct", c.direct, "O_DIRECT: auto, on or off")
           ->default_str(std::string(to_string(s.aio.direct))),
       [](const RunCli& f, RunConfig& r) { r.session.aio.direct = parse_direct_mode(f.direct); });
  flag(cmd->add_flag("--fsync,!--no-fsync", c.fsync,
                     fmt::format("fdatasync every file written since the last commit, in each commit (default: {})", on_off(s.aio.fsync))),
       [](const RunCli& f, RunConfig& r) { r.session.aio.fsync = f.fsync; });
  flag(cmd->add_option("--phase-timeout", c.phase_timeout, "Seconds a phase may wait for all ranks")
           ->default_str(fmt::format("{}", s.phase_timeout_s)),
       [](const RunCli& f, RunConfig& r) { r.session.phase_timeout_s = f.phase_timeout; });
  flag(cmd->add_option("--node-key", c.node_key, "How ranks form nodes: shared, slurm, env:VAR")
           ->default_str(s.node_key),
       [](const RunCli& f, RunConfig& r) { r.session.node_key = f.node_key; });
  cmd->add_flag("--resume", c.resume, "Continue from the last committed epoch in the catalog");
  flag(cmd->add_flag("--overwrite", c.overwrite,
                     "Start fresh over a committed catalog, replacing it (without this or --resume, a "
                     "committed catalog is an error)"),
       [](const RunCli& f, RunConfig& r) { r.session.overwrite = f.overwrite; });
  cmd->add_flag("--verify-checksums", c.verify_checksums,
                "With --resume: also check every piece's checksum before starting");
  cmd->add_option("--crash-at", c.crash_at,
                  "Testing aid: SIGKILL --crash-rank at swap-out (halfway), sync, commit, written or renamed")
      ->group("Testing")
      ->check(CLI::IsMember({"swap-out", "sync", "commit", "written", "renamed"}));
  cmd->add_option("--crash-epoch", c.crash_epoch, "Testing aid: the epoch of --crash-at")
      ->group("Testing")
      ->capture_default_str();
  cmd->add_option("--crash-rank", c.crash_rank, "Testing aid: the rank of --crash-at")
      ->group("Testing")
      ->capture_default_str();
  cmd->add_option("--inject-corruption", c.corrupt_epoch,
                  "Testing aid: after the swap-out of this epoch, rank 0 overwrites 8 bytes of its "
                  "first piece on disk, which the next swap-in must report (-1: never)")
      ->group("Testing")
      ->capture_default_str();
  flag(cmd->add_flag("--allgather", c.allgather,
                     fmt::format("Sharded policy: rebuild every tensor on every rank after each swap-in "
                                 "(default: {})", on_off(d.allgather))),
       [](const RunCli& f, RunConfig& r) { r.allgather = f.allgather; });
  flag(cmd->add_option("--device", c.device,
                       fmt::format("Where the tensors live: cpu, or cuda (each rank's GPU by local rank; "
                                   "--allgather then uses NCCL) (default: {})", d.device))
           ->check(CLI::IsMember({"cpu", "cuda"})),
       [](const RunCli& f, RunConfig& r) { r.device = f.device; });
}

std::shared_ptr<RunCli> add_run_command(CLI::App& app) {
  auto cli = std::make_shared<RunCli>();
  auto* cmd = app.add_subcommand("run", "The main job: a training loop that swaps a model's tensors "
                                        "out and in across all MPI ranks, verifying every value");
  add_run_flags(cmd, *cli);
  return cli;
}

}  // namespace swapcoord::app
