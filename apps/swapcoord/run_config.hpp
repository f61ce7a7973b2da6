#pragma once
// The configuration of `swapcoord run`: a JSON file with DeepSpeed's `aio` section (as
// is, also its older `thread_count` key), a `swap` section and a `run` section; command
// line flags override it. Unknown keys and impossible values are ConfigErrors naming the
// key.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/io/aio_config.hpp"

namespace swapcoord::app {

struct RunConfig {
  // aio
  AioConfig aio = [] {
    AioConfig c;
    c.fsync = true;  // run: every swap-out phase ends with fdatasync of the rank's files
    return c;
  }();
  std::string backend = "libaio";
  // swap
  std::vector<std::string> roots{"swapcoord-swap"};
  std::string job = "swapcoord";
  Layout layout = Layout::slab;
  int slots = 2;
  Policy policy = Policy::balanced;
  std::size_t buffer_count = 4;
  std::uint64_t buffer_size = 16ULL << 20;
  bool verify = true;
  // run
  std::string preset = "gpt-125m";
  std::string tensors;  // a JSON tensor list instead of the preset
  double scale = 0.25;
  SwapWhat swap = SwapWhat::both;
  int steps = 3;
  double phase_timeout_s = 300;
  std::string node_key = "shared";
  bool allgather = false;

  // Applies a parsed config document (ConfigError naming the key on anything wrong).
  void apply_json(const nlohmann::json& doc, const std::string& source);
  // Loads and applies a config file.
  void load_file(const std::string& path);
  void validate() const;
  nlohmann::json to_json() const;
};

}  // namespace swapcoord::app
