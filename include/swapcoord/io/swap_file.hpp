#pragma once
// An open swap file: the descriptor, its path (for error messages), whether it is
// O_DIRECT and the alignment that direct I/O on it needs.
#include <cstddef>
#include <cstdint>
#include <string>

#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/unique_fd.hpp"

namespace swapcoord {

class SwapFile {
 public:
  // Creates (or reuses) `path` with mode 0600 and O_NOFOLLOW, opened read-write, and
  // preallocates it to `size_bytes` (fallocate; a larger existing file is truncated).
  static SwapFile create(const std::string& path, std::uint64_t size_bytes,
                         DirectMode direct = DirectMode::automatic);
  // Opens an existing swap file (O_NOFOLLOW), read-only unless `writable`.
  static SwapFile open(const std::string& path, DirectMode direct = DirectMode::automatic,
                       bool writable = false);

  SwapFile(SwapFile&&) noexcept = default;
  SwapFile& operator=(SwapFile&&) noexcept = default;
  SwapFile(const SwapFile&) = delete;
  SwapFile& operator=(const SwapFile&) = delete;
  ~SwapFile() = default;

  const std::string& path() const noexcept { return _path; }
  int fd() const noexcept { return _fd.get(); }
  bool direct() const noexcept { return _direct; }
  bool writable() const noexcept { return _writable; }
  // Direct I/O needs buffer addresses aligned to memory_alignment() and offsets and
  // lengths aligned to offset_alignment(); both are 1 for buffered files.
  std::size_t memory_alignment() const noexcept { return _direct ? _memory_alignment : 1; }
  std::size_t offset_alignment() const noexcept { return _direct ? _offset_alignment : 1; }
  // The file's current size (fstat).
  std::uint64_t size_bytes() const;
  // fdatasync; throws SystemError naming the path.
  void sync() const;

 private:
  SwapFile(std::string path, UniqueFd fd, bool direct, bool writable);

  std::string _path;
  UniqueFd _fd;
  bool _direct = false;
  bool _writable = false;
  std::size_t _memory_alignment = 1;
  std::size_t _offset_alignment = 1;
};

// The direct-I/O alignment of files in `directory` (statx STATX_DIOALIGN, the larger of
// the memory and offset alignments); kDefaultAlignmentBytes when the kernel or
// filesystem does not say.
std::size_t query_direct_alignment(const std::string& directory);

}  // namespace swapcoord
