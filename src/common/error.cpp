#include "swapcoord/common/error.hpp"

#include <cstring>

#include <fmt/format.h>

namespace swapcoord {

std::string errno_message(const std::string& message, int errno_value) {
  char buffer[256];
  // GNU strerror_r returns the message pointer (which may or may not be `buffer`).
  const char* text = strerror_r(errno_value, buffer, sizeof buffer);
  return fmt::format("{}: {} (errno {})", message, text, errno_value);
}

SystemError::SystemError(const std::string& message, int errno_value)
    : Error(errno_message(message, errno_value)), _code(errno_value) {}

}  // namespace swapcoord
