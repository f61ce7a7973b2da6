#pragma once
// AioHandle: DeepSpeed's `aio_handle` (csrc/aio/py_lib) on swapcoord's engine. Whole-buffer
// reads and writes of named files at a byte offset, synchronous or queued (`submit_*`,
// then `wait()`), with DeepSpeed's knobs (block size, queue depth, single submit, overlap
// events, intra-op parallelism). The Python package exposes it as `swapcoord.AioHandle`
// with DeepSpeed's method names; C++ programs can use it directly.
//
// Each operation names its file (O_NOFOLLOW; writes create a missing file with mode 0600
// and never truncate) and uses O_DIRECT when the buffer address, the length and the
// offset meet the file's direct-I/O alignment, buffered I/O otherwise, so any tensor
// works and aligned ones (new_cpu_locked_tensor) take the direct path. The handle keeps
// the files it opened (up to 64) and, before each operation, checks with lstat() that the
// path still names the same file (device and inode): a file replaced or removed since is
// opened anew, never written through a stale descriptor. Each time it opens a file it
// drops the kept files that were deleted meanwhile (so their space is freed);
// close_files() drops them all. A kept descriptor keeps the access it was opened with
// (a later chmod does not take it away), as any open file does.
//
// Unlike DeepSpeed, nothing fails quietly: a transfer that comes up short (a read past
// the end of the file) or fails raises IoError naming the file, the offset and the errno
// (DeepSpeed returns -1, or asserts, and prints).
// `validate`: after the transfer the file's bytes are read again (buffered) and compared
// with the buffer; a difference raises Error naming the file and the first differing
// offset (DeepSpeed's validate prints and carries on).
//
// Not thread-safe: one handle per thread, as DeepSpeed's.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/io_engine.hpp"

namespace swapcoord {

class AioHandle {
 public:
  // Throws ConfigError for impossible knobs, Error when the backend cannot be had.
  explicit AioHandle(const AioConfig& config, std::string_view backend = default_engine_name());
  ~AioHandle();  // waits for queued operations (their errors are logged)
  AioHandle(const AioHandle&) = delete;
  AioHandle& operator=(const AioHandle&) = delete;

  const AioConfig& config() const noexcept { return _engine->config(); }
  std::string_view backend() const noexcept { return _engine->name(); }

  // Synchronous: returns when the bytes are in memory (read) or in the file (write).
  void read(std::span<std::byte> buffer, const std::string& path, std::uint64_t file_offset, bool validate = false);
  void write(std::span<const std::byte> buffer, const std::string& path, std::uint64_t file_offset,
             bool validate = false);
  // Queued: returns once submitted; the buffer must stay valid until wait().
  void submit_read(std::span<std::byte> buffer, const std::string& path, std::uint64_t file_offset,
                   bool validate = false);
  void submit_write(std::span<const std::byte> buffer, const std::string& path, std::uint64_t file_offset,
                    bool validate = false);
  // Waits for every queued operation; returns how many completed. When some failed, all
  // are still waited for, then the first failure is thrown (the others are logged).
  int wait();
  std::size_t pending() const noexcept { return _queued.size(); }
  // Closes the files the handle keeps open (those of queued operations stay open until
  // wait()).
  void close_files() noexcept;

  struct Op;

 private:
  std::unique_ptr<Op> prepare(IoOp op, std::byte* data, std::size_t bytes, const std::string& path,
                              std::uint64_t file_offset, bool validate);
  void finish(Op& op);

  SwapFileRef open_file(const std::string& path, bool writable, bool direct);

  struct Cached;
  std::unique_ptr<IoEngine> _engine;
  std::vector<std::unique_ptr<Op>> _queued;
  std::vector<Cached> _files;
};

}  // namespace swapcoord
