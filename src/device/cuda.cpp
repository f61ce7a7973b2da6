// The device layer with CUDA: device queries, device memory, the stream stager and the
// CUDA-pinned host allocator.
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <utility>

#include <fmt/format.h>

#include "cuda_check.hpp"
#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/device/device.hpp"

#if SWAPCOORD_HAVE_NCCL
#include <nccl.h>
#endif

namespace swapcoord::device {

std::string cuda_text(int rc) {
  const auto e = static_cast<cudaError_t>(rc);
  return fmt::format("{} ({}, {})", cudaGetErrorString(e), cudaGetErrorName(e), rc);
}

void cuda_check(int rc, const char* call, const std::string& what) {
  if (rc == cudaSuccess) return;
  (void)cudaGetLastError();  // clears the error unless it is sticky
  throw CudaError(fmt::format("{}: {} ({}): {}", who(), call, what, cuda_text(rc)), call, rc);
}

namespace {

// cuCtxGetCurrent / cuCtxSetCurrent of the driver the runtime has loaded (not linked: a
// build machine without a driver has no libcuda.so.1). Null where it is not found.
struct DriverContextApi {
  int (*get)(void**) = nullptr;
  int (*set)(void*) = nullptr;
};

const DriverContextApi& driver_context_api() {
  static const DriverContextApi api = [] {
    DriverContextApi a;
    void* handle = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) return a;
    a.get = reinterpret_cast<int (*)(void**)>(::dlsym(handle, "cuCtxGetCurrent"));
    a.set = reinterpret_cast<int (*)(void*)>(::dlsym(handle, "cuCtxSetCurrent"));
    if (a.get == nullptr || a.set == nullptr) a = {};
    return a;
  }();
  return api;
}

}  // namespace

DeviceGuard::DeviceGuard(int device, std::nothrow_t) noexcept {
  const DriverContextApi& api = driver_context_api();
  if (api.get != nullptr) {
    if (api.get(&_context) != 0) _context = nullptr;
  } else if (cudaGetDevice(&_previous) != cudaSuccess) {
    _previous = -1;
  }
  const cudaError_t rc = cudaSetDevice(device);
  if (rc != cudaSuccess) (void)cudaGetLastError();
  _ok = rc == cudaSuccess;
}

DeviceGuard::DeviceGuard(int device) : DeviceGuard(device, std::nothrow) {
  if (!_ok) cuda_check(cudaSetDevice(device), "cudaSetDevice", fmt::format("device {}", device));
}

DeviceGuard::~DeviceGuard() {
  const DriverContextApi& api = driver_context_api();
  if (api.set != nullptr) (void)api.set(_context);  // null: the thread had none, and has none again
  else if (_previous >= 0) (void)cudaSetDevice(_previous);
}

namespace {

struct Probe {
  int count = 0;
  int rc = cudaSuccess;
};

const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    r.rc = cudaGetDeviceCount(&r.count);
    if (r.rc != cudaSuccess) {
      r.count = 0;
      (void)cudaGetLastError();
    }
    return r;
  }();
  return p;
}

int host_memory_device = -1;  // the device whose context cudaHostAlloc uses
std::mutex host_memory_mutex;

void* cuda_host_allocate(std::size_t bytes, std::string& error) {
  DeviceGuard guard(host_memory_device, std::nothrow);
  void* pointer = nullptr;
  const cudaError_t rc =
      guard.ok() ? cudaHostAlloc(&pointer, bytes, cudaHostAllocPortable) : cudaSetDevice(host_memory_device);
  if (rc == cudaSuccess) return pointer;
  (void)cudaGetLastError();
  error = fmt::format("{} (device {}): {}", guard.ok() ? fmt::format("cudaHostAlloc of {} bytes", bytes) : "cudaSetDevice",
                      host_memory_device, cuda_text(rc));
  return nullptr;
}

void cuda_host_release(void* data) noexcept {
  DeviceGuard guard(host_memory_device, std::nothrow);  // no context made on a thread that had none
  (void)cudaFreeHost(data);
}

constexpr HostAllocator kCudaHostAllocator{"cudaHostAlloc", &cuda_host_allocate, &cuda_host_release};

}  // namespace

bool cuda_built() noexcept { return true; }
bool nccl_built() noexcept { return SWAPCOORD_HAVE_NCCL != 0; }

std::string build_description() {
  int runtime = 0;
  (void)cudaRuntimeGetVersion(&runtime);
  std::string text = fmt::format("CUDA {}.{} (runtime {})", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, runtime);
#if SWAPCOORD_HAVE_NCCL
  int nccl = 0;
  (void)ncclGetVersion(&nccl);
  text += fmt::format(", NCCL {}.{}.{}", nccl / 10000, nccl % 10000 / 100, nccl % 100);
#else
  text += ", without NCCL";
#endif
  return text;
}

int visible_device_count() noexcept { return probe().count; }

std::string no_device_reason() {
  const Probe& p = probe();
  if (p.count > 0) return {};
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string env = visible ? fmt::format("; CUDA_VISIBLE_DEVICES='{}'", visible) : std::string();
  if (p.rc == cudaSuccess) return fmt::format("cudaGetDeviceCount found no device{}", env);
  return fmt::format("cudaGetDeviceCount: {}; is there a GPU with its NVIDIA driver loaded?{}", cuda_text(p.rc), env);
}

std::string describe_device(int device) {
  require_device("describe_device");
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties", fmt::format("device {}", device));
  return fmt::format("{} (device {}, {:.1f} GiB, compute capability {}.{})", prop.name, device,
                     static_cast<double>(prop.totalGlobalMem) / (1ULL << 30), prop.major, prop.minor);
}

void use_cuda_host_memory(int device) {
  require_device("CUDA host memory");
  remember_rank();
  if (device < 0 || device >= visible_device_count())
    throw Error(fmt::format("CUDA host memory: device {} is not one of the {} visible", device,
                            visible_device_count()));
  std::lock_guard lock(host_memory_mutex);
  if (host_memory_device >= 0) return;
  host_memory_device = device;
  set_pinned_host_allocator(&kCudaHostAllocator);
}

// ---- DeviceMemory ----------------------------------------------------------------------

DeviceMemory::DeviceMemory() noexcept = default;

DeviceMemory::DeviceMemory(int device, std::size_t bytes) : _bytes(bytes), _device(device) {
  require_device("device memory");
  remember_rank();
  if (device < 0 || device >= visible_device_count())
    throw Error(fmt::format("device memory on cuda:{}, but {} CUDA device(s) are visible", device,
                            visible_device_count()));
  if (bytes == 0) return;
  DeviceGuard guard(device);
  void* pointer = nullptr;
  cuda_check(cudaMalloc(&pointer, bytes), "cudaMalloc", fmt::format("{} bytes on device {}", bytes, device));
  _data = static_cast<std::byte*>(pointer);
}

DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept
    : _data(std::exchange(other._data, nullptr)), _bytes(std::exchange(other._bytes, 0)),
      _device(std::exchange(other._device, -1)) {}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  if (this != &other) {
    release();
    _data = std::exchange(other._data, nullptr);
    _bytes = std::exchange(other._bytes, 0);
    _device = std::exchange(other._device, -1);
  }
  return *this;
}

DeviceMemory::~DeviceMemory() { release(); }

void DeviceMemory::release() noexcept {
  if (_data == nullptr) return;
  DeviceGuard guard(_device, std::nothrow);
  (void)cudaFree(_data);  // an error cannot be reported from a destructor
  _data = nullptr;
}

namespace {

void check_range(std::size_t offset, std::size_t bytes, std::size_t size, const char* what) {
  if (offset > size || bytes > size - offset)
    throw Error(fmt::format("device memory {}: {} bytes at offset {} is past its {} bytes", what, bytes, offset,
                            size));
}

}  // namespace

void DeviceMemory::copy_from_host(std::size_t offset, std::span<const std::byte> host) {
  check_range(offset, host.size(), _bytes, "copy_from_host");
  if (host.empty()) return;
  DeviceGuard guard(_device);
  cuda_check(cudaMemcpy(_data + offset, host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy",
             fmt::format("{} bytes, host to device {} at offset {}", host.size(), _device, offset));
  // From pageable memory cudaMemcpy may return before the DMA is done: done now.
  cuda_check(cudaStreamSynchronize(cudaStreamLegacy), "cudaStreamSynchronize",
             fmt::format("the default stream of device {}", _device));
}

void DeviceMemory::copy_to_host(std::size_t offset, std::span<std::byte> host) const {
  check_range(offset, host.size(), _bytes, "copy_to_host");
  if (host.empty()) return;
  DeviceGuard guard(_device);
  cuda_check(cudaMemcpy(host.data(), _data + offset, host.size(), cudaMemcpyDeviceToHost), "cudaMemcpy",
             fmt::format("{} bytes, device {} at offset {} to host", host.size(), _device, offset));
}

void DeviceMemory::zero() {
  if (_bytes == 0) return;
  DeviceGuard guard(_device);
  cuda_check(cudaMemset(_data, 0, _bytes), "cudaMemset", fmt::format("{} bytes on device {}", _bytes, _device));
  cuda_check(cudaStreamSynchronize(cudaStreamLegacy), "cudaStreamSynchronize",
             fmt::format("the default stream of device {}", _device));  // cudaMemset may return before
}

// ---- DeviceStager ----------------------------------------------------------------------

struct DeviceStager::Impl {
  int device = -1;
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;

  ~Impl() {
    if (stream == nullptr && done == nullptr) return;
    DeviceGuard guard(device, std::nothrow);
    if (stream) {
      (void)cudaStreamSynchronize(stream);
      (void)cudaStreamDestroy(stream);
    }
    if (done) (void)cudaEventDestroy(done);
  }
  void copy(void* target, const void* source, std::size_t bytes, cudaMemcpyKind kind, bool to_device) {
    if (bytes == 0) return;
    DeviceGuard guard(device);
    cuda_check(cudaMemcpyAsync(target, source, bytes, kind, stream), "cudaMemcpyAsync",
               to_device ? fmt::format("{} bytes, host to device {}", bytes, device)
                         : fmt::format("{} bytes, device {} to host", bytes, device));
  }
  void wait() {
    DeviceGuard guard(device);
    cuda_check(cudaEventRecord(done, stream), "cudaEventRecord", fmt::format("the stager's stream on device {}", device));
    cuda_check(cudaEventSynchronize(done), "cudaEventSynchronize",
               fmt::format("copies on the stager's stream of device {}", device));
  }
};

DeviceStager::DeviceStager(int device) : _impl(std::make_unique<Impl>()) {
  require_device("a tensor on a CUDA device");
  remember_rank();
  if (device < 0 || device >= visible_device_count())
    throw Error(fmt::format("a tensor on cuda:{}, but {} CUDA device(s) are visible", device,
                            visible_device_count()));
  _impl->device = device;
  DeviceGuard guard(device);
  // A blocking stream: ordered after the work queued on the legacy default stream (where
  // cudaMemcpy, cudaMemset and PyTorch's default current stream run), so a swap-out reads
  // what that work wrote and a swap-in is not overwritten by it.
  cuda_check(cudaStreamCreateWithFlags(&_impl->stream, cudaStreamDefault), "cudaStreamCreateWithFlags",
             fmt::format("device {}", device));
  // Blocking sync: the waiting thread sleeps instead of spinning on a core the I/O needs.
  cuda_check(cudaEventCreateWithFlags(&_impl->done, cudaEventDisableTiming | cudaEventBlockingSync),
             "cudaEventCreateWithFlags", fmt::format("device {}", device));
}

DeviceStager::DeviceStager(DeviceStager&&) noexcept = default;
DeviceStager& DeviceStager::operator=(DeviceStager&&) noexcept = default;
DeviceStager::~DeviceStager() = default;

int DeviceStager::device() const noexcept { return _impl ? _impl->device : -1; }

DeviceStager::Impl& DeviceStager::impl() const {
  if (!_impl) throw Error("DeviceStager: used after it was moved from");
  return *_impl;
}

void DeviceStager::to_host_async(std::span<std::byte> out, const void* source) {
  impl().copy(out.data(), source, out.size(), cudaMemcpyDeviceToHost, false);
}

void DeviceStager::to_device_async(void* target, std::span<const std::byte> in) {
  impl().copy(target, in.data(), in.size(), cudaMemcpyHostToDevice, true);
}

void DeviceStager::wait() { impl().wait(); }

void check_device_pointer(const void* pointer, std::size_t bytes, int device, const std::string& what) {
  if (bytes == 0) return;
  DeviceGuard guard(device, std::nothrow);  // the query may need a current context
  if (!guard.ok()) throw Error(fmt::format("{}: cuda:{} cannot be made current", what, device));
  cudaPointerAttributes attributes{};
  const cudaError_t rc = cudaPointerGetAttributes(&attributes, pointer);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(fmt::format("{}: {} is not memory CUDA knows ({})", what, pointer, cuda_text(rc)));
  }
  const bool on_device = attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
  if (!on_device || attributes.device != device)
    throw Error(fmt::format("{}: {} is {} memory{}, not memory of cuda:{}", what, pointer,
                            attributes.type == cudaMemoryTypeHost ? "pinned host"
                            : on_device                            ? "device"
                                                                   : "host (unregistered)",
                            on_device ? fmt::format(" of cuda:{}", attributes.device) : std::string(), device));
}

void DeviceStager::to_host(std::span<std::byte> out, const void* source) {
  to_host_async(out, source);
  wait();
}

void DeviceStager::to_device(void* target, std::span<const std::byte> in) {
  to_device_async(target, in);
  wait();
}

}  // namespace swapcoord::device
