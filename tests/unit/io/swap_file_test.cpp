// SwapFile and UniqueFd: how swap files are created, opened, sized and aligned, and the
// errors a user gets for a missing directory, a symbolic link, a read-only filesystem and
// a filesystem without O_DIRECT (tmpfs before Linux 6.6, ramfs).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <type_traits>

#include "io_test_helpers.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/io/unique_fd.hpp"
#include "test_support.hpp"

namespace swapcoord {

// Ownership rules, pinned at compile time (HighFive's test_nothrow_movable.cpp).
static_assert(std::is_nothrow_move_constructible_v<UniqueFd>);
static_assert(std::is_nothrow_move_assignable_v<UniqueFd>);
static_assert(!std::is_copy_constructible_v<UniqueFd>);
static_assert(!std::is_copy_assignable_v<UniqueFd>);
static_assert(std::is_nothrow_move_constructible_v<SwapFile>);
static_assert(std::is_nothrow_move_assignable_v<SwapFile>);
static_assert(!std::is_copy_constructible_v<SwapFile>);
static_assert(!std::is_copy_assignable_v<SwapFile>);
static_assert(!std::is_convertible_v<int, UniqueFd>, "UniqueFd(int) must be explicit");

namespace {

using ::testing::HasSubstr;
using namespace io_test;
using test::count_pattern_mismatches;
using test::fill_pattern;
using test::LoopFilesystem;
using test::TempDir;

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

struct DioAlignment {
  std::size_t memory = 0;
  std::size_t offset = 0;
};

// The kernel's own answer (statx STATX_DIOALIGN), or the documented 4096 fallback.
DioAlignment kernel_dio_alignment(const std::string& path) {
#ifdef STATX_DIOALIGN
  struct statx info{};
  if (::statx(AT_FDCWD, path.c_str(), 0, STATX_DIOALIGN, &info) == 0 &&
      (info.stx_mask & STATX_DIOALIGN) != 0 && info.stx_dio_offset_align != 0)
    return {info.stx_dio_mem_align, info.stx_dio_offset_align};
#else
  (void)path;
#endif
  return {kDefaultAlignmentBytes, kDefaultAlignmentBytes};
}

struct stat stat_of(const std::string& path) {
  struct stat info{};
  if (::stat(path.c_str(), &info) != 0) ADD_FAILURE() << "stat " << path << " failed";
  return info;
}

// Writes a pattern at `offset` through every available backend and checks it with pread
// and with an engine read-back.
void round_trip_every_backend(SwapFile& file, std::uint64_t offset, std::uint64_t size,
                              std::size_t misalign) {
  std::uint64_t seed = 60;
  for (const auto& name : backend_names()) {
    SCOPED_TRACE("backend " + name);
    std::string why;
    auto engine = make_engine_or_null(name, AioConfig{}, why);
    if (!engine) {
      std::cout << "[ note     ] " << why << "\n";
      continue;
    }
    ++seed;
    AlignedBuffer source(size, misalign), back(size, misalign);
    fill_pattern(source.span(), seed);
    IoRequest write = write_request(file, source.data(), offset, size);
    ASSERT_NO_THROW(engine->run(std::span(&write, 1)));
    EXPECT_EQ(count_pattern_mismatches(pread_file(file.path(), offset, size), seed), 0u);
    IoRequest read = read_request(file, back.data(), offset, size);
    ASSERT_NO_THROW(engine->run(std::span(&read, 1)));
    EXPECT_EQ(count_pattern_mismatches(back.cspan(), seed), 0u);
  }
}

// ---- creation, sizes, alignment ---------------------------------------------------------

TEST(SwapFileTest, CreateIsMode0600AndPreallocated) {
  TempDir dir;
  const std::string path = dir.file("new.swp");
  constexpr std::uint64_t size = 3 * kMiB + 4096;
  SwapFile file = SwapFile::create(path, size);
  EXPECT_EQ(file.path(), path);
  EXPECT_TRUE(file.writable());
  EXPECT_GE(file.fd(), 0);
  EXPECT_EQ(file.size_bytes(), size);
  const auto info = stat_of(path);
  EXPECT_TRUE(S_ISREG(info.st_mode));
  EXPECT_EQ(info.st_mode & 07777, 0600u) << std::oct << (info.st_mode & 07777);
  EXPECT_EQ(static_cast<std::uint64_t>(info.st_size), size);
  EXPECT_GE(static_cast<std::uint64_t>(info.st_blocks) * 512, size)
      << "the file is not preallocated (sparse)";
  // Preallocated space reads as zeros.
  const auto bytes = pread_file(path, 0, size);
  EXPECT_EQ(std::count(bytes.begin(), bytes.end(), std::byte{0}), static_cast<std::ptrdiff_t>(size));
}

TEST(SwapFileTest, CreateZeroBytes) {
  TempDir dir;
  SwapFile file = SwapFile::create(dir.file("empty.swp"), 0);
  EXPECT_EQ(file.size_bytes(), 0u);
  EXPECT_TRUE(std::filesystem::exists(dir.file("empty.swp")));
}

TEST(SwapFileTest, CreateTruncatesABiggerExistingFile) {
  TempDir dir;
  const std::string path = dir.file("reuse.swp");
  { SwapFile big = SwapFile::create(path, 4 * kMiB); }
  AlignedBuffer bytes(4 * kMiB);
  fill_pattern(bytes.span(), 2);
  pwrite_file(path, 0, bytes.cspan());

  SwapFile file = SwapFile::create(path, 64 * kKiB);
  EXPECT_EQ(file.size_bytes(), 64 * kKiB);
  EXPECT_EQ(static_cast<std::uint64_t>(stat_of(path).st_size), 64 * kKiB);
  EXPECT_EQ(pread_file(path, 0, 4 * kMiB).size(), 64 * kKiB) << "bytes past the new size remain";
}

TEST(SwapFileTest, CreateGrowsASmallerExistingFile) {
  TempDir dir;
  const std::string path = dir.file("grow.swp");
  { SwapFile small = SwapFile::create(path, 4096); }
  SwapFile file = SwapFile::create(path, 2 * kMiB);
  EXPECT_EQ(file.size_bytes(), 2 * kMiB);
  EXPECT_GE(static_cast<std::uint64_t>(stat_of(path).st_blocks) * 512, 2 * kMiB);
}

TEST(SwapFileTest, AlignmentIsTheDevicesWhenDirectAndOneWhenBuffered) {
  TempDir dir;
  SwapFile direct = SwapFile::create(dir.file("direct.swp"), 64 * kKiB, DirectMode::on);
  ASSERT_TRUE(direct.direct());
  // Offsets and lengths: the logical block size, never below a 512-byte sector.
  EXPECT_GE(direct.offset_alignment(), 512u);
  EXPECT_TRUE(std::has_single_bit(direct.offset_alignment())) << direct.offset_alignment();
  EXPECT_LE(direct.offset_alignment(), kDefaultAlignmentBytes)
      << "kDefaultAlignmentBytes must be a multiple of every alignment in use";
  // Buffer addresses: what the kernel says (512 on virtio/SATA; NVMe reports as little as
  // 4, so ">= 512" would be wrong there), or the 4096 default when it says nothing.
  EXPECT_TRUE(std::has_single_bit(direct.memory_alignment())) << direct.memory_alignment();
  const auto kernel = kernel_dio_alignment(direct.path());
  EXPECT_EQ(direct.memory_alignment(), kernel.memory);
  EXPECT_EQ(direct.offset_alignment(), kernel.offset);

  SwapFile automatic = SwapFile::create(dir.file("auto.swp"), 64 * kKiB, DirectMode::automatic);
  EXPECT_TRUE(automatic.direct()) << "ext4 takes O_DIRECT, so direct=auto uses it";

  SwapFile buffered = SwapFile::create(dir.file("buffered.swp"), 64 * kKiB, DirectMode::off);
  EXPECT_FALSE(buffered.direct());
  EXPECT_EQ(buffered.memory_alignment(), 1u);
  EXPECT_EQ(buffered.offset_alignment(), 1u);
}

TEST(SwapFileTest, QueryDirectAlignmentIsAPowerOfTwoOfAtLeast512) {
  TempDir dir;
  for (const std::string& where : {dir.path(), std::string("/"), std::string("."),
                                   std::filesystem::temp_directory_path().string()}) {
    SCOPED_TRACE(where);
    const std::size_t alignment = query_direct_alignment(where);
    EXPECT_GE(alignment, 512u);
    EXPECT_TRUE(std::has_single_bit(alignment)) << alignment;
  }
  // A path it cannot stat falls back to the default rather than failing.
  EXPECT_EQ(query_direct_alignment(dir.file("missing/dir")), kDefaultAlignmentBytes);
}

TEST(SwapFileTest, OpenExistingReadOnlyOrWritable) {
  TempDir dir;
  const std::string path = dir.file("existing.swp");
  { SwapFile created = SwapFile::create(path, 128 * kKiB); }
  SwapFile read_only = SwapFile::open(path);
  EXPECT_FALSE(read_only.writable());
  EXPECT_TRUE(read_only.direct());
  EXPECT_EQ(read_only.size_bytes(), 128 * kKiB);
  EXPECT_EQ(::fcntl(read_only.fd(), F_GETFL) & O_ACCMODE, O_RDONLY);

  SwapFile writable = SwapFile::open(path, DirectMode::off, /*writable=*/true);
  EXPECT_TRUE(writable.writable());
  EXPECT_FALSE(writable.direct());
  EXPECT_EQ(::fcntl(writable.fd(), F_GETFL) & O_ACCMODE, O_RDWR);
  EXPECT_NO_THROW(writable.sync());
}

TEST(SwapFileTest, OpenMissingFileNamesThePath) {
  TempDir dir;
  const std::string path = dir.file("missing.swp");
  const auto error = catch_as<SystemError>([&] { (void)SwapFile::open(path); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), ENOENT);
  EXPECT_THAT(error->what(), HasSubstr(path));
  EXPECT_THAT(error->what(), HasSubstr("No such file"));
}

TEST(SwapFileTest, CreateInAMissingDirectorySaysSo) {
  TempDir dir;
  const std::string missing_dir = dir.file("no/such/dir");
  const std::string path = missing_dir + "/slot-0.swp";
  for (auto mode : {DirectMode::automatic, DirectMode::on, DirectMode::off}) {
    SCOPED_TRACE(std::string("direct=") + std::string(to_string(mode)));
    const auto error = catch_as<SystemError>([&] { (void)SwapFile::create(path, 4096, mode); });
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code(), ENOENT);
    EXPECT_THAT(error->what(), HasSubstr(path));
    EXPECT_THAT(error->what(), HasSubstr("directory '" + missing_dir + "' does not exist"));
  }
  EXPECT_FALSE(std::filesystem::exists(missing_dir)) << "create must not make directories";
}

TEST(SwapFileTest, ASymbolicLinkIsRefused) {
  TempDir dir;
  const std::string target = dir.file("target.swp");
  const std::string link = dir.file("link.swp");
  { SwapFile file = SwapFile::create(target, 8192); }
  std::filesystem::create_symlink(target, link);

  auto error = catch_as<SystemError>([&] { (void)SwapFile::create(link, 64 * kKiB); });
  ASSERT_TRUE(error.has_value()) << "create() followed a symbolic link";
  EXPECT_EQ(error->code(), ELOOP);
  EXPECT_THAT(error->what(), HasSubstr(link));
  EXPECT_THAT(error->what(), HasSubstr("symbolic link"));
  EXPECT_EQ(std::filesystem::file_size(target), 8192u) << "the link's target was changed";

  error = catch_as<SystemError>([&] { (void)SwapFile::open(link, DirectMode::off, true); });
  ASSERT_TRUE(error.has_value()) << "open() followed a symbolic link";
  EXPECT_THAT(error->what(), HasSubstr(link));
  EXPECT_THAT(error->what(), HasSubstr("symbolic link"));

  // A dangling link is refused too (instead of creating its target).
  const std::string dangling = dir.file("dangling.swp");
  std::filesystem::create_symlink(dir.file("nowhere.swp"), dangling);
  error = catch_as<SystemError>([&] { (void)SwapFile::create(dangling, 4096); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr("symbolic link"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("nowhere.swp")));
}

TEST(SwapFileTest, ADirectoryIsNotASwapFile) {
  TempDir dir;
  const std::string path = dir.file("a-directory");
  std::filesystem::create_directory(path);
  const auto error = catch_as<Error>([&] { (void)SwapFile::create(path, 4096); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr(path));
}

TEST(SwapFileTest, MoveTransfersOwnership) {
  TempDir dir;
  const std::string path = dir.file("move.swp");
  SwapFile first = SwapFile::create(path, 4096, DirectMode::on);
  const int fd = first.fd();
  SwapFile second = std::move(first);
  EXPECT_EQ(second.fd(), fd);
  EXPECT_EQ(second.path(), path);
  EXPECT_TRUE(second.direct());
  EXPECT_EQ(first.fd(), -1);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_TRUE(fd_is_open(fd));

  SwapFile third = SwapFile::create(dir.file("other.swp"), 4096);
  const int other_fd = third.fd();
  third = std::move(second);
  EXPECT_EQ(third.fd(), fd);
  EXPECT_FALSE(fd_is_open(other_fd)) << "move assignment leaked the overwritten descriptor";
  { SwapFile gone = std::move(third); }
  EXPECT_FALSE(fd_is_open(fd)) << "the last owner did not close the descriptor";
}

// ---- UniqueFd ---------------------------------------------------------------------------

int open_dev_null() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

TEST(UniqueFdTest, DefaultIsInvalid) {
  UniqueFd fd;
  EXPECT_FALSE(fd.valid());
  EXPECT_FALSE(static_cast<bool>(fd));
  EXPECT_EQ(fd.get(), -1);
}

TEST(UniqueFdTest, ClosesOnDestruction) {
  int raw = open_dev_null();
  ASSERT_GE(raw, 0);
  { UniqueFd fd(raw); EXPECT_TRUE(fd.valid()); EXPECT_EQ(fd.get(), raw); }
  EXPECT_FALSE(fd_is_open(raw));
}

TEST(UniqueFdTest, MoveConstructionLeavesTheSourceInvalid) {
  const int raw = open_dev_null();
  UniqueFd a(raw);
  UniqueFd b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.get(), -1);   // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.get(), raw);
  EXPECT_TRUE(fd_is_open(raw));
}

TEST(UniqueFdTest, MoveAssignmentClosesTheOldDescriptor) {
  const int raw_a = open_dev_null();
  const int raw_b = open_dev_null();
  UniqueFd a(raw_a), b(raw_b);
  b = std::move(a);
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.get(), raw_a);
  EXPECT_FALSE(fd_is_open(raw_b));
  EXPECT_TRUE(fd_is_open(raw_a));
  UniqueFd empty;
  b = std::move(empty);
  EXPECT_FALSE(b.valid());
  EXPECT_FALSE(fd_is_open(raw_a));
}

TEST(UniqueFdTest, ReleaseAndReset) {
  const int raw = open_dev_null();
  UniqueFd fd(raw);
  EXPECT_EQ(fd.release(), raw);
  EXPECT_FALSE(fd.valid());
  EXPECT_TRUE(fd_is_open(raw)) << "release() must not close";
  fd.reset(raw);
  EXPECT_EQ(fd.get(), raw);
  fd.reset(raw);  // resetting to the descriptor it holds keeps it open
  EXPECT_TRUE(fd_is_open(raw));
  fd.reset();
  EXPECT_FALSE(fd.valid());
  EXPECT_FALSE(fd_is_open(raw));
}

// ---- filesystems that say no ----------------------------------------------------------

TEST(ReadOnlyFilesystem, CreateFailsWithEROFSNamingThePath) {
  LoopFilesystem fs(16, /*read_only=*/true);
  if (!fs.mounted()) GTEST_SKIP() << fs.mount_error();
  const std::string path = fs.path() + "/slot-0.swp";
  for (auto mode : {DirectMode::automatic, DirectMode::off}) {
    SCOPED_TRACE(std::string("direct=") + std::string(to_string(mode)));
    const auto error = catch_as<SystemError>([&] { (void)SwapFile::create(path, 1 * kMiB, mode); });
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code(), EROFS);
    EXPECT_THAT(error->what(), HasSubstr(path));
    EXPECT_THAT(error->what(), HasSubstr("Read-only file system"));
  }
}

// Whether files in `directory` can be opened with O_DIRECT.
bool accepts_o_direct(const std::string& directory) {
  const std::string probe = directory + "/o-direct-probe";
  const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  const bool ok = fd >= 0;
  if (ok) ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

class Tmpfs : public testing::Test {
 protected:
  void SetUp() override {
    if (test::tmpfs_dir().empty()) GTEST_SKIP() << "no tmpfs mounted at /dev/shm";
    _dir = std::make_unique<TempDir>(test::tmpfs_dir());
    _accepts_direct = accepts_o_direct(_dir->path());
  }
  std::unique_ptr<TempDir> _dir;
  bool _accepts_direct = false;
};

TEST_F(Tmpfs, AutomaticModeWorks) {
  const std::string path = _dir->file("tmpfs.swp");
  SwapFile file = SwapFile::create(path, 2 * kMiB, DirectMode::automatic);
  if (_accepts_direct) {
    // Linux >= 6.6 tmpfs takes O_DIRECT; then auto uses it.
    std::cout << "[ note     ] tmpfs accepts O_DIRECT on this kernel\n";
    EXPECT_TRUE(file.direct());
    round_trip_every_backend(file, 4096, 1 * kMiB, 0);
  } else {
    EXPECT_FALSE(file.direct());
    EXPECT_EQ(file.memory_alignment(), 1u);
    EXPECT_EQ(file.offset_alignment(), 1u);
    round_trip_every_backend(file, 7, 1 * kMiB + 3, 5);
  }
}

TEST_F(Tmpfs, DirectOnThrowsMentioningODirect) {
  if (_accepts_direct)
    GTEST_SKIP() << "tmpfs accepts O_DIRECT on this kernel (Linux >= 6.6), so direct=on "
                    "succeeds there; NoDirectFilesystem covers the refusal with ramfs";
  const std::string path = _dir->file("tmpfs-direct.swp");
  const auto error = catch_as<SystemError>([&] { (void)SwapFile::create(path, 4096, DirectMode::on); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), EINVAL);
  EXPECT_THAT(error->what(), HasSubstr(path));
  EXPECT_THAT(error->what(), HasSubstr("O_DIRECT"));
}

// A ramfs mounted on a fresh directory for the lifetime of the object: a filesystem that
// refuses O_DIRECT on every kernel (and has no fallocate).
class RamfsMount {
 public:
  RamfsMount() : _path(_dir.file("ramfs")) {
    if (::geteuid() != 0) {
      _error = "mounting a ramfs needs root";
      return;
    }
    std::filesystem::create_directories(_path);
    if (std::system(("mount -t ramfs ramfs " + _path + " >/dev/null 2>&1").c_str()) != 0) {
      _error = "mount -t ramfs failed (no privilege in this container?)";
      return;
    }
    _mounted = true;
  }
  RamfsMount(const RamfsMount&) = delete;
  RamfsMount& operator=(const RamfsMount&) = delete;
  ~RamfsMount() {
    if (_mounted) (void)std::system(("umount -l " + _path + " >/dev/null 2>&1").c_str());
  }
  bool mounted() const { return _mounted; }
  const std::string& error() const { return _error; }
  const std::string& path() const { return _path; }

 private:
  TempDir _dir;
  std::string _path;
  bool _mounted = false;
  std::string _error;
};

class NoDirectFilesystem : public testing::Test {
 protected:
  void SetUp() override {
    if (!_fs.mounted()) GTEST_SKIP() << _fs.error();
    if (accepts_o_direct(_fs.path())) GTEST_SKIP() << "ramfs accepts O_DIRECT on this kernel";
  }
  RamfsMount _fs;
};

TEST_F(NoDirectFilesystem, AutomaticFallsBackToBufferedIo) {
  const std::string path = _fs.path() + "/fallback.swp";
  SwapFile file = SwapFile::create(path, 2 * kMiB, DirectMode::automatic);
  EXPECT_FALSE(file.direct());
  EXPECT_EQ(file.memory_alignment(), 1u);
  EXPECT_EQ(file.offset_alignment(), 1u);
  EXPECT_EQ(file.size_bytes(), 2 * kMiB) << "sized by ftruncate where fallocate is missing";
  round_trip_every_backend(file, 7, 1 * kMiB + 3, 5);

  SwapFile reopened = SwapFile::open(path, DirectMode::automatic);
  EXPECT_FALSE(reopened.direct());
}

TEST_F(NoDirectFilesystem, DirectOnThrowsMentioningODirect) {
  const std::string path = _fs.path() + "/direct.swp";
  { SwapFile existing = SwapFile::create(path, 4096, DirectMode::off); }
  for (bool create : {true, false}) {
    SCOPED_TRACE(create ? "create" : "open");
    const auto error = catch_as<SystemError>([&] {
      if (create)
        (void)SwapFile::create(path, 4096, DirectMode::on);
      else
        (void)SwapFile::open(path, DirectMode::on);
    });
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->code(), EINVAL);
    EXPECT_THAT(error->what(), HasSubstr(path));
    EXPECT_THAT(error->what(), HasSubstr("O_DIRECT"));
  }
}

// A FIFO (or any other non-regular file) in place of a swap file is refused at once, naming
// it: opening a FIFO for reading would otherwise block until a writer came.
TEST(SwapFileTest, AFifoInPlaceOfASwapFileIsRefusedWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir.path() + "/slot-0.swp";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const DirectMode mode : {DirectMode::automatic, DirectMode::off}) {
    try {
      (void)SwapFile::open(fifo, mode);
      ADD_FAILURE() << "a FIFO was opened as a swap file";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("'" + fifo + "' is not a regular file (a FIFO)"));
    }
    try {
      (void)SwapFile::create(fifo, 4096, mode);
      ADD_FAILURE() << "a FIFO was created over as a swap file";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("is not a regular file (a FIFO)"));
    }
  }
  // A directory too.
  EXPECT_THROW((void)SwapFile::open(dir.path(), DirectMode::off), Error);
}

}  // namespace
}  // namespace swapcoord
