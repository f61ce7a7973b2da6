#include "run_config.hpp"

#include <algorithm>
#include <climits>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "swapcoord/common/error.hpp"

namespace swapcoord::app {
namespace {

using nlohmann::json;

constexpr int kMaxSteps = 1000000;
constexpr const char* kRunKeys = "run.preset, tensors, scale, swap, steps, allgather, device, phase_timeout_s, node_key";

[[noreturn]] void wrong(const std::string& source, const std::string& key, const json& value,
                        std::string_view expected) {
  throw ConfigError(fmt::format("{}: {}: {} is not {}", source, key, value.dump(), expected));
}

std::string get_string(const json& v, const std::string& source, const std::string& key, std::string_view expected) {
  if (!v.is_string()) wrong(source, key, v, expected);
  return v.get<std::string>();
}

bool get_bool(const json& v, const std::string& source, const std::string& key) {
  if (!v.is_boolean()) wrong(source, key, v, "true or false");
  return v.get<bool>();
}

double get_number(const json& v, const std::string& source, const std::string& key, std::string_view expected) {
  if (!v.is_number()) wrong(source, key, v, expected);
  return v.get<double>();
}

// An integer that fits an int (never narrowed: 4294967299 is an error, not 3).
int get_int(const json& v, const std::string& source, const std::string& key, std::string_view expected) {
  if (!v.is_number_integer()) wrong(source, key, v, expected);
  const bool fits = v.is_number_unsigned() ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT_MAX)
                                           : v.get<std::int64_t>() >= INT_MIN && v.get<std::int64_t>() <= INT_MAX;
  if (!fits) throw ConfigError(fmt::format("{}: {}: {} is out of range", source, key, v.dump()));
  return static_cast<int>(v.get<std::int64_t>());
}

void apply_run_section(RunConfig& c, const json& body, const std::string& source) {
  if (!body.is_object()) wrong(source, "run", body, "an object");
  for (const auto& [name, value] : body.items()) {
    const std::string key = "run." + name;
    if (name == "preset") {
      c.preset = get_string(value, source, key, "a preset name");
    } else if (name == "tensors") {
      c.tensors = get_string(value, source, key, "a file name");
    } else if (name == "scale") {
      c.scale = get_number(value, source, key, "a number");
    } else if (name == "swap") {
      c.swap = parse_swap_what(get_string(value, source, key, "params, optimizer or both"));
    } else if (name == "steps") {
      c.steps = get_int(value, source, key, "a non-negative integer");
    } else if (name == "allgather") {
      c.allgather = get_bool(value, source, key);
    } else if (name == "device") {
      c.device = get_string(value, source, key, "\"cpu\" or \"cuda\"");
    } else if (name == "phase_timeout_s") {  // old place of swap.phase_timeout_s
      c.session.phase_timeout_s = get_number(value, source, key, "a number of seconds");
    } else if (name == "node_key") {  // old place of swap.node_key
      c.session.node_key = get_string(value, source, key, "shared, slurm or env:VAR");
    } else {
      throw ConfigError(fmt::format("{}: unknown key '{}' (known: {})", source, key, kRunKeys));
    }
  }
}

}  // namespace

void RunConfig::load_file(const std::string& path, bool log) {
  const json doc = read_config_file(path);
  const std::string source = fmt::format("config '{}'", path);
  // Applied to a copy: a file with an error changes nothing.
  RunConfig c = *this;
  c.deepspeed = apply_config(c.session, doc, source, {"run"}, log);
  const auto swap_section = doc.find("swap");
  if (swap_section != doc.end() && swap_section->is_object() && swap_section->contains("verify"))
    c.check_values = c.session.verify;  // run checks values itself (the lead passes verify=false on)
  if (c.deepspeed.detected) {
    if (c.deepspeed.offload_param && c.deepspeed.offload_optimizer) c.swap = SwapWhat::both;
    else if (c.deepspeed.offload_param) c.swap = SwapWhat::params;
    else if (c.deepspeed.offload_optimizer) c.swap = SwapWhat::optimizer;
    else
      throw ConfigError(fmt::format(
          "{}: the DeepSpeed config offloads nothing to NVMe (neither zero_optimization.offload_param "
          "nor offload_optimizer has \"device\": \"nvme\")", source));
  }
  if (doc.contains("run")) apply_run_section(c, doc["run"], source);
  *this = std::move(c);
}

void RunConfig::validate() const {
  session.validate();
  if (steps < 0 || steps > kMaxSteps)
    throw ConfigError(fmt::format("run.steps: {} is not between 0 and {}", steps, kMaxSteps));
  if (!(scale > 0) || !std::isfinite(scale) || scale > 4)
    throw ConfigError(fmt::format("run.scale: {} is not in (0, 4]", scale));
  if (tensors.empty()) {
    const auto names = preset_names();
    if (std::find(names.begin(), names.end(), preset) == names.end())
      throw ConfigError(fmt::format("run.preset: unknown preset '{}' (known: {})", preset, fmt::join(names, ", ")));
  }
  if (device != "cpu" && device != "cuda")
    throw ConfigError(fmt::format("run.device: '{}' is not cpu or cuda", device));
  if (allgather && session.plan.policy != Policy::sharded)
    throw ConfigError("run.allgather: needs swap.policy sharded (it rebuilds sharded tensors)");
}

nlohmann::json RunConfig::to_json() const {
  json j = session.to_json();
  j["swap"]["verify"] = check_values;
  j["run"] = {{"preset", preset}, {"tensors", tensors}, {"scale", scale}, {"swap", std::string(to_string(swap))},
              {"steps", steps}, {"allgather", allgather}, {"device", device}};
  return j;
}

}  // namespace swapcoord::app
