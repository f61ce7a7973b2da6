// SwapBufferManager, sized_view / sized_views.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/common/error.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;

// [data, data + size_bytes) of each view are pairwise disjoint.
bool disjoint(const std::vector<TensorView>& views, std::size_t bytes_each) {
  std::vector<const std::byte*> starts;
  for (const auto& v : views) starts.push_back(v.bytes());
  std::sort(starts.begin(), starts.end());
  for (std::size_t i = 1; i < starts.size(); ++i)
    if (starts[i - 1] + bytes_each > starts[i]) return false;
  return true;
}

TEST(SwapBufferManager, Properties) {
  SwapBufferManager manager(1000, 3, DType::f32);
  EXPECT_EQ(manager.num_elems(), 1000u);
  EXPECT_EQ(manager.count(), 3u);
  EXPECT_EQ(manager.dtype(), DType::f32);
  EXPECT_EQ(manager.free_count(), 3u);
  EXPECT_EQ(manager.used_count(), 0u);
  EXPECT_EQ(manager.buffer_bytes(), 4000u);
  EXPECT_DOUBLE_EQ(manager.gigabytes(), 3.0 * 1000 * 4 / (1024.0 * 1024.0 * 1024.0));
  EXPECT_FALSE(manager.memory().empty());
  EXPECT_GE(manager.memory().size_bytes(), 3u * 4000);
}

TEST(SwapBufferManager, GigabytesOfLargerBuffers) {
  SwapBufferManager manager(std::size_t{1} << 20, 4, DType::bf16);  // 4 x 2 MiB
  EXPECT_DOUBLE_EQ(manager.gigabytes(), 8.0 / 1024.0);
}

TEST(SwapBufferManager, AllocateGivesDistinctAlignedNonOverlappingViews) {
  SwapBufferManager manager(3000, 4, DType::f16);
  const auto views = manager.allocate(2500, 3);
  ASSERT_EQ(views.size(), 3u);
  std::set<void*> addresses;
  for (const auto& v : views) {
    EXPECT_EQ(v.numel, 2500u);
    EXPECT_EQ(v.dtype, DType::f16);
    EXPECT_TRUE(v.device.is_cpu());
    EXPECT_TRUE(is_aligned(v.data, kDefaultAlignmentBytes));
    EXPECT_GE(v.bytes(), manager.memory().data());
    EXPECT_LE(v.bytes() + manager.buffer_bytes(), manager.memory().data() + manager.memory().size_bytes());
    addresses.insert(v.data);
  }
  EXPECT_EQ(addresses.size(), 3u);
  // Not only the narrowed views: the whole buffers behind them are disjoint.
  EXPECT_TRUE(disjoint(views, manager.buffer_bytes()));
  EXPECT_EQ(manager.free_count(), 1u);
  EXPECT_EQ(manager.used_count(), 3u);

  // Each buffer is usable to its full size without touching the others.
  for (std::size_t i = 0; i < views.size(); ++i)
    std::memset(views[i].data, static_cast<int>(i + 1), manager.buffer_bytes());
  for (std::size_t i = 0; i < views.size(); ++i)
    for (std::size_t b = 0; b < manager.buffer_bytes(); ++b)
      ASSERT_EQ(views[i].bytes()[b], static_cast<std::byte>(i + 1)) << "buffer " << i << " byte " << b;
}

TEST(SwapBufferManager, OtherAlignment) {
  SwapBufferManager manager(100, 3, DType::u8, 512);
  const auto views = manager.allocate_all(100);
  ASSERT_EQ(views.size(), 3u);
  for (const auto& v : views) EXPECT_TRUE(is_aligned(v.data, 512));
  EXPECT_TRUE(disjoint(views, 100));
}

TEST(SwapBufferManager, AllocateReturnsEmptyWhenTooFewAreFree) {
  SwapBufferManager manager(1024, 3, DType::f32);
  const auto two = manager.allocate(1024, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_TRUE(manager.allocate(1024, 2).empty());
  EXPECT_EQ(manager.free_count(), 1u) << "a refused allocate takes nothing";
  const auto one = manager.allocate(1, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].numel, 1u);
  EXPECT_TRUE(manager.allocate(1, 1).empty());
  EXPECT_EQ(manager.free_count(), 0u);
  EXPECT_EQ(manager.used_count(), 3u);
}

TEST(SwapBufferManager, AllocateZeroBuffers) {
  SwapBufferManager manager(1024, 2, DType::f32);
  EXPECT_TRUE(manager.allocate(1024, 0).empty());
  EXPECT_EQ(manager.free_count(), 2u);
}

TEST(SwapBufferManager, AllocateAllTakesEveryFreeBuffer) {
  SwapBufferManager manager(512, 5, DType::i64);
  const auto first = manager.allocate(512, 2);
  const auto rest = manager.allocate_all(100);
  ASSERT_EQ(rest.size(), 3u);
  for (const auto& v : rest) EXPECT_EQ(v.numel, 100u);
  EXPECT_EQ(manager.free_count(), 0u);
  EXPECT_TRUE(manager.allocate_all(512).empty());
  std::vector<TensorView> all = first;
  all.insert(all.end(), rest.begin(), rest.end());
  EXPECT_TRUE(disjoint(all, manager.buffer_bytes()));
}

TEST(SwapBufferManager, FreeReturnsBuffersForReuse) {
  SwapBufferManager manager(1024, 3, DType::f32);
  auto views = manager.allocate_all(1024);
  ASSERT_EQ(views.size(), 3u);
  std::set<void*> original;
  for (const auto& v : views) original.insert(v.data);

  manager.free(std::span(views).subspan(0, 2));
  EXPECT_EQ(manager.free_count(), 2u);
  EXPECT_EQ(manager.used_count(), 1u);
  manager.free(std::span(views).subspan(2, 1));
  EXPECT_EQ(manager.free_count(), 3u);

  // The same memory comes back: nothing new is allocated.
  const auto again = manager.allocate(10, 3);
  ASSERT_EQ(again.size(), 3u);
  for (const auto& v : again) EXPECT_TRUE(original.count(v.data)) << v.data;
}

TEST(SwapBufferManager, FreeOfNarrowedViewsWorks) {
  SwapBufferManager manager(1024, 2, DType::f32);
  auto views = manager.allocate(1024, 2);
  const std::vector<TensorView> narrowed = {sized_view(views[0], 3), sized_view(views[1], 0)};
  manager.free(narrowed);
  EXPECT_EQ(manager.free_count(), 2u);
}

TEST(SwapBufferManager, FreeOfAForeignViewIsAnErrorAndFreesNothing) {
  SwapBufferManager manager(1024, 3, DType::f32);
  auto views = manager.allocate(1024, 2);
  std::vector<float> elsewhere(1024);
  const TensorView foreign{elsewhere.data(), 1024, DType::f32};
  const std::vector<TensorView> batch = {views[0], foreign, views[1]};
  EXPECT_THROW(manager.free(batch), Error);
  EXPECT_EQ(manager.free_count(), 1u);
  EXPECT_EQ(manager.used_count(), 2u);

  // A pointer inside the manager's memory that is not the start of a buffer.
  const TensorView inside{views[0].bytes() + 512, 10, DType::f32};
  const std::vector<TensorView> bad_inside = {inside};
  EXPECT_THROW(manager.free(bad_inside), Error);
  EXPECT_EQ(manager.free_count(), 1u);

  // Another manager's buffer.
  SwapBufferManager other(1024, 1, DType::f32);
  const auto theirs = other.allocate(1024, 1);
  EXPECT_THROW(manager.free(theirs), Error);
  EXPECT_EQ(manager.free_count(), 1u);
  EXPECT_EQ(other.free_count(), 0u);

  // The good ones can still be freed afterwards.
  manager.free(views);
  EXPECT_EQ(manager.free_count(), 3u);
}

TEST(SwapBufferManager, DoubleFreeIsAnErrorAndFreesNothing) {
  SwapBufferManager manager(1024, 3, DType::f32);
  auto views = manager.allocate(1024, 3);
  manager.free(std::span(views).subspan(0, 1));
  ASSERT_EQ(manager.free_count(), 1u);

  // views[0] is free already; views[1] must not be freed either.
  const std::vector<TensorView> again = {views[1], views[0]};
  try {
    manager.free(again);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("free"));
  }
  EXPECT_EQ(manager.free_count(), 1u);
  EXPECT_EQ(manager.used_count(), 2u);

  // The same buffer twice in one call.
  const std::vector<TensorView> twice = {views[2], views[2]};
  EXPECT_THROW(manager.free(twice), Error);
  EXPECT_EQ(manager.free_count(), 1u);

  // Freed once, never handed out again yet: all three free afterwards, none twice.
  const std::vector<TensorView> rest = {views[1], views[2]};
  manager.free(rest);
  EXPECT_EQ(manager.free_count(), 3u);
  EXPECT_EQ(manager.allocate(1024, 3).size(), 3u);
  EXPECT_TRUE(manager.allocate(1024, 1).empty());
}

TEST(SwapBufferManager, AskingForMoreElementsThanABufferIsAnError) {
  SwapBufferManager manager(1000, 2, DType::f32);
  try {
    manager.allocate(1001, 1);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("1001"));
    EXPECT_THAT(e.what(), HasSubstr("1000"));
  }
  EXPECT_THROW(manager.allocate_all(1001), Error);
  EXPECT_EQ(manager.free_count(), 2u);
}

TEST(SwapBufferManager, ZeroSizesAreErrors) {
  EXPECT_THROW(SwapBufferManager(0, 2, DType::f32), Error);
  EXPECT_THROW(SwapBufferManager(16, 0, DType::f32), Error);
}

// ---- sized_view(s) ---------------------------------------------------------------------

TEST(SizedView, NarrowsTheView) {
  std::vector<double> values(100);
  const TensorView buffer{values.data(), values.size(), DType::f64, Device::cpu()};
  const TensorView head = sized_view(buffer, 10);
  EXPECT_EQ(head.data, values.data());
  EXPECT_EQ(head.numel, 10u);
  EXPECT_EQ(head.dtype, DType::f64);
  EXPECT_EQ(sized_view(buffer, 100).numel, 100u);
  EXPECT_EQ(sized_view(buffer, 0).numel, 0u);
}

TEST(SizedView, TooLargeIsAnError) {
  std::vector<float> values(100);
  const TensorView buffer{values.data(), values.size(), DType::f32};
  try {
    sized_view(buffer, 101);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("101"));
    EXPECT_THAT(e.what(), HasSubstr("100"));
  }
}

TEST(SizedViews, OnePerBuffer) {
  SwapBufferManager manager(256, 3, DType::i32);
  const auto buffers = manager.allocate_all(256);
  const std::vector<std::size_t> numels = {1, 256, 17};
  const auto views = sized_views(buffers, numels);
  ASSERT_EQ(views.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(views[i].data, buffers[i].data);
    EXPECT_EQ(views[i].numel, numels[i]);
    EXPECT_EQ(views[i].dtype, DType::i32);
  }
  EXPECT_TRUE(sized_views({}, {}).empty());
}

TEST(SizedViews, ErrorsOnTooLargeOrLengthMismatch) {
  SwapBufferManager manager(256, 2, DType::i32);
  const auto buffers = manager.allocate_all(256);
  const std::vector<std::size_t> too_large = {1, 257};
  EXPECT_THROW(sized_views(buffers, too_large), Error);
  const std::vector<std::size_t> too_few = {1};
  try {
    sized_views(buffers, too_few);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("2"));
    EXPECT_THAT(e.what(), HasSubstr("1"));
  }
  const std::vector<std::size_t> too_many = {1, 2, 3};
  EXPECT_THROW(sized_views(buffers, too_many), Error);
}

}  // namespace
}  // namespace swapcoord
