#include "swapcoord/io/swap_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include <fmt/format.h>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/log.hpp"

namespace swapcoord {
namespace {

std::string parent_of(const std::string& path) {
  auto parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? std::string(".") : parent;
}

// Explains the errno of a failed open() in terms of the path.
[[noreturn]] void throw_open_error(const std::string& what, const std::string& path, int err) {
  std::string hint;
  if (err == ELOOP) hint = " (it is a symbolic link; swap files are opened with O_NOFOLLOW)";
  if (err == ENOENT && !std::filesystem::exists(parent_of(path)))
    hint = fmt::format(" (directory '{}' does not exist)", parent_of(path));
  if (err == EROFS) hint = " (read-only filesystem)";
  throw SystemError(fmt::format("{} '{}'{}", what, path, hint), err);
}

struct DirectAlignment {
  std::size_t memory = 0;
  std::size_t offset = 0;
};

DirectAlignment statx_alignment(int dirfd, const char* path, int flags) {
#ifdef STATX_DIOALIGN
  struct statx info{};
  if (::statx(dirfd, path, flags, STATX_DIOALIGN, &info) == 0 &&
      (info.stx_mask & STATX_DIOALIGN) != 0 && info.stx_dio_offset_align != 0) {
    return {info.stx_dio_mem_align, info.stx_dio_offset_align};
  }
#else
  (void)dirfd, (void)path, (void)flags;
#endif
  return {kDefaultAlignmentBytes, kDefaultAlignmentBytes};
}

// A swap file must be a regular file: opened with O_NONBLOCK (so that a FIFO or a device in
// its place does not block the open), checked, then made blocking again.
UniqueFd regular_file(UniqueFd fd, const std::string& path) {
  struct stat info{};
  if (::fstat(fd.get(), &info) != 0) throw SystemError(fmt::format("cannot stat swap file '{}'", path), errno);
  if (!S_ISREG(info.st_mode))
    throw Error(fmt::format("swap file '{}' is not a regular file (a {}); swapcoord reads and writes only "
                            "regular files", path,
                            S_ISFIFO(info.st_mode) ? "FIFO" : S_ISDIR(info.st_mode) ? "directory"
                            : S_ISCHR(info.st_mode) || S_ISBLK(info.st_mode) ? "device" : "special file"));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0)
    throw SystemError(fmt::format("cannot clear O_NONBLOCK on swap file '{}'", path), errno);
  return fd;
}

// Opens with O_DIRECT as `mode` says; returns the descriptor and whether it is direct.
std::pair<UniqueFd, bool> open_with_mode(const std::string& path, int flags, DirectMode mode,
                                         const char* what) {
  flags |= O_NONBLOCK;
  if (mode != DirectMode::off) {
    const bool created_now = (flags & O_CREAT) != 0 && ::access(path.c_str(), F_OK) != 0;
    UniqueFd fd(::open(path.c_str(), flags | O_DIRECT, 0600));
    if (fd) return {regular_file(std::move(fd), path), true};
    const int err = errno;
    if (err != EINVAL || mode == DirectMode::on) {
      // O_CREAT may have made the file before O_DIRECT was refused: do not leave it.
      if (err == EINVAL && created_now) ::unlink(path.c_str());
      if (err == EINVAL)
        throw SystemError(fmt::format("{} '{}' with O_DIRECT (direct=on), which its filesystem "
                                      "refuses; use direct=auto or off", what, path), err);
      throw_open_error(what, path, err);
    }
    const auto dir = parent_of(path);
    log::warn_once("direct:" + dir,
                   fmt::format("the filesystem of '{}' refuses O_DIRECT; swap files there use "
                               "buffered I/O (direct=auto)", path));
  }
  UniqueFd fd(::open(path.c_str(), flags, 0600));
  if (!fd) throw_open_error(what, path, errno);
  return {regular_file(std::move(fd), path), false};
}

}  // namespace

OpenSwapFile::OpenSwapFile(std::string path, UniqueFd fd, bool direct, bool writable)
    : _path(std::move(path)), _fd(std::move(fd)), _direct(direct), _writable(writable) {
  if (_direct) {
    const auto alignment = statx_alignment(_fd.get(), "", AT_EMPTY_PATH);
    _memory_alignment = std::max<std::size_t>(alignment.memory, 1);
    _offset_alignment = std::max<std::size_t>(alignment.offset, 1);
  }
}

const OpenSwapFile& SwapFile::state() const noexcept {
  static const OpenSwapFile closed;  // what a moved-from SwapFile reports
  return _file ? *_file : closed;
}

SwapFile SwapFile::create(const std::string& path, std::uint64_t size_bytes, DirectMode direct) {
  auto [fd, is_direct] = open_with_mode(
      path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, direct, "cannot create swap file");
  struct stat info{};
  if (::fstat(fd.get(), &info) != 0)
    throw SystemError(fmt::format("cannot stat swap file '{}'", path), errno);
  if (static_cast<std::uint64_t>(info.st_size) > size_bytes &&
      ::ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0)
    throw SystemError(fmt::format("cannot truncate swap file '{}' to {} bytes", path, size_bytes),
                      errno);
  if (size_bytes > 0 && ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size_bytes)) != 0) {
    const int err = errno;
    if (err != EOPNOTSUPP)
      throw SystemError(
          fmt::format("cannot preallocate {} bytes for swap file '{}'", size_bytes, path), err);
    if (::ftruncate(fd.get(), static_cast<off_t>(size_bytes)) != 0)
      throw SystemError(fmt::format("cannot size swap file '{}' to {} bytes", path, size_bytes),
                        errno);
  }
  return SwapFile(std::shared_ptr<const OpenSwapFile>(
      new OpenSwapFile(path, std::move(fd), is_direct, true)));
}

SwapFile SwapFile::open(const std::string& path, DirectMode direct, bool writable) {
  const int flags = (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC;
  auto [fd, is_direct] = open_with_mode(path, flags, direct, "cannot open swap file");
  return SwapFile(std::shared_ptr<const OpenSwapFile>(
      new OpenSwapFile(path, std::move(fd), is_direct, writable)));
}

std::uint64_t OpenSwapFile::size_bytes() const {
  struct stat info{};
  if (::fstat(_fd.get(), &info) != 0)
    throw SystemError(fmt::format("cannot stat swap file '{}'", _path), errno);
  return static_cast<std::uint64_t>(info.st_size);
}

void OpenSwapFile::sync() const {
  while (::fdatasync(_fd.get()) != 0) {
    if (errno != EINTR) throw SystemError(fmt::format("fdatasync of '{}' failed", _path), errno);
  }
}

std::size_t query_direct_alignment(const std::string& directory) {
  const auto alignment = statx_alignment(AT_FDCWD, directory.c_str(), 0);
  // A directory reports no DIO alignment on most filesystems: then use the default.
  return std::max({alignment.memory, alignment.offset, std::size_t{1}});
}

}  // namespace swapcoord
