#pragma once
// Watchdog: ends the process when a blocking collective operation (a collective HDF5
// write, MPI_Allgatherv, the start-up exchanges) outlives its deadline, which happens when
// a peer rank stopped responding. PhaseSync has deadlines of its own; this covers the
// collective calls that cannot take one. The launcher (mpirun, srun) then ends the job.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace swapcoord {

class Watchdog {
 public:
  // `who` prefixes the message ("rank 3@node7"); `exit_code` is the process's exit status.
  explicit Watchdog(std::string who, int exit_code = 2);
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog();

  // Unless disarm() comes within `timeout`, prints "<who>: <what> did not end within T s
  // (a rank stopped responding); ending the job" to stderr and calls _exit().
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
  int _exit_code;
  std::mutex _mutex;
  std::condition_variable _cv;
  bool _armed = false, _stop = false;
  std::string _what;
  std::chrono::milliseconds _timeout{0};
  std::chrono::steady_clock::time_point _deadline;
  std::thread _thread;
};

}  // namespace swapcoord
