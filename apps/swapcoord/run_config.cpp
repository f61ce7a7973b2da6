#include "run_config.hpp"

#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"

namespace swapcoord::app {
namespace {

using nlohmann::json;

// Reads one typed value, or throws ConfigError naming `key` and what was expected.
template <class T>
T get(const json& value, const std::string& key, const char* expected) {
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!value.is_boolean()) throw std::invalid_argument("type");
    } else if constexpr (std::is_unsigned_v<T>) {
      if (!value.is_number_unsigned()) throw std::invalid_argument("type");
    } else if constexpr (std::is_integral_v<T>) {
      if (!value.is_number_integer()) throw std::invalid_argument("type");
    } else if constexpr (std::is_arithmetic_v<T>) {
      if (!value.is_number()) throw std::invalid_argument("type");
    } else {
      if (!value.is_string()) throw std::invalid_argument("type");
    }
    return value.get<T>();
  } catch (const std::exception&) {
    throw ConfigError(fmt::format("{}: {} is not {}", key, value.dump(), expected));
  }
}

void unknown_key(const std::string& source, const std::string& key, const char* known) {
  throw ConfigError(fmt::format("{}: unknown key '{}' (known: {})", source, key, known));
}

}  // namespace

void RunConfig::apply_json(const json& doc, const std::string& source) {
  if (!doc.is_object()) throw ConfigError(fmt::format("{}: the config must be a JSON object", source));
  for (const auto& [section, body] : doc.items()) {
    if (section != "aio" && section != "swap" && section != "run")
      unknown_key(source, section, "aio, swap, run");
    if (!body.is_object())
      throw ConfigError(fmt::format("{}: section '{}' must be an object", source, section));
    for (const auto& [name, value] : body.items()) {
      const std::string key = section + "." + name;
      if (section == "aio") {
        if (name == "block_size") aio.block_size = get<std::size_t>(value, key, "a byte count");
        else if (name == "queue_depth") aio.queue_depth = get<std::size_t>(value, key, "a positive integer");
        else if (name == "intra_op_parallelism" || name == "thread_count")
          aio.intra_op_parallelism = get<std::size_t>(value, key, "a positive integer");
        else if (name == "single_submit") aio.single_submit = get<bool>(value, key, "true or false");
        else if (name == "overlap_events") aio.overlap_events = get<bool>(value, key, "true or false");
        else if (name == "use_gds") {
          if (get<bool>(value, key, "true or false"))
            throw ConfigError(key + ": GPUDirect Storage is not supported by swapcoord; set it to false");
        } else if (name == "direct") aio.direct = parse_direct_mode(get<std::string>(value, key, "auto, on or off"));
        else if (name == "fsync") aio.fsync = get<bool>(value, key, "true or false");
        else if (name == "backend") backend = get<std::string>(value, key, "a backend name");
        else
          unknown_key(source, key, "aio.block_size, queue_depth, intra_op_parallelism, thread_count, "
                                   "single_submit, overlap_events, use_gds, direct, fsync, backend");
      } else if (section == "swap") {
        if (name == "roots") {
          roots.clear();
          if (value.is_string()) {
            roots.push_back(value.get<std::string>());
          } else if (value.is_array()) {
            for (const auto& r : value) roots.push_back(get<std::string>(r, key, "a list of directories"));
          } else {
            throw ConfigError(fmt::format("{}: {} is not a directory or a list of them", key, value.dump()));
          }
        } else if (name == "job") job = get<std::string>(value, key, "a name");
        else if (name == "layout") layout = parse_layout(get<std::string>(value, key, "slab or file-per-tensor"));
        else if (name == "slots") slots = get<int>(value, key, "1 or 2");
        else if (name == "policy") policy = parse_policy(get<std::string>(value, key, "a policy name"));
        else if (name == "buffer_count") buffer_count = get<std::size_t>(value, key, "a positive integer");
        else if (name == "buffer_size") buffer_size = get<std::uint64_t>(value, key, "a byte count");
        else if (name == "verify") verify = get<bool>(value, key, "true or false");
        else
          unknown_key(source, key, "swap.roots, job, layout, slots, policy, buffer_count, buffer_size, verify");
      } else {
        if (name == "preset") preset = get<std::string>(value, key, "a preset name");
        else if (name == "tensors") tensors = get<std::string>(value, key, "a file name");
        else if (name == "scale") scale = get<double>(value, key, "a number");
        else if (name == "swap") swap = parse_swap_what(get<std::string>(value, key, "params, optimizer or both"));
        else if (name == "steps") steps = get<int>(value, key, "a non-negative integer");
        else if (name == "phase_timeout_s") phase_timeout_s = get<double>(value, key, "seconds");
        else if (name == "node_key") node_key = get<std::string>(value, key, "shared, slurm or env:VAR");
        else if (name == "allgather") allgather = get<bool>(value, key, "true or false");
        else
          unknown_key(source, key, "run.preset, tensors, scale, swap, steps, phase_timeout_s, node_key, allgather");
      }
    }
  }
}

void RunConfig::load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("--config: cannot open '{}'", path));
  json doc;
  try {
    in >> doc;
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("--config: '{}' is not valid JSON: {}", path, e.what()));
  }
  apply_json(doc, "config '" + path + "'");
}

void RunConfig::validate() const {
  aio.validate();
  if (slots != 1 && slots != 2) throw ConfigError(fmt::format("swap.slots: {} is not 1 or 2", slots));
  if (buffer_count < 2) throw ConfigError(fmt::format("swap.buffer_count: {} is less than 2", buffer_count));
  if (buffer_size == 0 || !is_aligned(buffer_size, kDefaultAlignmentBytes))
    throw ConfigError(fmt::format("swap.buffer_size: {} is not a positive multiple of {}", buffer_size,
                                  kDefaultAlignmentBytes));
  if (roots.empty()) throw ConfigError("swap.roots: no swap root given");
  for (const auto& root : roots)
    if (root.empty()) throw ConfigError("swap.roots: an empty directory name");
  if (job.empty() || job.find('/') != std::string::npos || job == "." || job == "..")
    throw ConfigError(fmt::format("swap.job: '{}' is not a plain name", job));
  if (steps < 0) throw ConfigError(fmt::format("run.steps: {} is negative", steps));
  if (!(phase_timeout_s > 0) || !std::isfinite(phase_timeout_s))
    throw ConfigError(fmt::format("run.phase_timeout_s: {} is not a positive number of seconds", phase_timeout_s));
  if (allgather && policy != Policy::sharded)
    throw ConfigError("run.allgather: needs swap.policy sharded (it rebuilds sharded tensors)");
}

json RunConfig::to_json() const {
  return {{"aio", {{"block_size", aio.block_size}, {"queue_depth", aio.queue_depth},
                   {"intra_op_parallelism", aio.intra_op_parallelism},
                   {"single_submit", aio.single_submit}, {"overlap_events", aio.overlap_events},
                   {"direct", std::string(to_string(aio.direct))}, {"fsync", aio.fsync},
                   {"backend", backend}}},
          {"swap", {{"roots", roots}, {"job", job}, {"layout", std::string(to_string(layout))},
                    {"slots", slots}, {"policy", std::string(to_string(policy))},
                    {"buffer_count", buffer_count}, {"buffer_size", buffer_size}, {"verify", verify}}},
          {"run", {{"preset", preset}, {"tensors", tensors}, {"scale", scale},
                   {"swap", std::string(to_string(swap))}, {"steps", steps},
                   {"phase_timeout_s", phase_timeout_s}, {"node_key", node_key},
                   {"allgather", allgather}}}};
}

}  // namespace swapcoord::app
