#pragma once
// The knobs of DeepSpeed's `aio` config section, plus `direct` and `fsync`.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace swapcoord {

// O_DIRECT use. `automatic`: O_DIRECT, and where the filesystem refuses it (tmpfs),
// buffered I/O with one warning naming the path.
enum class DirectMode { automatic, on, off };

std::string_view to_string(DirectMode mode) noexcept;
DirectMode parse_direct_mode(std::string_view text);  // "auto|on|off"; ConfigError otherwise

struct AioConfig {
  std::size_t block_size = std::size_t{1} << 20;  // bytes per I/O request sent to the kernel
  std::size_t queue_depth = 32;                   // requests in flight per thread
  std::size_t intra_op_parallelism = 1;           // I/O threads (DeepSpeed: thread_count)
  bool single_submit = false;                     // one request per io_submit call
  bool overlap_events = true;                     // refill the queue as each request completes
  DirectMode direct = DirectMode::automatic;
  bool fsync = false;                             // a batch with writes ends with fdatasync

  // Throws ConfigError naming the key of the first impossible value.
  void validate() const;
};

}  // namespace swapcoord
