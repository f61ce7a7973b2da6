// A full disk, as a user meets it: on a loop-mounted 64 MiB ext4 (about 55 MiB usable),
// preallocating a bigger swap file fails with the path and ENOSPC, and a 100 MiB write
// through any backend fails the batch with an IoError naming the path and "No space left
// on device" instead of crashing or reporting success. Skipped (exit 77) where a loop
// filesystem cannot be mounted; each test is its own ctest entry, so skips are per test.
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "io_test_helpers.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;
using namespace io_test;
using test::count_pattern_mismatches;
using test::fill_pattern;
using test::LoopFilesystem;

constexpr std::size_t kFilesystemMiB = 64;

TEST(DiskFull, PreallocatingMoreThanTheDiskHoldsFails) {
  LoopFilesystem fs(kFilesystemMiB);
  if (!fs.mounted()) GTEST_SKIP() << fs.mount_error();
  const std::string path = fs.path() + "/too-big.swp";
  const auto error = catch_as<SystemError>([&] { (void)SwapFile::create(path, 200 * kMiB); });
  ASSERT_TRUE(error.has_value()) << "a 200 MiB swap file fit on a 64 MiB filesystem";
  EXPECT_EQ(error->code(), ENOSPC);
  EXPECT_THAT(error->what(), HasSubstr(path));
  EXPECT_THAT(error->what(), HasSubstr("No space left"));
  EXPECT_THAT(error->what(), HasSubstr(std::to_string(200 * kMiB)));
}

struct FullCase {
  std::string backend;
  bool direct = false;
};

void PrintTo(const FullCase& c, std::ostream* os) {
  *os << c.backend << (c.direct ? ", direct" : ", buffered");
}

std::vector<FullCase> full_cases() {
  std::vector<FullCase> cases;
  for (const auto& backend : backend_names())
    for (bool direct : {true, false}) cases.push_back({backend, direct});
  return cases;
}

std::string full_name(const testing::TestParamInfo<FullCase>& info) {
  return name_part(info.param.backend) + (info.param.direct ? "_direct" : "_buffered");
}

class DiskFullWrite : public testing::TestWithParam<FullCase> {};

TEST_P(DiskFullWrite, WriteBatchFailsWithENOSPC) {
  const auto& param = GetParam();
  std::string why;
  auto engine = make_engine_or_null(param.backend, AioConfig{}, why);
  if (!engine) GTEST_SKIP() << why;
  LoopFilesystem fs(kFilesystemMiB);
  if (!fs.mounted()) GTEST_SKIP() << fs.mount_error();

  const std::string path = fs.path() + "/full.swp";
  const DirectMode mode = param.direct ? DirectMode::on : DirectMode::off;
  {
    SwapFile file = SwapFile::create(path, 0, mode);
    ASSERT_EQ(file.direct(), param.direct);
    constexpr std::uint64_t size = 100 * kMiB;
    AlignedBuffer bytes(size);
    std::memset(bytes.data(), 0x5A, size);
    IoRequest write = write_request(file, bytes.data(), 0, size);
    const auto error = catch_as<IoError>([&] { (void)engine->run(std::span(&write, 1)); });
    ASSERT_TRUE(error.has_value()) << "100 MiB fit on a 64 MiB filesystem";
    EXPECT_EQ(error->code(), ENOSPC) << error->what();
    EXPECT_THAT(error->what(), HasSubstr(path));
    EXPECT_THAT(error->what(), HasSubstr("No space left on device"));
    EXPECT_THAT(error->what(), HasSubstr("1 of 1 requests failed"));
    ASSERT_FALSE(error->failures().empty());
    for (const auto& failure : error->failures()) {
      EXPECT_EQ(failure.path, path);
      EXPECT_EQ(failure.op, IoOp::write);
      EXPECT_EQ(failure.request, 0u);
      EXPECT_EQ(failure.errno_value, ENOSPC) << "at offset " << failure.offset;
      EXPECT_GT(failure.size_bytes, 0u);
      EXPECT_LE(failure.offset + failure.size_bytes, size);
    }
  }

  // Freeing the space makes the same engine work again.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  SwapFile file = SwapFile::create(fs.path() + "/after.swp", 4 * kMiB, mode);
  AlignedBuffer bytes(4 * kMiB);
  fill_pattern(bytes.span(), 77);
  IoRequest write = write_request(file, bytes.data(), 0, 4 * kMiB);
  ASSERT_NO_THROW(engine->run(std::span(&write, 1)));
  EXPECT_EQ(count_pattern_mismatches(pread_file(file.path(), 0, 4 * kMiB), 77), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, DiskFullWrite, testing::ValuesIn(full_cases()), full_name);

}  // namespace
}  // namespace swapcoord
