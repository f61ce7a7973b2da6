#include "swapcoord/coord/watchdog.hpp"

#include <unistd.h>

#include <cstdio>

namespace swapcoord {

Watchdog::Watchdog(std::string who, int exit_code)
    : _who(std::move(who)), _exit_code(exit_code), _thread([this] { run(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(_mutex);
    _stop = true;
  }
  _cv.notify_all();
  _thread.join();
}

void Watchdog::arm(std::string what, std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(_mutex);
    _what = std::move(what);
    _timeout = timeout;
    _deadline = std::chrono::steady_clock::now() + timeout;
    _armed = true;
  }
  _cv.notify_all();
}

void Watchdog::disarm() {
  std::lock_guard lock(_mutex);
  _armed = false;
}

void Watchdog::run() {
  std::unique_lock lock(_mutex);
  while (!_stop) {
    if (!_armed) {
      _cv.wait(lock);
      continue;
    }
    if (_cv.wait_until(lock, _deadline) == std::cv_status::timeout && _armed && !_stop &&
        std::chrono::steady_clock::now() >= _deadline) {
      std::fprintf(stderr, "%s: %s did not end within %.3g s (a rank stopped responding); ending the job\n",
                   _who.c_str(), _what.c_str(), std::chrono::duration<double>(_timeout).count());
      std::fflush(stderr);
      ::_exit(_exit_code);
    }
  }
}

}  // namespace swapcoord
