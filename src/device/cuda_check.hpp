#pragma once
// Inside the device layer: CUDA error checks and the current-device guard.
#include <string>

namespace swapcoord::device {

// "<CUDA's text> (<name>, <code>)".
std::string cuda_text(int rc);
// Throws CudaError("<who>: <call> (<what>): <cuda_text>") unless rc is cudaSuccess.
void cuda_check(int rc, const char* call, const std::string& what);

// Makes `device` current for the scope and restores the caller's device after it (the
// library runs on callers' threads, where PyTorch keeps its own current device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard();

 private:
  int _previous = 0;
};

}  // namespace swapcoord::device
