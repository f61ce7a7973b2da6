// posix backend: pread/pwrite on the I/O thread. The reference in tests and the path for
// filesystems where kernel AIO does not help. Each block is one system call; the
// engine's intra_op_parallelism threads give it concurrency.
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "detail/backend.hpp"

namespace swapcoord::detail {
namespace {

class PosixBackend final : public Backend {
 public:
  explicit PosixBackend(const AioConfig& config) { _done.reserve(config.queue_depth); }

  std::size_t submit(std::span<Block* const> blocks) override {
    for (Block* block : blocks) {
      const ssize_t n = block->op == IoOp::read
                            ? ::pread(block->fd, block->buffer, block->remaining,
                                      static_cast<off_t>(block->offset))
                            : ::pwrite(block->fd, block->buffer, block->remaining,
                                       static_cast<off_t>(block->offset));
      _done.push_back({block, n < 0 ? -static_cast<std::int64_t>(errno) : n});
    }
    return blocks.size();
  }

  std::size_t reap(std::size_t, std::span<Completion> out) override {
    const std::size_t count = std::min(out.size(), _done.size());
    std::copy(_done.begin(), _done.begin() + static_cast<std::ptrdiff_t>(count), out.begin());
    _done.erase(_done.begin(), _done.begin() + static_cast<std::ptrdiff_t>(count));
    return count;
  }

 private:
  std::vector<Completion> _done;
};

}  // namespace

std::unique_ptr<Backend> make_posix_backend(const AioConfig& config) {
  return std::make_unique<PosixBackend>(config);
}

}  // namespace swapcoord::detail
