#pragma once
// The configuration of `swapcoord run`: a JSON file in swapcoord's form (sections `aio`
// and `swap`, read by the library's apply_config, plus a `run` section read here) or a
// DeepSpeed ds_config.json; command-line flags override it (run_cli.hpp). Unknown keys
// and impossible values are ConfigErrors naming the key.
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "model.hpp"
#include "swapcoord/session/options.hpp"

namespace swapcoord::app {

struct RunConfig {
  SessionOptions session;           // aio + swap sections (or a DeepSpeed config)
  std::string preset = "gpt-125m";  // run section
  std::string tensors;              // a JSON tensor list instead of the preset
  double scale = 0.25;
  SwapWhat swap = SwapWhat::both;
  int steps = 3;
  bool allgather = false;
  std::string device = "cpu";       // where the tensors live: cpu, or cuda (the rank's GPU by local rank)
  bool check_values = true;         // swap.verify / --verify: run checks every value it swaps in
  DeepSpeedInfo deepspeed;          // what a DeepSpeed config said

  // read_config_file + apply_config(session, doc, ..., {"run"}) + the run section.
  // A DeepSpeed config also sets `swap` from the offload sections that use NVMe
  // (ConfigError when neither does); a run section, read last, overrides it.
  // The old keys run.phase_timeout_s and run.node_key set session.phase_timeout_s and
  // session.node_key.
  void load_file(const std::string& path, bool log = true);  // log: say which DeepSpeed keys are ignored
  // session.validate() and the run section: steps in [0, 1e6], scale in (0, 4], a known
  // preset (unless tensors is set), allgather only with the sharded policy, device cpu or cuda.
  void validate() const;
  // session.to_json() (with swap.verify = check_values) plus "run".
  nlohmann::json to_json() const;
};

}  // namespace swapcoord::app
