#pragma once
// Helpers shared by the unit tests: temporary directories on a real filesystem, byte
// patterns, reading a file back, and a loop-mounted small filesystem for fault injection.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace swapcoord::test {

// A fresh directory under $SWAPCOORD_TEST_DIR (default: the system temp dir, which is
// disk-backed on the CI machine, so O_DIRECT works), removed with its contents.
class TempDir {
 public:
  explicit TempDir(const std::string& under = "");
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return _path; }
  std::string file(const std::string& name) const { return _path + "/" + name; }

 private:
  std::string _path;
};

// Deterministic bytes that differ per (seed, position).
void fill_pattern(std::span<std::byte> bytes, std::uint64_t seed, std::uint64_t start = 0);
// Number of bytes that differ from fill_pattern(seed, start).
std::size_t count_pattern_mismatches(std::span<const std::byte> bytes, std::uint64_t seed,
                                     std::uint64_t start = 0);

// The whole file at `path`, read with pread; a failure to open it or a short read is a
// (non-fatal) gtest failure.
std::vector<std::byte> read_whole_file(const std::string& path);

// A small ext4 filesystem in a file, loop-mounted for the lifetime of the object.
// mount_error() says why it could not be made (not root, no loop devices, ...).
class LoopFilesystem {
 public:
  LoopFilesystem(std::size_t size_mib, bool read_only = false);
  LoopFilesystem(const LoopFilesystem&) = delete;
  LoopFilesystem& operator=(const LoopFilesystem&) = delete;
  ~LoopFilesystem();
  bool mounted() const { return _mounted; }
  const std::string& mount_error() const { return _error; }
  const std::string& path() const { return _mount_point; }

 private:
  TempDir _dir;
  std::string _image;
  std::string _mount_point;
  bool _mounted = false;
  std::string _error;
};

// Empty when the I/O backend `name` is compiled in and accepted by the kernel; else why not
// (for GTEST_SKIP).
std::string backend_unavailable(const std::string& name);

// A mount point of a tmpfs (for the direct=auto fallback); /dev/shm when it is tmpfs,
// else empty.
std::string tmpfs_dir();

}  // namespace swapcoord::test
