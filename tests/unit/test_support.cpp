#include "test_support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <linux/magic.h>

#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/common/mix.hpp"

namespace swapcoord::test {
namespace {

std::string make_temp_dir(const std::string& under) {
  std::string base = under;
  if (base.empty()) {
    const char* env = std::getenv("SWAPCOORD_TEST_DIR");
    base = env && *env ? env : std::filesystem::temp_directory_path().string();
  }
  std::filesystem::create_directories(base);
  std::string pattern = base + "/swapcoord-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("mkdtemp under " + base + " failed");
  return pattern;
}

int run(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()); }

}  // namespace

TempDir::TempDir(const std::string& under) : _path(make_temp_dir(under)) {}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(_path, ignored);
}

void fill_pattern(std::span<std::byte> bytes, std::uint64_t seed, std::uint64_t start) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const std::uint64_t pos = start + i;
    bytes[i] = static_cast<std::byte>(mix64(seed * 0x9e3779b97f4a7c15ULL + pos / 8) >> (8 * (pos % 8)));
  }
}

std::size_t count_pattern_mismatches(std::span<const std::byte> bytes, std::uint64_t seed,
                                     std::uint64_t start) {
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const std::uint64_t pos = start + i;
    const auto want = static_cast<std::byte>(mix64(seed * 0x9e3779b97f4a7c15ULL + pos / 8) >> (8 * (pos % 8)));
    wrong += bytes[i] != want;
  }
  return wrong;
}

std::vector<std::byte> read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  std::vector<std::byte> out(static_cast<std::size_t>(::lseek(fd, 0, SEEK_END)));
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  EXPECT_EQ(done, out.size());
  return out;
}

LoopFilesystem::LoopFilesystem(std::size_t size_mib, bool read_only)
    : _image(_dir.file("fs.img")), _mount_point(_dir.file("mnt")) {
  if (::geteuid() != 0) {
    _error = "mounting a loop filesystem needs root";
    return;
  }
  std::filesystem::create_directories(_mount_point);
  if (run("truncate -s " + std::to_string(size_mib) + "M " + _image) != 0 ||
      run("mkfs.ext4 -q -F " + _image) != 0) {
    _error = "mkfs.ext4 failed (is e2fsprogs installed?)";
    return;
  }
  const std::string options = read_only ? "loop,ro" : "loop";
  if (run("mount -o " + options + " " + _image + " " + _mount_point) != 0) {
    _error = "mount -o loop failed (no loop devices or no privilege in this container)";
    return;
  }
  _mounted = true;
}

LoopFilesystem::~LoopFilesystem() {
  if (_mounted) run("umount -l " + _mount_point);
}

std::string backend_unavailable(const std::string& name) {
  for (const auto& info : engine_infos())
    if (info.name == name) return info.available ? std::string() : name + ": " + info.reason;
  return name + ": not a known backend";
}

std::string tmpfs_dir() {
  struct statfs info{};
  if (::statfs("/dev/shm", &info) == 0 && info.f_type == TMPFS_MAGIC) return "/dev/shm";
  return {};
}

}  // namespace swapcoord::test
