#include "swapcoord/buffer/pinned_allocation.hpp"

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/log.hpp"

namespace swapcoord {
namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;

std::atomic<const HostAllocator*> device_allocator{nullptr};

}  // namespace

std::string_view to_string(PinnedAllocation::Kind kind) noexcept {
  switch (kind) {
    case PinnedAllocation::Kind::none: return "none";
    case PinnedAllocation::Kind::host_mmap: return "host_mmap";
    case PinnedAllocation::Kind::cuda_host: return "cuda_host";
  }
  return "?";
}

void set_pinned_host_allocator(const HostAllocator* allocator) noexcept { device_allocator.store(allocator); }

PinnedAllocation::PinnedAllocation(std::size_t size_bytes) {
  if (size_bytes == 0) return;
  if (const HostAllocator* allocator = device_allocator.load()) {
    std::string error;
    void* pointer = allocator->allocate(size_bytes, error);
    if (pointer == nullptr)
      throw Error(fmt::format("cannot allocate {} bytes of pinned memory for swap buffers: {}", size_bytes, error));
    _data = static_cast<std::byte*>(pointer);
    _size_bytes = size_bytes;
    _kind = Kind::cuda_host;
    _allocator = allocator;
    _locked = true;
    return;
  }
  // Map 2 MiB more than needed when large enough for huge pages, then trim so that the
  // region starts on a 2 MiB boundary (transparent huge pages need that alignment).
  const bool want_huge = size_bytes >= kHugePage;
  const std::size_t length = want_huge ? align_up(size_bytes, kHugePage) : align_up(size_bytes, 4096);
  const std::size_t mapped = want_huge ? length + kHugePage : length;
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    throw SystemError(fmt::format("cannot map {} bytes of host memory for swap buffers", size_bytes), errno);
  auto* base = static_cast<std::byte*>(raw);
  auto* start = base;
  if (want_huge) {
    start = reinterpret_cast<std::byte*>(align_up(reinterpret_cast<std::uintptr_t>(base), kHugePage));
    if (start > base) ::munmap(base, static_cast<std::size_t>(start - base));
    const std::size_t tail = static_cast<std::size_t>((base + mapped) - (start + length));
    if (tail > 0) ::munmap(start + length, tail);
    _huge = ::madvise(start, length, MADV_HUGEPAGE) == 0;
  }
  _data = start;
  _size_bytes = size_bytes;
  _mapped_bytes = length;
  _kind = Kind::host_mmap;
  // mlock also faults every page in, so the first swap does not pay for page faults.
  if (::mlock(start, length) == 0) {
    _locked = true;
  } else {
    const int err = errno;
    log::warn_once("mlock", errno_message(fmt::format("cannot lock {} bytes of swap buffer memory "
                                                      "(raise RLIMIT_MEMLOCK, ulimit -l); using "
                                                      "unlocked memory", length), err));
    std::memset(start, 0, length);  // fault the pages in now instead of during I/O
  }
}

PinnedAllocation::PinnedAllocation(PinnedAllocation&& other) noexcept
    : _data(std::exchange(other._data, nullptr)),
      _size_bytes(std::exchange(other._size_bytes, 0)),
      _mapped_bytes(std::exchange(other._mapped_bytes, 0)),
      _kind(std::exchange(other._kind, Kind::none)),
      _allocator(std::exchange(other._allocator, nullptr)),
      _locked(std::exchange(other._locked, false)),
      _huge(std::exchange(other._huge, false)) {}

PinnedAllocation& PinnedAllocation::operator=(PinnedAllocation&& other) noexcept {
  if (this != &other) {
    release();
    _data = std::exchange(other._data, nullptr);
    _size_bytes = std::exchange(other._size_bytes, 0);
    _mapped_bytes = std::exchange(other._mapped_bytes, 0);
    _kind = std::exchange(other._kind, Kind::none);
    _allocator = std::exchange(other._allocator, nullptr);
    _locked = std::exchange(other._locked, false);
    _huge = std::exchange(other._huge, false);
  }
  return *this;
}

PinnedAllocation::~PinnedAllocation() { release(); }

void PinnedAllocation::release() noexcept {
  if (_data == nullptr) return;
  if (_kind == Kind::cuda_host) _allocator->release(_data);  // errors cannot be reported from here
  if (_kind == Kind::host_mmap) ::munmap(_data, _mapped_bytes);  // munlocks too
  _data = nullptr;
  _size_bytes = _mapped_bytes = 0;
  _kind = Kind::none;
  _allocator = nullptr;
  _locked = _huge = false;
}

}  // namespace swapcoord
