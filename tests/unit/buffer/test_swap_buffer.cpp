// aligned_numel and SwapBuffer (the bump allocator over one pinned region).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr DType kAllDTypes[] = {DType::u8,  DType::i8,   DType::i16, DType::i32, DType::i64,
                                DType::f16, DType::bf16, DType::f32, DType::f64};

// ---- aligned_numel ---------------------------------------------------------------------

TEST(AlignedNumel, KnownValuesAtTheDefaultAlignment) {
  EXPECT_EQ(aligned_numel(0, DType::f32), 0u);
  EXPECT_EQ(aligned_numel(1, DType::f32), 1024u);
  EXPECT_EQ(aligned_numel(1024, DType::f32), 1024u);
  EXPECT_EQ(aligned_numel(1025, DType::f32), 2048u);
  EXPECT_EQ(aligned_numel(1, DType::f16), 2048u);
  EXPECT_EQ(aligned_numel(4097, DType::f16), 6144u);   // 8194 bytes -> 12288 bytes
  EXPECT_EQ(aligned_numel(4097, DType::bf16), 6144u);
  EXPECT_EQ(aligned_numel(1, DType::u8), 4096u);
  EXPECT_EQ(aligned_numel(4095, DType::u8), 4096u);
  EXPECT_EQ(aligned_numel(4097, DType::u8), 8192u);
  EXPECT_EQ(aligned_numel(1, DType::f64), 512u);
  EXPECT_EQ(aligned_numel(513, DType::i64), 1024u);
  EXPECT_EQ(aligned_numel(3000, DType::i32), 3072u);
}

TEST(AlignedNumel, OtherAlignments) {
  EXPECT_EQ(aligned_numel(1, DType::f32, 512), 128u);
  EXPECT_EQ(aligned_numel(129, DType::f32, 512), 256u);
  EXPECT_EQ(aligned_numel(5, DType::f16, 1), 5u);
  EXPECT_EQ(aligned_numel(1, DType::f32, 8192), 2048u);
}

// The documented contract, checked by brute force: the smallest count >= numel whose
// size in bytes is a multiple of the alignment.
void expect_smallest_aligned_count(std::size_t alignment) {
  for (DType dtype : kAllDTypes) {
    const std::size_t size = dtype_size(dtype);
    for (std::size_t numel : {0u, 1u, 2u, 3u, 7u, 255u, 511u, 513u, 1023u, 1025u, 4095u, 4097u}) {
      std::size_t want = numel;
      while ((want * size) % alignment != 0) ++want;
      EXPECT_EQ(aligned_numel(numel, dtype, alignment), want)
          << "numel " << numel << " dtype " << dtype_name(dtype) << " alignment " << alignment;
    }
  }
}

TEST(AlignedNumel, IsTheSmallestAlignedCount) {
  for (std::size_t alignment : {1u, 8u, 16u, 512u, 4096u, 8192u}) expect_smallest_aligned_count(alignment);
}

// Alignments smaller than the element size (2 bytes for f32, 4 for f64): every count is
// aligned then, so aligned_numel(n) must be n.
TEST(AlignedNumel, AlignmentSmallerThanTheElement) {
  for (std::size_t alignment : {2u, 4u}) expect_smallest_aligned_count(alignment);
  EXPECT_EQ(aligned_numel(1, DType::f32, 2), 1u);
  EXPECT_EQ(aligned_numel(3, DType::f64, 4), 3u);
}

// ---- SwapBuffer ------------------------------------------------------------------------

class SwapBufferTest : public ::testing::Test {
 protected:
  static constexpr std::size_t kCapacity = 16 * 1024;  // f32 elements = 64 KiB

  SwapBufferTest()
      : memory(kCapacity * 4),
        file(SwapFile::create(dir.file("buffer.swp"), 1 << 20, DirectMode::off)) {}

  TensorView whole() const { return TensorView{memory.data(), kCapacity, DType::f32}; }
  SwapLocation at(std::uint64_t offset, std::uint64_t bytes) { return {&file, offset, bytes}; }

  test::TempDir dir;
  PinnedAllocation memory;
  SwapFile file;
};

TEST_F(SwapBufferTest, StartsEmpty) {
  SwapBuffer buffer(whole());
  EXPECT_EQ(buffer.dtype(), DType::f32);
  EXPECT_EQ(buffer.alignment_bytes(), kDefaultAlignmentBytes);
  EXPECT_EQ(buffer.capacity_numel(), kCapacity);
  EXPECT_EQ(buffer.used_numel(), 0u);
  EXPECT_EQ(buffer.free_numel(), kCapacity);
  EXPECT_EQ(buffer.count(), 0u);
  EXPECT_TRUE(buffer.entries().empty());
  EXPECT_TRUE(buffer.swap_tensors().empty());
  EXPECT_TRUE(buffer.compute_tensors().empty());
  EXPECT_TRUE(buffer.locations().empty());
  EXPECT_EQ(buffer.buffer().data, memory.data());
  EXPECT_TRUE(buffer.has_space(kCapacity));
  EXPECT_FALSE(buffer.has_space(kCapacity + 1));
}

TEST_F(SwapBufferTest, AllocateGivesComputeAndSwapViewsAtOneAddress) {
  SwapBuffer buffer(whole());
  const auto location = at(0, 4096);
  auto [compute, swap] = buffer.allocate_tensor(location, 10, aligned_numel(10, DType::f32));
  EXPECT_EQ(compute.data, memory.data());
  EXPECT_EQ(swap.data, memory.data());
  EXPECT_EQ(compute.numel, 10u);
  EXPECT_EQ(swap.numel, 1024u);
  EXPECT_EQ(compute.dtype, DType::f32);
  EXPECT_EQ(swap.dtype, DType::f32);
  EXPECT_EQ(swap.size_bytes(), 4096u);
  EXPECT_EQ(buffer.used_numel(), 1024u);
  EXPECT_EQ(buffer.free_numel(), kCapacity - 1024);
  EXPECT_EQ(buffer.count(), 1u);
}

TEST_F(SwapBufferTest, ConsecutiveAllocationsAreAtAlignedOffsets) {
  SwapBuffer buffer(whole());
  const std::size_t numels[] = {1, 1024, 1025, 3000, 7};
  std::vector<std::size_t> expected_offsets;
  std::vector<SwapLocation> expected_locations;
  std::size_t offset = 0;
  std::uint64_t file_offset = 0;
  for (std::size_t numel : numels) {
    const std::size_t aligned = aligned_numel(numel, DType::f32);
    const auto location = at(file_offset, aligned * 4);
    auto [compute, swap] = buffer.allocate_tensor(location, numel, aligned);
    EXPECT_EQ(compute.bytes(), memory.data() + offset * 4);
    EXPECT_EQ(swap.data, compute.data);
    EXPECT_TRUE(is_aligned(compute.data, kDefaultAlignmentBytes));
    expected_offsets.push_back(offset);
    expected_locations.push_back(location);
    offset += aligned;
    file_offset += aligned * 4;
  }
  ASSERT_EQ(buffer.count(), std::size(numels));
  EXPECT_EQ(buffer.used_numel(), offset);
  const auto swaps = buffer.swap_tensors();
  const auto computes = buffer.compute_tensors();
  const auto locations = buffer.locations();
  ASSERT_EQ(swaps.size(), std::size(numels));
  ASSERT_EQ(computes.size(), std::size(numels));
  ASSERT_EQ(locations.size(), std::size(numels));
  ASSERT_EQ(buffer.entries().size(), std::size(numels));
  for (std::size_t i = 0; i < std::size(numels); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(buffer.offset(i), expected_offsets[i]);
    EXPECT_EQ(buffer.entries()[i].offset_numel, expected_offsets[i]);
    EXPECT_EQ(buffer.compute_tensor(i).numel, numels[i]);
    EXPECT_EQ(buffer.swap_tensor(i).numel, aligned_numel(numels[i], DType::f32));
    EXPECT_EQ(buffer.compute_tensor(i).data, memory.data() + expected_offsets[i] * 4);
    EXPECT_EQ(buffer.swap_tensor(i).data, buffer.compute_tensor(i).data);
    EXPECT_EQ(buffer.location(i).file, &file);
    EXPECT_EQ(buffer.location(i).offset, expected_locations[i].offset);
    EXPECT_EQ(buffer.location(i).bytes, expected_locations[i].bytes);
    EXPECT_EQ(swaps[i].data, buffer.swap_tensor(i).data);
    EXPECT_EQ(swaps[i].numel, buffer.swap_tensor(i).numel);
    EXPECT_EQ(computes[i].numel, numels[i]);
    EXPECT_EQ(locations[i].offset, expected_locations[i].offset);
    EXPECT_EQ(buffer.entries()[i].compute.numel, numels[i]);
    EXPECT_EQ(buffer.entries()[i].location.bytes, expected_locations[i].bytes);
  }
  EXPECT_THROW(buffer.offset(std::size(numels)), std::out_of_range);
  EXPECT_THROW(buffer.location(99), std::out_of_range);
}

TEST_F(SwapBufferTest, FillsExactlyToCapacity) {
  SwapBuffer buffer(whole());
  for (int i = 0; i < 16; ++i) buffer.allocate_tensor(at(i * 4096, 4096), 1000, 1024);
  EXPECT_EQ(buffer.free_numel(), 0u);
  EXPECT_FALSE(buffer.has_space(1));
  EXPECT_TRUE(buffer.has_space(0));
  EXPECT_THROW(buffer.allocate_tensor(at(0, 4096), 1, 1024), Error);
  EXPECT_EQ(buffer.count(), 16u);
}

TEST_F(SwapBufferTest, InsertCopiesTheBytesAndZeroFillsThePadding) {
  std::memset(memory.data(), 0xEE, memory.size_bytes());  // dirty, so zeros must be written
  SwapBuffer buffer(whole());
  std::vector<float> first(1000), second(1025);
  test::fill_pattern(std::as_writable_bytes(std::span(first)), 1);
  test::fill_pattern(std::as_writable_bytes(std::span(second)), 2);
  const TensorView a{first.data(), first.size(), DType::f32};
  const TensorView b{second.data(), second.size(), DType::f32};

  const TensorView ca = buffer.insert_tensor(a, at(0, 4096), aligned_numel(a.numel, DType::f32));
  const TensorView cb = buffer.insert_tensor(b, at(4096, 8192), aligned_numel(b.numel, DType::f32));
  EXPECT_EQ(ca.data, memory.data());
  EXPECT_EQ(ca.numel, 1000u);
  EXPECT_EQ(cb.bytes(), memory.data() + 4096);
  EXPECT_EQ(cb.numel, 1025u);
  EXPECT_EQ(ca.data, buffer.compute_tensor(0).data);
  EXPECT_NE(ca.data, a.data);  // a copy, not the caller's memory

  EXPECT_EQ(test::count_pattern_mismatches(ca.byte_span(), 1), 0u);
  EXPECT_EQ(test::count_pattern_mismatches(cb.byte_span(), 2), 0u);
  auto padding_nonzero = [](const TensorView& swap, const TensorView& compute) {
    std::size_t n = 0;
    for (std::size_t i = compute.size_bytes(); i < swap.size_bytes(); ++i)
      n += swap.bytes()[i] != std::byte{0};
    return n;
  };
  EXPECT_EQ(padding_nonzero(buffer.swap_tensor(0), ca), 0u);
  EXPECT_EQ(padding_nonzero(buffer.swap_tensor(1), cb), 0u);
  // Nothing was written past the second tensor's swap view.
  EXPECT_EQ(memory.data()[4096 + 8192], std::byte{0xEE});
  EXPECT_EQ(buffer.location(1).offset, 4096u);
}

TEST_F(SwapBufferTest, InsertOfAnEmptyTensorZeroesItsPadding) {
  std::memset(memory.data(), 0xEE, memory.size_bytes());
  SwapBuffer buffer(whole());
  std::vector<float> none;
  const TensorView empty{none.data(), 0, DType::f32};
  const TensorView c = buffer.insert_tensor(empty, at(0, 4096), 1024);
  EXPECT_EQ(c.numel, 0u);
  EXPECT_EQ(buffer.swap_tensor(0).numel, 1024u);
  for (std::size_t i = 0; i < 4096; ++i) ASSERT_EQ(memory.data()[i], std::byte{0}) << i;
}

TEST_F(SwapBufferTest, ResetStartsOver) {
  SwapBuffer buffer(whole());
  buffer.allocate_tensor(at(0, 8192), 2000, 2048);
  buffer.allocate_tensor(at(8192, 4096), 5, 1024);
  ASSERT_EQ(buffer.count(), 2u);
  buffer.reset();
  EXPECT_EQ(buffer.count(), 0u);
  EXPECT_EQ(buffer.used_numel(), 0u);
  EXPECT_EQ(buffer.free_numel(), kCapacity);
  EXPECT_TRUE(buffer.locations().empty());
  auto [compute, swap] = buffer.allocate_tensor(at(0, 4096), 3, 1024);
  EXPECT_EQ(compute.data, memory.data());
  EXPECT_EQ(buffer.offset(0), 0u);
}

TEST_F(SwapBufferTest, TooBigSaysHowMuchWasAskedAndHowMuchIsLeft) {
  SwapBuffer buffer(whole());
  buffer.allocate_tensor(at(0, 15 * 4096), 15 * 1024, 15 * 1024);  // 1024 elements left
  try {
    buffer.allocate_tensor(at(0, 8192), 2000, 2048);
    FAIL() << "no exception";
  } catch (const Error& e) {
    const std::string what = e.what();
    // Asked: 2048 elements (8192 bytes); left: 1024 elements (4096 bytes).
    EXPECT_THAT(what, AnyOf(HasSubstr("2048"), HasSubstr("8192")));
    EXPECT_THAT(what, AnyOf(HasSubstr("1024"), HasSubstr("4096")));
  }
  // Nothing was taken by the failed call.
  EXPECT_EQ(buffer.count(), 1u);
  EXPECT_EQ(buffer.free_numel(), 1024u);
  EXPECT_FALSE(buffer.has_space(2048));
  EXPECT_TRUE(buffer.has_space(1024));
}

TEST_F(SwapBufferTest, AlignedNumelSmallerThanNumelIsAnError) {
  SwapBuffer buffer(whole());
  try {
    buffer.allocate_tensor(at(0, 4096), 2000, 1024);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("2000"));
    EXPECT_THAT(e.what(), HasSubstr("1024"));
  }
  EXPECT_EQ(buffer.count(), 0u);
  EXPECT_EQ(buffer.used_numel(), 0u);
}

TEST_F(SwapBufferTest, UnalignedAlignedNumelIsAnError) {
  SwapBuffer buffer(whole());
  // 1000 f32 = 4000 bytes: not a multiple of 4096.
  try {
    buffer.allocate_tensor(at(0, 4000), 10, 1000);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("1000"));
  }
  EXPECT_THROW(buffer.allocate_tensor(at(0, 4100), 1025, 1025), Error);
  EXPECT_EQ(buffer.count(), 0u);
  EXPECT_EQ(buffer.used_numel(), 0u);
}

TEST_F(SwapBufferTest, InsertOfAnotherDtypeIsAnError) {
  SwapBuffer buffer(whole());
  std::vector<double> values(10, 1.0);
  const TensorView other{values.data(), values.size(), DType::f64};
  try {
    buffer.insert_tensor(other, at(0, 4096), aligned_numel(10, DType::f32));
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("f64"));
    EXPECT_THAT(e.what(), HasSubstr("f32"));
  }
  EXPECT_EQ(buffer.count(), 0u);
  EXPECT_EQ(buffer.used_numel(), 0u);
}

TEST_F(SwapBufferTest, MisalignedBufferAddressIsAnError) {
  const TensorView shifted{memory.data() + 512, kCapacity - 1024, DType::f32};
  EXPECT_THROW(SwapBuffer{shifted}, Error);
  const TensorView by_one_element{memory.data() + 4, 1024, DType::f32};
  EXPECT_THROW(SwapBuffer{by_one_element}, Error);
  // At a smaller alignment the same address is fine.
  EXPECT_NO_THROW(SwapBuffer(shifted, 512));
}

TEST_F(SwapBufferTest, SmallerAlignment) {
  SwapBuffer buffer(whole(), 512);
  EXPECT_EQ(buffer.alignment_bytes(), 512u);
  auto [c0, s0] = buffer.allocate_tensor(at(0, 512), 1, aligned_numel(1, DType::f32, 512));
  auto [c1, s1] = buffer.allocate_tensor(at(512, 512), 100, aligned_numel(100, DType::f32, 512));
  EXPECT_EQ(s0.numel, 128u);
  EXPECT_EQ(c1.bytes(), memory.data() + 512);
  EXPECT_EQ(buffer.offset(1), 128u);
  EXPECT_THROW(buffer.allocate_tensor(at(0, 400), 100, 100), Error);  // 400 bytes
}

}  // namespace
}  // namespace swapcoord
