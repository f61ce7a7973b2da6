#pragma once
// Model descriptions for `swapcoord run`: presets made of real transformer tensor shapes,
// or a JSON tensor list.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/coord/plan.hpp"

namespace swapcoord::app {

// What is swapped: fp16/bf16 parameters, the fp32 optimizer state (master weights and
// Adam's exp_avg and exp_avg_sq, as ZeRO-Infinity offloads it), or both.
enum class SwapWhat { params, optimizer, both };
SwapWhat parse_swap_what(std::string_view text);  // ConfigError naming the value
std::string_view to_string(SwapWhat what);

std::vector<std::string> preset_names();
// Every hidden, FFN, vocabulary and position dimension is multiplied by `scale` (rounded
// up to a multiple of 8); the layer count stays. ConfigError for an unknown preset.
// `param_dtype` replaces the preset's parameter dtype (f16 for GPT, bf16 for Llama), e.g.
// with what a DeepSpeed config's fp16 / bf16 section says (RunConfig::deepspeed); the
// optimizer state stays f32.
std::vector<TensorSpec> preset_tensors(std::string_view preset, double scale, SwapWhat what,
                                       std::optional<DType> param_dtype = std::nullopt);
// {"tensors": [{"name": "w", "shape": [1024, 1024], "dtype": "f16"}, ...]} (or the bare
// array). The listed tensors are the parameters: `what` adds their optimizer state as for
// presets. ConfigError naming the file and the entry for anything malformed.
// `param_dtype` is the dtype of entries that name none (default f32); an entry's own
// "dtype" is kept.
std::vector<TensorSpec> load_tensor_list(const std::string& path, SwapWhat what,
                                         std::optional<DType> param_dtype = std::nullopt);

}  // namespace swapcoord::app
