#include "swapcoord/io/unique_fd.hpp"

#include <unistd.h>

namespace swapcoord {

void UniqueFd::reset(int fd) noexcept {
  if (_fd >= 0 && _fd != fd) ::close(_fd);  // close errors cannot be reported from here
  _fd = fd;
}

}  // namespace swapcoord
