#pragma once
// One exception hierarchy for the whole library (DESIGN.md, "Errors"). Every message
// names the operation and what it acted on (path, offset, bytes, rank, key).
#include <stdexcept>
#include <string>

namespace swapcoord {

// Base of every exception swapcoord throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A system call failed; `what()` ends with the errno text, `code()` keeps the errno.
class SystemError : public Error {
 public:
  SystemError(const std::string& message, int errno_value);
  int code() const noexcept { return _code; }

 protected:
  // For subclasses whose message already describes the error(s) in full.
  struct Formatted {};
  SystemError(Formatted, const std::string& full_message, int errno_value)
      : Error(full_message), _code(errno_value) {}

 private:
  int _code;
};

// A configuration key or value that cannot be used; the message names the key.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message) : Error(message) {}
};

// "message: <strerror(errno_value)> (errno N)".
std::string errno_message(const std::string& message, int errno_value);

}  // namespace swapcoord
