// SessionOptions: validation, JSON form, and the two config forms apply_config reads
// (swapcoord's own {"aio", "swap"} and a DeepSpeed ds_config.json).
#include "swapcoord/session/options.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/coord/topology.hpp"

namespace swapcoord {
namespace {

using nlohmann::json;

constexpr std::uint64_t kPage = 4096;                    // buffer_size / prefetch_bytes unit
constexpr double kMaxPhaseTimeoutS = 1e6;                // ~11.6 days
constexpr std::size_t kMaxBufferCount = 1 << 16;
constexpr std::uint64_t kMaxBufferSize = 1ULL << 40;     // 1 TiB per staging buffer
constexpr std::size_t kMinAlignment = 512;
constexpr std::size_t kMaxAlignment = std::size_t{1} << 30;

// Top-level keys that make a document a DeepSpeed config (DeepSpeed's config-json page).
// Any one of them is enough; swapcoord's own form has none of them.
constexpr std::string_view kDeepSpeedMarkers[] = {
    "zero_optimization", "train_batch_size", "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps", "optimizer", "scheduler", "fp16", "bf16", "bfloat16", "amp",
    "gradient_clipping", "zero_allow_untested_optimizer", "steps_per_print",
    "wall_clock_breakdown", "activation_checkpointing", "flops_profiler", "communication_data_type",
    "prescale_gradients", "gradient_predivide_factor", "sparse_attention", "data_efficiency",
    "curriculum_learning", "tensorboard", "wandb", "csv_monitor", "comms_logger", "autotuning",
    "elasticity", "compression_training", "checkpoint", "data_types", "zero_force_ds_cpu_optimizer"};

// zero_optimization keys DeepSpeed defines (runtime/zero/config.py, with the stage3_
// aliases) that swapcoord reads nothing from. Others are ignored with one warning.
constexpr std::string_view kZeroIgnored[] = {
    "contiguous_gradients", "reduce_scatter", "reduce_bucket_size", "use_multi_rank_bucket_allreduce",
    "allgather_partitions", "allgather_bucket_size", "overlap_comm", "load_from_fp32_weights",
    "elastic_checkpoint", "sub_group_size", "cpu_offload_param", "cpu_offload_use_pin_memory",
    "cpu_offload", "prefetch_bucket_size", "stage3_prefetch_bucket_size", "param_persistence_threshold",
    "stage3_param_persistence_threshold", "model_persistence_threshold",
    "stage3_model_persistence_threshold", "max_live_parameters", "stage3_max_live_parameters",
    "max_reuse_distance", "stage3_max_reuse_distance", "gather_16bit_weights_on_model_save",
    "stage3_gather_16bit_weights_on_model_save", "stage3_gather_fp16_weights_on_model_save",
    "module_granularity_threshold", "stage3_module_granularity_threshold",
    "use_all_reduce_for_fetch_params", "stage3_use_all_reduce_for_fetch_params",
    "allgather_sequential", "stage3_allgather_sequential", "partition_stream_chunk_size",
    "stage3_partition_stream_chunk_size", "ignore_unused_parameters", "legacy_stage1",
    "round_robin_gradients", "zero_hpz_partition_size", "zero_quantized_weights",
    "zero_quantized_nontrainable_weights", "zero_quantized_gradients", "zeropp_loco_param",
    "mics_shard_size", "mics_hierarchical_params_gather", "memory_efficient_linear",
    "pipeline_loading_checkpoint", "override_module_apply", "log_trace_cache_warnings",
    "enable_sanity_checks", "save_muon_momentum_buffer_in_memory", "leaf_module", "zenflow",
    "allgather_size"};

// Keys of the offload sections that DeepSpeed defines and swapcoord does not use
// (runtime/zero/offload_config.py).
constexpr std::string_view kOffloadParamIgnored[] = {"max_in_cpu"};
constexpr std::string_view kOffloadOptimizerIgnored[] = {
    "pipeline_read", "pipeline_write", "fast_init", "ratio", "super_offload", "convert_grad_on_cpu",
    "cpuadam_cores_perc"};

constexpr const char* kAioKeys =
    "block_size, queue_depth, intra_op_parallelism, thread_count, single_submit, overlap_events, "
    "use_gds, direct, fsync, backend, register";
constexpr const char* kSwapKeys =
    "roots, catalog_dir, create_roots, overwrite, job, layout, policy, shard_threshold, alignment, slots, buffer_count, "
    "buffer_size, prefetch_bytes, pin_memory, verify, checksum, prepare, phase_timeout_s, node_key";

template <std::size_t N>
bool contains(const std::string_view (&list)[N], std::string_view key) {
  return std::find(std::begin(list), std::end(list), key) != std::end(list);
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

// Typed reads of one value; every error names the document and the key.
class Reader {
 public:
  explicit Reader(const std::string& source) : _source(source) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(fmt::format("{}: {}: {}", _source, key, what));
  }
  [[noreturn]] void wrong_type(const std::string& key, const json& value, std::string_view expected) const {
    fail(key, fmt::format("{} is not {}", value.dump(), expected));
  }
  [[noreturn]] void unknown_key(const std::string& key, std::string_view known) const {
    throw ConfigError(fmt::format("{}: unknown key '{}' (known: {})", _source, key, known));
  }

  bool boolean(const json& value, const std::string& key) const {
    if (!value.is_boolean()) wrong_type(key, value, "true or false");
    return value.get<bool>();
  }
  std::string string(const json& value, const std::string& key, std::string_view expected) const {
    if (!value.is_string()) wrong_type(key, value, expected);
    return value.get<std::string>();
  }
  double number(const json& value, const std::string& key, std::string_view expected) const {
    if (!value.is_number()) wrong_type(key, value, expected);
    return value.get<double>();
  }
  // A non-negative integer (also written 1e8, as Python's json.dump writes DeepSpeed
  // configs) of at most `max`; never narrowed silently.
  std::uint64_t integer(const json& value, const std::string& key, std::uint64_t max,
                        std::string_view expected) const {
    std::uint64_t out = 0;
    if (value.is_number_unsigned()) {
      out = value.get<std::uint64_t>();
    } else if (value.is_number_integer()) {
      // Signed storage: negative, or a non-negative int put into the document in code
      // (to_json() writes `slots` that way; the parser stores it unsigned).
      const std::int64_t signed_value = value.get<std::int64_t>();
      if (signed_value < 0) fail(key, fmt::format("{} is negative (expected {})", value.dump(), expected));
      out = static_cast<std::uint64_t>(signed_value);
    } else if (value.is_number_float()) {
      const double d = value.get<double>();
      if (!std::isfinite(d) || d < 0 || d != std::floor(d) || d >= 18446744073709551616.0)
        wrong_type(key, value, expected);
      out = static_cast<std::uint64_t>(d);
    } else {
      wrong_type(key, value, expected);
    }
    if (out > max) fail(key, fmt::format("{} is out of range (at most {})", value.dump(), max));
    return out;
  }
  template <class T>
  T integer_as(const json& value, const std::string& key, std::string_view expected) const {
    return static_cast<T>(
        integer(value, key, static_cast<std::uint64_t>(std::numeric_limits<T>::max()), expected));
  }
  // A byte count: an integer or a string such as "16M".
  std::uint64_t size(const json& value, const std::string& key) const {
    if (value.is_string()) return parse_size(value.get<std::string>(), fmt::format("{}: {}", _source, key));
    return integer(value, key, std::numeric_limits<std::uint64_t>::max(),
                   "a byte count (an integer or a string such as \"16M\")");
  }
  std::vector<std::string> paths(const json& value, const std::string& key) const {
    std::vector<std::string> out;
    if (value.is_string()) {
      out.push_back(value.get<std::string>());
    } else if (value.is_array()) {
      for (const auto& item : value) out.push_back(string(item, key, "a list of directories"));
    } else {
      wrong_type(key, value, "a directory or a list of them");
    }
    return out;
  }
  const json& section(const json& body, const std::string& key) const {
    if (!body.is_object()) wrong_type(key, body, "an object");
    return body;
  }
  const std::string& source() const noexcept { return _source; }

 private:
  const std::string& _source;
};

void apply_aio(SessionOptions& o, const json& body, const Reader& r) {
  for (const auto& [name, value] : r.section(body, "aio").items()) {
    const std::string key = "aio." + name;
    if (name == "block_size") {
      o.aio.block_size = static_cast<std::size_t>(r.size(value, key));
    } else if (name == "queue_depth") {
      o.aio.queue_depth = r.integer_as<std::size_t>(value, key, "a positive integer");
    } else if (name == "intra_op_parallelism" || name == "thread_count") {
      o.aio.intra_op_parallelism = r.integer_as<std::size_t>(value, key, "a positive integer");
    } else if (name == "single_submit") {
      o.aio.single_submit = r.boolean(value, key);
    } else if (name == "overlap_events") {
      o.aio.overlap_events = r.boolean(value, key);
    } else if (name == "use_gds") {
      if (r.boolean(value, key))
        r.fail(key, "GPUDirect Storage is not supported by swapcoord; set it to false");
    } else if (name == "direct") {
      const auto text = r.string(value, key, "auto, on or off");
      try {
        o.aio.direct = parse_direct_mode(text);
      } catch (const ConfigError& e) {
        r.fail(key, fmt::format("'{}' is not one of auto, on, off", text));
      }
    } else if (name == "fsync") {
      o.aio.fsync = r.boolean(value, key);
    } else if (name == "backend") {
      o.backend = r.string(value, key, "a backend name (libaio, io_uring, posix)");
    } else if (name == "register") {
      o.register_io = r.boolean(value, key);
    } else {
      r.unknown_key(key, fmt::format("aio.{}", kAioKeys));
    }
  }
}

void apply_swap(SessionOptions& o, const json& body, const Reader& r) {
  for (const auto& [name, value] : r.section(body, "swap").items()) {
    const std::string key = "swap." + name;
    if (name == "roots") {
      o.roots = r.paths(value, key);
    } else if (name == "catalog_dir") {
      o.catalog_dir = r.string(value, key, "a directory");
    } else if (name == "create_roots") {
      o.create_roots = r.boolean(value, key);
    } else if (name == "overwrite") {
      o.overwrite = r.boolean(value, key);
    } else if (name == "job") {
      o.job = r.string(value, key, "a name");
    } else if (name == "layout") {
      const auto text = r.string(value, key, "slab or file-per-tensor");
      try {
        o.plan.layout = parse_layout(text);
      } catch (const ConfigError&) {
        r.fail(key, fmt::format("'{}' is not one of slab, file-per-tensor", text));
      }
    } else if (name == "policy") {
      const auto text = r.string(value, key, "balanced, sharded or round-robin");
      try {
        o.plan.policy = parse_policy(text);
      } catch (const ConfigError&) {
        r.fail(key, fmt::format("'{}' is not one of balanced, sharded, round-robin", text));
      }
    } else if (name == "shard_threshold") {
      o.plan.shard_threshold_bytes = r.size(value, key);
    } else if (name == "alignment") {
      o.plan.alignment_bytes = static_cast<std::size_t>(r.size(value, key));
    } else if (name == "slots") {
      o.slots = r.integer_as<int>(value, key, "1 or 2");
    } else if (name == "buffer_count") {
      o.buffer_count = r.integer_as<std::size_t>(value, key, "a count of at least 2");
    } else if (name == "buffer_size") {
      o.buffer_size = r.size(value, key);
    } else if (name == "prefetch_bytes") {
      o.prefetch_bytes = r.size(value, key);
    } else if (name == "pin_memory") {
      o.pin_memory = r.boolean(value, key);
    } else if (name == "verify") {
      o.verify = r.boolean(value, key);
    } else if (name == "checksum") {
      const std::string text = r.string(value, key, "xxh3_64 or xxh64");
      const auto kind = parse_checksum(text);
      if (!kind) r.fail(key, fmt::format("'{}' is not one of xxh3_64, xxh64", text));
      o.checksum = *kind;
    } else if (name == "prepare") {
      o.prepare = r.string(value, key, "write or allocate");
    } else if (name == "phase_timeout_s") {
      o.phase_timeout_s = r.number(value, key, "a number of seconds");
    } else if (name == "node_key") {
      o.node_key = r.string(value, key, "shared, slurm or env:VAR");
    } else {
      r.unknown_key(key, fmt::format("swap.{}", kSwapKeys));
    }
  }
}

// "enabled": true | false | "auto" of DeepSpeed's fp16 / bf16 sections. "auto" (the
// Hugging Face Trainer fills it in) counts as not enabled here.
bool precision_enabled(const json& body, const std::string& section, const Reader& r) {
  if (!body.is_object()) r.wrong_type(section, body, "an object");
  if (!body.contains("enabled")) return false;
  const auto& value = body["enabled"];
  if (value.is_string() && value.get<std::string>() == "auto") {
    log::warn(fmt::format("{}: {}.enabled is \"auto\"; swapcoord takes it as false", r.source(), section));
    return false;
  }
  if (!value.is_boolean()) r.wrong_type(section + ".enabled", value, "true, false or \"auto\"");
  return value.get<bool>();
}

// One of zero_optimization.offload_param / offload_optimizer.
struct OffloadSection {
  bool nvme = false;
  std::string nvme_path;
  std::optional<std::uint64_t> buffer_count;
  std::optional<std::uint64_t> buffer_elements;
  std::optional<bool> pin_memory;
};

template <std::size_t N>
OffloadSection read_offload(const json& body, const std::string& key_prefix,
                            const std::string_view (&ignored)[N], const Reader& r) {
  OffloadSection s;
  if (body.is_null()) return s;  // DeepSpeed: Optional[...] = None
  r.section(body, key_prefix);
  std::string device = "none";  // DeepSpeed's default (offload_config.py)
  for (const auto& [name, value] : body.items()) {
    const std::string key = key_prefix + "." + name;
    if (name == "device") {
      device = r.string(value, key, "\"nvme\", \"cpu\" or \"none\"");
      if (device != "nvme" && device != "cpu" && device != "none")
        r.fail(key, fmt::format("'{}' is not one of nvme, cpu, none", device));
    } else if (name == "nvme_path") {
      if (!value.is_null()) s.nvme_path = r.string(value, key, "a directory");
    } else if (name == "buffer_count") {
      s.buffer_count = r.integer(value, key, kMaxBufferCount, "a count");
    } else if (name == "buffer_size") {
      // Elements, not bytes: a number only (a size string such as "16M" would read as bytes).
      s.buffer_elements = r.integer(value, key, std::uint64_t{1} << 50,
                                    "a number of elements (DeepSpeed counts buffer_size in elements)");
    } else if (name == "pin_memory") {
      s.pin_memory = r.boolean(value, key);
    } else if (!contains(ignored, name)) {
      std::string known = "device, nvme_path, buffer_count, buffer_size, pin_memory";
      for (auto k : ignored) known += fmt::format(", {}", k);
      r.unknown_key(key, fmt::format("{}.{}", key_prefix, known));
    }
  }
  s.nvme = device == "nvme";
  if (s.nvme && s.nvme_path.empty())
    r.fail(key_prefix + ".nvme_path", "missing: device is \"nvme\" and swapcoord needs the directory");
  return s;
}

// DeepSpeed's sections: precision, then zero_optimization (buffer sizes need the dtype).
void apply_deepspeed(SessionOptions& o, const json& doc, const Reader& r, DeepSpeedInfo& info) {
  const bool fp16 = doc.contains("fp16") && precision_enabled(doc["fp16"], "fp16", r);
  bool bf16 = false;
  for (const char* name : {"bf16", "bfloat16"})  // bfloat16: DeepSpeed's older name
    if (doc.contains(name)) bf16 = bf16 || precision_enabled(doc[name], name, r);
  if (fp16 && bf16) r.fail("fp16.enabled", "fp16 and bf16 are both enabled; DeepSpeed allows one");
  info.param_dtype = fp16 ? DType::f16 : bf16 ? DType::bf16 : DType::f32;

  if (!doc.contains("zero_optimization")) return;
  const auto& zero = doc["zero_optimization"];
  if (zero.is_boolean()) {  // DeepSpeed's deprecated form: true means stage 1
    info.zero_stage = zero.get<bool>() ? 1 : 0;
    return;
  }
  r.section(zero, "zero_optimization");
  OffloadSection param, optimizer;
  std::vector<std::string> unknown;
  for (const auto& [name, value] : zero.items()) {
    const std::string key = "zero_optimization." + name;
    if (name == "stage") {
      info.zero_stage = static_cast<int>(r.integer(value, key, 3, "0, 1, 2 or 3"));
    } else if (name == "offload_param") {
      param = read_offload(value, key, kOffloadParamIgnored, r);
    } else if (name == "offload_optimizer") {
      optimizer = read_offload(value, key, kOffloadOptimizerIgnored, r);
    } else if (!contains(kZeroIgnored, name)) {
      unknown.push_back(key);
    }
  }
  if (!unknown.empty())
    log::warn(fmt::format("{}: ignoring keys DeepSpeed does not document: {}", r.source(), join(unknown)));
  if (info.zero_stage == 3) o.plan.policy = Policy::sharded;
  if (param.nvme && info.zero_stage != 3)
    log::warn(fmt::format("{}: zero_optimization.offload_param needs stage 3 in DeepSpeed (stage is {})",
                          r.source(), info.zero_stage));
  info.offload_param = param.nvme;
  info.offload_optimizer = optimizer.nvme;

  // The staging ring serves both sections: the larger count and the larger size win.
  // buffer_size counts elements: of the parameter dtype for offload_param (DeepSpeed's
  // partitioned_param_swapper allocates buffer_count x buffer_size elements of it), fp32
  // for offload_optimizer. Bytes are rounded up to a multiple of 4096.
  std::vector<std::string> roots;
  std::optional<std::uint64_t> count, bytes;
  std::optional<bool> pin;
  auto use = [&](const OffloadSection& s, std::size_t element_bytes) {
    if (!s.nvme) return;
    if (std::find(roots.begin(), roots.end(), s.nvme_path) == roots.end()) roots.push_back(s.nvme_path);
    if (s.buffer_count) count = std::max(count.value_or(0), *s.buffer_count);
    if (s.buffer_elements)
      bytes = std::max(bytes.value_or(0), align_up(*s.buffer_elements * element_bytes, kPage));
    if (s.pin_memory) pin = pin.value_or(false) || *s.pin_memory;
  };
  use(param, dtype_size(info.param_dtype));
  use(optimizer, dtype_size(DType::f32));
  if (!roots.empty()) o.roots = roots;
  if (count) o.buffer_count = static_cast<std::size_t>(*count);
  if (bytes) o.buffer_size = *bytes;
  if (pin) o.pin_memory = *pin;
}

}  // namespace

void SessionOptions::validate() const {
  aio.validate();
  if (backend.empty()) throw ConfigError("aio.backend: empty (libaio, io_uring or posix)");
  if (register_io && backend != "io_uring")
    throw ConfigError(fmt::format("aio.register: needs aio.backend io_uring, not '{}' (libaio and posix have no "
                                  "registered I/O)", backend));
  if (slots != 1 && slots != 2) throw ConfigError(fmt::format("swap.slots: {} is not 1 or 2", slots));
  if (prepare != "write" && prepare != "allocate")
    throw ConfigError(fmt::format("swap.prepare: '{}' is not one of write, allocate", prepare));
  if (buffer_count < 2 || buffer_count > kMaxBufferCount)
    throw ConfigError(fmt::format("swap.buffer_count: {} is not between 2 and {}", buffer_count, kMaxBufferCount));
  if (buffer_size == 0 || buffer_size > kMaxBufferSize || !is_aligned(buffer_size, kPage))
    throw ConfigError(fmt::format("swap.buffer_size: {} is not a positive multiple of {} (at most {})",
                                  buffer_size, kPage, kMaxBufferSize));
  if (!is_aligned(prefetch_bytes, kPage))
    throw ConfigError(fmt::format("swap.prefetch_bytes: {} is not a multiple of {}", prefetch_bytes, kPage));
  if (roots.empty()) throw ConfigError("swap.roots: no swap root given");
  for (const auto& root : roots)
    if (root.empty()) throw ConfigError("swap.roots: an empty directory name");
  if (job.empty() || job == "." || job == ".." || job.find('/') != std::string::npos ||
      job.find('\0') != std::string::npos)
    throw ConfigError(fmt::format("swap.job: '{}' is not a plain name (one path component)", job));
  const auto a = plan.alignment_bytes;
  if (a < kMinAlignment || a > kMaxAlignment || (a & (a - 1)) != 0)
    throw ConfigError(fmt::format("swap.alignment: {} is not a power of two between {} and {}", a,
                                  kMinAlignment, kMaxAlignment));
  if (buffer_size % a != 0)
    throw ConfigError(fmt::format("swap.buffer_size: {} is not a multiple of swap.alignment ({})", buffer_size, a));
  if (!(phase_timeout_s > 0) || !std::isfinite(phase_timeout_s) || phase_timeout_s > kMaxPhaseTimeoutS)
    throw ConfigError(fmt::format("swap.phase_timeout_s: {} is not a number of seconds in (0, {:g}]",
                                  phase_timeout_s, kMaxPhaseTimeoutS));
  try {
    (void)NodeKey::parse(node_key);
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("swap.node_key: {}", e.what()));
  }
}

nlohmann::json SessionOptions::to_json() const {
  return {{"aio",
           {{"block_size", aio.block_size},
            {"queue_depth", aio.queue_depth},
            {"intra_op_parallelism", aio.intra_op_parallelism},
            {"single_submit", aio.single_submit},
            {"overlap_events", aio.overlap_events},
            {"direct", std::string(to_string(aio.direct))},
            {"fsync", aio.fsync},
            {"backend", backend},
            {"register", register_io}}},
          {"swap",
           {{"roots", roots},
            {"catalog_dir", catalog_dir},
            {"create_roots", create_roots},
            {"overwrite", overwrite},
            {"job", job},
            {"layout", std::string(to_string(plan.layout))},
            {"policy", std::string(to_string(plan.policy))},
            {"shard_threshold", plan.shard_threshold_bytes},
            {"alignment", plan.alignment_bytes},
            {"slots", slots},
            {"buffer_count", buffer_count},
            {"buffer_size", buffer_size},
            {"prefetch_bytes", prefetch_bytes},
            {"pin_memory", pin_memory},
            {"verify", verify},
            {"checksum", std::string(checksum_name(checksum))},
            {"prepare", prepare},
            {"phase_timeout_s", phase_timeout_s},
            {"node_key", node_key}}}};
}

DeepSpeedInfo apply_config(SessionOptions& options, const nlohmann::json& doc, const std::string& source,
                           const std::vector<std::string>& extra_sections, bool log_ignored) {
  if (!doc.is_object()) throw ConfigError(fmt::format("{}: the config must be a JSON object", source));
  const Reader r(source);
  DeepSpeedInfo info;
  for (const auto& marker : kDeepSpeedMarkers)
    if (doc.contains(marker)) info.detected = true;
  auto extra = [&](const std::string& key) {
    return std::find(extra_sections.begin(), extra_sections.end(), key) != extra_sections.end();
  };

  // Applied to a copy: a document with an error leaves `options` as it was.
  SessionOptions out = options;
  for (const auto& [key, body] : doc.items()) {
    if (key == "aio" || key == "swap" || extra(key)) continue;
    if (!info.detected) {
      std::vector<std::string> known{"aio", "swap"};
      known.insert(known.end(), extra_sections.begin(), extra_sections.end());
      r.unknown_key(key, join(known) + "; or a DeepSpeed config");
    }
    if (key != "zero_optimization" && key != "fp16" && key != "bf16" && key != "bfloat16")
      info.ignored_keys.push_back(key);
  }
  if (doc.contains("aio")) apply_aio(out, doc["aio"], r);
  if (info.detected) apply_deepspeed(out, doc, r, info);
  if (doc.contains("swap")) apply_swap(out, doc["swap"], r);  // explicit swapcoord keys win
  if (log_ignored && !info.ignored_keys.empty())
    log::info(fmt::format("{}: ignoring DeepSpeed keys swapcoord does not use: {}", source,
                          join(info.ignored_keys)));
  options = std::move(out);
  return info;
}

nlohmann::json read_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(fmt::format("--config: '{}' is a directory", path));
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))  // a FIFO would block the open
    throw ConfigError(fmt::format("--config: '{}' is not a regular file", path));
  errno = 0;
  std::ifstream in(path);
  const int error = errno;
  if (!in)
    throw ConfigError(error != 0 ? errno_message(fmt::format("--config: cannot open '{}'", path), error)
                                 : fmt::format("--config: cannot open '{}'", path));
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("--config: '{}' is not valid JSON: {}", path, e.what()));
  }
}

std::uint64_t parse_size(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return ConfigError(fmt::format("{}: '{}' is not a size{} (examples: 4096, 4k, 1M, 1GiB)", what, text, why));
  };
  // Digits, then an optional unit of letters. Checked here because CLI11 hands the number
  // to strtoull with base 0 ("010" would be octal, "0x10" hex, "-1" would wrap).
  const auto digits_end = std::find_if(text.begin(), text.end(), [](char c) { return c < '0' || c > '9'; });
  const std::string_view digits(text.data(), static_cast<std::size_t>(digits_end - text.begin()));
  const std::string_view unit(text.data() + digits.size(), text.size() - digits.size());
  if (digits.empty() ||
      !std::all_of(unit.begin(), unit.end(), [](char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }))
    throw bad("");
  std::uint64_t number = 0;
  if (std::from_chars(digits.data(), digits.data() + digits.size(), number).ec != std::errc{})
    throw bad(" (too large)");
  // The unit through CLI11 (k = 1024, as kb, kib and ki; case-insensitive).
  std::string converted = std::to_string(number) + std::string(unit);
  try {
    static const CLI::AsSizeValue binary_units(false);
    const std::string error = binary_units(converted);
    if (!error.empty()) throw bad("");
  } catch (const CLI::Error& e) {
    const std::string message = e.what();
    throw bad(message.find("overflow") != std::string::npos ? " (too large)" : "");
  }
  std::uint64_t bytes = 0;
  const auto [end, ec] = std::from_chars(converted.data(), converted.data() + converted.size(), bytes);
  if (ec != std::errc{} || end != converted.data() + converted.size()) throw bad("");
  return bytes;
}

}  // namespace swapcoord
