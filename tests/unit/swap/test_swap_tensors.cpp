// swap_out_tensors / swap_in_tensors and their submit_ forms, through real engines on a
// real (O_DIRECT) filesystem, with SwapBuffer swap views over SwapBufferManager memory.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/swap_tensors.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;

std::vector<std::byte> pread_all(const std::string& path, std::uint64_t offset, std::size_t bytes) {
  std::vector<std::byte> out(bytes);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, out.data() + done, bytes - done, static_cast<off_t>(offset + done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  EXPECT_EQ(done, bytes) << "short read of " << path;
  return out;
}

class SwapTensorsTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "libaio" && !SWAPCOORD_HAVE_LIBAIO)
      GTEST_SKIP() << "libaio is not compiled into this build";
    engine = make_engine(GetParam(), AioConfig{});
  }

  // Lays `sizes` (bytes, u8 tensors) out in one SwapBuffer over a manager buffer and in
  // one O_DIRECT swap file; fills compute views with pattern (seed = index) and the
  // padding with garbage that the swap must carry as is.
  struct Layout {
    std::unique_ptr<SwapBufferManager> manager;
    std::unique_ptr<SwapBuffer> buffer;
    std::unique_ptr<SwapFile> file;
    std::vector<TensorView> swap_views;
    std::vector<SwapLocation> locations;
    std::uint64_t total = 0;
  };
  Layout make_layout(const std::vector<std::size_t>& sizes, const std::string& name) {
    Layout l;
    for (auto size : sizes) l.total += aligned_numel(size, DType::u8);
    l.manager = std::make_unique<SwapBufferManager>(l.total, 1, DType::u8);
    auto views = l.manager->allocate(l.total, 1);
    l.buffer = std::make_unique<SwapBuffer>(views.at(0));
    l.file = std::make_unique<SwapFile>(SwapFile::create(dir.file(name), l.total, DirectMode::on));
    EXPECT_TRUE(l.file->direct()) << "the test directory must accept O_DIRECT";
    std::uint64_t offset = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::size_t aligned = aligned_numel(sizes[i], DType::u8);
      const SwapLocation location{l.file.get(), offset, aligned};
      auto [compute, swap] = l.buffer->allocate_tensor(location, sizes[i], aligned);
      test::fill_pattern(swap.byte_span(), 1000 + i);  // padding: another seed's bytes
      test::fill_pattern(compute.byte_span(), i);
      l.swap_views.push_back(swap);
      l.locations.push_back(location);
      offset += aligned;
    }
    return l;
  }

  static void expect_restored(const Layout& l) {
    for (std::size_t i = 0; i < l.swap_views.size(); ++i) {
      SCOPED_TRACE("tensor " + std::to_string(i));
      const TensorView compute = l.buffer->compute_tensor(i);
      const TensorView swap = l.buffer->swap_tensor(i);
      EXPECT_EQ(test::count_pattern_mismatches(compute.byte_span(), i), 0u);
      EXPECT_EQ(test::count_pattern_mismatches(swap.byte_span().subspan(compute.size_bytes()),
                                               1000 + i, compute.size_bytes()),
                0u);
    }
  }

  test::TempDir dir;
  std::unique_ptr<IoEngine> engine;
};

TEST_P(SwapTensorsTest, RoundTripAtAwkwardSizes) {
  const std::vector<std::size_t> sizes = {1, 4095, 4097, 1 * kMiB + 1, 64 * kMiB, 4096, 3};
  Layout l = make_layout(sizes, "awkward.swp");

  const IoBatchResult out = swap_out_tensors(*engine, l.swap_views, l.locations);
  EXPECT_EQ(out.requests, sizes.size());
  EXPECT_EQ(out.bytes, l.total);

  // The file holds the bytes (check the small ones and both ends of the big one).
  for (std::size_t i : {0u, 1u, 2u, 3u, 5u, 6u}) {
    const auto disk = pread_all(l.file->path(), l.locations[i].offset, sizes[i]);
    EXPECT_EQ(test::count_pattern_mismatches(disk, i), 0u) << "tensor " << i << " on disk";
  }
  {
    const auto head = pread_all(l.file->path(), l.locations[4].offset, 8192);
    EXPECT_EQ(test::count_pattern_mismatches(head, 4), 0u);
    const auto tail = pread_all(l.file->path(), l.locations[4].offset + 64 * kMiB - 8192, 8192);
    EXPECT_EQ(test::count_pattern_mismatches(tail, 4, 64 * kMiB - 8192), 0u);
  }

  for (const auto& view : l.swap_views) std::memset(view.data, 0, view.size_bytes());
  const IoBatchResult in = swap_in_tensors(*engine, l.swap_views, l.locations);
  EXPECT_EQ(in.requests, sizes.size());
  EXPECT_EQ(in.bytes, l.total);
  expect_restored(l);
}

TEST_P(SwapTensorsTest, SmallBlocksAndShallowQueues) {
  AioConfig config;
  config.block_size = 8 * kKiB;
  config.queue_depth = 2;
  config.intra_op_parallelism = 2;
  engine = make_engine(GetParam(), config);
  const std::vector<std::size_t> sizes = {1, 4095, 4097, 1 * kMiB + 1, 100 * kKiB};
  Layout l = make_layout(sizes, "small-blocks.swp");
  swap_out_tensors(*engine, l.swap_views, l.locations);
  for (const auto& view : l.swap_views) std::memset(view.data, 0xFF, view.size_bytes());
  swap_in_tensors(*engine, l.swap_views, l.locations);
  expect_restored(l);
}

TEST_P(SwapTensorsTest, OverlappingBatches) {
  const std::vector<std::size_t> sizes = {4097, 2 * kMiB + 7, 1, 300 * kKiB, 4095, kMiB};
  Layout l = make_layout(sizes, "overlap.swp");
  const std::span<const TensorView> views(l.swap_views);
  const std::span<const SwapLocation> locations(l.locations);

  IoTicket a = submit_swap_out(*engine, views.subspan(0, 3), locations.subspan(0, 3));
  IoTicket b = submit_swap_out(*engine, views.subspan(3), locations.subspan(3));
  EXPECT_NE(a.id(), b.id());
  const IoBatchResult rb = engine->wait(std::move(b));  // out of order on purpose
  const IoBatchResult ra = engine->wait(std::move(a));
  EXPECT_EQ(ra.requests, 3u);
  EXPECT_EQ(rb.requests, 3u);
  EXPECT_EQ(ra.bytes + rb.bytes, l.total);

  for (const auto& view : l.swap_views) std::memset(view.data, 0, view.size_bytes());
  IoTicket c = submit_swap_in(*engine, views.subspan(0, 4), locations.subspan(0, 4));
  IoTicket d = submit_swap_in(*engine, views.subspan(4), locations.subspan(4));
  EXPECT_EQ(engine->wait(std::move(c)).requests, 4u);
  EXPECT_EQ(engine->wait(std::move(d)).requests, 2u);
  expect_restored(l);
}

TEST_P(SwapTensorsTest, ViewAndLocationSizeMismatchIsAnErrorNamingThePath) {
  const std::vector<std::size_t> sizes = {4096, 8192};
  Layout l = make_layout(sizes, "mismatch.swp");
  // The compute view of the first tensor is the right size; make it one block too short.
  std::vector<TensorView> views = l.swap_views;
  views[1] = views[1].first(4096);
  for (auto swap_fn : {&swap_out_tensors, &swap_in_tensors}) {
    try {
      swap_fn(*engine, views, l.locations);
      FAIL() << "no exception";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(l.file->path()));
      EXPECT_THAT(e.what(), HasSubstr("8192"));
      EXPECT_THAT(e.what(), HasSubstr("4096"));
    }
  }
  // The engine is still usable: nothing was queued by the failed calls.
  EXPECT_EQ(swap_out_tensors(*engine, l.swap_views, l.locations).requests, 2u);
}

TEST_P(SwapTensorsTest, UnalignedComputeViewIsRefusedForDirectFiles) {
  const std::vector<std::size_t> sizes = {4095};
  Layout l = make_layout(sizes, "unaligned.swp");
  // A compute view (4095 bytes) against a location of the same odd size on an O_DIRECT
  // file: the engine refuses it before queueing anything.
  const std::vector<TensorView> views = {l.buffer->compute_tensor(0)};
  const std::vector<SwapLocation> locations = {{l.file.get(), 0, 4095}};
  try {
    swap_out_tensors(*engine, views, locations);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(l.file->path()));
  }
}

TEST_P(SwapTensorsTest, CountMismatchIsAnError) {
  const std::vector<std::size_t> sizes = {4096, 4096};
  Layout l = make_layout(sizes, "count.swp");
  const std::span<const SwapLocation> one(l.locations.data(), 1);
  EXPECT_THROW(swap_out_tensors(*engine, l.swap_views, one), Error);
  EXPECT_THROW(submit_swap_in(*engine, l.swap_views, one), Error);
}

TEST_P(SwapTensorsTest, EmptyBatch) {
  const IoBatchResult r = swap_out_tensors(*engine, {}, {});
  EXPECT_EQ(r.requests, 0u);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_EQ(swap_in_tensors(*engine, {}, {}).requests, 0u);
}

TEST_P(SwapTensorsTest, ReadPastTheEndIsAnIoError) {
  const std::vector<std::size_t> sizes = {4096, 4096};
  Layout l = make_layout(sizes, "short.swp");
  swap_out_tensors(*engine, l.swap_views, l.locations);
  std::vector<SwapLocation> locations = l.locations;
  locations[1].offset = 1 * kMiB;  // the file is 8 KiB long
  try {
    swap_in_tensors(*engine, l.swap_views, locations);
    FAIL() << "no exception";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), HasSubstr(l.file->path()));
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(1 * kMiB)));
    ASSERT_EQ(e.failures().size(), 1u);
    EXPECT_EQ(e.failures()[0].request, 1u);
    EXPECT_EQ(e.failures()[0].op, IoOp::read);
  }
  // And the good locations still read back.
  for (const auto& view : l.swap_views) std::memset(view.data, 0, view.size_bytes());
  swap_in_tensors(*engine, l.swap_views, l.locations);
  expect_restored(l);
}

INSTANTIATE_TEST_SUITE_P(Engines, SwapTensorsTest, ::testing::Values("libaio", "posix"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace swapcoord
