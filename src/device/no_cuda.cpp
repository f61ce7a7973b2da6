// The device layer of a build without CUDA: the same API; whatever needs a GPU says why
// it cannot have one.
#include <fmt/format.h>

#include "swapcoord/device/device.hpp"

namespace swapcoord::device {
namespace {

[[noreturn]] void unavailable(const char* what) {
  throw Error(fmt::format("{}: swapcoord was built without CUDA (configure with the CUDA toolkit and "
                          "-DSWAPCOORD_USE_CUDA=ON)", what));
}

}  // namespace

bool cuda_built() noexcept { return false; }
bool nccl_built() noexcept { return false; }
std::string build_description() { return "without CUDA"; }
int visible_device_count() noexcept { return 0; }
std::string no_device_reason() { return "swapcoord was built without CUDA"; }
std::string describe_device(int) { unavailable("describe_device"); }
void use_cuda_host_memory(int) { unavailable("CUDA host memory"); }

DeviceMemory::DeviceMemory() noexcept = default;
DeviceMemory::DeviceMemory(int, std::size_t) { unavailable("device memory"); }
DeviceMemory::DeviceMemory(DeviceMemory&&) noexcept = default;
DeviceMemory& DeviceMemory::operator=(DeviceMemory&&) noexcept = default;
DeviceMemory::~DeviceMemory() = default;
void DeviceMemory::copy_from_host(std::size_t, std::span<const std::byte>) { unavailable("device memory"); }
void DeviceMemory::copy_to_host(std::size_t, std::span<std::byte>) const { unavailable("device memory"); }
void DeviceMemory::zero() { unavailable("device memory"); }

struct DeviceStager::Impl {};
DeviceStager::DeviceStager(int) { unavailable("a tensor on a CUDA device"); }
DeviceStager::DeviceStager(DeviceStager&&) noexcept = default;
DeviceStager& DeviceStager::operator=(DeviceStager&&) noexcept = default;
DeviceStager::~DeviceStager() = default;
int DeviceStager::device() const noexcept { return -1; }
void DeviceStager::to_host(std::span<std::byte>, const void*) { unavailable("cuda copy"); }
void DeviceStager::to_device(void*, std::span<const std::byte>) { unavailable("cuda copy"); }
void DeviceStager::to_host_async(std::span<std::byte>, const void*) { unavailable("cuda copy"); }
void DeviceStager::to_device_async(void*, std::span<const std::byte>) { unavailable("cuda copy"); }
void DeviceStager::wait() {}
DeviceStager::Impl& DeviceStager::impl() const { unavailable("cuda copy"); }
void DeviceMemory::release() noexcept {}
void check_device_pointer(const void*, std::size_t bytes, int, const std::string& what) {
  if (bytes > 0) unavailable(what.c_str());
}

}  // namespace swapcoord::device
