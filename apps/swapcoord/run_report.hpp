#pragma once
// The output of `swapcoord run` in the nccl-tests style: `#` header lines (version, command,
// model, plan, catalog, I/O settings, one line per rank), one row per phase with min / mean
// / max over ranks, a footer with the wrong values and mean bandwidths, and --json.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "run_config.hpp"
#include "swapcoord/session/session.hpp"

namespace swapcoord::app {

class RunReport {
 public:
  // Collective (gathers each rank's root for its line); prints the header on rank 0.
  RunReport(const RunConfig& config, const SwapSession& session, const std::vector<TensorSpec>& tensors,
            std::vector<std::string> argv);
  // Keeps a phase's figures (every rank); rank 0 prints its row.
  void row(int step, const char* name, int epoch, const PhaseStats& stats);
  // The cost of coordinating one swap-out and its commit (rank 0 keeps it): the slowest
  // rank's wall time from the start of the swap-out to the end of the commit, against the
  // slowest rank's own I/O (its swap-out plus its fdatasync), and where the rest went.
  struct Coordination {
    int step = 0;
    double wall_s = 0, io_s = 0, sync_s = 0, rows_s = 0, catalog_s = 0;
    double overhead() const noexcept { return io_s > 0 ? wall_s / io_s - 1 : 0; }
  };
  void coordination(const Coordination& c);
  // Rank 0: the footer, and the JSON report when `json_path` is not empty.
  void footer(const std::string& json_path) const;
  std::uint64_t wrong() const noexcept { return _wrong; }

 private:
  void write_json(const std::string& path) const;

  const RunConfig& _config;
  const SwapSession& _session;
  std::vector<std::string> _argv;
  std::size_t _tensors;
  int _rank = 0;
  nlohmann::json _phases = nlohmann::json::array();
  std::vector<Coordination> _coordination;
  std::uint64_t _wrong = 0;
  double _out_gbps_sum = 0, _in_gbps_sum = 0;
  int _out_count = 0, _in_count = 0;
};

}  // namespace swapcoord::app
