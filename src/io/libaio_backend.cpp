// libaio backend (fio's engines/libaio.c is the model): a partial io_submit is normal,
// EAGAIN means reap first, and libaio returns -errno rather than setting errno.
#include <libaio.h>

#include <cerrno>
#include <vector>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"
#include "detail/backend.hpp"

namespace swapcoord::detail {
namespace {

// Owns an io_context_t.
class AioContext {
 public:
  explicit AioContext(unsigned depth) {
    const int rc = io_setup(static_cast<int>(depth), &_ctx);
    if (rc < 0)
      throw SystemError(fmt::format("libaio: io_setup({}) failed{}", depth,
                                    rc == -EAGAIN ? " (the system-wide limit fs.aio-max-nr is reached)" : ""),
                        -rc);
  }
  AioContext(const AioContext&) = delete;
  AioContext& operator=(const AioContext&) = delete;
  ~AioContext() { io_destroy(_ctx); }
  io_context_t get() const { return _ctx; }

 private:
  io_context_t _ctx{};
};

class LibaioBackend final : public Backend {
 public:
  explicit LibaioBackend(const AioConfig& config)
      : _context(static_cast<unsigned>(config.queue_depth)),
        _iocbs(config.queue_depth),
        _events(config.queue_depth) {
    _free.reserve(config.queue_depth);
    for (auto& iocb : _iocbs) _free.push_back(&iocb);
    _batch.reserve(config.queue_depth);
    _rejected.reserve(config.queue_depth);
  }

  std::size_t submit(std::span<Block* const> blocks) override {
    _batch.clear();
    for (Block* block : blocks) {
      if (_free.empty()) break;
      iocb* cb = _free.back();
      _free.pop_back();
      if (block->op == IoOp::read)
        io_prep_pread(cb, block->fd, block->buffer, block->remaining, static_cast<long long>(block->offset));
      else
        io_prep_pwrite(cb, block->fd, block->buffer, block->remaining, static_cast<long long>(block->offset));
      cb->data = block;
      _batch.push_back(cb);
    }
    int rc;
    do {
      rc = io_submit(_context.get(), static_cast<long>(_batch.size()), _batch.data());
    } while (rc == -EINTR);
    std::size_t started = rc > 0 ? static_cast<std::size_t>(rc) : 0;
    if (rc < 0 && rc != -EAGAIN) {
      // The first iocb was refused (EINVAL, EBADF, ...): report it as its completion.
      _rejected.push_back({static_cast<Block*>(_batch[0]->data), rc});
      _free.push_back(_batch[0]);
      started = 1;
    }
    for (std::size_t i = started; i < _batch.size(); ++i) _free.push_back(_batch[i]);
    return started;
  }

  std::size_t reap(std::size_t min_completions, std::span<Completion> out) override {
    std::size_t count = 0;
    while (!_rejected.empty() && count < out.size()) {
      out[count++] = _rejected.back();
      _rejected.pop_back();
    }
    const std::size_t need = min_completions > count ? min_completions - count : 0;
    const std::size_t room = std::min(out.size() - count, _events.size());
    if (room == 0) return count;
    int got;
    do {
      got = io_getevents(_context.get(), static_cast<long>(need), static_cast<long>(room),
                         _events.data(), nullptr);
    } while (got == -EINTR);
    if (got < 0) throw SystemError("libaio: io_getevents failed", -got);
    for (int i = 0; i < got; ++i) {
      const io_event& event = _events[static_cast<std::size_t>(i)];
      _free.push_back(event.obj);
      // res holds bytes or -errno (as an unsigned long); res2 is unused by the kernel.
      out[count++] = {static_cast<Block*>(event.data), static_cast<std::int64_t>(event.res)};
    }
    return count;
  }

 private:
  AioContext _context;
  std::vector<iocb> _iocbs;
  std::vector<iocb*> _free;
  std::vector<iocb*> _batch;
  std::vector<io_event> _events;
  std::vector<Completion> _rejected;
};

}  // namespace

std::unique_ptr<Backend> make_libaio_backend(const AioConfig& config) {
  return std::make_unique<LibaioBackend>(config);
}

}  // namespace swapcoord::detail
