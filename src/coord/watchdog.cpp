#include "swapcoord/coord/watchdog.hpp"

#include <fmt/format.h>

#include "swapcoord/common/log.hpp"

namespace swapcoord {

Watchdog::Watchdog(std::string who, Handler on_stall)
    : _who(std::move(who)), _on_stall(std::move(on_stall)), _thread([this] { run(); }) {}

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
      _armed = false;  // once per arm
      const std::string message =
          fmt::format("{}: {} did not end within {:.3g} s (a rank stopped responding)", _who, _what,
                      std::chrono::duration<double>(_timeout).count());
      lock.unlock();
      if (_on_stall)
        _on_stall(message);
      else
        log::error(message);
      lock.lock();
    }
  }
}

}  // namespace swapcoord
