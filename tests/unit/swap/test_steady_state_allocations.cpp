// The swap path must not allocate once warmed up (DESIGN.md: "No allocation on the
// steady-state swap path"). Counts every operator new in the process, I/O threads
// included, while swapping.
// GCC warns about free() in the replaced operator delete, which is what a replacement does.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/async_tensor_swapper.hpp"
#include "swapcoord/swap/swap_tensors.hpp"
#include "test_support.hpp"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace swapcoord {
namespace {

class CountAllocations {
 public:
  CountAllocations() {
    g_allocations = 0;
    g_counting = true;
  }
  ~CountAllocations() { g_counting = false; }
  long count() const { return g_allocations.load(); }
};

class SteadyState : public ::testing::TestWithParam<const char*> {};

TEST_P(SteadyState, AsyncTensorSwapperDoesNotAllocate) {
  if (auto why = test::backend_unavailable(GetParam()); !why.empty()) GTEST_SKIP() << why;
  test::TempDir dir;
  AioConfig config;
  config.block_size = 64 * 1024;
  config.intra_op_parallelism = 2;
  auto engine = make_engine(GetParam(), config);
  SwapBufferManager staging(256 * 1024, 2, DType::u8);
  AsyncTensorSwapper swapper(*engine, staging.allocate(256 * 1024, 2));

  const std::vector<std::size_t> sizes{1, 4095, 4097, 700 * 1024 + 3, 64 * 1024};
  std::uint64_t total = 0;
  for (auto s : sizes) total += align_up(s, 4096);
  SwapFile file = SwapFile::create(dir.file("steady.swp"), total);
  std::vector<std::vector<std::byte>> data;
  std::vector<TensorView> tensors;
  std::vector<SwapLocation> locations;
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    data.emplace_back(sizes[i]);
    test::fill_pattern(data.back(), i);
    locations.push_back({&file, offset, align_up(sizes[i], 4096)});
    offset += locations.back().bytes;
  }
  for (auto& d : data) tensors.push_back({d.data(), d.size(), DType::u8, Device::cpu()});

  // Warm up: sizes the engine's batch pool and the swapper's lists.
  for (int i = 0; i < 2; ++i) {
    swapper.swap_out(tensors, locations);
    swapper.swap_in(tensors, locations);
  }
  long allocations = 0;
  {
    CountAllocations counter;
    for (int i = 0; i < 5; ++i) {
      swapper.swap_out(tensors, locations);
      swapper.swap_in(tensors, locations);
    }
    allocations = counter.count();
  }
  EXPECT_EQ(allocations, 0) << "heap allocations on the steady-state swap path";
  for (std::size_t i = 0; i < sizes.size(); ++i)
    EXPECT_EQ(test::count_pattern_mismatches(data[i], i), 0u) << "tensor " << i;
}

TEST_P(SteadyState, SwapTensorsDoesNotAllocate) {
  if (auto why = test::backend_unavailable(GetParam()); !why.empty()) GTEST_SKIP() << why;
  test::TempDir dir;
  auto engine = make_engine(GetParam(), AioConfig{});
  const std::size_t n = 8, bytes = 128 * 1024;
  SwapBufferManager pinned(bytes, n, DType::u8);
  auto views = pinned.allocate(bytes, n);
  SwapFile file = SwapFile::create(dir.file("steady.swp"), n * bytes);
  std::vector<SwapLocation> locations;
  for (std::size_t i = 0; i < n; ++i) locations.push_back({&file, i * bytes, bytes});
  for (int i = 0; i < 2; ++i) {
    swap_out_tensors(*engine, views, locations);
    swap_in_tensors(*engine, views, locations);
  }
  long allocations = 0;
  {
    CountAllocations counter;
    for (int i = 0; i < 5; ++i) {
      swap_out_tensors(*engine, views, locations);
      swap_in_tensors(*engine, views, locations);
    }
    allocations = counter.count();
  }
  EXPECT_EQ(allocations, 0) << "heap allocations on the steady-state swap path";
}

INSTANTIATE_TEST_SUITE_P(Backends, SteadyState, ::testing::Values("libaio", "io_uring", "posix"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace swapcoord
