// Registered I/O (IoEngine::register_buffers, register_files), on io_uring with real
// files: data round trips over many blocks and threads; a block outside every registered
// buffer still goes (as a plain read or write); short transfers, EAGAIN, the end of a
// file and a real errno are handled as without registration; a refused registration is
// an Error naming what failed, with nothing left registered; unregistering and
// registering again take effect; backends without registered I/O say so.
//
// That a request really used the registered buffer is seen through the kernel's pinning:
// after registration the test maps fresh pages at the region's address. A fixed-buffer
// write still sends the pages pinned at registration (the lifetime rule of
// register_buffers), a plain write sends the new ones.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "detail/backend.hpp"
#include "io_test_helpers.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;
using namespace io_test;
using test::count_pattern_mismatches;
using test::fill_pattern;
using test::TempDir;

// Anonymous memory from mmap, so that the test can map fresh pages at the same address.
class Mapping {
 public:
  explicit Mapping(std::size_t size_bytes, int prot = PROT_READ | PROT_WRITE) : _size(size_bytes) {
    void* p = ::mmap(nullptr, size_bytes, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("test: mmap failed");
    _data = static_cast<std::byte*>(p);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(_data, _size); }

  std::byte* data() const { return _data; }
  std::size_t size() const { return _size; }
  std::span<std::byte> span() const { return {_data, _size}; }
  // New zero pages at the same address (what the kernel pinned before stays pinned).
  void remap() {
    void* p = ::mmap(_data, _size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != _data) throw std::runtime_error("test: mmap MAP_FIXED failed");
  }

 private:
  std::byte* _data = nullptr;
  std::size_t _size = 0;
};

// Wraps the real io_uring backend: optionally reports every other transfer as half done
// (the engine resumes the rest), answers EAGAIN for every third completion (the engine
// retries the block), delays reaps, or throws once in submit.
struct Faults {
  std::atomic<bool> shorten{false};
  std::atomic<bool> eagain{false};
  std::atomic<bool> throw_on_submit{false};
  std::atomic<int> reap_delay_ms{0};
  std::atomic<long> completions{0};
  std::atomic<long> shortened{0};
  std::atomic<long> retried{0};
  std::atomic<int> backends_made{0};
};

class FaultyBackend final : public detail::Backend {
 public:
  FaultyBackend(std::unique_ptr<detail::Backend> inner, std::shared_ptr<Faults> faults)
      : _inner(std::move(inner)), _faults(std::move(faults)) {}

  bool set_registration(const detail::Registration& registration) override {
    return _inner->set_registration(registration);
  }

  std::size_t submit(std::span<detail::Block* const> blocks) override {
    if (_faults->throw_on_submit.exchange(false)) throw SystemError("injected io_uring_submit failure", EIO);
    return _inner->submit(blocks);
  }

  std::size_t reap(std::size_t min_completions, std::span<detail::Completion> out) override {
    if (const int ms = _faults->reap_delay_ms.load(); ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    const std::size_t got = _inner->reap(min_completions, out);
    for (std::size_t i = 0; i < got; ++i) {
      auto& c = out[i];
      const long n = _faults->completions.fetch_add(1);
      if (_faults->eagain.load() && n % 3 == 0) {
        c.result = -EAGAIN;  // the data moved, but the engine must do the block again
        _faults->retried.fetch_add(1);
      } else if (_faults->shorten.load() && n % 2 == 0 && c.result >= 8192) {
        c.result = c.result / 2 / 4096 * 4096;  // the rest is done again, from mid-block
        _faults->shortened.fetch_add(1);
      }
    }
    return got;
  }

 private:
  std::unique_ptr<detail::Backend> _inner;
  std::shared_ptr<Faults> _faults;
};

class RegisteredIo : public testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (auto why = engine_unavailable_reason("io_uring"); !why.empty()) GTEST_SKIP() << why;
    _path = _dir.file("registered.swp");
    _file = std::make_unique<SwapFile>(SwapFile::create(_path, kFileBytes, direct()));
    ASSERT_EQ(_file->direct(), GetParam()) << "the test dir's filesystem should take O_DIRECT";
  }
  DirectMode direct() const { return GetParam() ? DirectMode::on : DirectMode::off; }

  static AioConfig config(std::size_t threads = 1) {
    AioConfig c;
    c.block_size = 64 * kKiB;
    c.queue_depth = 8;
    c.intra_op_parallelism = threads;
    return c;
  }

  std::unique_ptr<IoEngine> engine(AioConfig c) {
#if SWAPCOORD_HAVE_IO_URING
    auto faults = _faults;
    return detail::make_threaded_engine("io_uring+faults", c, [faults](const AioConfig& cc) {
      faults->backends_made.fetch_add(1);
      return std::make_unique<FaultyBackend>(detail::make_io_uring_backend(cc), faults);
    });
#else
    (void)c;
    throw Error("test: io_uring is not compiled in");
#endif
  }

  void write(IoEngine& e, std::byte* buffer, std::uint64_t offset, std::uint64_t size) {
    IoRequest r = write_request(*_file, buffer, offset, size);
    ASSERT_NO_THROW((void)e.run(std::span(&r, 1)));
  }

  static constexpr std::uint64_t kFileBytes = 16 * kMiB;
  TempDir _dir;
  std::string _path;
  std::unique_ptr<SwapFile> _file;
  std::shared_ptr<Faults> _faults = std::make_shared<Faults>();
};

TEST_P(RegisteredIo, RoundTripOverManyBlocksAndThreads) {
  auto e = engine(config(4));
  Mapping out(kFileBytes), in(kFileBytes);
  // Two regions per mapping (so that lookups must pick the right one), and the file.
  const std::vector<std::span<std::byte>> regions{
      out.span().first(kFileBytes / 2), out.span().subspan(kFileBytes / 2),
      in.span().first(kFileBytes / 4), in.span().subspan(kFileBytes / 4)};
  ASSERT_TRUE(e->register_buffers(regions));
  const std::vector<SwapFileRef> files{*_file};
  ASSERT_TRUE(e->register_files(files));
  const IoRegistration r = e->registration();
  EXPECT_EQ(r.regions, 4u);
  EXPECT_EQ(r.buffers, 4u);
  EXPECT_EQ(r.bytes, 2 * kFileBytes);
  EXPECT_EQ(r.files, 1u);

  for (unsigned seed : {1u, 2u}) {
    fill_pattern(out.span(), seed);
    // Eight requests of 2 MiB (32 blocks each), spread over the four threads.
    std::vector<IoRequest> writes, reads;
    for (std::uint64_t at = 0; at < kFileBytes; at += 2 * kMiB) {
      writes.push_back(write_request(*_file, out.data() + at, at, 2 * kMiB));
      reads.push_back(read_request(*_file, in.data() + at, at, 2 * kMiB));
    }
    ASSERT_NO_THROW((void)e->run(writes));
    EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, kFileBytes), seed), 0u);
    std::memset(in.data(), 0, kFileBytes);
    ASSERT_NO_THROW((void)e->run(reads));
    EXPECT_EQ(count_pattern_mismatches(in.span(), seed), 0u);
  }
}

TEST_P(RegisteredIo, FixedWriteSendsThePagesPinnedAtRegistration) {
  auto e = engine(config());
  Mapping region(1 * kMiB);
  fill_pattern(region.span(), 7);
  ASSERT_TRUE(e->register_buffers(std::vector{region.span()}));
  region.remap();  // what a caller must not do: the registration keeps the old pages
  fill_pattern(region.span(), 8);
  write(*e, region.data(), 0, 1 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 1 * kMiB), 7), 0u)
      << "the write did not use the registered buffer";

  // Unregistered, the same write sends what the address maps now.
  e->unregister_buffers();
  EXPECT_EQ(e->registration().regions, 0u);
  write(*e, region.data(), 0, 1 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 1 * kMiB), 8), 0u);

  // Registered again, the kernel pins the pages mapped now.
  ASSERT_TRUE(e->register_buffers(std::vector{region.span()}));
  fill_pattern(region.span(), 9);
  write(*e, region.data(), 0, 1 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 1 * kMiB), 9), 0u);
}

TEST_P(RegisteredIo, BlocksOutsideTheRegisteredBuffersUseThePlainOp) {
  auto e = engine(config(2));
  // 1 MiB; the first 96 KiB registered: block 0 lies inside, block 1 (64..128 KiB)
  // crosses the end of the region, the rest is outside.
  Mapping mapping(1 * kMiB);
  fill_pattern(mapping.span(), 11);
  ASSERT_TRUE(e->register_buffers(std::vector{mapping.span().first(96 * kKiB)}));
  mapping.remap();
  fill_pattern(mapping.span(), 12);
  write(*e, mapping.data(), 0, 1 * kMiB);
  const auto on_disk = pread_file(_path, 0, 1 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(std::span(on_disk).first(64 * kKiB), 11), 0u)
      << "block 0 lies inside the registered region";
  EXPECT_EQ(count_pattern_mismatches(std::span(on_disk).subspan(64 * kKiB), 12, 64 * kKiB), 0u)
      << "blocks not wholly inside a registered region go as plain writes";

  // Memory that was never registered reads and writes as before.
  AlignedBuffer other(2 * kMiB), back(2 * kMiB);
  fill_pattern(other.span(), 13);
  write(*e, other.data(), 2 * kMiB, 2 * kMiB);
  IoRequest read = read_request(*_file, back.data(), 2 * kMiB, 2 * kMiB);
  ASSERT_NO_THROW((void)e->run(std::span(&read, 1)));
  EXPECT_EQ(count_pattern_mismatches(back.cspan(), 13), 0u);
}

TEST_P(RegisteredIo, ShortTransfersAndEagainAreResumed) {
  auto e = engine(config(2));
  Mapping out(4 * kMiB), in(4 * kMiB);
  ASSERT_TRUE(e->register_buffers(std::vector{out.span(), in.span()}));
  ASSERT_TRUE(e->register_files(std::vector<SwapFileRef>{*_file}));
  _faults->shorten = true;
  _faults->eagain = true;
  fill_pattern(out.span(), 21);
  write(*e, out.data(), 0, 4 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 4 * kMiB), 21), 0u);
  IoRequest read = read_request(*_file, in.data(), 0, 4 * kMiB);
  ASSERT_NO_THROW((void)e->run(std::span(&read, 1)));
  EXPECT_EQ(count_pattern_mismatches(in.span(), 21), 0u);
  EXPECT_GT(_faults->shortened.load(), 0);
  EXPECT_GT(_faults->retried.load(), 0);
}

TEST_P(RegisteredIo, EndOfFileOnARegisteredFileIsReported) {
  auto e = engine(config());
  Mapping target(2 * kMiB);
  ASSERT_TRUE(e->register_buffers(std::vector{target.span()}));
  ASSERT_TRUE(e->register_files(std::vector<SwapFileRef>{*_file}));
  IoRequest read = read_request(*_file, target.data(), kFileBytes - 1 * kMiB, 2 * kMiB);
  const auto error = catch_as<IoError>([&] { (void)e->run(std::span(&read, 1)); });
  ASSERT_TRUE(error.has_value()) << "a read past the end of the file succeeded";
  EXPECT_THAT(error->what(), HasSubstr(_path));
  EXPECT_THAT(error->what(), HasSubstr("file ended"));
  EXPECT_THAT(error->what(), HasSubstr("offset " + std::to_string(kFileBytes)));
}

TEST_P(RegisteredIo, KernelErrnoWithAFixedBufferIsReported) {
  auto e = engine(config());
  Mapping source(1 * kMiB);
  ASSERT_TRUE(e->register_buffers(std::vector{source.span()}));
  // The file's descriptor now refers to a read-only open file: writes fail with EBADF.
  // (It is not a registered file: that one would keep the file it was registered with.)
  const int read_only = ::open(_path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(read_only, 0);
  ASSERT_EQ(::dup3(read_only, _file->fd(), O_CLOEXEC), _file->fd());
  ::close(read_only);
  IoRequest w = write_request(*_file, source.data(), 0, 1 * kMiB);
  const auto error = catch_as<IoError>([&] { (void)e->run(std::span(&w, 1)); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), EBADF);
  EXPECT_THAT(error->what(), HasSubstr(_path));
  EXPECT_THAT(error->what(), HasSubstr("Bad file descriptor"));
}

TEST_P(RegisteredIo, RefusedRegistrationNamesWhatFailedAndLeavesNothingRegistered) {
  auto e = engine(config(2));
  Mapping good(1 * kMiB);
  ASSERT_TRUE(e->register_buffers(std::vector{good.span()}));
  // Pages the kernel cannot pin: PROT_NONE.
  Mapping forbidden(256 * kKiB, PROT_NONE);
  const auto error = catch_as<Error>([&] {
    (void)e->register_buffers(std::vector{good.span(), forbidden.span()});
  });
  ASSERT_TRUE(error.has_value()) << "the kernel registered PROT_NONE pages";
  EXPECT_THAT(error->what(), HasSubstr("register_buffers of 2 regions"));
  EXPECT_THAT(error->what(), HasSubstr(std::to_string(1 * kMiB + 256 * kKiB) + " bytes"));
  EXPECT_THAT(error->what(), HasSubstr("io_uring_register_buffers"));
  EXPECT_THAT(error->what(), HasSubstr("errno"));
  EXPECT_THAT(error->what(), HasSubstr("no buffer is registered"));
  EXPECT_EQ(e->registration().regions, 0u);
  EXPECT_EQ(e->registration().buffers, 0u);

  // Unregistered I/O goes on, and the pages are no longer the pinned ones.
  good.remap();
  fill_pattern(good.span(), 31);
  write(*e, good.data(), 0, 1 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 1 * kMiB), 31), 0u);
}

TEST_P(RegisteredIo, BadRegionsAreRefusedBeforeTheKernel) {
  auto e = engine(config());
  Mapping mapping(1 * kMiB);
  auto overlap = catch_as<Error>([&] {
    (void)e->register_buffers(std::vector{mapping.span().first(512 * kKiB), mapping.span().subspan(256 * kKiB)});
  });
  ASSERT_TRUE(overlap.has_value());
  EXPECT_THAT(overlap->what(), HasSubstr("overlap"));
  auto empty = catch_as<Error>([&] { (void)e->register_buffers(std::vector{mapping.span().first(0)}); });
  ASSERT_TRUE(empty.has_value());
  EXPECT_THAT(empty->what(), HasSubstr("region 0 is empty"));

  // More buffers than the kernel takes: 16385 adjacent 4 KiB regions.
  const std::size_t count = kMaxRegisteredBuffers + 1;
  Mapping many(count * kPage);
  std::vector<std::span<std::byte>> regions;
  for (std::size_t i = 0; i < count; ++i) regions.push_back(many.span().subspan(i * kPage, kPage));
  auto too_many = catch_as<Error>([&] { (void)e->register_buffers(regions); });
  ASSERT_TRUE(too_many.has_value());
  EXPECT_THAT(too_many->what(), HasSubstr("16385 kernel buffers"));
  EXPECT_THAT(too_many->what(), HasSubstr("limit of 16384"));
  EXPECT_EQ(e->registration().regions, 0u);
}

TEST_P(RegisteredIo, RegistrationWithABatchInFlightIsRefused) {
  auto e = engine(config());
  Mapping source(1 * kMiB);
  _faults->reap_delay_ms = 300;
  IoRequest w = write_request(*_file, source.data(), 0, 1 * kMiB);
  IoTicket ticket = e->submit(std::span(&w, 1));
  const auto error = catch_as<Error>([&] { (void)e->register_buffers(std::vector{source.span()}); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr("1 batches in flight"));
  _faults->reap_delay_ms = 0;
  EXPECT_NO_THROW((void)e->wait(std::move(ticket)));
  EXPECT_TRUE(e->register_buffers(std::vector{source.span()}));
}

TEST_P(RegisteredIo, ARestartedKernelQueueRegistersAgain) {
  auto e = engine(config());
  Mapping region(1 * kMiB);
  fill_pattern(region.span(), 41);
  ASSERT_TRUE(e->register_buffers(std::vector{region.span()}));
  ASSERT_TRUE(e->register_files(std::vector<SwapFileRef>{*_file}));
  // An exception in the I/O thread: the batch fails and the thread makes a new ring.
  _faults->throw_on_submit = true;
  IoRequest w = write_request(*_file, region.data(), 0, 1 * kMiB);
  EXPECT_TRUE(catch_as<IoError>([&] { (void)e->run(std::span(&w, 1)); }).has_value());
  EXPECT_EQ(_faults->backends_made.load(), 2);
  // The new ring registered the region: a write still sends the pages pinned then.
  region.remap();
  fill_pattern(region.span(), 42);
  write(*e, region.data(), 0, 1 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 1 * kMiB), 41), 0u);
  EXPECT_EQ(e->registration().files, 1u);
}

INSTANTIATE_TEST_SUITE_P(Direct, RegisteredIo, testing::Bool(),
                         [](const testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "odirect" : "buffered");
                         });

// ---- backends without registered I/O -----------------------------------------------------

class WithoutRegisteredIo : public testing::TestWithParam<std::string> {};

TEST_P(WithoutRegisteredIo, RegistrationIsRefusedPolitelyAndIoGoesOn) {
  std::string why;
  auto e = make_engine_or_null(GetParam(), AioConfig{}, why);
  if (!e) GTEST_SKIP() << why;
  TempDir dir;
  const std::string path = dir.file("plain.swp");
  SwapFile file = SwapFile::create(path, 1 * kMiB);
  AlignedBuffer buffer(1 * kMiB);
  EXPECT_FALSE(e->register_buffers(std::vector{buffer.span()}));
  EXPECT_FALSE(e->register_files(std::vector<SwapFileRef>{file}));
  EXPECT_EQ(e->registration().regions, 0u);
  EXPECT_EQ(e->registration().files, 0u);
  fill_pattern(buffer.span(), 51);
  IoRequest w = write_request(file, buffer.data(), 0, 1 * kMiB);
  ASSERT_NO_THROW((void)e->run(std::span(&w, 1)));
  EXPECT_EQ(count_pattern_mismatches(pread_file(path, 0, 1 * kMiB), 51), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, WithoutRegisteredIo, testing::Values("libaio", "posix"),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace swapcoord
