#pragma once
// A non-owning view of a tensor's memory. It lives in `common` rather than in the swap
// layer (where DESIGN.md lists it) because the buffer layer already hands out views.
#include <cstddef>
#include <span>
#include <string>

#include "swapcoord/common/dtype.hpp"

namespace swapcoord {

struct Device {
  enum class Kind { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index) { return {Kind::cuda, index}; }
  bool is_cpu() const { return kind == Kind::cpu; }
  friend bool operator==(const Device&, const Device&) = default;
};

std::string to_string(const Device& device);

struct TensorView {
  void* data = nullptr;
  std::size_t numel = 0;
  DType dtype = DType::u8;
  Device device{};

  std::size_t element_size() const noexcept { return dtype_size(dtype); }
  std::size_t size_bytes() const noexcept { return numel * dtype_size(dtype); }
  std::byte* bytes() const noexcept { return static_cast<std::byte*>(data); }
  std::span<std::byte> byte_span() const noexcept { return {bytes(), size_bytes()}; }
  template <class T>
  std::span<T> as() const noexcept { return {static_cast<T*>(data), size_bytes() / sizeof(T)}; }
  // The first `count` elements (no check; see sized_view for the checked form).
  TensorView first(std::size_t count) const noexcept { return {data, count, dtype, device}; }
};

}  // namespace swapcoord
