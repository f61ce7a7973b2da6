// AioHandle (DeepSpeed's aio_handle on the engine) from C++: whole-buffer transfers at
// offsets, direct and buffered paths (with validation), queued operations counted by
// wait(), the errors that name file and offset, and the kept files (replaced, deleted).
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "io_test_helpers.hpp"
#include "swapcoord/io/aio_handle.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;

class AioHandleTest : public ::testing::Test {
 protected:
  test::TempDir dir;
  AioHandle handle{[] {
    AioConfig c;
    c.block_size = 64 * 1024;
    c.queue_depth = 8;
    c.intra_op_parallelism = 2;
    return c;
  }()};
};

TEST_F(AioHandleTest, WritesAndReadsAtOffsetsAlignedOrNot) {
  const std::string path = dir.file("t.bin");
  for (const auto& [bytes, misalign, offset] :
       std::vector<std::tuple<std::size_t, std::size_t, std::uint64_t>>{{1 << 20, 0, 0}, {4096, 0, 1 << 20},
                                                                          {1000, 3, 12345}, {70000, 1, 4096}}) {
    io_test::AlignedBuffer out(bytes, misalign), in(bytes, misalign);
    test::fill_pattern(out.span(), offset);
    handle.write(out.cspan(), path, offset, /*validate=*/true);
    handle.read(in.span(), path, offset, /*validate=*/true);
    EXPECT_EQ(test::count_pattern_mismatches(in.cspan(), offset), 0u) << bytes << " bytes at " << offset;
  }
}

TEST_F(AioHandleTest, QueuedOperationsAreCountedByWait) {
  const std::string path = dir.file("q.bin");
  io_test::AlignedBuffer a(1 << 20), b(1 << 20), c(1 << 20);
  test::fill_pattern(a.span(), 1);
  test::fill_pattern(b.span(), 2);
  handle.submit_write(a.cspan(), path, 0);
  handle.submit_write(b.cspan(), path, 1 << 20);
  EXPECT_EQ(handle.pending(), 2u);
  EXPECT_EQ(handle.wait(), 2);
  handle.submit_read(c.span(), path, 1 << 20);
  EXPECT_EQ(handle.wait(), 1);
  EXPECT_EQ(test::count_pattern_mismatches(c.cspan(), 2), 0u);
  EXPECT_EQ(handle.wait(), 0);
}

TEST_F(AioHandleTest, AReadPastTheEndRaisesNamingFileAndOffset) {
  const std::string path = dir.file("short.bin");
  io_test::AlignedBuffer buffer(1 << 20);
  handle.write(buffer.cspan(), path, 0);
  try {
    handle.read(buffer.span(), path, 4096);
    FAIL() << "no error";
  } catch (const IoError& e) {
    ASSERT_FALSE(e.failures().empty());
    EXPECT_EQ(e.failures().front().path, path);
    EXPECT_EQ(e.failures().front().offset, 1u << 20);
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
  // A queued one fails at wait(), after the others.
  io_test::AlignedBuffer good(4096);
  handle.submit_read(buffer.span(), path, 4096);
  handle.submit_read(good.span(), path, 0);
  EXPECT_THROW(handle.wait(), IoError);
  EXPECT_EQ(handle.pending(), 0u);
}

TEST_F(AioHandleTest, AReplacedFileIsOpenedAnewAndADeletedOneIsClosed) {
  const std::string path = dir.file("r.bin");
  io_test::AlignedBuffer first(8192), second(8192), in(8192);
  test::fill_pattern(first.span(), 5);
  test::fill_pattern(second.span(), 6);
  handle.write(first.cspan(), path, 0);
  handle.write(second.cspan(), path + ".new", 0);
  std::filesystem::rename(path + ".new", path);  // the path now names another file
  handle.read(in.span(), path, 0);
  EXPECT_EQ(test::count_pattern_mismatches(in.cspan(), 6), 0u);

  std::filesystem::remove(path);
  handle.write(first.cspan(), dir.file("other.bin"), 0);  // the next open drops the deleted file
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(fd.path(), ec).string();
    EXPECT_THAT(target, ::testing::Not(HasSubstr("(deleted)"))) << fd.path();
  }
  handle.close_files();
}

}  // namespace
}  // namespace swapcoord
