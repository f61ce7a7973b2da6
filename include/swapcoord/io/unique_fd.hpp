#pragma once
#include <utility>

namespace swapcoord {

// Owns a file descriptor; move-only; closes on destruction (errors ignored, as a
// destructor must not throw).
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : _fd(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : _fd(std::exchange(other._fd, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other._fd, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return _fd; }
  bool valid() const noexcept { return _fd >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  int release() noexcept { return std::exchange(_fd, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int _fd = -1;
};

}  // namespace swapcoord
