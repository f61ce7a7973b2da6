#pragma once
// Watchdog: reports a blocking collective operation (a collective HDF5 write,
// MPI_Allgatherv, the start-up exchanges) that outlives its deadline, which happens when a
// peer rank stopped responding. PhaseSync has deadlines of its own; this covers the
// collective calls that cannot take one. The library never ends the process: the
// application's handler decides (`swapcoord run` prints and calls _exit, and the launcher
// then ends the job).
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace swapcoord {

class Watchdog {
 public:
  // `who` prefixes the message ("rank 3@node7"). `on_stall` is called (on the watchdog's
  // thread, once per arm) with "<who>: <what> did not end within T s (a rank stopped
  // responding)"; empty: the message is logged as an error and the call keeps waiting.
  using Handler = std::function<void(const std::string& message)>;
  Watchdog(std::string who, Handler on_stall);
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog();

  // Unless disarm() comes within `timeout`, calls the handler.
  void arm(std::string what, std::chrono::milliseconds timeout);
  void disarm();

  // Arms for the life of the scope.
  class Scope {
   public:
    Scope(Watchdog& dog, std::string what, std::chrono::milliseconds timeout) : _dog(dog) {
      _dog.arm(std::move(what), timeout);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope() { _dog.disarm(); }

   private:
    Watchdog& _dog;
  };

 private:
  void run();

  std::string _who;
  Handler _on_stall;
  std::mutex _mutex;
  std::condition_variable _cv;
  bool _armed = false, _stop = false;
  std::string _what;
  std::chrono::milliseconds _timeout{0};
  std::chrono::steady_clock::time_point _deadline;
  std::thread _thread;
};

}  // namespace swapcoord
