#pragma once
// Page-locked host memory for swap staging. When the device layer has installed its
// allocator (device::use_cuda_host_memory: a GPU is present) it is cudaHostAlloc'ed, so
// GPU copies are DMA; otherwise it is an anonymous mapping,
// 2 MiB-aligned and advised to use transparent huge pages when at least 2 MiB, locked
// with mlock. When locking fails (RLIMIT_MEMLOCK) the memory is used unlocked, with one
// warning per process.
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace swapcoord {

struct HostAllocator;  // below

class PinnedAllocation {
 public:
  enum class Kind { none, host_mmap, cuda_host };

  PinnedAllocation() noexcept = default;
  // Throws SystemError when the memory cannot be had; `size_bytes` 0 gives an empty one.
  explicit PinnedAllocation(std::size_t size_bytes);
  PinnedAllocation(PinnedAllocation&& other) noexcept;
  PinnedAllocation& operator=(PinnedAllocation&& other) noexcept;
  PinnedAllocation(const PinnedAllocation&) = delete;
  PinnedAllocation& operator=(const PinnedAllocation&) = delete;
  ~PinnedAllocation();

  std::byte* data() const noexcept { return _data; }
  std::size_t size_bytes() const noexcept { return _size_bytes; }
  std::span<std::byte> bytes() const noexcept { return {_data, _size_bytes}; }
  bool empty() const noexcept { return _size_bytes == 0; }
  Kind kind() const noexcept { return _kind; }
  bool locked() const noexcept { return _locked; }      // mlock'ed or CUDA-pinned
  bool huge_pages() const noexcept { return _huge; }    // MADV_HUGEPAGE accepted

 private:
  void release() noexcept;

  std::byte* _data = nullptr;
  std::size_t _size_bytes = 0;
  std::size_t _mapped_bytes = 0;
  Kind _kind = Kind::none;
  const HostAllocator* _allocator = nullptr;  // Kind::cuda_host
  bool _locked = false;
  bool _huge = false;
};

std::string_view to_string(PinnedAllocation::Kind kind) noexcept;

// Where Kind::cuda_host memory comes from. The buffer layer does not link CUDA: the device
// layer installs cudaHostAlloc / cudaFreeHost here. allocate returns nullptr and sets
// `error` when it cannot; release may not throw.
struct HostAllocator {
  const char* name;
  void* (*allocate)(std::size_t bytes, std::string& error);
  void (*release)(void* data) noexcept;
};
// Allocations made after the call use `allocator` (nullptr: the host path again); each
// allocation is freed by the allocator that made it.
void set_pinned_host_allocator(const HostAllocator* allocator) noexcept;

}  // namespace swapcoord
