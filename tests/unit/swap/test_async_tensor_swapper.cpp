// AsyncTensorSwapper: tensors in ordinary memory, staged through a ring of pinned buffers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <fstream>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/async_tensor_swapper.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;

static_assert(!std::is_copy_constructible_v<AsyncTensorSwapper>);
static_assert(!std::is_copy_assignable_v<AsyncTensorSwapper>);

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kStagingBytes = kMiB;

// Writes `size` bytes of 0xAB to `path` so that zeros on disk afterwards were written.
void write_garbage(const std::string& path, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::vector<char> garbage(size, static_cast<char>(0xAB));
  out.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
}

// Tensors of many sizes, held in std::vector memory, and their locations in one file.
struct Workload {
  std::vector<std::vector<std::byte>> storage;
  std::vector<TensorView> tensors;
  std::vector<SwapLocation> locations;
  std::uint64_t file_bytes = 0;

  void add(std::size_t bytes, DType dtype = DType::u8) {
    const std::size_t numel = bytes / dtype_size(dtype);
    storage.emplace_back(bytes);
    tensors.push_back(TensorView{nullptr, numel, dtype, Device::cpu()});
    locations.push_back(SwapLocation{nullptr, file_bytes, align_up(bytes, kDefaultAlignmentBytes)});
    file_bytes += align_up(bytes, kDefaultAlignmentBytes);
  }
  // Call after the last add(): vectors no longer move.
  void bind(SwapFile* file) {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      tensors[i].data = storage[i].data();
      locations[i].file = file;
    }
  }
  void fill(std::uint64_t seed_base) {
    for (std::size_t i = 0; i < storage.size(); ++i) test::fill_pattern(storage[i], seed_base + i);
  }
  void zero() {
    for (auto& s : storage) std::fill(s.begin(), s.end(), std::byte{0});
  }
  std::size_t mismatches(std::uint64_t seed_base) const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < storage.size(); ++i)
      n += test::count_pattern_mismatches(storage[i], seed_base + i);
    return n;
  }
  std::uint64_t location_bytes() const {
    std::uint64_t n = 0;
    for (const auto& l : locations) n += l.bytes;
    return n;
  }
};

// The mixture from the brief: tiny, odd, larger than one staging buffer (split), medium.
Workload mixed_workload() {
  Workload w;
  const std::size_t sizes[] = {1, 4095, 4097, 3 * kMiB + 5, 64 * kKiB};
  for (int round = 0; round < 3; ++round)
    for (std::size_t size : sizes) w.add(size);
  w.add(4100, DType::f32);   // 1025 floats
  w.add(2 * kMiB, DType::f64);  // exactly two staging buffers
  w.add(0);                  // an empty tensor has an empty location
  w.add(kMiB - 4096 + 1);    // leaves one aligned block of padding-only staging
  return w;
}

using Param = std::tuple<const char*, std::size_t>;  // engine, staging buffer count

class AsyncTensorSwapperTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const std::string name = std::get<0>(GetParam());
    if (name == "libaio" && !SWAPCOORD_HAVE_LIBAIO)
      GTEST_SKIP() << "libaio is not compiled into this build";
    engine = make_engine(name, AioConfig{});
    manager = std::make_unique<SwapBufferManager>(kStagingBytes, 4, DType::u8);
    staging = manager->allocate(kStagingBytes, std::get<1>(GetParam()));
    ASSERT_EQ(staging.size(), std::get<1>(GetParam()));
  }
  void TearDown() override {
    if (manager && !staging.empty()) manager->free(staging);
  }

  test::TempDir dir;
  std::unique_ptr<IoEngine> engine;
  std::unique_ptr<SwapBufferManager> manager;
  std::vector<TensorView> staging;
};

TEST_P(AsyncTensorSwapperTest, RoundTripOfManyTensors) {
  Workload w = mixed_workload();
  const std::string path = dir.file("swapper.swp");
  write_garbage(path, w.file_bytes);
  SwapFile file = SwapFile::create(path, w.file_bytes, DirectMode::on);
  ASSERT_TRUE(file.direct());
  ASSERT_EQ(file.size_bytes(), w.file_bytes);
  w.bind(&file);
  w.fill(1);

  // Dirty staging buffers: the padding on disk must be zeros the swapper wrote, not
  // what happened to be in the buffers.
  for (const auto& buffer : staging) std::memset(buffer.data, 0xCD, buffer.size_bytes());
  AsyncTensorSwapper swapper(*engine, staging);
  EXPECT_EQ(swapper.staging_bytes(), kStagingBytes);
  swapper.swap_out(w.tensors, w.locations);
  EXPECT_EQ(swapper.stats().bytes_out, w.location_bytes());
  EXPECT_EQ(swapper.stats().bytes_in, 0u);

  // On disk: every tensor's bytes, then zeros to the aligned end (the 0xAB is gone).
  const auto disk = test::read_whole_file(path);
  ASSERT_EQ(disk.size(), w.file_bytes);
  for (std::size_t i = 0; i < w.tensors.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i) + " of " + std::to_string(w.storage[i].size()) + " bytes");
    const auto& l = w.locations[i];
    const std::size_t bytes = w.storage[i].size();
    EXPECT_EQ(test::count_pattern_mismatches(std::span(disk).subspan(l.offset, bytes), 1 + i), 0u);
    std::size_t nonzero = 0;
    for (std::size_t b = bytes; b < l.bytes; ++b) nonzero += disk[l.offset + b] != std::byte{0};
    EXPECT_EQ(nonzero, 0u) << "padding after the tensor must be written as zeros";
  }

  w.zero();
  swapper.swap_in(w.tensors, w.locations);
  EXPECT_EQ(w.mismatches(1), 0u);
  EXPECT_EQ(swapper.stats().bytes_in, w.location_bytes());
  EXPECT_EQ(swapper.stats().bytes_out, w.location_bytes());
  EXPECT_GE(swapper.stats().copy_seconds, 0.0);
  EXPECT_GE(swapper.stats().wait_seconds, 0.0);

  swapper.reset_stats();
  EXPECT_EQ(swapper.stats().bytes_out, 0u);
  EXPECT_EQ(swapper.stats().bytes_in, 0u);
}

TEST_P(AsyncTensorSwapperTest, RepeatedRoundsWithNewValues) {
  Workload w;
  for (std::size_t size : {5 * kMiB + 3, std::size_t{1}, 700 * kKiB, 4097ul}) w.add(size);
  SwapFile file = SwapFile::create(dir.file("rounds.swp"), w.file_bytes, DirectMode::on);
  w.bind(&file);
  AsyncTensorSwapper swapper(*engine, staging);
  for (std::uint64_t round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    w.fill(100 * round);
    swapper.swap_out(w.tensors, w.locations);
    w.zero();
    swapper.swap_in(w.tensors, w.locations);
    EXPECT_EQ(w.mismatches(100 * round), 0u);
  }
  EXPECT_EQ(swapper.stats().bytes_out, 3 * w.location_bytes());
  EXPECT_EQ(swapper.stats().bytes_in, 3 * w.location_bytes());
}

TEST_P(AsyncTensorSwapperTest, SwapInOfASubsetInAnotherOrder) {
  Workload w = mixed_workload();
  SwapFile file = SwapFile::create(dir.file("subset.swp"), w.file_bytes, DirectMode::on);
  w.bind(&file);
  w.fill(7);
  AsyncTensorSwapper swapper(*engine, staging);
  swapper.swap_out(w.tensors, w.locations);

  // Read back tensors 3 (split), 1 and 0 into fresh memory, in that order.
  const std::size_t picks[] = {3, 1, 0};
  std::vector<std::vector<std::byte>> fresh;
  std::vector<TensorView> views;
  std::vector<SwapLocation> locations;
  for (std::size_t i : picks) fresh.emplace_back(w.storage[i].size());
  for (std::size_t k = 0; k < std::size(picks); ++k) {
    views.push_back(TensorView{fresh[k].data(), w.tensors[picks[k]].numel, w.tensors[picks[k]].dtype});
    locations.push_back(w.locations[picks[k]]);
  }
  swapper.swap_in(views, locations);
  for (std::size_t k = 0; k < std::size(picks); ++k)
    EXPECT_EQ(test::count_pattern_mismatches(fresh[k], 7 + picks[k]), 0u) << picks[k];
}

TEST_P(AsyncTensorSwapperTest, LocationOfTheWrongSizeIsAnError) {
  Workload w;
  w.add(4097);
  w.add(100);
  SwapFile file = SwapFile::create(dir.file("wrong.swp"), 1 * kMiB, DirectMode::on);
  w.bind(&file);
  AsyncTensorSwapper swapper(*engine, staging);

  auto expect_refused = [&](std::vector<SwapLocation> locations, const char* why) {
    SCOPED_TRACE(why);
    try {
      swapper.swap_out(w.tensors, locations);
      FAIL() << "no exception on swap_out";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(file.path()));
    }
    EXPECT_THROW(swapper.swap_in(w.tensors, locations), Error);
  };
  auto locations = w.locations;
  locations[0].bytes = 4097;  // the tensor's size, not aligned
  expect_refused(locations, "unaligned length");
  locations = w.locations;
  locations[0].bytes = 12288;  // aligned, but one block too many
  expect_refused(locations, "too long");
  locations = w.locations;
  locations[1].bytes = 0;
  expect_refused(locations, "too short");
  EXPECT_EQ(swapper.stats().bytes_out, 0u) << "nothing moved before the check";

  // Count mismatch.
  const std::span<const SwapLocation> one(w.locations.data(), 1);
  EXPECT_THROW(swapper.swap_out(w.tensors, one), Error);

  // Still usable.
  w.fill(3);
  swapper.swap_out(w.tensors, w.locations);
  w.zero();
  swapper.swap_in(w.tensors, w.locations);
  EXPECT_EQ(w.mismatches(3), 0u);
}

TEST_P(AsyncTensorSwapperTest, IoErrorInTheMiddleIsThrownAndTheSwapperStaysUsable) {
  Workload w = mixed_workload();
  const std::uint64_t good_bytes = w.file_bytes;
  SwapFile file = SwapFile::create(dir.file("short.swp"), good_bytes, DirectMode::on);
  w.bind(&file);
  w.fill(11);
  AsyncTensorSwapper swapper(*engine, staging);
  swapper.swap_out(w.tensors, w.locations);

  // Swap in with one location (in the middle of the list) past the end of the file.
  std::vector<SwapLocation> bad = w.locations;
  const std::size_t victim = 7;  // the 4097-byte tensor of the second round
  ASSERT_EQ(w.storage[victim].size(), 4097u);
  bad[victim].offset = good_bytes + 16 * kMiB;
  w.zero();
  try {
    swapper.swap_in(w.tensors, bad);
    FAIL() << "no exception";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr(file.path()));
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(good_bytes + 16 * kMiB)));
    ASSERT_FALSE(e.failures().empty());
    EXPECT_EQ(e.failures()[0].op, IoOp::read);
    EXPECT_EQ(e.failures()[0].path, file.path());
  }

  // A following good swap_in works and restores everything.
  w.zero();
  swapper.swap_in(w.tensors, w.locations);
  EXPECT_EQ(w.mismatches(11), 0u);

  // And so does another swap_out / swap_in round.
  w.fill(12);
  swapper.swap_out(w.tensors, w.locations);
  w.zero();
  swapper.swap_in(w.tensors, w.locations);
  EXPECT_EQ(w.mismatches(12), 0u);
}

TEST_P(AsyncTensorSwapperTest, SwapOutErrorAfterEarlierWritesAreInFlight) {
  // The last tensors go to a file opened read-only: their writes are refused when the
  // swapper submits them, while the first buffers' writes are still in flight.
  Workload w;
  for (int i = 0; i < 6; ++i) w.add(kMiB);
  const std::string good_path = dir.file("good.swp");
  const std::string read_only_path = dir.file("read-only.swp");
  SwapFile good = SwapFile::create(good_path, w.file_bytes, DirectMode::on);
  SwapFile::create(read_only_path, w.file_bytes, DirectMode::on);
  SwapFile read_only = SwapFile::open(read_only_path, DirectMode::on, /*writable=*/false);
  w.bind(&good);
  std::vector<SwapLocation> mixed = w.locations;
  mixed[5].file = &read_only;
  w.fill(31);
  AsyncTensorSwapper swapper(*engine, staging);
  try {
    swapper.swap_out(w.tensors, mixed);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(read_only_path));
  }
  // Usable afterwards, with every byte right.
  swapper.swap_out(w.tensors, w.locations);
  w.zero();
  swapper.swap_in(w.tensors, w.locations);
  EXPECT_EQ(w.mismatches(31), 0u);
}

TEST_P(AsyncTensorSwapperTest, IoErrorOnTheFirstGroupOfAFullRing) {
  // Every staging buffer has a read in flight when the first one fails.
  Workload w;
  for (int i = 0; i < 8; ++i) w.add(kMiB);
  SwapFile file = SwapFile::create(dir.file("first.swp"), w.file_bytes, DirectMode::on);
  w.bind(&file);
  w.fill(21);
  AsyncTensorSwapper swapper(*engine, staging);
  swapper.swap_out(w.tensors, w.locations);
  std::vector<SwapLocation> bad = w.locations;
  bad[0].offset = w.file_bytes + kMiB;
  EXPECT_THROW(swapper.swap_in(w.tensors, bad), IoError);
  w.zero();
  swapper.swap_in(w.tensors, w.locations);
  EXPECT_EQ(w.mismatches(21), 0u);
}

TEST_P(AsyncTensorSwapperTest, EmptyCallsDoNothing) {
  AsyncTensorSwapper swapper(*engine, staging);
  swapper.swap_out({}, {});
  swapper.swap_in({}, {});
  EXPECT_EQ(swapper.stats().bytes_out, 0u);
  EXPECT_EQ(swapper.stats().bytes_in, 0u);
}

// Tensors in one page-aligned region: each starts on a page (moved in place, its unaligned
// tail staged) except those marked `skewed`, which start 64 bytes past one (all staged).
struct AlignedWorkload {
  std::unique_ptr<std::byte, decltype(&std::free)> region{nullptr, &std::free};
  std::vector<TensorView> tensors;
  std::vector<SwapLocation> locations;
  std::vector<std::size_t> sizes;
  std::uint64_t file_bytes = 0;

  AlignedWorkload(std::initializer_list<std::pair<std::size_t, bool>> list, SwapFile* file) {
    std::size_t total = 0;
    for (const auto& [size, skewed] : list) total += align_up(size + (skewed ? 64 : 0), 4096);
    region.reset(static_cast<std::byte*>(std::aligned_alloc(4096, total + 4096)));
    std::size_t at = 0;
    for (const auto& [size, skewed] : list) {
      tensors.push_back(TensorView{region.get() + at + (skewed ? 64 : 0), size, DType::u8, Device::cpu()});
      locations.push_back(SwapLocation{file, file_bytes, align_up(size, 4096)});
      sizes.push_back(size);
      file_bytes += align_up(size, 4096);
      at += align_up(size + (skewed ? 64 : 0), 4096);
    }
  }
  std::span<std::byte> bytes(std::size_t i) const { return {tensors[i].bytes(), sizes[i]}; }
};

TEST_P(AsyncTensorSwapperTest, AlignedTensorsMoveInPlaceWithTheirTailsStaged) {
  const std::string path = dir.file("in-place.swp");
  write_garbage(path, 64 * kMiB);
  SwapFile file = SwapFile::create(path, 64 * kMiB, DirectMode::on);
  // Sizes around the alignment and the staging buffer (1 MiB), in place and skewed.
  AlignedWorkload w({{3 * kMiB + 5, false}, {4096, false}, {4095, false}, {kMiB + 4096, true}, {2 * kMiB, false},
                     {5000, true}, {kMiB - 1, false}, {1, false}, {0, false}, {kMiB + 1, false}},
                    &file);
  for (std::size_t i = 0; i < w.tensors.size(); ++i) test::fill_pattern(w.bytes(i), 40 + i);
  for (const auto& buffer : staging) std::memset(buffer.data, 0xCD, buffer.size_bytes());
  AsyncTensorSwapper swapper(*engine, staging);
  swapper.swap_out(w.tensors, w.locations);
  const auto disk = test::read_whole_file(path);
  for (std::size_t i = 0; i < w.tensors.size(); ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i) + " of " + std::to_string(w.sizes[i]) + " bytes");
    const auto& l = w.locations[i];
    EXPECT_EQ(test::count_pattern_mismatches(std::span(disk).subspan(l.offset, w.sizes[i]), 40 + i), 0u);
    std::size_t nonzero = 0;
    for (std::size_t b = w.sizes[i]; b < l.bytes; ++b) nonzero += disk[l.offset + b] != std::byte{0};
    EXPECT_EQ(nonzero, 0u) << "padding after the tensor must be written as zeros";
  }
  // Zeros in memory, then read back in place: every byte, and nothing past a tensor's end
  // (the bytes between tensors stay as they are).
  for (std::size_t i = 0; i < w.tensors.size(); ++i) std::memset(w.tensors[i].data, 0, w.sizes[i]);
  for (const std::size_t i : {0, 6}) w.tensors[i].bytes()[w.sizes[i]] = std::byte{0x5A};  // just past the end
  swapper.swap_in(w.tensors, w.locations);
  for (std::size_t i = 0; i < w.tensors.size(); ++i)
    EXPECT_EQ(test::count_pattern_mismatches(w.bytes(i), 40 + i), 0u) << "tensor " << i;
  for (const std::size_t i : {0, 6}) EXPECT_EQ(w.tensors[i].bytes()[w.sizes[i]], std::byte{0x5A}) << "past tensor " << i;
}

TEST_P(AsyncTensorSwapperTest, StreamsSeeTheCallersMemoryInPlaceAndEveryByteInOrder) {
  SwapFile file = SwapFile::create(dir.file("stream.swp"), 16 * kMiB, DirectMode::on);
  AlignedWorkload w({{3 * kMiB + 8192, false}, {kMiB + 100, true}, {2 * kMiB + 4096, false}}, &file);
  for (std::size_t i = 0; i < w.tensors.size(); ++i) test::fill_pattern(w.bytes(i), 60 + i);
  std::vector<InPlace> in_place(w.tensors.size());
  in_place[0] = {w.tensors[0].bytes(), 3 * kMiB};       // part of the aligned bytes
  in_place[2] = {w.tensors[2].bytes(), 2 * kMiB + 4096};  // all of them
  AsyncTensorSwapper swapper(*engine, staging);
  std::vector<std::uint64_t> next(w.tensors.size(), 0);
  std::size_t in_place_calls = 0;
  swapper.write_stream(w.locations, [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) {
    EXPECT_EQ(offset, next[i]) << "location " << i;
    next[i] = offset + out.size();
    if (offset < in_place[i].bytes) {
      ++in_place_calls;
      EXPECT_EQ(out.data(), w.tensors[i].bytes() + offset) << "in place: the caller's memory itself";
      EXPECT_LE(offset + out.size(), in_place[i].bytes);
      return;
    }
    EXPECT_NE(out.data(), w.tensors[i].bytes() + offset);
    const std::size_t data = offset < w.sizes[i] ? std::min<std::size_t>(out.size(), w.sizes[i] - offset) : 0;
    std::memcpy(out.data(), w.tensors[i].bytes() + offset, data);
    std::memset(out.data() + data, 0, out.size() - data);
  }, in_place);
  EXPECT_GE(in_place_calls, 5u);  // 3 + 2 MiB in 1 MiB groups
  for (std::size_t i = 0; i < w.tensors.size(); ++i) EXPECT_EQ(next[i], w.locations[i].bytes);

  for (std::size_t i = 0; i < w.tensors.size(); ++i) std::memset(w.tensors[i].data, 0, w.sizes[i]);
  std::fill(next.begin(), next.end(), 0);
  swapper.read_stream(w.locations, [&](std::size_t i, std::uint64_t offset, std::span<const std::byte> in) {
    EXPECT_EQ(offset, next[i]) << "location " << i;
    next[i] = offset + in.size();
    if (offset < in_place[i].bytes) {
      EXPECT_EQ(in.data(), w.tensors[i].bytes() + offset) << "read in place";
      return;
    }
    const std::size_t data = offset < w.sizes[i] ? std::min<std::size_t>(in.size(), w.sizes[i] - offset) : 0;
    std::memcpy(w.tensors[i].bytes() + offset, in.data(), data);
  }, in_place);
  for (std::size_t i = 0; i < w.tensors.size(); ++i)
    EXPECT_EQ(test::count_pattern_mismatches(w.bytes(i), 60 + i), 0u) << "tensor " << i;
}

TEST_P(AsyncTensorSwapperTest, FailuresWhileInPlaceWritesAreInFlightLeaveNothingInFlight) {
  // A callback that throws in an in-place range, or in-place writes that are refused, with
  // earlier groups' writes in flight: the error is reported, and the swapper waits for all
  // it submitted, so a following round trip is right.
  const std::string path = dir.file("in-flight.swp");
  SwapFile file = SwapFile::create(path, 16 * kMiB, DirectMode::on);
  AlignedWorkload w({{3 * kMiB + 100, false}, {2 * kMiB, false}, {kMiB + 4096, true}}, &file);
  for (std::size_t i = 0; i < w.tensors.size(); ++i) test::fill_pattern(w.bytes(i), 70 + i);
  std::vector<InPlace> in_place(w.tensors.size());
  for (std::size_t i = 0; i < w.tensors.size(); ++i) in_place[i] = in_place_part(w.tensors[i], 4096);
  AsyncTensorSwapper swapper(*engine, staging);
  auto copy = [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) {
    const std::size_t data = offset < w.sizes[i] ? std::min<std::size_t>(out.size(), w.sizes[i] - offset) : 0;
    if (out.data() != w.tensors[i].bytes() + offset) std::memcpy(out.data(), w.tensors[i].bytes() + offset, data);
    std::memset(out.data() + data, 0, out.size() - data);
  };
  // The callback throws in the second tensor past its first group, in place.
  EXPECT_THROW(swapper.write_stream(w.locations, [&](std::size_t i, std::uint64_t offset, std::span<std::byte> out) {
    if (i == 1 && offset > 0) throw std::runtime_error("fill failed");
    copy(i, offset, out);
  }, in_place), std::runtime_error);
  // In-place writes refused (a file opened read-only), with earlier groups in flight.
  SwapFile read_only = SwapFile::open(path, DirectMode::on, /*writable=*/false);
  std::vector<SwapLocation> refused = w.locations;
  refused[1].file = &read_only;
  try {
    swapper.write_stream(refused, copy, in_place);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
  swapper.write_stream(w.locations, copy, in_place);
  for (std::size_t i = 0; i < w.tensors.size(); ++i) std::memset(w.tensors[i].data, 0, w.sizes[i]);
  swapper.swap_in(w.tensors, w.locations);
  for (std::size_t i = 0; i < w.tensors.size(); ++i)
    EXPECT_EQ(test::count_pattern_mismatches(w.bytes(i), 70 + i), 0u) << "tensor " << i;
}

TEST_P(AsyncTensorSwapperTest, BadInPlaceRangesAreRefusedBeforeAnyIo) {
  SwapFile file = SwapFile::create(dir.file("bad-in-place.swp"), 4 * kMiB, DirectMode::on);
  AlignedWorkload w({{2 * kMiB, false}, {8192, false}}, &file);
  AsyncTensorSwapper swapper(*engine, staging);
  auto none = [](std::size_t, std::uint64_t, std::span<std::byte>) { FAIL() << "no byte may move"; };
  auto expect_refused = [&](std::vector<InPlace> in_place, const char* why) {
    SCOPED_TRACE(why);
    try {
      swapper.write_stream(w.locations, none, in_place);
      FAIL() << "no exception";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("in-place"));
    }
  };
  expect_refused({{w.tensors[0].bytes(), 4096}}, "one range for two locations");
  expect_refused({{w.tensors[0].bytes() + 512, 4096}, {}}, "memory not aligned");
  expect_refused({{w.tensors[0].bytes(), 4000}, {}}, "length not aligned");
  expect_refused({{}, {w.tensors[1].bytes(), 12288}}, "longer than the location");
  expect_refused({{nullptr, 4096}, {}}, "no memory");
  EXPECT_EQ(swapper.stats().bytes_out, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Engines, AsyncTensorSwapperTest,
    ::testing::Combine(::testing::Values("libaio", "posix"), ::testing::Values(2u, 3u)),
    [](const auto& param_info) {
      return std::string(std::get<0>(param_info.param)) + "_" +
             std::to_string(std::get<1>(param_info.param)) +
             "buffers";
    });

// ---- construction ----------------------------------------------------------------------

class AsyncTensorSwapperConstruction : public ::testing::Test {
 protected:
  AsyncTensorSwapperConstruction() : engine(make_engine("posix", AioConfig{})) {}
  std::unique_ptr<IoEngine> engine;
};

TEST_F(AsyncTensorSwapperConstruction, OneStagingBufferIsAnError) {
  SwapBufferManager manager(kStagingBytes, 2, DType::u8);
  const auto one = manager.allocate(kStagingBytes, 1);
  try {
    AsyncTensorSwapper swapper(*engine, one);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("2"));
  }
  EXPECT_THROW(AsyncTensorSwapper(*engine, std::span<const TensorView>{}), Error);
}

TEST_F(AsyncTensorSwapperConstruction, UnequalSizesAreAnError) {
  SwapBufferManager manager(kStagingBytes, 2, DType::u8);
  auto buffers = manager.allocate(kStagingBytes, 2);
  buffers[1] = sized_view(buffers[1], kStagingBytes / 2);
  EXPECT_THROW(AsyncTensorSwapper(*engine, buffers), Error);
}

TEST_F(AsyncTensorSwapperConstruction, SizeNotAMultipleOfTheAlignmentIsAnError) {
  SwapBufferManager manager(kStagingBytes, 2, DType::u8);
  const auto buffers = manager.allocate(kStagingBytes - 512, 2);
  EXPECT_THROW(AsyncTensorSwapper(*engine, buffers), Error);
  // Fine at an alignment that divides it.
  EXPECT_NO_THROW(AsyncTensorSwapper(*engine, buffers, 512));
}

TEST_F(AsyncTensorSwapperConstruction, MisalignedBufferIsAnError) {
  SwapBufferManager manager(kStagingBytes + 4096, 2, DType::u8);
  auto buffers = manager.allocate(kStagingBytes, 2);
  buffers[0].data = buffers[0].bytes() + 512;
  EXPECT_THROW(AsyncTensorSwapper(*engine, buffers), Error);
}

TEST_F(AsyncTensorSwapperConstruction, WorksWithOtherDtypes) {
  // Staging buffers typed f32: their size in bytes is what counts.
  SwapBufferManager manager(kStagingBytes / 4, 2, DType::f32);
  const auto buffers = manager.allocate_all(kStagingBytes / 4);
  AsyncTensorSwapper swapper(*engine, buffers);
  EXPECT_EQ(swapper.staging_bytes(), kStagingBytes);
}

}  // namespace
}  // namespace swapcoord
