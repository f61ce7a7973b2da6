#pragma once
// PhaseSync: numbered epochs made of phases (swap-out, swap-in, ...). Each rank ends a
// phase by reporting its result (bytes, seconds, wrong values, or a failure message);
// rank 0 collects every report, reduces the statistics and sends every rank the outcome,
// which makes the end of a phase a barrier. Every wait has a deadline: a rank that never
// arrives ends the job with a message naming the phase, the epoch and the ranks that did
// arrive, instead of a hang. A failure on one rank is known to all ranks in the same phase.
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/mpi.hpp"

namespace swapcoord {

struct PhaseReport {
  std::uint64_t bytes = 0;
  double seconds = 0;
  std::uint64_t wrong = 0;
  bool failed = false;
  std::string message;  // the failure, or notes on wrong values; at most ~1 KiB is sent
};

// The phase as seen by all ranks (every rank gets the same figures).
struct PhaseStats {
  std::string phase;
  int epoch = 0;
  std::uint64_t bytes = 0;          // summed over ranks
  double seconds_min = 0, seconds_mean = 0, seconds_max = 0;
  double gbps_min = 0, gbps_mean = 0, gbps_max = 0;  // per rank: its bytes / its seconds
  double aggregate_gbps = 0;        // bytes / seconds_max
  double imbalance = 1;             // seconds_max / seconds_mean
  std::uint64_t wrong = 0;          // summed over ranks
  std::string notes;                // the first rank's non-empty message (wrong values)
  int notes_rank = -1;
};

// Some rank failed in the phase; what() is that rank's message (which should name it, as
// `swapcoord run`'s "rank N@host: ..." does), or says which rank failed if it gave none.
class PhaseError : public Error {
 public:
  PhaseError(const std::string& message, int failed_rank) : Error(message), _rank(failed_rank) {}
  int failed_rank() const noexcept { return _rank; }

 private:
  int _rank;
};

// The deadline passed. Peers may wait forever: the caller should MPI_Abort.
class PhaseTimeout : public Error {
 public:
  explicit PhaseTimeout(const std::string& message) : Error(message) {}
};

class PhaseSync {
 public:
  // Collective. Uses a duplicate of `comm`. Rank 0 waits `timeout` for the reports; the
  // other ranks wait 1.5 x timeout + 5 s for rank 0's answer (so that rank 0, which
  // knows who arrived, is normally the one that reports a missing rank).
  PhaseSync(MPI_Comm comm, std::chrono::milliseconds timeout);
  PhaseSync(const PhaseSync&) = delete;
  PhaseSync& operator=(const PhaseSync&) = delete;
  ~PhaseSync();  // frees requests still pending (after a timeout); never throws

  // Blocking: begin() + finish().
  PhaseStats end_phase(std::string_view phase, int epoch, const PhaseReport& report);

  // Non-blocking: begin() sends this rank's report and returns; test() makes progress and
  // says whether the outcome is in; finish() waits for it (up to the deadline) and
  // returns the statistics, or throws PhaseError / PhaseTimeout.
  void begin(std::string_view phase, int epoch, const PhaseReport& report);
  bool test();
  PhaseStats finish();

  int rank() const noexcept { return _rank; }
  int size() const noexcept { return _size; }

  // Wire formats (fixed size, sent as bytes).
  static constexpr std::size_t kMessageBytes = 1024;
  struct Arrival {
    std::int32_t failed;
    std::int32_t epoch;
    char phase[32];           // the phase name, checked against rank 0's
    std::uint64_t bytes;
    double seconds;
    std::uint64_t wrong;
    char message[kMessageBytes];
  };
  struct Outcome {
    std::int32_t failed_rank;  // -1: none
    std::int32_t notes_rank;
    std::uint64_t bytes, wrong;
    double seconds_min, seconds_mean, seconds_max, gbps_min, gbps_mean, gbps_max;
    char message[kMessageBytes];
  };

 private:
  void reduce();          // rank 0: all arrivals in -> outcome, start the broadcast
  PhaseStats result() const;

  Comm _comm;
  int _rank = 0;
  int _size = 1;
  std::chrono::milliseconds _timeout;
  // The phase in progress.
  bool _active = false;
  std::string _phase;
  int _epoch = 0;
  std::chrono::steady_clock::time_point _deadline;
  std::vector<Arrival> _arrivals;        // rank 0: one per rank
  std::vector<MPI_Request> _receives;    // rank 0: from ranks 1..size-1
  MPI_Request _send = MPI_REQUEST_NULL;  // other ranks: the arrival
  MPI_Request _outcome_receive = MPI_REQUEST_NULL;  // other ranks: the outcome from rank 0
  std::vector<MPI_Request> _outcome_sends;  // rank 0: the outcome to ranks 1..size-1
  bool _outcome_sent = false;            // rank 0: all arrived, outcome sent
  Outcome _outcome{};
  Outcome _sent_outcome{};                // rank 0: the buffer the sends read
};

}  // namespace swapcoord
