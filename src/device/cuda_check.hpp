#pragma once
// Inside the device layer: CUDA error checks and the current-device guard.
#include <new>
#include <string>

namespace swapcoord::device {

// "<CUDA's text> (<name>, <code>)".
std::string cuda_text(int rc);
// Throws CudaError("<who>: <call> (<what>): <cuda_text>") unless rc is cudaSuccess.
void cuda_check(int rc, const char* call, const std::string& what);

// Makes `device` current for the scope, then gives the thread back the CUDA context it had
// (the library runs on callers' threads, where PyTorch keeps its own current device, and
// on its own threads, which had none). The context, not the device index, is restored
// (cuCtxGetCurrent / cuCtxSetCurrent from the driver the runtime loaded): restoring "device
// 0" on a thread that had no context would create GPU 0's primary context in every rank.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);  // CudaError when the device cannot be made current
  // For destructors: never throws; `ok()` says whether the device is current.
  DeviceGuard(int device, std::nothrow_t) noexcept;
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard();
  bool ok() const noexcept { return _ok; }

 private:
  void* _context = nullptr;  // the thread's context before (may be null)
  int _previous = -1;        // the current device before, where the driver API is not found
  bool _ok = false;
};

}  // namespace swapcoord::device
