// The device layer on any machine: what the build contains, and, where no GPU is visible
// (as in CI here), that every call needing one fails with an Error that says why, never a
// crash. Where a GPU is visible these skip; tests/gpu covers that case.
#include <gtest/gtest.h>

#include <string>

#include "swapcoord/config.hpp"
#include "swapcoord/device/device.hpp"
#if SWAPCOORD_HAVE_CUDA
#include "cuda_check.hpp"
#endif

namespace swapcoord::device {
namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const CudaError& e) {
    return std::string("CudaError: ") + e.what();
  } catch (const Error& e) {
    return e.what();
  }
  return "no exception";
}

TEST(Device, BuildIsWhatConfigureFound) {
  EXPECT_EQ(cuda_built(), SWAPCOORD_HAVE_CUDA != 0);
  EXPECT_EQ(nccl_built(), SWAPCOORD_HAVE_NCCL != 0);
  const std::string text = build_description();
  if (SWAPCOORD_HAVE_CUDA) {
    EXPECT_NE(text.find("CUDA "), std::string::npos) << text;
    EXPECT_NE(text.find(SWAPCOORD_HAVE_NCCL ? "NCCL " : "without NCCL"), std::string::npos) << text;
  } else {
    EXPECT_EQ(text, "without CUDA");
  }
}

TEST(Device, WithoutAGpuEveryCallSaysWhy) {
  if (visible_device_count() > 0) GTEST_SKIP() << "a GPU is visible: tests/gpu covers the device layer";
  const std::string reason = no_device_reason();
  EXPECT_NE(reason.find(SWAPCOORD_HAVE_CUDA ? "cudaGetDeviceCount" : "built without CUDA"), std::string::npos)
      << reason;
  const std::string none = SWAPCOORD_HAVE_CUDA ? "no CUDA device is visible" : "built without CUDA";
  const std::string required = error_of([] { require_device("swapping 'w'"); });
  EXPECT_NE(required.find("swapping 'w'"), std::string::npos) << required;
  EXPECT_NE(required.find(reason), std::string::npos) << required;
  EXPECT_NE(error_of([] { DeviceStager stager(0); }).find(none), std::string::npos);
  EXPECT_NE(error_of([] { DeviceMemory memory(0, 4096); }).find(none), std::string::npos);
  EXPECT_NE(error_of([] { use_cuda_host_memory(0); }).find(none), std::string::npos);
  EXPECT_NE(error_of([] { (void)describe_device(0); }).find(none), std::string::npos);
  const std::string local = error_of([] { (void)device_for_local_rank(1, "--device cuda"); });
  EXPECT_NE(local.find("--device cuda: no CUDA device is visible (" + reason + ")"), std::string::npos) << local;
  // An empty DeviceMemory is fine without a GPU (apps hold one when not on a GPU).
  DeviceMemory empty;
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size_bytes(), 0u);
}

#if SWAPCOORD_HAVE_CUDA
TEST(Device, CudaErrorsNameTheCallWhatItActedOnCudasTextAndTheRank) {
  // cudaErrorMemoryAllocation (2), as cudaMalloc returns it; the text comes from the runtime.
  try {
    cuda_check(2, "cudaMalloc", "4096 bytes on device 0");
    FAIL() << "no exception";
  } catch (const CudaError& e) {
    const std::string text = e.what();
    EXPECT_EQ(e.call(), "cudaMalloc");
    EXPECT_EQ(e.code(), 2);
    EXPECT_NE(text.find(": cudaMalloc (4096 bytes on device 0): out of memory (cudaErrorMemoryAllocation, 2)"),
              std::string::npos) << text;
    EXPECT_EQ(text.rfind(who(), 0), 0u) << text;  // starts with this process ("host" without MPI)
  }
  EXPECT_NO_THROW(cuda_check(0, "cudaFree", "nothing"));
}
#endif

}  // namespace
}  // namespace swapcoord::device
