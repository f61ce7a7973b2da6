// Data goes through every backend intact: the bytes the engine writes are the bytes a
// plain pread finds on disk, and the bytes the engine reads are the bytes a plain pwrite
// put there. Sizes around page and block boundaries, buffered and O_DIRECT, and the
// engine knobs (queue depth, threads, single submit, overlap, block size) in batches of
// several requests with several batches in flight.
#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "io_test_helpers.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using namespace io_test;
using test::count_pattern_mismatches;
using test::fill_pattern;
using test::TempDir;

// ---- one request, sizes around the boundaries ------------------------------------------

struct RoundTripCase {
  std::string backend;
  std::uint64_t size_bytes = 0;
  bool direct = false;
};

void PrintTo(const RoundTripCase& c, std::ostream* os) {
  *os << c.backend << ", " << c.size_bytes << " bytes, " << (c.direct ? "direct" : "buffered");
}

std::string round_trip_name(const testing::TestParamInfo<RoundTripCase>& info) {
  const auto& c = info.param;
  return name_part(c.backend) + "_" + std::to_string(c.size_bytes) + "B_" +
         (c.direct ? "direct" : "buffered");
}

std::vector<RoundTripCase> round_trip_cases() {
  // Buffered: any size. Direct: the same sizes rounded up to 4096 (deduplicated).
  const std::vector<std::uint64_t> buffered{1, 4095, 4097, 1 * kMiB + 1, 64 * kMiB};
  const std::vector<std::uint64_t> direct{4096, 8192, 1 * kMiB + 4096, 64 * kMiB};
  std::vector<RoundTripCase> cases;
  for (const auto& backend : backend_names()) {
    for (auto size : buffered) cases.push_back({backend, size, false});
    for (auto size : direct) cases.push_back({backend, size, true});
  }
  return cases;
}

class RoundTrip : public testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTrip, EngineAgreesWithTheKernel) {
  const auto& param = GetParam();
  std::string why;
  auto engine = make_engine_or_null(param.backend, AioConfig{}, why);
  if (!engine) GTEST_SKIP() << why;

  TempDir dir;
  const std::string path = dir.file("round-trip.swp");
  const std::uint64_t size = param.size_bytes;
  SwapFile file = SwapFile::create(path, size, param.direct ? DirectMode::on : DirectMode::off);
  ASSERT_EQ(file.direct(), param.direct);
  ASSERT_EQ(file.size_bytes(), size);
  // Buffered files take any buffer address; use an odd one to show it.
  const std::size_t misalign = param.direct ? 0 : 3;

  // Kernel -> engine: what pwrite put on disk, the engine reads.
  {
    AlignedBuffer source(size, misalign);
    fill_pattern(source.span(), 11);
    pwrite_file(path, 0, source.cspan());
    AlignedBuffer target(size, misalign);
    IoRequest request = read_request(file, target.data(), 0, size);
    const IoBatchResult result = engine->run(std::span(&request, 1));
    EXPECT_EQ(result.requests, 1u);
    EXPECT_EQ(result.bytes, size);
    EXPECT_EQ(count_pattern_mismatches(target.cspan(), 11), 0u)
        << "bytes the engine read differ from what pwrite wrote";
  }

  // Engine -> kernel: what the engine writes, pread finds; and the engine reads it back.
  AlignedBuffer source(size, misalign);
  fill_pattern(source.span(), 22);
  IoRequest write = write_request(file, source.data(), 0, size);
  const IoBatchResult written = engine->run(std::span(&write, 1));
  EXPECT_EQ(written.requests, 1u);
  EXPECT_EQ(written.bytes, size);
  EXPECT_EQ(file.size_bytes(), size) << "a write inside the file changed its size";

  const auto on_disk = pread_file(path, 0, size);
  ASSERT_EQ(on_disk.size(), size);
  EXPECT_EQ(count_pattern_mismatches(on_disk, 22), 0u)
      << "bytes on disk (plain pread) differ from the bytes the engine wrote";

  AlignedBuffer back(size, misalign);
  IoRequest read = read_request(file, back.data(), 0, size);
  EXPECT_EQ(engine->run(std::span(&read, 1)).bytes, size);
  EXPECT_EQ(count_differences(back.cspan(), source.cspan()), 0u)
      << "engine read-back differs from the engine write";
}

INSTANTIATE_TEST_SUITE_P(Sizes, RoundTrip, testing::ValuesIn(round_trip_cases()),
                         round_trip_name);

// ---- batches of several requests under every knob --------------------------------------

struct Variant {
  std::string name;
  AioConfig config;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  out.push_back({"defaults", AioConfig{}});
  AioConfig c;
  c.queue_depth = 1;
  out.push_back({"queue_depth_1", c});
  c = {};
  c.intra_op_parallelism = 4;
  out.push_back({"threads_4", c});
  c = {};
  c.single_submit = true;
  out.push_back({"single_submit", c});
  c = {};
  c.overlap_events = false;
  out.push_back({"no_overlap_events", c});
  c = {};
  c.block_size = 4096;  // a 1 MiB request becomes 256 kernel requests
  out.push_back({"block_4k", c});
  c = {};
  c.block_size = 4096;
  c.queue_depth = 3;
  c.intra_op_parallelism = 4;
  c.single_submit = true;
  c.overlap_events = false;
  out.push_back({"block_4k_qd3_threads_4_single_no_overlap", c});
  return out;
}

struct BatchCase {
  std::string backend;
  Variant variant;
  bool direct = false;
};

void PrintTo(const BatchCase& c, std::ostream* os) {
  *os << c.backend << ", " << c.variant.name << ", " << (c.direct ? "direct" : "buffered");
}

std::vector<BatchCase> batch_cases() {
  std::vector<BatchCase> cases;
  for (const auto& backend : backend_names())
    for (const auto& variant : variants())
      for (bool direct : {true, false}) cases.push_back({backend, variant, direct});
  return cases;
}

std::string batch_name(const testing::TestParamInfo<BatchCase>& info) {
  return name_part(info.param.backend) + "_" + info.param.variant.name + "_" +
         (info.param.direct ? "direct" : "buffered");
}

struct Region {
  std::uint64_t offset;
  std::uint64_t size_bytes;
};

constexpr std::uint64_t kBatchFileBytes = 4 * kMiB;

// Non-overlapping regions of a 4 MiB file, deliberately not in offset order.
std::vector<Region> regions(bool direct) {
  if (direct)
    return {{0, 4096},
            {8192, 1 * kMiB},
            {2 * kMiB, 12288},
            {3 * kMiB, 512 * kKiB + 4096},
            {1 * kMiB + 65536, 3 * 4096}};
  return {{1, 1000},
          {5000, 1 * kMiB + 3},
          {2 * kMiB + 7, 12345},
          {3 * kMiB + 11, 512 * kKiB + 1},
          {1 * kMiB + 70000, 9999}};
}

class Batches : public testing::TestWithParam<BatchCase> {};

TEST_P(Batches, SeveralRequestsAndTicketsInFlight) {
  const auto& param = GetParam();
  std::string why;
  auto engine = make_engine_or_null(param.backend, param.variant.config, why);
  if (!engine) GTEST_SKIP() << why;

  TempDir dir;
  const std::string path = dir.file("batch.swp");
  SwapFile file =
      SwapFile::create(path, kBatchFileBytes, param.direct ? DirectMode::on : DirectMode::off);
  ASSERT_EQ(file.direct(), param.direct);

  const auto parts = regions(param.direct);
  const std::size_t misalign = param.direct ? 0 : 5;
  std::vector<std::unique_ptr<AlignedBuffer>> sources;
  std::vector<IoRequest> writes;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    sources.push_back(std::make_unique<AlignedBuffer>(parts[i].size_bytes, misalign));
    // The pattern is keyed by file offset, so the file itself can be checked region by
    // region with count_pattern_mismatches.
    fill_pattern(sources.back()->span(), 100 + i, parts[i].offset);
    writes.push_back(write_request(file, sources.back()->data(), parts[i].offset,
                                   parts[i].size_bytes));
  }

  // Two write batches in flight; wait for the second first.
  IoTicket first = engine->submit(std::span(writes).first(3));
  IoTicket second = engine->submit(std::span(writes).subspan(3));
  EXPECT_NE(first.id(), second.id());
  const IoBatchResult r2 = engine->wait(std::move(second));
  const IoBatchResult r1 = engine->wait(std::move(first));
  EXPECT_EQ(r1.requests, 3u);
  EXPECT_EQ(r1.bytes, parts[0].size_bytes + parts[1].size_bytes + parts[2].size_bytes);
  EXPECT_EQ(r2.requests, parts.size() - 3);
  EXPECT_EQ(r2.bytes, parts[3].size_bytes + parts[4].size_bytes);

  // The kernel's view: every region holds its pattern and every other byte is still 0.
  const auto on_disk = pread_file(path, 0, kBatchFileBytes);
  ASSERT_EQ(on_disk.size(), kBatchFileBytes);
  std::vector<bool> covered(kBatchFileBytes, false);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    SCOPED_TRACE("region " + std::to_string(i) + " at offset " + std::to_string(parts[i].offset));
    const auto region = std::span(on_disk).subspan(parts[i].offset, parts[i].size_bytes);
    EXPECT_EQ(count_pattern_mismatches(region, 100 + i, parts[i].offset), 0u);
    std::fill_n(covered.begin() + static_cast<std::ptrdiff_t>(parts[i].offset),
                parts[i].size_bytes, true);
  }
  std::size_t stray = 0;
  for (std::size_t at = 0; at < kBatchFileBytes; ++at)
    stray += !covered[at] && on_disk[at] != std::byte{0};
  EXPECT_EQ(stray, 0u) << "bytes outside the written regions changed";

  // Read back: one batch with every request, then one ticket per request, all in flight
  // at once and waited for in reverse order.
  std::vector<std::unique_ptr<AlignedBuffer>> targets;
  std::vector<IoRequest> reads;
  for (const auto& part : parts) {
    targets.push_back(std::make_unique<AlignedBuffer>(part.size_bytes, misalign));
    reads.push_back(read_request(file, targets.back()->data(), part.offset, part.size_bytes));
  }
  const IoBatchResult all = engine->run(reads);
  EXPECT_EQ(all.requests, parts.size());
  for (std::size_t i = 0; i < parts.size(); ++i)
    EXPECT_EQ(count_pattern_mismatches(targets[i]->cspan(), 100 + i, parts[i].offset), 0u)
        << "request " << i << " of the read batch";

  for (auto& target : targets) std::memset(target->data(), 0xEE, target->size());
  std::vector<IoTicket> tickets;
  for (const auto& read : reads) tickets.push_back(engine->submit(std::span(&read, 1)));
  for (std::size_t i = tickets.size(); i-- > 0;) {
    const IoBatchResult one = engine->wait(std::move(tickets[i]));
    EXPECT_EQ(one.requests, 1u);
    EXPECT_EQ(one.bytes, parts[i].size_bytes);
  }
  for (std::size_t i = 0; i < parts.size(); ++i)
    EXPECT_EQ(count_pattern_mismatches(targets[i]->cspan(), 100 + i, parts[i].offset), 0u)
        << "single-request ticket " << i;
}

INSTANTIATE_TEST_SUITE_P(Knobs, Batches, testing::ValuesIn(batch_cases()), batch_name);

// ---- fsync, empty batches, teardown ------------------------------------------------------

std::string backend_name(const testing::TestParamInfo<std::string>& info) {
  return name_part(info.param);
}

class EngineLifecycle : public testing::TestWithParam<std::string> {};

TEST_P(EngineLifecycle, FsyncConfigWritesAndSyncs) {
  AioConfig config;
  config.fsync = true;
  std::string why;
  auto engine = make_engine_or_null(GetParam(), config, why);
  if (!engine) GTEST_SKIP() << why;
  ASSERT_TRUE(engine->config().fsync);

  TempDir dir;
  SwapFile a = SwapFile::create(dir.file("a.swp"), 2 * kMiB);
  SwapFile b = SwapFile::create(dir.file("b.swp"), 2 * kMiB);
  AlignedBuffer bytes_a(2 * kMiB), bytes_b(1 * kMiB);
  fill_pattern(bytes_a.span(), 7);
  fill_pattern(bytes_b.span(), 8);
  // Two requests to the same file and one to another: each file is synced once.
  std::vector<IoRequest> writes{write_request(a, bytes_a.data(), 0, 1 * kMiB),
                                write_request(a, bytes_a.data() + kMiB, kMiB, 1 * kMiB),
                                write_request(b, bytes_b.data(), 1 * kMiB, 1 * kMiB)};
  IoBatchResult result;
  ASSERT_NO_THROW(result = engine->wait(engine->submit(writes)));
  EXPECT_EQ(result.requests, 3u);
  EXPECT_EQ(result.bytes, 3 * kMiB);
  EXPECT_EQ(count_pattern_mismatches(pread_file(a.path(), 0, 2 * kMiB), 7), 0u);
  EXPECT_EQ(count_pattern_mismatches(pread_file(b.path(), kMiB, 1 * kMiB), 8), 0u);

  // A read-only batch under fsync=true is fine too.
  AlignedBuffer back(1 * kMiB);
  IoRequest read = read_request(b, back.data(), kMiB, 1 * kMiB);
  EXPECT_NO_THROW(engine->run(std::span(&read, 1)));
  EXPECT_EQ(count_pattern_mismatches(back.cspan(), 8), 0u);
}

TEST_P(EngineLifecycle, DirectRequestsOfOneLogicalBlock) {
  // The engine must not assume 4096: on a 512-byte-sector device, 512-byte requests at
  // 512-byte offsets are valid O_DIRECT.
  std::string why;
  auto engine = make_engine_or_null(GetParam(), AioConfig{}, why);
  if (!engine) GTEST_SKIP() << why;
  TempDir dir;
  const std::string path = dir.file("sector.swp");
  SwapFile file = SwapFile::create(path, 64 * kKiB, DirectMode::on);
  ASSERT_TRUE(file.direct());
  const std::uint64_t unit = file.offset_alignment();
  AlignedBuffer bytes(3 * unit);
  fill_pattern(bytes.span(), 51, unit);
  std::vector<IoRequest> writes{write_request(file, bytes.data(), unit, unit),
                                write_request(file, bytes.data() + unit, 2 * unit, 2 * unit)};
  if (!is_aligned(bytes.data() + unit, file.memory_alignment())) writes.pop_back();
  EXPECT_NO_THROW(engine->run(writes));
  const std::uint64_t written = writes.size() == 2 ? 3 * unit : unit;
  EXPECT_EQ(count_pattern_mismatches(pread_file(path, unit, written), 51, unit), 0u);
  AlignedBuffer back(unit);
  IoRequest read = read_request(file, back.data(), unit, unit);
  EXPECT_NO_THROW(engine->run(std::span(&read, 1)));
  EXPECT_EQ(count_pattern_mismatches(back.cspan(), 51, unit), 0u);
}

TEST_P(EngineLifecycle, EmptyBatchCompletesAtOnce) {
  std::string why;
  auto engine = make_engine_or_null(GetParam(), AioConfig{}, why);
  if (!engine) GTEST_SKIP() << why;
  const IoBatchResult result = engine->run({});
  EXPECT_EQ(result.requests, 0u);
  EXPECT_EQ(result.bytes, 0u);
}

TEST_P(EngineLifecycle, ManyBatchesReuseTheEngine) {
  AioConfig config;
  config.block_size = 64 * kKiB;
  config.intra_op_parallelism = 2;
  std::string why;
  auto engine = make_engine_or_null(GetParam(), config, why);
  if (!engine) GTEST_SKIP() << why;

  TempDir dir;
  constexpr std::uint64_t kChunk = 256 * kKiB;
  constexpr int kRounds = 16;
  SwapFile file = SwapFile::create(dir.file("many.swp"), kChunk * kRounds);
  AlignedBuffer bytes(kChunk * kRounds);
  fill_pattern(bytes.span(), 31);
  // Rounds of 4 tickets in flight, waited for out of order.
  for (int round = 0; round < kRounds; round += 4) {
    std::vector<IoRequest> writes;
    for (int k = 0; k < 4; ++k) {
      const std::uint64_t at = static_cast<std::uint64_t>(round + k) * kChunk;
      writes.push_back(write_request(file, bytes.data() + at, at, kChunk));
    }
    std::vector<IoTicket> tickets;
    for (const auto& w : writes) tickets.push_back(engine->submit(std::span(&w, 1)));
    for (int k : {2, 0, 3, 1}) EXPECT_EQ(engine->wait(std::move(tickets[static_cast<std::size_t>(k)])).bytes, kChunk);
  }
  EXPECT_EQ(count_pattern_mismatches(pread_file(file.path(), 0, kChunk * kRounds), 31), 0u);
}

TEST_P(EngineLifecycle, DestroyingAnEngineWithABatchInFlightDoesNotHang) {
  TempDir dir;
  SwapFile file = SwapFile::create(dir.file("inflight.swp"), 8 * kMiB);
  AlignedBuffer bytes(8 * kMiB);
  fill_pattern(bytes.span(), 41);
  {
    AioConfig config;
    config.block_size = 256 * kKiB;
    std::string why;
    auto engine = make_engine_or_null(GetParam(), config, why);
    if (!engine) GTEST_SKIP() << why;
    IoRequest write = write_request(file, bytes.data(), 0, 8 * kMiB);
    (void)engine->submit(std::span(&write, 1));
    // No wait(): the dropped ticket waits for its batch, then the engine goes out of
    // scope with its threads idle; they must finish and join.
  }
  SUCCEED();
}

INSTANTIATE_TEST_SUITE_P(Backends, EngineLifecycle, testing::ValuesIn(backend_names()),
                         backend_name);

}  // namespace
}  // namespace swapcoord
