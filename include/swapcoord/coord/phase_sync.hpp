#pragma once
// PhaseSync: numbered epochs made of phases (swap-out, swap-in, ...). Each rank ends a
// phase by reporting its result (bytes, seconds, wrong values, or a failure message);
// rank 0 collects every report, reduces the statistics and sends every rank the outcome,
// which makes the end of a phase a barrier. Every wait has a deadline: the phase timeout
// from the rank's own arrival, plus PhaseSync::kGrace for rank 0's answer when a rank had
// to ask. A rank that never arrives ends the phase on every rank that did with a message
// naming the phase, the epoch and the ranks that did not arrive, rank 0 among them:
//   - rank 0 tells every rank when it arrives (a rank that has not heard from rank 0 by
//     its deadline names rank 0);
//   - a rank whose deadline passes tells rank 0 that it gives up; rank 0 then ends the
//     phase at once for everyone with a timeout outcome naming the missing ranks (as it
//     does at its own deadline). A rank that arrives after that gets the same outcome.
// After a timeout the PhaseSync refuses further phases. A failure on one rank is known to
// all ranks in the same phase.
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
  // Collective. Uses a duplicate of `comm`. Every rank waits at most `timeout` from its
  // own arrival (+ kGrace for rank 0's answer naming the missing ranks).
  PhaseSync(MPI_Comm comm, std::chrono::milliseconds timeout);
  static constexpr std::chrono::seconds kGrace{2};
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
    std::int32_t timed_out;    // 1: the phase timed out; the message names the missing ranks
    std::uint64_t bytes, wrong;
    double seconds_min, seconds_mean, seconds_max, gbps_min, gbps_mean, gbps_max;
    char message[kMessageBytes];
  };

 private:
  void reduce();          // rank 0: all arrivals in -> outcome, start the broadcast
  void send_outcome();    // rank 0: _sent_outcome to every other rank
  [[noreturn]] void time_out(const std::string& why);  // rank 0: a timeout outcome to all, then throw
  [[noreturn]] void give_up();                         // other ranks: at the deadline
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
  // Phases are numbered alike on every rank; rank 0 says it arrived, and a rank whose
  // deadline passed says it gives up (with the number).
  std::int32_t _sequence = 0;
  std::int32_t _presence = 1;                        // rank 0: the buffer of its sends (constant)
  std::vector<MPI_Request> _presence_sends;          // rank 0
  std::int32_t _presence_seen = 0;                   // other ranks
  MPI_Request _presence_receive = MPI_REQUEST_NULL;  // other ranks
  std::int32_t _give_up = 0;                         // the number of the phase given up
  MPI_Request _give_up_receive = MPI_REQUEST_NULL;   // rank 0: from any rank, kept posted
  MPI_Status _give_up_status{};
  bool _give_up_in = false;                          // rank 0: _give_up holds one not yet acted on
  MPI_Request _give_up_send = MPI_REQUEST_NULL;      // other ranks
  std::string _broken;                               // why no further phase may begin
  Outcome _timeout_outcome{};                        // rank 0: the outcome of a phase it timed out
  std::vector<MPI_Request> _timeout_sends;           // rank 0: ... to every other rank
};

}  // namespace swapcoord
