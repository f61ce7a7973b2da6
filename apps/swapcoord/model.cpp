#include "model.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "swapcoord/common/error.hpp"

namespace swapcoord::app {
namespace {

struct Preset {
  const char* name;
  std::uint64_t hidden, layers, ffn, vocab, positions;
  bool llama;  // RMSNorm, no biases, gated MLP, untied output head, bf16
};

constexpr Preset kPresets[] = {
    {"gpt-125m", 768, 12, 3072, 50304, 2048, false},
    {"gpt-1.3b", 2048, 24, 8192, 50304, 2048, false},
    {"gpt-6.7b", 4096, 32, 16384, 50304, 2048, false},
    {"llama-7b", 4096, 32, 11008, 32000, 0, true},
};

std::uint64_t scaled(std::uint64_t dim, double scale) {
  const auto value = static_cast<std::uint64_t>(std::ceil(static_cast<double>(dim) * scale / 8.0)) * 8;
  return std::max<std::uint64_t>(value, 8);
}

// The parameters, then (by `what`) the optimizer state of each.
std::vector<TensorSpec> with_state(std::vector<TensorSpec> params, SwapWhat what) {
  std::vector<TensorSpec> out;
  if (what != SwapWhat::optimizer) out = params;
  if (what != SwapWhat::params) {
    for (const auto& p : params)
      for (const char* suffix : {".master", ".exp_avg", ".exp_avg_sq"})
        out.push_back({p.name + suffix, p.shape, DType::f32});
  }
  return out;
}

}  // namespace

SwapWhat parse_swap_what(std::string_view text) {
  if (text == "params") return SwapWhat::params;
  if (text == "optimizer") return SwapWhat::optimizer;
  if (text == "both") return SwapWhat::both;
  throw ConfigError(fmt::format("run.swap: '{}' is not one of params, optimizer, both", text));
}

std::string_view to_string(SwapWhat what) {
  switch (what) {
    case SwapWhat::params: return "params";
    case SwapWhat::optimizer: return "optimizer";
    case SwapWhat::both: return "both";
  }
  return "?";
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

std::vector<TensorSpec> preset_tensors(std::string_view name, double scale, SwapWhat what,
                                       std::optional<DType> param_dtype) {
  if (!(scale > 0) || scale > 4)
    throw ConfigError(fmt::format("run.scale: {} is not in (0, 4]", scale));
  const Preset* preset = nullptr;
  for (const auto& p : kPresets)
    if (name == p.name) preset = &p;
  if (preset == nullptr)
    throw ConfigError(fmt::format("run.preset: unknown preset '{}' (known: gpt-125m, gpt-1.3b, "
                                  "gpt-6.7b, llama-7b)", name));
  const std::uint64_t h = scaled(preset->hidden, scale), f = scaled(preset->ffn, scale),
                      v = scaled(preset->vocab, scale);
  const DType dtype = param_dtype.value_or(preset->llama ? DType::bf16 : DType::f16);
  std::vector<TensorSpec> params;
  auto add = [&](std::string n, std::vector<std::uint64_t> shape) {
    params.push_back({std::move(n), std::move(shape), dtype});
  };
  if (preset->llama) {
    add("model.embed_tokens.weight", {v, h});
    for (std::uint64_t l = 0; l < preset->layers; ++l) {
      const std::string p = fmt::format("model.layers.{}.", l);
      add(p + "input_layernorm.weight", {h});
      for (const char* w : {"q_proj", "k_proj", "v_proj", "o_proj"})
        add(p + "self_attn." + w + ".weight", {h, h});
      add(p + "post_attention_layernorm.weight", {h});
      add(p + "mlp.gate_proj.weight", {f, h});
      add(p + "mlp.up_proj.weight", {f, h});
      add(p + "mlp.down_proj.weight", {h, f});
    }
    add("model.norm.weight", {h});
    add("lm_head.weight", {v, h});
  } else {
    add("transformer.wte.weight", {v, h});
    add("transformer.wpe.weight", {scaled(preset->positions, scale), h});
    for (std::uint64_t l = 0; l < preset->layers; ++l) {
      const std::string p = fmt::format("transformer.h.{}.", l);
      add(p + "ln_1.weight", {h});
      add(p + "ln_1.bias", {h});
      add(p + "attn.c_attn.weight", {3 * h, h});
      add(p + "attn.c_attn.bias", {3 * h});
      add(p + "attn.c_proj.weight", {h, h});
      add(p + "attn.c_proj.bias", {h});
      add(p + "ln_2.weight", {h});
      add(p + "ln_2.bias", {h});
      add(p + "mlp.c_fc.weight", {f, h});
      add(p + "mlp.c_fc.bias", {f});
      add(p + "mlp.c_proj.weight", {h, f});
      add(p + "mlp.c_proj.bias", {h});
    }
    add("transformer.ln_f.weight", {h});
    add("transformer.ln_f.bias", {h});
  }
  return with_state(std::move(params), what);
}

std::vector<TensorSpec> load_tensor_list(const std::string& path, SwapWhat what,
                                         std::optional<DType> param_dtype) {
  std::error_code ec;  // a directory would read as an I/O error, a FIFO would block the open
  if (std::filesystem::is_directory(path, ec)) throw ConfigError(fmt::format("run.tensors: '{}' is a directory", path));
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    throw ConfigError(fmt::format("run.tensors: '{}' is not a regular file", path));
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("run.tensors: cannot open '{}'", path));
  nlohmann::json doc;
  try {
    in >> doc;
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("run.tensors: '{}' is not valid JSON: {}", path, e.what()));
  }
  const nlohmann::json* list = &doc;
  if (doc.is_object()) {
    if (!doc.contains("tensors") || doc.size() != 1)
      throw ConfigError(fmt::format("run.tensors: '{}' must hold {{\"tensors\": [...]}} or a list", path));
    list = &doc["tensors"];
  }
  if (!list->is_array() || list->empty())
    throw ConfigError(fmt::format("run.tensors: '{}' has no tensor list", path));
  std::vector<TensorSpec> params;
  std::map<std::string, std::size_t> entry_of_name;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const auto& t = (*list)[i];
    const auto where = fmt::format("run.tensors: '{}' entry {}", path, i);
    if (!t.is_object()) throw ConfigError(where + " is not an object");
    for (const auto& [key, value] : t.items())
      if (key != "name" && key != "shape" && key != "dtype")
        throw ConfigError(fmt::format("{}: unknown key '{}' (known: name, shape, dtype)", where, key));
    if (!t.contains("name") || !t["name"].is_string() || t["name"].get<std::string>().empty())
      throw ConfigError(where + ": 'name' must be a non-empty string");
    if (!t.contains("shape") || !t["shape"].is_array())
      throw ConfigError(where + ": 'shape' must be a list of non-negative integers");
    TensorSpec spec;
    spec.name = t["name"].get<std::string>();
    if (const auto [at, added] = entry_of_name.emplace(spec.name, i); !added)
      throw ConfigError(fmt::format("{}: the name '{}' is taken by entry {}", where, spec.name, at->second));
    for (const auto& d : t["shape"]) {
      if (!d.is_number_unsigned())
        throw ConfigError(where + ": 'shape' must be a list of non-negative integers");
      spec.shape.push_back(d.get<std::uint64_t>());
    }
    spec.dtype = param_dtype.value_or(DType::f32);
    if (t.contains("dtype")) {
      if (!t["dtype"].is_string())
        throw ConfigError(fmt::format("{}: 'dtype' {} is not a string such as \"f32\"", where, t["dtype"].dump()));
      try {
        spec.dtype = parse_dtype(t["dtype"].get<std::string>());
      } catch (const ConfigError& e) {
        throw ConfigError(fmt::format("{}: {}", where, e.what()));
      }
    }
    params.push_back(std::move(spec));
  }
  return with_state(std::move(params), what);
}

}  // namespace swapcoord::app
