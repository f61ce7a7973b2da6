// SwapBufferPool: walking several SwapBuffers, and moving them through a real engine.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/buffer/swap_buffer_pool.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;

constexpr std::size_t kBufferNumel = 4096;  // f32 per buffer: 16 KiB = 4 chunks of 1024

class SwapBufferPoolTest : public ::testing::Test {
 protected:
  SwapBufferPoolTest()
      : memory(2 * kBufferNumel * 4),
        file(SwapFile::create(dir.file("pool.swp"), 1 << 20, DirectMode::off)) {
    buffers = {TensorView{memory.data(), kBufferNumel, DType::f32},
               TensorView{memory.data() + kBufferNumel * 4, kBufferNumel, DType::f32}};
  }
  SwapLocation next_location(std::size_t aligned) {
    SwapLocation l{&file, _offset, aligned * 4};
    _offset += aligned * 4;
    return l;
  }

  test::TempDir dir;
  PinnedAllocation memory;
  SwapFile file;
  std::vector<TensorView> buffers;

 private:
  std::uint64_t _offset = 0;
};

TEST_F(SwapBufferPoolTest, FillsBufferZeroThenBufferOneThenReportsNoSpace) {
  SwapBufferPool pool(buffers);
  ASSERT_EQ(pool.buffers().size(), 2u);
  EXPECT_EQ(pool.current(), 0u);
  EXPECT_EQ(pool.count(), 0u);
  EXPECT_TRUE(pool.has_space(1024));

  for (int i = 0; i < 4; ++i) {
    auto views = pool.allocate_tensor(next_location(1024), 1000, 1024);
    ASSERT_TRUE(views.has_value()) << i;
    EXPECT_EQ(views->first.bytes(), memory.data() + i * 4096);
    EXPECT_EQ(views->second.data, views->first.data);
    EXPECT_EQ(views->first.numel, 1000u);
    EXPECT_EQ(views->second.numel, 1024u);
  }
  EXPECT_EQ(pool.current(), 0u);
  EXPECT_EQ(pool.buffers()[0].count(), 4u);
  EXPECT_EQ(pool.buffers()[0].free_numel(), 0u);
  EXPECT_EQ(pool.buffers()[1].count(), 0u);
  EXPECT_TRUE(pool.has_space(1024));  // buffer 1 still has room

  auto fifth = pool.allocate_tensor(next_location(2048), 2000, 2048);
  ASSERT_TRUE(fifth.has_value());
  EXPECT_EQ(fifth->first.bytes(), memory.data() + kBufferNumel * 4);
  EXPECT_EQ(pool.current(), 1u);
  EXPECT_EQ(pool.buffers()[1].count(), 1u);

  auto sixth = pool.allocate_tensor(next_location(2048), 2048, 2048);
  ASSERT_TRUE(sixth.has_value());
  EXPECT_EQ(sixth->first.bytes(), memory.data() + kBufferNumel * 4 + 8192);
  EXPECT_EQ(pool.count(), 6u);
  EXPECT_FALSE(pool.has_space(1024));

  EXPECT_EQ(pool.allocate_tensor(next_location(1024), 1, 1024), std::nullopt);
  std::vector<float> values(10, 1.0f);
  EXPECT_EQ(pool.insert_tensor(TensorView{values.data(), values.size(), DType::f32},
                               next_location(1024), 1024),
            std::nullopt);
  EXPECT_EQ(pool.count(), 6u);

  EXPECT_EQ(pool.swap_tensors().size(), 6u);
  EXPECT_EQ(pool.compute_tensors().size(), 6u);
  const auto locations = pool.locations();
  ASSERT_EQ(locations.size(), 6u);
  EXPECT_EQ(locations[0].offset, 0u);
  EXPECT_EQ(locations[4].offset, 4u * 4096);
  EXPECT_EQ(locations[5].offset, 4u * 4096 + 8192);
  EXPECT_EQ(pool.compute_tensors()[4].numel, 2000u);
  EXPECT_EQ(pool.swap_tensors()[4].numel, 2048u);
}

TEST_F(SwapBufferPoolTest, TooBigForEveryBufferIsAnErrorNotNoSpace) {
  SwapBufferPool pool(buffers);
  try {
    pool.allocate_tensor(next_location(kBufferNumel + 1024), kBufferNumel + 1, kBufferNumel + 1024);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(kBufferNumel + 1024)));
  }
  std::vector<float> values(kBufferNumel + 1);
  EXPECT_THROW(pool.insert_tensor(TensorView{values.data(), values.size(), DType::f32},
                                  next_location(kBufferNumel + 1024), kBufferNumel + 1024),
               Error);
  EXPECT_EQ(pool.count(), 0u);
  // Exactly one buffer's size is fine.
  EXPECT_TRUE(pool.allocate_tensor(next_location(kBufferNumel), kBufferNumel, kBufferNumel));
}

TEST_F(SwapBufferPoolTest, ResetEmptiesEveryBuffer) {
  SwapBufferPool pool(buffers);
  ASSERT_TRUE(pool.allocate_tensor(next_location(kBufferNumel), kBufferNumel, kBufferNumel));
  ASSERT_TRUE(pool.allocate_tensor(next_location(1024), 1, 1024));
  EXPECT_EQ(pool.current(), 1u);
  pool.reset();
  EXPECT_EQ(pool.current(), 0u);
  EXPECT_EQ(pool.count(), 0u);
  EXPECT_EQ(pool.buffers()[0].used_numel(), 0u);
  EXPECT_EQ(pool.buffers()[1].used_numel(), 0u);
  auto views = pool.allocate_tensor(next_location(1024), 1, 1024);
  ASSERT_TRUE(views);
  EXPECT_EQ(views->first.data, memory.data());
}

TEST_F(SwapBufferPoolTest, BuffersOfDifferentDtypesAreRejected) {
  std::vector<TensorView> mixed = {buffers[0], buffers[1]};
  mixed[1].dtype = DType::f16;
  EXPECT_THROW(SwapBufferPool{mixed}, Error);
}

TEST_F(SwapBufferPoolTest, InsertCopiesIntoTheCurrentBuffer) {
  SwapBufferPool pool(buffers);
  std::vector<float> values(3000);
  test::fill_pattern(std::as_writable_bytes(std::span(values)), 9);
  auto compute = pool.insert_tensor(TensorView{values.data(), values.size(), DType::f32},
                                    next_location(3072), 3072);
  ASSERT_TRUE(compute);
  EXPECT_EQ(compute->data, memory.data());
  EXPECT_EQ(compute->numel, 3000u);
  EXPECT_EQ(test::count_pattern_mismatches(compute->byte_span(), 9), 0u);
}

// ---- through a real engine -------------------------------------------------------------

class SwapBufferPoolEngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "libaio" && !SWAPCOORD_HAVE_LIBAIO)
      GTEST_SKIP() << "libaio is not compiled into this build";
    engine = make_engine(GetParam(), AioConfig{});
  }
  std::unique_ptr<IoEngine> engine;
};

TEST_P(SwapBufferPoolEngineTest, SwapOutThenSwapInRestoresTheBytes) {
  test::TempDir dir;
  constexpr std::size_t kNumel = 64 * 1024;  // f32 per buffer: 256 KiB
  PinnedAllocation memory(3 * kNumel * 4);
  const std::vector<TensorView> buffers = {
      {memory.data(), kNumel, DType::f32},
      {memory.data() + kNumel * 4, kNumel, DType::f32},
      {memory.data() + 2 * kNumel * 4, kNumel, DType::f32}};
  std::memset(memory.data(), 0x77, memory.size_bytes());  // insert_tensor must zero the padding
  SwapBufferPool pool(buffers);
  SwapFile file = SwapFile::create(dir.file("pool.swp"), 4 << 20, DirectMode::on);
  ASSERT_TRUE(file.direct());

  // Tensors of awkward sizes until the pool is full; the pattern seed is the index.
  const std::size_t sizes[] = {1, 1023, 1025, 5000, 40000, 3, 65536, 12345, 777};
  std::vector<std::vector<float>> tensors;
  std::uint64_t offset = 0;
  std::uint64_t total = 0;
  for (std::size_t i = 0;; ++i) {
    const std::size_t numel = sizes[i % std::size(sizes)];
    const std::size_t aligned = aligned_numel(numel, DType::f32);
    std::vector<float> values(numel);
    test::fill_pattern(std::as_writable_bytes(std::span(values)), i);
    const SwapLocation location{&file, offset, aligned * 4};
    auto compute = pool.insert_tensor(TensorView{values.data(), numel, DType::f32}, location, aligned);
    if (!compute) break;
    tensors.push_back(std::move(values));
    offset += aligned * 4;
    total += aligned * 4;
  }
  ASSERT_GE(tensors.size(), 8u);
  ASSERT_EQ(pool.count(), tensors.size());
  EXPECT_EQ(pool.current(), 2u);

  const IoBatchResult out = pool.swap_out(*engine);
  EXPECT_EQ(out.requests, tensors.size());
  EXPECT_EQ(out.bytes, total);

  // On disk: each tensor's bytes, then zeros up to its aligned size.
  const auto disk = test::read_whole_file(file.path());
  const auto locations = pool.locations();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(i);
    const std::size_t bytes = tensors[i].size() * 4;
    EXPECT_EQ(test::count_pattern_mismatches(std::span(disk).subspan(locations[i].offset, bytes), i), 0u);
    std::size_t nonzero = 0;
    for (std::size_t b = bytes; b < locations[i].bytes; ++b) nonzero += disk[locations[i].offset + b] != std::byte{0};
    EXPECT_EQ(nonzero, 0u);
  }

  std::memset(memory.data(), 0xA5, memory.size_bytes());
  const IoBatchResult in = pool.swap_in(*engine);
  EXPECT_EQ(in.requests, tensors.size());
  EXPECT_EQ(in.bytes, total);

  const auto computes = pool.compute_tensors();
  const auto swaps = pool.swap_tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(computes[i].numel, tensors[i].size());
    EXPECT_EQ(std::memcmp(computes[i].data, tensors[i].data(), tensors[i].size() * 4), 0);
    std::size_t nonzero = 0;
    for (std::size_t b = computes[i].size_bytes(); b < swaps[i].size_bytes(); ++b)
      nonzero += swaps[i].bytes()[b] != std::byte{0};
    EXPECT_EQ(nonzero, 0u) << "the padding read back must be the zeros written";
  }
}

TEST_P(SwapBufferPoolEngineTest, EmptyPoolSwapsNothing) {
  PinnedAllocation memory(16384);
  const std::vector<TensorView> buffers = {{memory.data(), 4096, DType::f32}};
  SwapBufferPool pool(buffers);
  EXPECT_EQ(pool.swap_out(*engine).requests, 0u);
  EXPECT_EQ(pool.swap_in(*engine).bytes, 0u);
}

TEST_P(SwapBufferPoolEngineTest, ShortFileOnSwapInIsAnIoErrorNamingThePath) {
  test::TempDir dir;
  PinnedAllocation memory(16384);
  const std::vector<TensorView> buffers = {{memory.data(), 4096, DType::f32}};
  SwapBufferPool pool(buffers);
  SwapFile file = SwapFile::create(dir.file("short.swp"), 4096, DirectMode::on);
  ASSERT_TRUE(pool.allocate_tensor({&file, 0, 4096}, 1024, 1024));
  ASSERT_TRUE(pool.allocate_tensor({&file, 8192, 4096}, 1024, 1024));  // past the end
  try {
    pool.swap_in(*engine);
    FAIL() << "no exception";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr(file.path()));
    ASSERT_EQ(e.failures().size(), 1u);
    EXPECT_EQ(e.failures()[0].request, 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, SwapBufferPoolEngineTest, ::testing::Values("libaio", "posix"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace swapcoord
