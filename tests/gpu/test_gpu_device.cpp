// The device layer on a GPU (label gpu; every test skips, saying why, where none is
// visible): staging copies between GPU memory and pinned or pageable host memory, the
// CUDA-pinned allocator, device memory bounds, a real CUDA error, and the session's GPU
// pipeline (GPU -> pinned staging -> file and back) on a real file with libaio.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <vector>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/async_tensor_swapper.hpp"

namespace swapcoord::device {
namespace {

#define REQUIRE_GPU() \
  if (visible_device_count() == 0) GTEST_SKIP() << "no GPU: " << no_device_reason()

void fill(std::span<std::byte> bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(mix64(seed + i / 8) >> (i % 8 * 8));
}

TEST(GpuDevice, StagingPinnedMemoryIsCudaHostAlloced) {
  REQUIRE_GPU();
  std::printf("device: %s, %s\n", describe_device(0).c_str(), build_description().c_str());
  use_cuda_host_memory(0);
  PinnedAllocation memory(8 << 20);
  EXPECT_EQ(memory.kind(), PinnedAllocation::Kind::cuda_host);
  EXPECT_TRUE(memory.locked());
}

TEST(GpuDevice, DeviceViewsMustPointAtMemoryOfTheirGpu) {
  REQUIRE_GPU();
  DeviceMemory gpu(0, 4096);
  std::vector<std::byte> host(4096);
  EXPECT_NO_THROW(check_device_pointer(gpu.data(), 4096, 0, "view"));
  try {
    check_device_pointer(host.data(), 4096, 0, "view");
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not memory of cuda:0"), std::string::npos) << e.what();
  }
}

TEST(GpuDevice, StagerRoundTripsAnySizeThroughPinnedAndPageableMemory) {
  REQUIRE_GPU();
  use_cuda_host_memory(0);
  DeviceStager stager(0);
  for (const std::size_t size : {std::size_t{1}, std::size_t{4095}, std::size_t{(1 << 20) + 3}, std::size_t{64} << 20}) {
    DeviceMemory gpu(0, size);
    PinnedAllocation pinned(size);
    std::vector<std::byte> pageable(size);
    fill(pinned.bytes(), size);
    stager.to_device(gpu.data(), pinned.bytes());
    stager.to_host(pageable, gpu.data());
    EXPECT_EQ(std::memcmp(pageable.data(), pinned.data(), size), 0) << size;
    // The asynchronous forms: two halves each way, one wait.
    std::memset(pinned.data(), 0, size);
    const std::size_t half = size / 2;
    stager.to_host_async(pinned.bytes().first(half), gpu.data());
    stager.to_host_async(pinned.bytes().subspan(half), gpu.data() + half);
    stager.wait();
    EXPECT_EQ(std::memcmp(pageable.data(), pinned.data(), size), 0) << size;
    gpu.zero();
    stager.to_device_async(gpu.data(), pinned.bytes().first(half));
    stager.to_device_async(gpu.data() + half, pinned.bytes().subspan(half));
    stager.wait();
    std::vector<std::byte> back(size);
    gpu.copy_to_host(0, back);
    EXPECT_EQ(std::memcmp(back.data(), pinned.data(), size), 0) << size;
  }
}

TEST(GpuDevice, DeviceMemoryChecksBoundsAndCudaErrorsNameTheCall) {
  REQUIRE_GPU();
  DeviceMemory gpu(0, 4096);
  std::vector<std::byte> host(4097);
  try {
    gpu.copy_to_host(0, host);
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4097 bytes at offset 0 is past its 4096 bytes"), std::string::npos) << e.what();
  }
  try {
    DeviceMemory huge(0, std::size_t{1} << 52);  // 4 PiB
    ADD_FAILURE() << "no exception";
  } catch (const CudaError& e) {
    EXPECT_EQ(e.call(), "cudaMalloc");
    EXPECT_NE(std::string(e.what()).find("cudaMalloc (4503599627370496 bytes on device 0)"), std::string::npos)
        << e.what();
  }
  try {
    DeviceStager stager(visible_device_count());
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA device(s) are visible"), std::string::npos) << e.what();
  }
}

TEST(GpuDevice, GpuToFileAndBackThroughStagingBuffers) {
  REQUIRE_GPU();
  use_cuda_host_memory(0);
  const auto dir = std::filesystem::temp_directory_path() / ("swapcoord-gpu-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    constexpr std::size_t kSize = 96 << 20, kBuffer = 4 << 20;
    SwapFile file = SwapFile::create((dir / "f.swp").string(), kSize, DirectMode::automatic);
    std::string backend = "posix";
    for (const auto& info : engine_infos())
      if (info.name == "libaio" && info.available) backend = "libaio";
    auto engine = make_engine(backend, AioConfig{});
    PinnedAllocation staging(4 * kBuffer);
    std::vector<TensorView> views;
    for (int i = 0; i < 4; ++i) views.push_back({staging.data() + i * kBuffer, kBuffer, DType::u8, Device::cpu()});
    AsyncTensorSwapper swapper(*engine, views);
    DeviceMemory gpu(0, kSize);
    std::vector<std::byte> expected(kSize), got(kSize);
    fill(expected, 42);
    gpu.copy_from_host(0, expected);
    DeviceStager stager(0);
    const SwapLocation whole{&file, 0, kSize};
    swapper.write_stream({&whole, 1}, [&](std::size_t, std::uint64_t offset, std::span<std::byte> out) {
      stager.to_host(out, gpu.data() + offset);
    });
    gpu.zero();
    swapper.read_stream({&whole, 1}, [&](std::size_t, std::uint64_t offset, std::span<const std::byte> in) {
      stager.to_device(gpu.data() + offset, in);
    });
    gpu.copy_to_host(0, got);
    EXPECT_EQ(std::memcmp(got.data(), expected.data(), kSize), 0);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace swapcoord::device
