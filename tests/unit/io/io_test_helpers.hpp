#pragma once
// Helpers shared by the io-layer tests: page-aligned buffers, plain pread/pwrite access to
// a file (so the engine is checked against the kernel, not only against itself), and
// backend availability. Header-only (inline) because the CMake glob builds every .cpp
// under tests/unit/io/ into unit_io; file-local helpers live in anonymous namespaces.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "test_support.hpp"

namespace swapcoord::io_test {

inline constexpr std::uint64_t kKiB = 1024;
inline constexpr std::uint64_t kMiB = 1024 * kKiB;
inline constexpr std::size_t kPage = 4096;

// The backends the registry knows, in registry order (the parameter of most suites).
inline const std::vector<std::string>& backend_names() {
  static const std::vector<std::string> names{"libaio", "io_uring", "posix"};
  return names;
}

// `size_bytes` of memory whose first byte is `misalign` bytes past a page boundary
// (std::aligned_alloc(4096, ...)); freed on destruction. Filled with 0xEE so that bytes a
// read never delivered cannot pass for data.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t size_bytes, std::size_t misalign = 0)
      : _size(size_bytes), _misalign(misalign) {
    const std::size_t total = align_up(size_bytes + misalign, kPage);
    _base = static_cast<std::byte*>(std::aligned_alloc(kPage, total == 0 ? kPage : total));
    if (_base == nullptr) throw std::bad_alloc();
    std::memset(_base, 0xEE, total == 0 ? kPage : total);
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(_base); }

  std::byte* data() const { return _base + _misalign; }
  std::size_t size() const { return _size; }
  std::span<std::byte> span() const { return {data(), _size}; }
  std::span<const std::byte> cspan() const { return {data(), _size}; }

 private:
  std::byte* _base = nullptr;
  std::size_t _size = 0;
  std::size_t _misalign = 0;
};

// Reads `size_bytes` at `offset` of `path` with plain buffered pread (resuming short
// reads); fewer bytes when the file ends first.
inline std::vector<std::byte> pread_file(const std::string& path, std::uint64_t offset,
                                         std::uint64_t size_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("test: open " + path + ": " + std::strerror(errno));
  std::vector<std::byte> bytes(size_bytes);
  std::uint64_t done = 0;
  while (done < size_bytes) {
    const ssize_t n = ::pread(fd, bytes.data() + done, size_bytes - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("test: pread " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    done += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

// Writes `bytes` at `offset` of `path` with plain buffered pwrite.
inline void pwrite_file(const std::string& path, std::uint64_t offset,
                        std::span<const std::byte> bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("test: open " + path + ": " + std::strerror(errno));
  std::uint64_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("test: pwrite " + path + ": " + std::strerror(err));
    }
    done += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
}

// Number of positions where `a` and `b` differ (plus the length difference).
inline std::size_t count_differences(std::span<const std::byte> a, std::span<const std::byte> b) {
  const std::size_t common = std::min(a.size(), b.size());
  std::size_t wrong = std::max(a.size(), b.size()) - common;
  if (std::memcmp(a.data(), b.data(), common) == 0) return wrong;
  for (std::size_t i = 0; i < common; ++i) wrong += a[i] != b[i];
  return wrong;
}

// Why `name` cannot be used here ("" when it can), as engine_infos() reports it.
inline std::string engine_unavailable_reason(const std::string& name) {
  for (const auto& info : engine_infos()) {
    if (info.name != name) continue;
    return info.available ? std::string() : "I/O backend " + name + " unavailable: " + info.reason;
  }
  return "I/O backend " + name + " is not in engine_infos()";
}

// make_engine, or nullptr with `why` set where the backend is unavailable (not compiled,
// or the kernel refuses io_uring). A refusal of libaio or posix is not excused.
inline std::unique_ptr<IoEngine> make_engine_or_null(const std::string& name,
                                                     const AioConfig& config, std::string& why) {
  why = engine_unavailable_reason(name);
  if (!why.empty()) return nullptr;
  try {
    return make_engine(name, config);
  } catch (const SystemError& e) {
    if (name != "io_uring") throw;
    why = std::string("the kernel refused io_uring: ") + e.what();
    return nullptr;
  }
}

// Returns the exception of type E that `f` throws, or nullopt when it returns normally.
// Exceptions of other types propagate (gtest then reports their type and message).
template <class E, class F>
std::optional<E> catch_as(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

inline IoRequest read_request(SwapFile& file, void* buffer, std::uint64_t offset,
                              std::uint64_t size_bytes) {
  return IoRequest{IoOp::read, &file, buffer, offset, size_bytes};
}
inline IoRequest write_request(SwapFile& file, void* buffer, std::uint64_t offset,
                               std::uint64_t size_bytes) {
  return IoRequest{IoOp::write, &file, buffer, offset, size_bytes};
}

// "io_uring" -> "io_uring" (already a valid gtest name part); kept as a function so the
// parameter name generators read alike.
inline std::string name_part(const std::string& text) {
  std::string out;
  for (char c : text) out += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '_';
  return out;
}

}  // namespace swapcoord::io_test
