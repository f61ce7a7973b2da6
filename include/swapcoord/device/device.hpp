#pragma once
// The device layer (DESIGN.md, layer 6): GPU tensors. Staging between device memory and
// the pinned host buffers on CUDA streams, device memory for tests and apps, and the
// CUDA-pinned host allocator for PinnedAllocation. NCCL is in device/nccl.hpp.
//
// No header here includes a CUDA header, so a program built against swapcoord needs no
// CUDA toolkit. The target swapcoord::device always exists: built without CUDA, every call
// that needs a GPU throws Error("... swapcoord was built without CUDA ..."), and
// visible_device_count() is 0. Built with CUDA on a machine without a GPU (or driver), the
// same calls throw Error naming what cudaGetDeviceCount said. Neither crashes.
//
// Errors of CUDA calls are CudaError: the call, what it acted on, CUDA's error name and
// text, and the rank ("rank 3@node7: cudaMemcpyAsync (16777216 bytes, device 0 to host):
// an illegal memory access was encountered (cudaErrorIllegalAddress, 700)").
#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "swapcoord/common/error.hpp"

namespace swapcoord {

// A failed call of a device library: the call's name and the library's error code.
class DeviceCallError : public Error {
 public:
  DeviceCallError(const std::string& message, std::string call, int code)
      : Error(message), _call(std::move(call)), _code(code) {}
  const std::string& call() const noexcept { return _call; }  // e.g. "cudaMemcpyAsync", "ncclGroupEnd"
  int code() const noexcept { return _code; }                   // the cudaError_t / ncclResult_t value

 private:
  std::string _call;
  int _code;
};

class CudaError : public DeviceCallError {
 public:
  using DeviceCallError::DeviceCallError;
};

class NcclError : public DeviceCallError {
 public:
  using DeviceCallError::DeviceCallError;
};

namespace device {

bool cuda_built() noexcept;  // swapcoord was built with CUDA
bool nccl_built() noexcept;  // ... and NCCL
// What was built: "CUDA 13.0 (runtime 13000), NCCL 2.28.9", or "without CUDA".
std::string build_description();

// GPUs this process can use (after CUDA_VISIBLE_DEVICES); 0 without CUDA, driver or GPU.
// Never throws; the first call initialises the CUDA runtime.
int visible_device_count() noexcept;
// Why visible_device_count() is 0 (empty when it is not): "swapcoord was built without
// CUDA", or "cudaGetDeviceCount: <CUDA's text> (<name>, <code>)" with a hint.
std::string no_device_reason();
// Throws Error "<what>: no CUDA device is visible (<reason>)" when there is none. (Only
// CudaError and NcclError name the rank themselves; callers add it to these messages.)
void require_device(const std::string& what);
// The GPU of a rank: local_rank modulo the visible devices (require_device first).
int device_for_local_rank(int local_rank, const std::string& what);
// "NVIDIA H200 (device 0, 139.8 GiB, compute capability 9.0)".
std::string describe_device(int device);

// From now on, PinnedAllocation allocates with cudaHostAlloc (portable, so any device's
// streams can DMA from it), creating `device`'s context if needed. Without CUDA or a GPU
// it throws as require_device. Idempotent; the session calls it when a GPU is visible.
void use_cuda_host_memory(int device);

// Device memory (cudaMalloc on `device`), freed by the destructor. The copies are
// synchronous cudaMemcpy calls (for set-up and checks, not for the swap path).
class DeviceMemory {
 public:
  DeviceMemory() noexcept;
  DeviceMemory(int device, std::size_t bytes);
  DeviceMemory(DeviceMemory&&) noexcept;
  DeviceMemory& operator=(DeviceMemory&&) noexcept;
  ~DeviceMemory();

  std::byte* data() const noexcept { return _data; }
  std::size_t size_bytes() const noexcept { return _bytes; }
  int device() const noexcept { return _device; }
  // Bounds-checked copies of host memory into [offset, offset + size) and back.
  void copy_from_host(std::size_t offset, std::span<const std::byte> host);
  void copy_to_host(std::size_t offset, std::span<std::byte> host) const;
  void zero();

 private:
  std::byte* _data = nullptr;
  std::size_t _bytes = 0;
  int _device = -1;
  void release() noexcept;
};

// Copies between device memory and (pinned) host memory on one CUDA stream of `device`,
// waiting on an event recorded after each copy: only that copy is waited for, never the
// whole device. Pinned host memory gives asynchronous DMA; pageable memory works too
// (CUDA stages it). Usable from any thread, one thread at a time. The stream is a blocking
// one: it runs after the work queued on the legacy default stream; work the caller queued
// on other streams that writes or reads the memory must be done before a copy starts.
class DeviceStager {
 public:
  explicit DeviceStager(int device);
  DeviceStager(DeviceStager&&) noexcept;
  DeviceStager& operator=(DeviceStager&&) noexcept;
  ~DeviceStager();

  int device() const noexcept;
  // out.size() bytes from device memory at `source` into `out`; returns when they are there.
  void to_host(std::span<std::byte> out, const void* source);
  // in.size() bytes from `in` to device memory at `target`; returns when the copy is done
  // (so `in` may be reused at once).
  void to_device(void* target, std::span<const std::byte> in);
  // The asynchronous forms: enqueue only; wait() waits for everything enqueued so far.
  void to_host_async(std::span<std::byte> out, const void* source);
  void to_device_async(void* target, std::span<const std::byte> in);
  void wait();

  struct Impl;

 private:
  Impl& impl() const;  // Error after a move
  std::unique_ptr<Impl> _impl;
};

// Throws Error "<what>: <pointer> is <kind> memory, not memory of cuda:<device>" unless
// `pointer` is device (or managed) memory of `device` (its first byte is checked; bytes 0:
// nothing is checked).
void check_device_pointer(const void* pointer, std::size_t bytes, int device, const std::string& what);

// "rank N@host" of this process when MPI is initialised, "host" otherwise (for messages).
// The rank is read once, on a thread that may call MPI (the constructors here call
// remember_rank()), so that errors raised on other threads name it too.
std::string who();
void remember_rank() noexcept;

}  // namespace device
}  // namespace swapcoord
