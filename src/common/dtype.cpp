#include "swapcoord/common/dtype.hpp"

#include <string>

#include "swapcoord/common/error.hpp"
#include "swapcoord/common/tensor_view.hpp"

namespace swapcoord {
namespace {

struct DTypeEntry {
  DType dtype;
  std::size_t size;
  std::string_view name;
  std::string_view torch_name;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::u8, 1, "u8", "uint8"},       {DType::i8, 1, "i8", "int8"},
    {DType::i16, 2, "i16", "int16"},     {DType::i32, 4, "i32", "int32"},
    {DType::i64, 8, "i64", "int64"},     {DType::f16, 2, "f16", "float16"},
    {DType::bf16, 2, "bf16", "bfloat16"}, {DType::f32, 4, "f32", "float32"},
    {DType::f64, 8, "f64", "float64"},
};

const DTypeEntry& entry(DType dtype) noexcept { return kDTypes[static_cast<int>(dtype)]; }

}  // namespace

std::size_t dtype_size(DType dtype) noexcept { return entry(dtype).size; }
std::string_view dtype_name(DType dtype) noexcept { return entry(dtype).name; }

DType parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (name == e.name || name == e.torch_name) return e.dtype;
  }
  if (name == "half" || name == "fp16") return DType::f16;
  if (name == "float" || name == "fp32") return DType::f32;
  if (name == "double") return DType::f64;
  throw ConfigError("dtype '" + std::string(name) +
                    "' is not one of u8, i8, i16, i32, i64, f16, bf16, f32, f64");
}

std::string to_string(const Device& device) {
  return device.is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(device.index);
}

}  // namespace swapcoord
