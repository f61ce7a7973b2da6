// io_uring backend (liburing). liburing calls return -errno.
#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
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

class UringBackend final : public Backend {
 public:
  explicit UringBackend(const AioConfig& config)
      : _ring(static_cast<unsigned>(config.queue_depth)), _cqes(config.queue_depth) {}

  std::size_t submit(std::span<Block* const> blocks) override {
    std::size_t queued = 0;
    for (Block* block : blocks) {
      io_uring_sqe* sqe = io_uring_get_sqe(_ring.get());
      if (sqe == nullptr) break;
      const auto length = static_cast<unsigned>(block->remaining);
      if (block->op == IoOp::read)
        io_uring_prep_read(sqe, block->fd, block->buffer, length, block->offset);
      else
        io_uring_prep_write(sqe, block->fd, block->buffer, length, block->offset);
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
  Uring _ring;
  std::vector<io_uring_cqe*> _cqes;
};

}  // namespace

std::unique_ptr<Backend> make_io_uring_backend(const AioConfig& config) {
  return std::make_unique<UringBackend>(config);
}

}  // namespace swapcoord::detail
