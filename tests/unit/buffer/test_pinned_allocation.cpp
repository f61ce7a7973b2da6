// PinnedAllocation: sizes, alignment, locking, move semantics.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <filesystem>
#include <type_traits>
#include <utility>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/config.hpp"

namespace swapcoord {
namespace {

// Ownership is move-only, and moves never throw (HighFive's test_nothrow_movable.cpp).
static_assert(std::is_nothrow_move_constructible_v<PinnedAllocation>);
static_assert(std::is_nothrow_move_assignable_v<PinnedAllocation>);
static_assert(std::is_nothrow_default_constructible_v<PinnedAllocation>);
static_assert(!std::is_copy_constructible_v<PinnedAllocation>);
static_assert(!std::is_copy_assignable_v<PinnedAllocation>);
static_assert(!std::is_copy_constructible_v<SwapBufferManager>);
static_assert(!std::is_copy_assignable_v<SwapBufferManager>);

constexpr std::size_t kMiB = std::size_t{1} << 20;

bool running_as_root() { return ::geteuid() == 0; }

// The buffer layer alone (no device layer has installed cudaHostAlloc) maps host memory;
// tests/gpu checks the cudaHostAlloc'ed kind where a GPU is.
void expect_host_kind(const PinnedAllocation& memory) {
  EXPECT_EQ(memory.kind(), PinnedAllocation::Kind::host_mmap);
}

void expect_writable(const PinnedAllocation& memory) {
  auto bytes = memory.bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 7 + 3);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i)
    wrong += bytes[i] != static_cast<std::byte>(i * 7 + 3);
  EXPECT_EQ(wrong, 0u);
}

TEST(PinnedAllocation, DefaultIsEmpty) {
  PinnedAllocation memory;
  EXPECT_TRUE(memory.empty());
  EXPECT_EQ(memory.data(), nullptr);
  EXPECT_EQ(memory.size_bytes(), 0u);
  EXPECT_TRUE(memory.bytes().empty());
  EXPECT_EQ(memory.kind(), PinnedAllocation::Kind::none);
  EXPECT_FALSE(memory.locked());
  EXPECT_FALSE(memory.huge_pages());
}

TEST(PinnedAllocation, SizeZeroIsEmpty) {
  PinnedAllocation memory(0);
  EXPECT_TRUE(memory.empty());
  EXPECT_EQ(memory.size_bytes(), 0u);
  EXPECT_TRUE(memory.bytes().empty());
  EXPECT_EQ(memory.kind(), PinnedAllocation::Kind::none);
  EXPECT_FALSE(memory.locked());
}

TEST(PinnedAllocation, OneByte) {
  PinnedAllocation memory(1);
  EXPECT_FALSE(memory.empty());
  ASSERT_NE(memory.data(), nullptr);
  EXPECT_EQ(memory.size_bytes(), 1u);
  EXPECT_EQ(memory.bytes().size(), 1u);
  EXPECT_TRUE(is_aligned(memory.data(), kDefaultAlignmentBytes));
  expect_host_kind(memory);
  if (running_as_root()) {
    EXPECT_TRUE(memory.locked()) << "root may always mlock";
  }
  memory.data()[0] = std::byte{0x5a};
  EXPECT_EQ(memory.data()[0], std::byte{0x5a});
}

TEST(PinnedAllocation, ThreeMiBIsAlignedLockedAndWritable) {
  PinnedAllocation memory(3 * kMiB);
  ASSERT_NE(memory.data(), nullptr);
  EXPECT_EQ(memory.size_bytes(), 3 * kMiB);
  EXPECT_FALSE(memory.empty());
  EXPECT_TRUE(is_aligned(memory.data(), kDefaultAlignmentBytes));
  expect_host_kind(memory);
  if (memory.kind() == PinnedAllocation::Kind::host_mmap) {
    // Large mappings start on a 2 MiB boundary so that huge pages can back them.
    EXPECT_TRUE(is_aligned(memory.data(), 2 * kMiB));
  }
  if (running_as_root()) {
    EXPECT_TRUE(memory.locked());
  }
  // huge_pages() depends on the kernel's THP setting: either value is fine, but it is
  // only ever set for host mappings.
  if (memory.kind() != PinnedAllocation::Kind::host_mmap) {
    EXPECT_FALSE(memory.huge_pages());
  }
  expect_writable(memory);
}

TEST(PinnedAllocation, OddSizesAreWritableToTheLastByte) {
  for (std::size_t size : {std::size_t{4095}, std::size_t{4097}, 2 * kMiB + 1}) {
    SCOPED_TRACE(size);
    PinnedAllocation memory(size);
    EXPECT_EQ(memory.size_bytes(), size);
    EXPECT_TRUE(is_aligned(memory.data(), kDefaultAlignmentBytes));
    expect_writable(memory);
  }
}

TEST(PinnedAllocation, MoveConstructLeavesSourceEmpty) {
  PinnedAllocation source(64 * 1024);
  std::memset(source.data(), 0x11, source.size_bytes());
  std::byte* const data = source.data();
  const auto kind = source.kind();
  const bool locked = source.locked();

  PinnedAllocation target(std::move(source));
  EXPECT_EQ(target.data(), data);
  EXPECT_EQ(target.size_bytes(), 64u * 1024);
  EXPECT_EQ(target.kind(), kind);
  EXPECT_EQ(target.locked(), locked);
  EXPECT_EQ(target.data()[100], std::byte{0x11});

  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(source.data(), nullptr);
  EXPECT_EQ(source.size_bytes(), 0u);
  EXPECT_EQ(source.kind(), PinnedAllocation::Kind::none);
  EXPECT_FALSE(source.locked());
}

TEST(PinnedAllocation, MoveAssignReleasesTheOldMemoryAndEmptiesTheSource) {
  PinnedAllocation a(8192);
  PinnedAllocation b(3 * kMiB);
  std::byte* const b_data = b.data();
  a = std::move(b);
  EXPECT_EQ(a.data(), b_data);
  EXPECT_EQ(a.size_bytes(), 3 * kMiB);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(b.kind(), PinnedAllocation::Kind::none);
  expect_writable(a);

  // Into an empty one, and back.
  PinnedAllocation c;
  c = std::move(a);
  EXPECT_EQ(c.data(), b_data);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  a = std::move(c);
  EXPECT_EQ(a.data(), b_data);
  EXPECT_TRUE(c.empty());  // NOLINT(bugprone-use-after-move)
}

TEST(PinnedAllocation, ManyAllocationsAndReleases) {
  // Releasing must unmap: 64 rounds of 4 MiB would otherwise add up.
  for (int round = 0; round < 64; ++round) {
    PinnedAllocation memory(4 * kMiB);
    ASSERT_NE(memory.data(), nullptr);
    memory.data()[memory.size_bytes() - 1] = std::byte{1};
  }
}

TEST(PinnedAllocation, KindNames) {
  EXPECT_EQ(to_string(PinnedAllocation::Kind::none), "none");
  EXPECT_EQ(to_string(PinnedAllocation::Kind::host_mmap), "host_mmap");
  EXPECT_EQ(to_string(PinnedAllocation::Kind::cuda_host), "cuda_host");
}

// A host allocator installed through the seam the device layer uses (its cudaHostAlloc is
// swapped for aligned_alloc here, so that this runs without a GPU).
int allocations = 0, releases = 0;
void* counting_allocate(std::size_t bytes, std::string&) {
  ++allocations;
  return std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
}
void counting_release(void* data) noexcept {
  ++releases;
  std::free(data);
}
void* refusing_allocate(std::size_t bytes, std::string& error) {
  error = "test allocator: no " + std::to_string(bytes) + " bytes today";
  return nullptr;
}
constexpr HostAllocator kCounting{"counting", &counting_allocate, &counting_release};
constexpr HostAllocator kRefusing{"refusing", &refusing_allocate, &counting_release};

TEST(PinnedAllocation, AnInstalledHostAllocatorMakesAndFreesCudaHostMemory) {
  allocations = releases = 0;
  set_pinned_host_allocator(&kCounting);
  {
    PinnedAllocation memory(3 * kMiB + 5);
    EXPECT_EQ(memory.kind(), PinnedAllocation::Kind::cuda_host);
    EXPECT_TRUE(memory.locked());
    EXPECT_EQ(memory.size_bytes(), 3 * kMiB + 5);
    expect_writable(memory);
    PinnedAllocation moved(std::move(memory));  // freed once, by the allocator that made it
    set_pinned_host_allocator(nullptr);
    PinnedAllocation host(kMiB);                // made after the reset: the host path again
    EXPECT_EQ(host.kind(), PinnedAllocation::Kind::host_mmap);
    EXPECT_EQ(allocations, 1);
    EXPECT_EQ(releases, 0);
  }
  EXPECT_EQ(releases, 1);
  set_pinned_host_allocator(&kRefusing);
  try {
    PinnedAllocation memory(kMiB);
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cannot allocate 1048576 bytes of pinned memory for swap buffers: "
                                               "test allocator: no 1048576 bytes today"));
  }
  set_pinned_host_allocator(nullptr);
  EXPECT_EQ(PinnedAllocation(4096).kind(), PinnedAllocation::Kind::host_mmap);
}

}  // namespace
}  // namespace swapcoord
