#pragma once
// An open swap file: the descriptor, its path (for error messages), whether it is
// O_DIRECT and the alignment that direct I/O on it needs.
//
// The open descriptor lives in an OpenSwapFile shared by the SwapFile that opened it and
// every SwapFileRef to it (the `file` of an IoRequest or a SwapLocation). A SwapFile can
// therefore be moved (into a vector that grows, out of a function) or destroyed while
// requests and locations that name it exist: they keep the descriptor open and valid
// until the last of them goes, and never point at a moved or freed object.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/unique_fd.hpp"

namespace swapcoord {

class SwapFile;
class SwapFileRef;

// The shared, immutable part of an open swap file. Made only by SwapFile.
class OpenSwapFile {
 public:
  OpenSwapFile(const OpenSwapFile&) = delete;
  OpenSwapFile& operator=(const OpenSwapFile&) = delete;

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
  friend class SwapFile;
  OpenSwapFile() = default;  // the closed file a moved-from SwapFile reports
  OpenSwapFile(std::string path, UniqueFd fd, bool direct, bool writable);

  std::string _path;
  UniqueFd _fd;
  bool _direct = false;
  bool _writable = false;
  std::size_t _memory_alignment = 1;
  std::size_t _offset_alignment = 1;
};

class SwapFile {
 public:
  // Creates (or reuses) `path` with mode 0600 and O_NOFOLLOW, opened read-write, and
  // preallocates it to `size_bytes` (fallocate; a larger existing file is truncated).
  static SwapFile create(const std::string& path, std::uint64_t size_bytes,
                         DirectMode direct = DirectMode::automatic);
  // Opens an existing swap file (O_NOFOLLOW), read-only unless `writable`.
  static SwapFile open(const std::string& path, DirectMode direct = DirectMode::automatic,
                       bool writable = false);

  // Move-only. A moved-from SwapFile is closed (fd() == -1, empty path); references
  // taken before the move still reach the open file.
  SwapFile(SwapFile&&) noexcept = default;
  SwapFile& operator=(SwapFile&&) noexcept = default;
  SwapFile(const SwapFile&) = delete;
  SwapFile& operator=(const SwapFile&) = delete;
  ~SwapFile() = default;

  const std::string& path() const noexcept { return state().path(); }
  int fd() const noexcept { return state().fd(); }
  bool direct() const noexcept { return state().direct(); }
  bool writable() const noexcept { return state().writable(); }
  std::size_t memory_alignment() const noexcept { return state().memory_alignment(); }
  std::size_t offset_alignment() const noexcept { return state().offset_alignment(); }
  std::uint64_t size_bytes() const { return state().size_bytes(); }
  void sync() const { state().sync(); }

 private:
  friend class SwapFileRef;
  explicit SwapFile(std::shared_ptr<const OpenSwapFile> file) noexcept : _file(std::move(file)) {}
  const OpenSwapFile& state() const noexcept;

  std::shared_ptr<const OpenSwapFile> _file;
};

// What an IoRequest or a SwapLocation holds: shared ownership of an open swap file
// (a SwapFile* or SwapFile& converts to it), or nothing. Copying it costs an atomic
// increment, never an allocation.
class SwapFileRef {
 public:
  SwapFileRef() noexcept = default;
  SwapFileRef(std::nullptr_t) noexcept {}  // NOLINT(google-explicit-constructor)
  // Implicit so that `IoRequest{op, &file, ...}` and `SwapLocation{&file, ...}` read as
  // before; a null pointer or a moved-from SwapFile gives an empty reference.
  SwapFileRef(const SwapFile* file) noexcept  // NOLINT(google-explicit-constructor)
      : _file(file ? file->_file : nullptr) {}
  SwapFileRef(const SwapFile& file) noexcept : _file(file._file) {}  // NOLINT

  const OpenSwapFile* get() const noexcept { return _file.get(); }
  const OpenSwapFile* operator->() const noexcept { return _file.get(); }
  const OpenSwapFile& operator*() const noexcept { return *_file; }
  explicit operator bool() const noexcept { return _file != nullptr; }

  // Two references are equal when they share one open file.
  friend bool operator==(const SwapFileRef& a, const SwapFileRef& b) noexcept {
    return a._file == b._file;
  }
  friend bool operator==(const SwapFileRef& a, std::nullptr_t) noexcept { return !a._file; }

 private:
  std::shared_ptr<const OpenSwapFile> _file;
};

// The direct-I/O alignment of files in `directory` (statx STATX_DIOALIGN, the larger of
// the memory and offset alignments); kDefaultAlignmentBytes when the kernel or
// filesystem does not say.
std::size_t query_direct_alignment(const std::string& directory);

}  // namespace swapcoord
