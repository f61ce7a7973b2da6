// Issue 9, point 12 ("Robustness of the hot path"), each part provoked:
//  - an exception in an I/O thread fails the batches it held (IoFailure with path, offset,
//    op and the message), is reported by wait(), and the engine goes on (or, when its
//    thread cannot restart, refuses new work saying why) instead of std::terminate;
//  - a kernel that answers EAGAIN with nothing in flight gets a backed-off retry, not a
//    busy spin (submit calls and process CPU time over the interval);
//  - IoTicket is a move-only handle: dropping one waits for and releases its batch, a
//    second wait is a clear Error, and the engine's batches are never freed twice;
//  - IoRequest and SwapLocation share the open file, so a SwapFile may move (or go away)
//    while they exist.
// Faults are injected through the backend interface (src/io/detail/backend.hpp): a
// backend that wraps a real one (libaio, io_uring, posix) and throws or answers EAGAIN.
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "detail/backend.hpp"
#include "io_test_helpers.hpp"
#include "swapcoord/config.hpp"
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
using Clock = std::chrono::steady_clock;

// The copy/move properties are part of the contract (HighFive pins them the same way).
static_assert(!std::is_copy_constructible_v<IoTicket> && !std::is_copy_assignable_v<IoTicket>,
              "a ticket is one batch's handle: copying it would let two waiters free it");
static_assert(std::is_nothrow_move_constructible_v<IoTicket> &&
              std::is_nothrow_move_assignable_v<IoTicket>);
static_assert(!std::is_copy_constructible_v<SwapFile>);
static_assert(std::is_nothrow_move_constructible_v<SwapFile>);
static_assert(std::is_nothrow_copy_constructible_v<SwapFileRef>);
static_assert(std::is_same_v<decltype(IoRequest::file), SwapFileRef> &&
              std::is_same_v<decltype(SwapLocation::file), SwapFileRef>,
              "requests and locations share the open file rather than point at a SwapFile");

// What to do wrong, shared by every backend one engine's factory makes.
struct Faults {
  std::atomic<bool> throw_on_submit{false};   // the next submit() throws (once)
  std::atomic<bool> throw_on_reap{false};     // the next reap() throws (once)
  std::atomic<bool> refuse_new_backends{false};
  std::atomic<Clock::rep> eagain_until{0};    // submit() answers "reap first" until then
  std::atomic<int> reap_delay_ms{0};
  std::atomic<long> submit_calls{0};
  std::atomic<int> backends_made{0};
  std::mutex mutex;
  std::set<const void*> batches;              // the engine batches whose blocks were seen
};

class FaultyBackend final : public detail::Backend {
 public:
  FaultyBackend(std::unique_ptr<detail::Backend> inner, std::shared_ptr<Faults> faults)
      : _inner(std::move(inner)), _faults(std::move(faults)) {}

  std::size_t submit(std::span<detail::Block* const> blocks) override {
    _faults->submit_calls.fetch_add(1);
    if (Clock::now().time_since_epoch().count() < _faults->eagain_until.load()) return 0;
    if (_faults->throw_on_submit.exchange(false))
      throw SystemError("injected io_submit failure", EIO);
    {
      std::lock_guard lock(_faults->mutex);
      for (const detail::Block* block : blocks) _faults->batches.insert(block->batch);
    }
    return _inner->submit(blocks);
  }

  std::size_t reap(std::size_t min_completions, std::span<detail::Completion> out) override {
    if (const int ms = _faults->reap_delay_ms.load(); ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    if (_faults->throw_on_reap.exchange(false))
      throw SystemError("injected io_getevents failure", EFAULT);
    return _inner->reap(min_completions, out);
  }

 private:
  std::unique_ptr<detail::Backend> _inner;
  std::shared_ptr<Faults> _faults;
};

std::unique_ptr<detail::Backend> real_backend(const std::string& name, const AioConfig& config) {
#if SWAPCOORD_HAVE_LIBAIO
  if (name == "libaio") return detail::make_libaio_backend(config);
#endif
#if SWAPCOORD_HAVE_IO_URING
  if (name == "io_uring") return detail::make_io_uring_backend(config);
#endif
  if (name == "posix") return detail::make_posix_backend(config);
  throw Error("test: backend " + name + " is not compiled in");
}

class Robustness : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (auto why = engine_unavailable_reason(GetParam()); !why.empty()) GTEST_SKIP() << why;
    _path = _dir.file("robust.swp");
    _file = std::make_unique<SwapFile>(SwapFile::create(_path, 8 * kMiB));
  }

  std::unique_ptr<IoEngine> engine(AioConfig config = small_blocks()) {
    auto faults = _faults;
    const std::string name = GetParam();
    return detail::make_threaded_engine(
        name + "+faults", config,
        [faults, name](const AioConfig& c) -> std::unique_ptr<detail::Backend> {
          if (faults->refuse_new_backends.load() && faults->backends_made.load() > 0)
            throw SystemError("injected: no new kernel queue", EAGAIN);
          faults->backends_made.fetch_add(1);
          return std::make_unique<FaultyBackend>(real_backend(name, c), faults);
        });
  }

  static AioConfig small_blocks() {
    AioConfig config;
    config.block_size = 64 * kKiB;
    config.queue_depth = 4;
    return config;
  }

  // Writes `bytes` (pattern `seed`) at 0 through `e` and checks them on disk.
  void round_trip(IoEngine& e, std::size_t bytes, unsigned seed) {
    AlignedBuffer data(bytes);
    fill_pattern(data.span(), seed);
    IoRequest write = write_request(*_file, data.data(), 0, bytes);
    ASSERT_NO_THROW((void)e.run(std::span(&write, 1)));
    EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, bytes), seed), 0u);
  }

  TempDir _dir;
  std::string _path;
  std::unique_ptr<SwapFile> _file;
  std::shared_ptr<Faults> _faults = std::make_shared<Faults>();
};

std::string backend_name(const testing::TestParamInfo<std::string>& info) {
  return name_part(info.param);
}

// ---- 1. an exception in an I/O thread ----------------------------------------------------

TEST_P(Robustness, ThrowInSubmitFailsTheBatchAndTheEngineGoesOn) {
  auto e = engine();
  AlignedBuffer data(512 * kKiB);
  fill_pattern(data.span(), 5);
  std::vector<IoRequest> writes{write_request(*_file, data.data(), 0, 256 * kKiB),
                                write_request(*_file, data.data() + 256 * kKiB, 1 * kMiB, 256 * kKiB)};
  _faults->throw_on_submit = true;
  const auto error = catch_as<IoError>([&] { (void)e->run(writes); });
  ASSERT_TRUE(error.has_value()) << "the batch whose I/O thread threw reported success";
  EXPECT_THAT(error->what(), HasSubstr("injected io_submit failure"));
  EXPECT_THAT(error->what(), HasSubstr("the I/O thread failed"));
  EXPECT_THAT(error->what(), HasSubstr(_path));
  ASSERT_FALSE(error->failures().empty());
  const IoFailure& f = error->failures().front();
  EXPECT_EQ(f.op, IoOp::write);
  EXPECT_EQ(f.path, _path);
  EXPECT_EQ(f.request, 0u);
  EXPECT_EQ(f.offset, 0u);
  EXPECT_EQ(f.errno_value, EIO);
  EXPECT_THAT(f.message, HasSubstr("injected io_submit failure"));
  // The thread restarted its kernel queue: the same engine still moves data.
  round_trip(*e, 512 * kKiB, 6);
  EXPECT_EQ(_faults->backends_made.load(), 2);
}

TEST_P(Robustness, ThrowInReapFailsTheRequestsInFlight) {
  auto e = engine();
  AlignedBuffer data(1 * kMiB);
  fill_pattern(data.span(), 7);
  IoRequest write = write_request(*_file, data.data(), 2 * kMiB, 1 * kMiB);
  _faults->throw_on_reap = true;
  const auto error = catch_as<IoError>([&] { (void)e->run(std::span(&write, 1)); });
  ASSERT_TRUE(error.has_value()) << "a batch whose completions were lost reported success";
  EXPECT_THAT(error->what(), HasSubstr("injected io_getevents failure"));
  ASSERT_EQ(error->failures().size(), 1u);
  EXPECT_EQ(error->failures()[0].path, _path);
  EXPECT_EQ(error->failures()[0].errno_value, EFAULT);
  EXPECT_GE(error->failures()[0].offset, 2 * kMiB);
  round_trip(*e, 1 * kMiB, 8);
}

TEST_P(Robustness, AnEngineThatCannotRestartRefusesClearly) {
  auto e = engine();
  AlignedBuffer data(64 * kKiB);
  IoRequest read = read_request(*_file, data.data(), 0, 64 * kKiB);
  _faults->refuse_new_backends = true;
  _faults->throw_on_reap = true;
  EXPECT_THROW((void)e->run(std::span(&read, 1)), IoError);
  // Until the thread has given up, a batch may still be queued: then it fails, naming why.
  std::optional<std::string> refused;
  for (int i = 0; i < 200 && !refused; ++i) {
    try {
      (void)e->run(std::span(&read, 1));
      ADD_FAILURE() << "a batch ran on an engine whose only I/O thread stopped";
      break;
    } catch (const IoError& failed) {
      EXPECT_THAT(failed.what(), HasSubstr("no I/O thread is left"));
    } catch (const Error& refusal) {
      refused = refusal.what();
    }
  }
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(*refused, HasSubstr("cannot take new work"));
  EXPECT_THAT(*refused, HasSubstr("injected io_getevents failure"));
  EXPECT_THAT(*refused, HasSubstr("injected: no new kernel queue"));
}

// ---- 2. EAGAIN with nothing in flight ----------------------------------------------------

double process_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

TEST_P(Robustness, EagainWithNothingInFlightBacksOff) {
  auto e = engine();
  AlignedBuffer data(256 * kKiB);
  fill_pattern(data.span(), 9);
  IoRequest write = write_request(*_file, data.data(), 0, 256 * kKiB);
  constexpr auto kRefusal = std::chrono::milliseconds(400);
  const auto wall_start = Clock::now();
  const double cpu_start = process_cpu_seconds();
  _faults->eagain_until = (wall_start + kRefusal).time_since_epoch().count();
  ASSERT_NO_THROW((void)e->run(std::span(&write, 1)));
  const double wall = std::chrono::duration<double>(Clock::now() - wall_start).count();
  const double cpu = process_cpu_seconds() - cpu_start;
  EXPECT_GE(wall, 0.39) << "the batch ran while the kernel refused it";
  // Backing off 50 us doubling to 5 ms asks about 90 times in 400 ms; a spin asks millions.
  EXPECT_LT(_faults->submit_calls.load(), 1000) << "the I/O thread spun on EAGAIN";
  EXPECT_LT(cpu, 0.25 * wall) << "the process burnt " << cpu << " s of CPU in " << wall
                              << " s of waiting for the kernel";
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 256 * kKiB), 9), 0u);
}

// ---- 3. IoTicket ------------------------------------------------------------------------

TEST_P(Robustness, DroppedTicketWaitsForItsBatch) {
  auto e = engine();
  AlignedBuffer data(512 * kKiB);
  fill_pattern(data.span(), 11);
  IoRequest write = write_request(*_file, data.data(), 0, 512 * kKiB);
  _faults->reap_delay_ms = 100;
  const auto start = Clock::now();
  { IoTicket dropped = e->submit(std::span(&write, 1)); }
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(90))
      << "dropping the ticket returned before its batch was done";
  _faults->reap_delay_ms = 0;
  EXPECT_EQ(count_pattern_mismatches(pread_file(_path, 0, 512 * kKiB), 11), 0u)
      << "the buffer was free to reuse while the write was still to happen";
}

TEST_P(Robustness, DroppedTicketsReleaseTheirBatches) {
  auto e = engine();
  AlignedBuffer data(64 * kKiB);
  IoRequest read = read_request(*_file, data.data(), 0, 64 * kKiB);
  for (int i = 0; i < 50; ++i) (void)e->submit(std::span(&read, 1));  // each dropped at once
  std::lock_guard lock(_faults->mutex);
  EXPECT_EQ(_faults->batches.size(), 1u)
      << "50 batches submitted one after another, each ticket dropped, used "
      << _faults->batches.size() << " batch records: dropped tickets leaked theirs";
}

TEST_P(Robustness, DroppedTicketOfAFailedBatchDoesNotThrow) {
  auto e = engine();
  SwapFile short_file = SwapFile::create(_dir.file("short.swp"), 64 * kKiB);
  AlignedBuffer data(128 * kKiB);
  IoRequest read = read_request(short_file, data.data(), 0, 128 * kKiB);  // past the end
  EXPECT_NO_THROW({ IoTicket dropped = e->submit(std::span(&read, 1)); });
  round_trip(*e, 64 * kKiB, 12);
}

TEST_P(Robustness, SecondWaitOnOneTicketIsAClearError) {
  auto e = engine();
  AlignedBuffer data(64 * kKiB);
  IoRequest read = read_request(*_file, data.data(), 0, 64 * kKiB);
  IoTicket ticket = e->submit(std::span(&read, 1));
  IoTicket moved = std::move(ticket);
  EXPECT_FALSE(ticket.valid());
  EXPECT_NO_THROW((void)e->wait(std::move(moved)));
  for (IoTicket* t : {&ticket, &moved}) {
    const auto error = catch_as<Error>([&] { (void)e->wait(std::move(*t)); });
    ASSERT_TRUE(error.has_value()) << "a second wait on one batch returned";
    EXPECT_THAT(error->what(), HasSubstr("empty I/O ticket"));
  }
  EXPECT_THROW((void)IoTicket{}.wait(), Error);
  // The batch was freed once: two batches in flight together get two records.
  _faults->reap_delay_ms = 50;
  IoTicket a = e->submit(std::span(&read, 1));
  IoTicket b = e->submit(std::span(&read, 1));
  EXPECT_NO_THROW((void)b.wait());
  EXPECT_NO_THROW((void)a.wait());
  std::lock_guard lock(_faults->mutex);
  EXPECT_EQ(_faults->batches.size(), 2u);
}

TEST_P(Robustness, TicketOfAnotherEngineIsRefused) {
  auto first = engine();
  auto second = engine();
  AlignedBuffer data(64 * kKiB);
  IoRequest read = read_request(*_file, data.data(), 0, 64 * kKiB);
  IoTicket ticket = first->submit(std::span(&read, 1));
  const auto error = catch_as<Error>([&] { (void)second->wait(std::move(ticket)); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr("of another engine"));
}

INSTANTIATE_TEST_SUITE_P(Backends, Robustness, testing::ValuesIn(backend_names()), backend_name);

// ---- 4. requests and locations share the open file ---------------------------------------

TEST(SwapFileRefs, LocationSurvivesTheMoveOfItsFile) {
  TempDir dir;
  auto e = make_engine("posix");
  std::vector<SwapFile> files;
  files.push_back(SwapFile::create(dir.file("first.swp"), 1 * kMiB, DirectMode::off));
  const SwapLocation location{&files.front(), 4096, 64 * kKiB};
  // Growing the vector moves every SwapFile (the old raw pointer then dangled).
  for (int i = 0; i < 64; ++i)
    files.push_back(SwapFile::create(dir.file("f" + std::to_string(i) + ".swp"), 4096, DirectMode::off));
  EXPECT_EQ(location.file, &files.front());
  EXPECT_EQ(location.file->path(), dir.file("first.swp"));
  AlignedBuffer data(64 * kKiB);
  fill_pattern(data.span(), 21);
  const IoRequest write = to_request(IoOp::write, location, data.data(), 64 * kKiB);
  ASSERT_NO_THROW((void)e->run(std::span(&write, 1)));
  EXPECT_EQ(count_pattern_mismatches(pread_file(dir.file("first.swp"), 4096, 64 * kKiB), 21), 0u);
}

TEST(SwapFileRefs, RequestKeepsItsFileOpenAfterTheSwapFileIsGone) {
  TempDir dir;
  auto e = make_engine("posix");
  IoRequest write;
  AlignedBuffer data(8192);
  fill_pattern(data.span(), 22);
  {
    SwapFile file = SwapFile::create(dir.file("gone.swp"), 8192, DirectMode::off);
    write = write_request(file, data.data(), 0, 8192);
    SwapFile moved = std::move(file);
    EXPECT_EQ(file.fd(), -1);
    EXPECT_EQ(SwapFileRef(&file), nullptr) << "a moved-from SwapFile refers to nothing";
  }
  // A new file may get the descriptor number the old one had: the request must not
  // write there.
  SwapFile other = SwapFile::create(dir.file("other.swp"), 8192, DirectMode::off);
  ASSERT_NO_THROW((void)e->run(std::span(&write, 1)));
  EXPECT_EQ(count_pattern_mismatches(pread_file(dir.file("gone.swp"), 0, 8192), 22), 0u);
  const auto on_other = pread_file(dir.file("other.swp"), 0, 8192);
  EXPECT_EQ(std::count(on_other.begin(), on_other.end(), std::byte{0}), 8192);
}

}  // namespace
}  // namespace swapcoord
