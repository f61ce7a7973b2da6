#pragma once
// The flags of `swapcoord run`: raw values, and for each flag given on the command line,
// how it overrides the config (apply()).
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "run_config.hpp"

namespace swapcoord::app {

struct RunCli {
  std::string config, json, roots, job, layout, policy, preset, tensors, swap, backend, direct,
      node_key, shard_threshold, buffer_size, block_size, catalog_dir, prefetch_bytes, device, prepare;
  double scale = 0, phase_timeout = 0;
  int steps = 0, slots = 0;
  std::size_t buffer_count = 0, queue_depth = 0, threads = 0;
  bool verify = true, fsync = true, allgather = false, cleanup = false, overwrite = false, register_io = false;
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

// Adds the flags of `swapcoord run` to `cmd`, recording the overrides in `c`.
void add_run_flags(CLI::App* cmd, RunCli& c);

}  // namespace swapcoord::app
