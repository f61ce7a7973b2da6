// Errors from the engine, as a user meets them: a bad request is refused at submit() with
// an Error naming the file and offset before anything is queued; a file that ends before
// the read does, or a real errno from the kernel, fails the batch at wait() with an
// IoError naming path, offset and cause; tickets are waited for exactly once.
#include <fcntl.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <ostream>
#include <string>
#include <vector>

#include "io_test_helpers.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/io/swap_location.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;
using namespace io_test;
using test::count_pattern_mismatches;
using test::fill_pattern;
using test::TempDir;

std::string backend_name(const testing::TestParamInfo<std::string>& info) {
  return name_part(info.param);
}

// ---- requests refused at submit ----------------------------------------------------------

class SubmitValidation : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    _engine = make_engine_or_null(GetParam(), AioConfig{}, why);
    if (!_engine) GTEST_SKIP() << why;
    _path = _dir.file("validate.swp");
    _file = std::make_unique<SwapFile>(SwapFile::create(_path, 1 * kMiB, DirectMode::on));
    ASSERT_TRUE(_file->direct()) << "ext4 under the test dir should take O_DIRECT";
  }

  // submit() must throw Error (not IoError: nothing ran yet); returns its message.
  std::string submit_error(const std::vector<IoRequest>& requests) {
    try {
      (void)_engine->submit(requests);
    } catch (const IoError& e) {
      ADD_FAILURE() << "submit() threw IoError, expected a plain Error: " << e.what();
      return e.what();
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "submit() accepted a bad request";
    return {};
  }

  TempDir _dir;
  std::string _path;
  std::unique_ptr<IoEngine> _engine;
  std::unique_ptr<SwapFile> _file;
  AlignedBuffer _buffer{64 * kKiB};
};

TEST_P(SubmitValidation, ZeroLengthRequestNamesThePath) {
  const auto message = submit_error({read_request(*_file, _buffer.data(), 4096, 0)});
  EXPECT_THAT(message, HasSubstr(_path));
  EXPECT_THAT(message, HasSubstr("zero length"));
  EXPECT_THAT(message, HasSubstr("offset 4096"));
}

TEST_P(SubmitValidation, NullBufferAndNullFile) {
  auto message = submit_error({write_request(*_file, nullptr, 0, 4096)});
  EXPECT_THAT(message, HasSubstr(_path));
  EXPECT_THAT(message, HasSubstr("no buffer"));
  message = submit_error({IoRequest{IoOp::read, nullptr, _buffer.data(), 0, 4096}});
  EXPECT_THAT(message, HasSubstr("no file"));
}

TEST_P(SubmitValidation, MisalignedBufferOnDirectFile) {
  const auto message = submit_error({read_request(*_file, _buffer.data() + 1, 0, 4096)});
  EXPECT_THAT(message, HasSubstr(_path));
  EXPECT_THAT(message, HasSubstr("aligned"));
  EXPECT_THAT(message, HasSubstr("O_DIRECT"));
}

TEST_P(SubmitValidation, MisalignedOffsetOnDirectFile) {
  const auto message = submit_error({write_request(*_file, _buffer.data(), 100, 4096)});
  EXPECT_THAT(message, HasSubstr(_path));
  EXPECT_THAT(message, HasSubstr("offset 100"));
  EXPECT_THAT(message, HasSubstr("O_DIRECT"));
  EXPECT_THAT(message, HasSubstr(std::to_string(_file->offset_alignment())));
}

TEST_P(SubmitValidation, MisalignedLengthOnDirectFile) {
  const auto message = submit_error({read_request(*_file, _buffer.data(), 0, 4000)});
  EXPECT_THAT(message, HasSubstr(_path));
  EXPECT_THAT(message, HasSubstr("4000 bytes"));
  EXPECT_THAT(message, HasSubstr("O_DIRECT"));
}

TEST_P(SubmitValidation, WriteToAFileOpenedReadOnly) {
  SwapFile read_only = SwapFile::open(_path, DirectMode::on, /*writable=*/false);
  EXPECT_FALSE(read_only.writable());
  const auto message = submit_error({write_request(read_only, _buffer.data(), 0, 4096)});
  EXPECT_THAT(message, HasSubstr(_path));
  EXPECT_THAT(message, HasSubstr("read-only"));
  // Reading it is fine.
  IoRequest read = read_request(read_only, _buffer.data(), 0, 4096);
  EXPECT_NO_THROW(_engine->run(std::span(&read, 1)));
}

TEST_P(SubmitValidation, ABadRequestQueuesNothingAndTheEngineStaysUsable) {
  AlignedBuffer bytes(8192);
  fill_pattern(bytes.span(), 3);
  // Request 0 is fine, request 1 is not: the batch is refused as a whole.
  const auto message = submit_error({write_request(*_file, bytes.data(), 0, 8192),
                                     write_request(*_file, bytes.data(), 8192, 0)});
  EXPECT_THAT(message, HasSubstr("request 1"));
  const auto on_disk = pread_file(_path, 0, 8192);
  EXPECT_EQ(std::count(on_disk.begin(), on_disk.end(), std::byte{0}), 8192)
      << "a refused batch must not write anything";

  IoRequest good = write_request(*_file, bytes.data(), 0, 8192);
  EXPECT_EQ(_engine->run(std::span(&good, 1)).bytes, 8192u);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 8192), 3), 0u);
}

TEST_P(SubmitValidation, WaitOnAnEmptyTicket) {
  const auto error = catch_as<Error>([&] { (void)_engine->wait(IoTicket{}); });
  ASSERT_TRUE(error.has_value()) << "wait() on an empty ticket returned";
  EXPECT_THAT(error->what(), HasSubstr("empty I/O ticket"));
}

TEST_P(SubmitValidation, WaitTwiceOnTheSameTicket) {
  IoRequest read = read_request(*_file, _buffer.data(), 0, 4096);
  IoTicket ticket = _engine->submit(std::span(&read, 1));
  const std::uint64_t id = ticket.id();
  EXPECT_NE(id, 0u);
  EXPECT_NO_THROW(_engine->wait(std::move(ticket)));
  EXPECT_FALSE(ticket.valid()) << "wait() consumes the ticket";
  const auto error = catch_as<Error>([&] { (void)_engine->wait(std::move(ticket)); });
  ASSERT_TRUE(error.has_value()) << "a second wait() on one ticket returned";
  EXPECT_THAT(error->what(), HasSubstr("already waited"));
  // A later batch (which may reuse the same slot) gets a ticket of its own.
  IoTicket next = _engine->submit(std::span(&read, 1));
  EXPECT_NE(next.id(), id);
  EXPECT_NO_THROW(_engine->wait(std::move(next)));
  EXPECT_THROW((void)_engine->wait(std::move(ticket)), Error);
}

INSTANTIATE_TEST_SUITE_P(Backends, SubmitValidation, testing::ValuesIn(backend_names()),
                         backend_name);

// ---- files that end before the read does -------------------------------------------------

struct ShortCase {
  std::string backend;
  bool direct = false;
};

void PrintTo(const ShortCase& c, std::ostream* os) {
  *os << c.backend << (c.direct ? ", direct" : ", buffered");
}

std::string short_name(const testing::TestParamInfo<ShortCase>& info) {
  return name_part(info.param.backend) + (info.param.direct ? "_direct" : "_buffered");
}

std::vector<ShortCase> short_cases() {
  std::vector<ShortCase> cases;
  for (const auto& backend : backend_names())
    for (bool direct : {true, false}) cases.push_back({backend, direct});
  return cases;
}

class ShortFile : public testing::TestWithParam<ShortCase> {
 protected:
  void SetUp() override {
    AioConfig config;
    config.block_size = 64 * kKiB;
    std::string why;
    _engine = make_engine_or_null(GetParam().backend, config, why);
    if (!_engine) GTEST_SKIP() << why;
  }
  DirectMode mode() const { return GetParam().direct ? DirectMode::on : DirectMode::off; }

  // Expects reading `size` at `offset` of a file of `file_bytes` to fail at `ends_at`.
  void expect_file_ended(std::uint64_t file_bytes, std::uint64_t offset, std::uint64_t size,
                         std::uint64_t ends_at) {
    const std::string path = _dir.file("short-" + std::to_string(file_bytes) + ".swp");
    SwapFile file = SwapFile::create(path, file_bytes, mode());
    ASSERT_EQ(file.direct(), GetParam().direct);
    AlignedBuffer bytes(file_bytes);
    fill_pattern(bytes.span(), 9);
    pwrite_file(path, 0, bytes.cspan());

    AlignedBuffer target(size);
    IoRequest read = read_request(file, target.data(), offset, size);
    const auto error = catch_as<IoError>([&] { (void)_engine->run(std::span(&read, 1)); });
    ASSERT_TRUE(error.has_value()) << "reading " << size << " bytes at offset " << offset
                                   << " of a " << file_bytes << "-byte file succeeded";
    EXPECT_THAT(error->what(), HasSubstr(path));
    EXPECT_THAT(error->what(), HasSubstr("offset " + std::to_string(ends_at)));
    EXPECT_THAT(error->what(), HasSubstr("file ended"));
    EXPECT_EQ(error->code(), 0) << "the end of a file is not an errno";
    ASSERT_FALSE(error->failures().empty());
    const IoFailure& failure = error->failures().front();
    EXPECT_EQ(failure.request, 0u);
    EXPECT_EQ(failure.op, IoOp::read);
    EXPECT_EQ(failure.path, path);
    EXPECT_EQ(failure.offset, ends_at);
    // Every read here fits in one 64 KiB block, so what was still to transfer when the
    // file ended is the rest of the request.
    EXPECT_EQ(failure.size_bytes, offset + size - ends_at);
    EXPECT_EQ(failure.errno_value, 0);
  }

  TempDir _dir;
  std::unique_ptr<IoEngine> _engine;
};

TEST_P(ShortFile, ReadPastTheEndAtABlockBoundary) {
  // 8 KiB file, 16 KiB read: the first 8 KiB arrive, then the file ends at 8192.
  expect_file_ended(8192, 0, 16384, 8192);
}

TEST_P(ShortFile, ReadStartingBeyondTheEnd) {
  expect_file_ended(8192, 16384, 4096, 16384);
}

TEST_P(ShortFile, FileEndsInsideABlock) {
  // 5000-byte file, 8 KiB read: the kernel returns 5000 bytes, then nothing. With O_DIRECT
  // the resumed read at offset 5000 is not sector-aligned; it must still be reported as
  // the end of the file, not as an errno of the retry.
  expect_file_ended(5000, 0, 8192, 5000);
}

TEST_P(ShortFile, OnlyTheFailingRequestIsReported) {
  const std::string path = _dir.file("partial.swp");
  SwapFile file = SwapFile::create(path, 8192, mode());
  AlignedBuffer a(4096), b(8192), c(4096);
  std::vector<IoRequest> reads{read_request(file, a.data(), 0, 4096),
                               read_request(file, b.data(), 4096, 8192),  // ends at 8192
                               read_request(file, c.data(), 4096, 4096)};
  const auto error = catch_as<IoError>([&] { (void)_engine->run(reads); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr("1 of 3 requests failed"));
  EXPECT_THAT(error->what(), HasSubstr("request 1"));
  ASSERT_EQ(error->failures().size(), 1u);
  EXPECT_EQ(error->failures()[0].request, 1u);
  EXPECT_EQ(error->failures()[0].offset, 8192u);
  // The engine is still usable.
  IoRequest ok = read_request(file, a.data(), 0, 4096);
  EXPECT_NO_THROW(_engine->run(std::span(&ok, 1)));
}

INSTANTIATE_TEST_SUITE_P(Backends, ShortFile, testing::ValuesIn(short_cases()), short_name);

// ---- a real errno from the kernel ---------------------------------------------------------

class KernelErrors : public testing::TestWithParam<std::string> {};

TEST_P(KernelErrors, BadDescriptorIsReportedWithPathOffsetAndErrno) {
  std::string why;
  auto engine = make_engine_or_null(GetParam(), AioConfig{}, why);
  if (!engine) GTEST_SKIP() << why;
  TempDir dir;
  const std::string path = dir.file("ebadf.swp");
  SwapFile file = SwapFile::create(path, 3 * kMiB, DirectMode::off);
  // Swap the file's descriptor for a read-only one behind SwapFile's back: every write
  // now fails in the kernel with EBADF (at io_submit for libaio, in the completion for
  // io_uring, from pwrite for posix).
  const int read_only = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(read_only, 0);
  ASSERT_EQ(::dup3(read_only, file.fd(), O_CLOEXEC), file.fd());
  ::close(read_only);

  AlignedBuffer bytes(3 * kMiB);
  fill_pattern(bytes.span(), 1);
  std::vector<IoRequest> writes{write_request(file, bytes.data(), 0, 2 * kMiB),
                                write_request(file, bytes.data() + 2 * kMiB, 2 * kMiB, kMiB)};
  const auto error = catch_as<IoError>([&] { (void)engine->run(writes); });
  ASSERT_TRUE(error.has_value()) << "writes through a read-only descriptor succeeded";
  EXPECT_EQ(error->code(), EBADF);
  EXPECT_THAT(error->what(), HasSubstr(path));
  EXPECT_THAT(error->what(), HasSubstr("offset 0"));
  EXPECT_THAT(error->what(), HasSubstr("Bad file descriptor"));
  // Two requests (three 1 MiB blocks) failed: the count is of requests.
  EXPECT_THAT(error->what(), HasSubstr("2 of 2 requests failed"));
  std::set<std::size_t> failed_requests;
  for (const auto& failure : error->failures()) {
    EXPECT_EQ(failure.errno_value, EBADF);
    EXPECT_EQ(failure.op, IoOp::write);
    EXPECT_EQ(failure.path, path);
    EXPECT_EQ(failure.size_bytes, 1 * kMiB);
    failed_requests.insert(failure.request);
  }
  EXPECT_EQ(failed_requests, (std::set<std::size_t>{0, 1}));
  ASSERT_FALSE(error->failures().empty());
  EXPECT_EQ(error->failures().front().request, 0u) << "failures() is sorted by request";
  // Reads through the same descriptor still work.
  AlignedBuffer back(4096);
  IoRequest read = read_request(file, back.data(), 0, 4096);
  EXPECT_NO_THROW(engine->run(std::span(&read, 1)));
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelErrors, testing::ValuesIn(backend_names()),
                         backend_name);

// ---- to_request ------------------------------------------------------------------------

TEST(ToRequest, BuildsTheRequestForALocation) {
  TempDir dir;
  SwapFile file = SwapFile::create(dir.file("loc.swp"), 64 * kKiB);
  AlignedBuffer bytes(8192);
  const SwapLocation location{&file, 16384, 8192};
  const IoRequest request = to_request(IoOp::write, location, bytes.data(), 8192);
  EXPECT_EQ(request.op, IoOp::write);
  EXPECT_EQ(request.file, &file);
  EXPECT_EQ(request.buffer, bytes.data());
  EXPECT_EQ(request.offset, 16384u);
  EXPECT_EQ(request.size_bytes, 8192u);
}

TEST(ToRequest, LengthMismatchAndMissingFileAreErrors) {
  TempDir dir;
  const std::string path = dir.file("loc.swp");
  SwapFile file = SwapFile::create(path, 64 * kKiB);
  AlignedBuffer bytes(8192);
  auto error = catch_as<Error>(
      [&] { (void)to_request(IoOp::read, SwapLocation{&file, 16384, 8192}, bytes.data(), 4096); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr(path));
  EXPECT_THAT(error->what(), HasSubstr("offset 16384"));
  EXPECT_THAT(error->what(), HasSubstr("4096"));
  EXPECT_THAT(error->what(), HasSubstr("8192"));

  error = catch_as<Error>(
      [&] { (void)to_request(IoOp::read, SwapLocation{nullptr, 512, 8192}, bytes.data(), 8192); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr("no file"));
  EXPECT_THAT(error->what(), HasSubstr("offset 512"));
}

}  // namespace
}  // namespace swapcoord
