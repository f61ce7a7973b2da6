#pragma once
// Thin RAII over the MPI C API: errors become MpiError (with MPI's error string), and
// communicators swapcoord creates are owned by Comm and set to MPI_ERRORS_RETURN.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>
#include <utility>

#include "swapcoord/common/error.hpp"

namespace swapcoord {

class MpiError : public Error {
 public:
  MpiError(std::string_view what, int code);
  int code() const noexcept { return _code; }

 private:
  int _code;
};

// Throws MpiError("<what>: <MPI error string>") unless rc == MPI_SUCCESS.
void mpi_check(int rc, std::string_view what);

// Owns a communicator. Never frees MPI_COMM_WORLD / MPI_COMM_SELF / MPI_COMM_NULL; a
// moved-from Comm holds MPI_COMM_NULL.
class Comm {
 public:
  Comm() noexcept = default;
  // Takes ownership of `comm` (from MPI_Comm_dup, MPI_Comm_split, ...).
  explicit Comm(MPI_Comm comm) noexcept : _comm(comm) {}
  Comm(Comm&& other) noexcept : _comm(std::exchange(other._comm, MPI_COMM_NULL)) {}
  Comm& operator=(Comm&& other) noexcept {
    if (this != &other) {
      free();
      _comm = std::exchange(other._comm, MPI_COMM_NULL);
    }
    return *this;
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ~Comm() { free(); }

  // A duplicate of `comm` with MPI_ERRORS_RETURN.
  static Comm dup(MPI_Comm comm);
  MPI_Comm get() const noexcept { return _comm; }
  int rank() const;
  int size() const;

 private:
  void free() noexcept;
  MPI_Comm _comm = MPI_COMM_NULL;
};

// MPI_Init_thread(MPI_THREAD_FUNNELED) unless MPI is already initialised; finalises on
// destruction if it initialised. Sets MPI_ERRORS_RETURN on MPI_COMM_WORLD.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  ~MpiSession();

 private:
  bool _owner = false;
};

// How long a thread that polls MPI for a peer sleeps before it polls again, having waited
// `waited` so far: an eighth of that, from 20 us up to 2 ms. Waiting ranks poll and sleep
// instead of blocking in MPI (Open MPI busy-polls there), so that they leave the core to a
// rank still working. Sleeping a fixed share of the wait so far notices the peer at most
// about 1/8 of the wait late; pauses that double each time can be late by as long as the
// wait itself (up to their 2 ms cap), which on a fast disk is a few ms per commit across
// its barriers (README "Coordination").
inline std::chrono::microseconds poll_pause(std::chrono::steady_clock::duration waited) {
  const auto share = std::chrono::duration_cast<std::chrono::microseconds>(waited) / 8;
  return std::clamp(share, std::chrono::microseconds(20), std::chrono::microseconds(2000));
}

// "Open MPI v4.1.4, ..." (MPI_Get_library_version, first line).
std::string mpi_library_version();

}  // namespace swapcoord
