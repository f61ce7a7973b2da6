// io_uring backend (liburing). liburing calls return -errno.
//
// Registered I/O: set_registration registers the owner's buffers and files with this
// thread's ring (io_uring_register_buffers / io_uring_register_files). A block inside a
// registered buffer then goes as READ_FIXED/WRITE_FIXED with that buffer's index (the
// kernel skips pinning the pages per request), a block on a registered file with
// IOSQE_FIXED_FILE and the file's index (no file reference per request); others as
// plain reads and writes.
#include <liburing.h>
#include <sys/resource.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"
#include "detail/backend.hpp"

namespace swapcoord::detail {
namespace {

// Owns an io_uring.
class Uring {
 public:
  explicit Uring(unsigned depth) {
    const int rc = io_uring_queue_init(depth, &_ring, 0);
    if (rc < 0) {
      const char* why = (rc == -ENOSYS || rc == -EPERM)
                            ? " (io_uring is disabled or refused by this kernel; see "
                              "/proc/sys/kernel/io_uring_disabled, seccomp)"
                            : "";
      throw SystemError(fmt::format("io_uring: io_uring_queue_init({}) failed{}", depth, why), -rc);
    }
  }
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;
  ~Uring() { io_uring_queue_exit(&_ring); }
  io_uring* get() { return &_ring; }

 private:
  io_uring _ring{};
};

// Why the kernel may refuse to register buffers, for the message.
std::string register_buffers_hint(int error) {
  if (error == ENOMEM) {
    rlimit limit{};
    ::getrlimit(RLIMIT_MEMLOCK, &limit);
    const std::string bytes = limit.rlim_cur == RLIM_INFINITY ? std::string("unlimited")
                                                               : fmt::format("{} bytes", limit.rlim_cur);
    return fmt::format(" (registered buffers count as locked memory, for each I/O thread's "
                       "ring: RLIMIT_MEMLOCK is {}; raise it (ulimit -l) or grant "
                       "CAP_IPC_LOCK)", bytes);
  }
  if (error == EFAULT || error == EOPNOTSUPP)
    return " (a region is not ordinary memory the kernel can pin: unmapped, PROT_NONE, or "
           "file- or device-backed)";
  if (error == EINVAL) return " (more buffers, or a larger one, than this kernel takes)";
  return "";
}

class UringBackend final : public Backend {
 public:
  explicit UringBackend(const AioConfig& config)
      : _ring(static_cast<unsigned>(config.queue_depth)), _cqes(config.queue_depth) {}

  ~UringBackend() override = default;  // io_uring_queue_exit unregisters everything

  bool set_registration(const Registration& registration) override {
    try {
      set_buffers(registration.buffers);
      set_files(registration.fds);
    } catch (...) {
      clear_noexcept();
      throw;
    }
    return true;
  }

  std::size_t submit(std::span<Block* const> blocks) override {
    std::size_t queued = 0;
    for (Block* block : blocks) {
      io_uring_sqe* sqe = io_uring_get_sqe(_ring.get());
      if (sqe == nullptr) break;
      const auto length = static_cast<unsigned>(block->remaining);
      const int buffer = buffer_index(block->buffer, length);
      const int file = file_index(block->fd);
      const int fd = file >= 0 ? file : block->fd;
      if (block->op == IoOp::read) {
        if (buffer >= 0)
          io_uring_prep_read_fixed(sqe, fd, block->buffer, length, block->offset, buffer);
        else
          io_uring_prep_read(sqe, fd, block->buffer, length, block->offset);
      } else {
        if (buffer >= 0)
          io_uring_prep_write_fixed(sqe, fd, block->buffer, length, block->offset, buffer);
        else
          io_uring_prep_write(sqe, fd, block->buffer, length, block->offset);
      }
      if (file >= 0) io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
      io_uring_sqe_set_data(sqe, block);
      ++queued;
    }
    // Queued SQEs stay in the ring if the kernel does not take them now (EAGAIN/EBUSY);
    // reap() submits them again through io_uring_submit_and_wait.
    const int rc = io_uring_submit(_ring.get());
    if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR)
      throw SystemError("io_uring: io_uring_submit failed", -rc);
    return queued;
  }

  std::size_t reap(std::size_t min_completions, std::span<Completion> out) override {
    // EAGAIN (no memory for requests) and EBUSY (completion queue overflow) mean: reap
    // what is there first. With nothing there yet, back off rather than spin.
    auto backoff = std::chrono::microseconds(50);
    while (min_completions > 0) {
      const int rc = io_uring_submit_and_wait(_ring.get(), static_cast<unsigned>(min_completions));
      if (rc >= 0) break;
      if (rc == -EINTR) continue;
      if (rc != -EAGAIN && rc != -EBUSY)
        throw SystemError("io_uring: io_uring_submit_and_wait failed", -rc);
      if (io_uring_cq_ready(_ring.get()) > 0) break;
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::microseconds(5000));
    }
    const unsigned room = static_cast<unsigned>(std::min(out.size(), _cqes.size()));
    const unsigned got = io_uring_peek_batch_cqe(_ring.get(), _cqes.data(), room);
    for (unsigned i = 0; i < got; ++i)
      out[i] = {static_cast<Block*>(io_uring_cqe_get_data(_cqes[i])), _cqes[i]->res};
    io_uring_cq_advance(_ring.get(), got);
    return got;
  }

 private:
  static std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

  // The registered buffer that holds [data, data + length) whole, or -1.
  int buffer_index(const std::byte* data, std::size_t length) const {
    if (_buffers.empty()) return -1;
    const auto at = address(data);
    // The last buffer that starts at or before `data` (they are sorted and disjoint).
    auto it = std::upper_bound(_buffers.begin(), _buffers.end(), at,
                               [](std::uintptr_t a, const std::span<std::byte>& b) { return a < address(b.data()); });
    if (it == _buffers.begin()) return -1;
    --it;
    if (at + length > address(it->data()) + it->size()) return -1;
    return static_cast<int>(it - _buffers.begin());
  }

  // The registered index of descriptor `fd`, or -1.
  int file_index(int fd) const {
    auto it = std::lower_bound(_files.begin(), _files.end(), std::pair<int, int>(fd, -1));
    return it != _files.end() && it->first == fd ? it->second : -1;
  }

  void set_buffers(const std::vector<std::span<std::byte>>& buffers) {
    const bool same = std::equal(buffers.begin(), buffers.end(), _buffers.begin(), _buffers.end(),
                                 [](const auto& a, const auto& b) { return a.data() == b.data() && a.size() == b.size(); });
    if (same) return;
    if (!_buffers.empty()) {
      _buffers.clear();
      const int rc = io_uring_unregister_buffers(_ring.get());
      if (rc < 0) throw SystemError("io_uring: io_uring_unregister_buffers failed", -rc);
    }
    if (buffers.empty()) return;
    std::vector<iovec> iovecs;
    std::uint64_t bytes = 0, largest = 0;
    for (const auto& b : buffers) {
      iovecs.push_back({b.data(), b.size()});
      bytes += b.size();
      largest = std::max<std::uint64_t>(largest, b.size());
    }
    const int rc = io_uring_register_buffers(_ring.get(), iovecs.data(), static_cast<unsigned>(iovecs.size()));
    if (rc < 0)
      throw SystemError(fmt::format("io_uring: io_uring_register_buffers of {} buffers ({} bytes, the "
                                    "largest {} bytes) failed{}", iovecs.size(), bytes, largest,
                                    register_buffers_hint(-rc)), -rc);
    _buffers = buffers;
  }

  void set_files(const std::vector<int>& fds) {
    std::vector<std::pair<int, int>> files;
    for (std::size_t i = 0; i < fds.size(); ++i) files.emplace_back(fds[i], static_cast<int>(i));
    std::sort(files.begin(), files.end());
    if (files == _files) return;
    if (!_files.empty()) {
      _files.clear();
      const int rc = io_uring_unregister_files(_ring.get());
      if (rc < 0) throw SystemError("io_uring: io_uring_unregister_files failed", -rc);
    }
    if (fds.empty()) return;
    const int rc = io_uring_register_files(_ring.get(), fds.data(), static_cast<unsigned>(fds.size()));
    if (rc < 0)
      throw SystemError(fmt::format("io_uring: io_uring_register_files of {} files failed{}", fds.size(),
                                    rc == -EMFILE ? " (over RLIMIT_NOFILE)" : ""), -rc);
    _files = std::move(files);
  }

  // Back to nothing registered after a refusal (what the kernel still holds is dropped
  // with the ring at the latest).
  void clear_noexcept() noexcept {
    if (!_buffers.empty()) (void)io_uring_unregister_buffers(_ring.get());
    if (!_files.empty()) (void)io_uring_unregister_files(_ring.get());
    _buffers.clear();
    _files.clear();
  }

  Uring _ring;
  std::vector<io_uring_cqe*> _cqes;
  std::vector<std::span<std::byte>> _buffers;  // registered, sorted by address
  std::vector<std::pair<int, int>> _files;     // registered (fd, index), sorted by fd
};

}  // namespace

std::unique_ptr<Backend> make_io_uring_backend(const AioConfig& config) {
  return std::make_unique<UringBackend>(config);
}

}  // namespace swapcoord::detail
