#include "swapcoord/io/aio_config.hpp"

#include <string>

#include <fmt/format.h>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"

namespace swapcoord {

std::string_view to_string(DirectMode mode) noexcept {
  switch (mode) {
    case DirectMode::automatic: return "auto";
    case DirectMode::on: return "on";
    case DirectMode::off: return "off";
  }
  return "?";
}

DirectMode parse_direct_mode(std::string_view text) {
  if (text == "auto") return DirectMode::automatic;
  if (text == "on" || text == "true") return DirectMode::on;
  if (text == "off" || text == "false") return DirectMode::off;
  throw ConfigError(fmt::format("aio.direct: '{}' is not one of auto, on, off", text));
}

void AioConfig::validate() const {
  constexpr std::size_t kMaxBlock = std::size_t{1} << 30;
  if (block_size == 0 || block_size > kMaxBlock || !is_aligned(block_size, kDefaultAlignmentBytes))
    throw ConfigError(fmt::format(
        "aio.block_size: {} is not a multiple of {} between {} and {} bytes", block_size,
        kDefaultAlignmentBytes, kDefaultAlignmentBytes, kMaxBlock));
  if (queue_depth == 0 || queue_depth > 65536)
    throw ConfigError(fmt::format("aio.queue_depth: {} is not between 1 and 65536", queue_depth));
  if (intra_op_parallelism == 0 || intra_op_parallelism > 256)
    throw ConfigError(fmt::format("aio.intra_op_parallelism: {} is not between 1 and 256",
                                  intra_op_parallelism));
}

}  // namespace swapcoord
