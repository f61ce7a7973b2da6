#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace swapcoord {

// Element types of swapped tensors (the ones training jobs offload).
enum class DType : std::uint8_t { u8, i8, i16, i32, i64, f16, bf16, f32, f64 };

std::size_t dtype_size(DType dtype) noexcept;
std::string_view dtype_name(DType dtype) noexcept;
// Accepts the names above and the PyTorch spellings (float32, float16, bfloat16, ...);
// throws ConfigError naming the value otherwise.
DType parse_dtype(std::string_view name);

}  // namespace swapcoord
