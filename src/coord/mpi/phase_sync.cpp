#include "swapcoord/coord/phase_sync.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <thread>

#include <fmt/format.h>

namespace swapcoord {
namespace {

constexpr int kArrivalTag = 7711;
constexpr int kOutcomeTag = 7712;
constexpr int kPresenceTag = 7713;
constexpr int kGiveUpTag = 7714;
using Clock = std::chrono::steady_clock;

void copy_message(char (&into)[PhaseSync::kMessageBytes], const std::string& text) {
  std::memset(into, 0, sizeof into);
  std::memcpy(into, text.data(), std::min(text.size(), sizeof into - 1));
}

// "0-3,5,7-8"
std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (std::size_t i = 0; i < ranks.size();) {
    std::size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += j > i ? fmt::format("{}-{}", ranks[i], ranks[j]) : std::to_string(ranks[i]);
    i = j + 1;
  }
  return out.empty() ? std::string("none") : out;
}

}  // namespace

PhaseSync::PhaseSync(MPI_Comm comm, std::chrono::milliseconds timeout)
    : _comm(Comm::dup(comm)), _rank(_comm.rank()), _size(_comm.size()), _timeout(timeout) {
  if (timeout.count() <= 0)
    throw ConfigError(fmt::format("phase_timeout: {} ms is not positive", timeout.count()));
  if (_rank == 0) {
    _arrivals.resize(static_cast<std::size_t>(_size));
    _receives.assign(static_cast<std::size_t>(_size), MPI_REQUEST_NULL);
    _outcome_sends.assign(static_cast<std::size_t>(_size), MPI_REQUEST_NULL);
    _presence_sends.assign(static_cast<std::size_t>(_size), MPI_REQUEST_NULL);
  } else {
    _arrivals.resize(1);
  }
}

PhaseSync::~PhaseSync() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  auto release = [](MPI_Request& request, bool cancel) {
    if (request == MPI_REQUEST_NULL) return;
    if (cancel) MPI_Cancel(&request);
    MPI_Request_free(&request);  // a send still completes; errors cannot be reported here
  };
  for (auto& request : _receives) release(request, true);
  for (auto& request : _outcome_sends) release(request, false);
  for (auto& request : _presence_sends) release(request, false);
  for (auto& request : _timeout_sends) release(request, false);
  release(_send, false);
  release(_outcome_receive, true);
  release(_presence_receive, true);
  release(_give_up_receive, true);
  release(_give_up_send, false);
}

PhaseStats PhaseSync::end_phase(std::string_view phase, int epoch, const PhaseReport& report) {
  begin(phase, epoch, report);
  return finish();
}

void PhaseSync::begin(std::string_view phase, int epoch, const PhaseReport& report) {
  if (!_broken.empty())
    throw PhaseTimeout(fmt::format("phase {} of epoch {} cannot begin: an earlier phase timed out ({})", phase, epoch,
                                   _broken));
  if (_active)
    throw Error(fmt::format("PhaseSync: phase '{}' of epoch {} began before phase '{}' of epoch "
                            "{} finished", phase, epoch, _phase, _epoch));
  _active = true;
  ++_sequence;
  _phase = phase;
  _epoch = epoch;
  _outcome_sent = false;
  Arrival& mine = _arrivals[0];
  mine.failed = report.failed ? 1 : 0;
  mine.epoch = epoch;
  std::memset(mine.phase, 0, sizeof mine.phase);
  std::memcpy(mine.phase, phase.data(), std::min(phase.size(), sizeof mine.phase - 1));
  mine.bytes = report.bytes;
  mine.seconds = report.seconds;
  mine.wrong = report.wrong;
  copy_message(mine.message, report.message);
  _deadline = Clock::now() + _timeout;
  if (_rank == 0) {
    for (int r = 1; r < _size; ++r)
      mpi_check(MPI_Irecv(&_arrivals[static_cast<std::size_t>(r)], sizeof(Arrival), MPI_BYTE, r,
                          kArrivalTag, _comm.get(), &_receives[static_cast<std::size_t>(r)]),
                "PhaseSync: MPI_Irecv");
    // The notice's buffer never changes, so a previous send still on its way (to a rank
    // that stopped before taking it) can be let go rather than waited for.
    for (int r = 1; r < _size; ++r) {
      MPI_Request& request = _presence_sends[static_cast<std::size_t>(r)];
      if (request != MPI_REQUEST_NULL) {
        int done = 0;
        mpi_check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "PhaseSync: MPI_Test (previous arrival notice)");
        if (!done) MPI_Request_free(&request);
      }
      mpi_check(MPI_Isend(&_presence, 1, MPI_INT32_T, r, kPresenceTag, _comm.get(), &request),
                "PhaseSync: MPI_Isend (arrival notice)");
    }
    if (_give_up_receive == MPI_REQUEST_NULL && !_give_up_in)
      mpi_check(MPI_Irecv(&_give_up, 1, MPI_INT32_T, MPI_ANY_SOURCE, kGiveUpTag, _comm.get(), &_give_up_receive),
                "PhaseSync: MPI_Irecv (give-up)");
  } else {
    mpi_check(MPI_Isend(&mine, sizeof(Arrival), MPI_BYTE, 0, kArrivalTag, _comm.get(), &_send),
              "PhaseSync: MPI_Isend");
    mpi_check(MPI_Irecv(&_outcome, sizeof(Outcome), MPI_BYTE, 0, kOutcomeTag, _comm.get(), &_outcome_receive),
              "PhaseSync: MPI_Irecv (outcome)");
    mpi_check(MPI_Irecv(&_presence_seen, 1, MPI_INT32_T, 0, kPresenceTag, _comm.get(), &_presence_receive),
              "PhaseSync: MPI_Irecv (arrival notice)");
  }
}

bool PhaseSync::test() {
  if (!_active) throw Error("PhaseSync::test: no phase in progress");
  int done = 0;
  if (_rank == 0) {
    if (!_outcome_sent) {
      for (int r = 1; r < _size; ++r) {
        auto& request = _receives[static_cast<std::size_t>(r)];
        if (request == MPI_REQUEST_NULL) continue;
        mpi_check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "PhaseSync: MPI_Test (arrival)");
      }
      if (_give_up_receive != MPI_REQUEST_NULL) {
        mpi_check(MPI_Test(&_give_up_receive, &done, &_give_up_status), "PhaseSync: MPI_Test (give-up)");
        _give_up_in = done != 0;
      }
      if (_give_up_in && _give_up < _sequence) {  // about a phase that ended meanwhile: stale
        _give_up_in = false;
        mpi_check(MPI_Irecv(&_give_up, 1, MPI_INT32_T, MPI_ANY_SOURCE, kGiveUpTag, _comm.get(), &_give_up_receive),
                  "PhaseSync: MPI_Irecv (give-up)");
      }
      for (int r = 1; r < _size; ++r)
        if (_receives[static_cast<std::size_t>(r)] != MPI_REQUEST_NULL) return false;
      reduce();
    }
    return true;
  }
  if (_send != MPI_REQUEST_NULL)
    mpi_check(MPI_Test(&_send, &done, MPI_STATUS_IGNORE), "PhaseSync: MPI_Test (report)");
  if (_outcome_receive != MPI_REQUEST_NULL)
    mpi_check(MPI_Test(&_outcome_receive, &done, MPI_STATUS_IGNORE), "PhaseSync: MPI_Test (outcome)");
  if (_presence_receive != MPI_REQUEST_NULL)
    mpi_check(MPI_Test(&_presence_receive, &done, MPI_STATUS_IGNORE), "PhaseSync: MPI_Test (arrival notice)");
  return _send == MPI_REQUEST_NULL && _outcome_receive == MPI_REQUEST_NULL && _presence_receive == MPI_REQUEST_NULL;
}

void PhaseSync::reduce() {
  Outcome& o = _outcome;
  std::memset(&o, 0, sizeof o);
  o.failed_rank = -1;
  o.notes_rank = -1;
  o.seconds_min = o.gbps_min = std::numeric_limits<double>::max();
  for (int r = 0; r < _size; ++r) {
    Arrival& a = _arrivals[static_cast<std::size_t>(r)];
    a.message[kMessageBytes - 1] = '\0';
    a.phase[sizeof a.phase - 1] = '\0';
    if ((a.epoch != _epoch || _phase.compare(0, sizeof a.phase - 1, a.phase) != 0) && !a.failed) {
      a.failed = 1;
      copy_message(a.message, fmt::format("rank {} ended phase {} of epoch {} while rank 0 ended "
                                          "phase {} of epoch {}", r, a.phase, a.epoch, _phase, _epoch));
    }
    if (a.failed && o.failed_rank < 0) {
      o.failed_rank = r;
      std::memcpy(o.message, a.message, kMessageBytes);
    }
    if (!a.failed && a.message[0] != '\0' && o.notes_rank < 0 && o.failed_rank < 0) {
      o.notes_rank = r;
      std::memcpy(o.message, a.message, kMessageBytes);
    }
    const double gbps = a.seconds > 0 ? static_cast<double>(a.bytes) / a.seconds / 1e9 : 0.0;
    o.bytes += a.bytes;
    o.wrong += a.wrong;
    o.seconds_min = std::min(o.seconds_min, a.seconds);
    o.seconds_max = std::max(o.seconds_max, a.seconds);
    o.seconds_mean += a.seconds / _size;
    o.gbps_min = std::min(o.gbps_min, gbps);
    o.gbps_max = std::max(o.gbps_max, gbps);
    o.gbps_mean += gbps / _size;
  }
  if (o.failed_rank >= 0) o.notes_rank = -1;
  mpi_check(MPI_Waitall(static_cast<int>(_outcome_sends.size()), _outcome_sends.data(), MPI_STATUSES_IGNORE),
            "PhaseSync: MPI_Waitall (previous outcome)");
  _sent_outcome = _outcome;
  send_outcome();
}

void PhaseSync::send_outcome() {
  // Point-to-point rather than a broadcast: the sends complete without waiting for a rank
  // that stopped after it arrived, so such a rank is reported missing in the next phase
  // instead of stalling this one. Every rank took the previous outcome before arriving
  // here, so the previous sends are complete (the buffer, _sent_outcome, was free).
  for (int r = 1; r < _size; ++r)
    mpi_check(MPI_Isend(&_sent_outcome, sizeof(Outcome), MPI_BYTE, r, kOutcomeTag, _comm.get(),
                        &_outcome_sends[static_cast<std::size_t>(r)]),
              "PhaseSync: MPI_Isend (outcome)");
  _outcome_sent = true;
}

void PhaseSync::time_out(const std::string& why) {
  std::vector<int> arrived{0}, missing;
  for (int r = 1; r < _size; ++r)
    (_receives[static_cast<std::size_t>(r)] == MPI_REQUEST_NULL ? arrived : missing).push_back(r);
  const std::string message =
      fmt::format("phase {} of epoch {} did not end within {:.3g} s{}: ranks {} arrived, ranks {} did not", _phase,
                  _epoch, std::chrono::duration<double>(_timeout).count(), why, rank_list(arrived),
                  rank_list(missing));
  // Every rank, arrived or not, gets the same outcome: those that arrived end now, a late
  // one as soon as it arrives. Its own buffer and requests: a missing rank may not have
  // taken the previous outcome yet (it stopped before), so those sends may still be going.
  std::memset(&_timeout_outcome, 0, sizeof _timeout_outcome);
  _timeout_outcome.failed_rank = missing.empty() ? -1 : missing.front();
  _timeout_outcome.notes_rank = -1;
  _timeout_outcome.timed_out = 1;
  copy_message(_timeout_outcome.message, message);
  _timeout_sends.assign(static_cast<std::size_t>(_size), MPI_REQUEST_NULL);
  for (int r = 1; r < _size; ++r)
    mpi_check(MPI_Isend(&_timeout_outcome, sizeof(Outcome), MPI_BYTE, r, kOutcomeTag, _comm.get(),
                        &_timeout_sends[static_cast<std::size_t>(r)]),
              "PhaseSync: MPI_Isend (timeout outcome)");
  _active = false;
  _broken = message;
  throw PhaseTimeout(message);
}

void PhaseSync::give_up() {
  const double seconds = std::chrono::duration<double>(_timeout).count();
  _give_up = _sequence;
  mpi_check(MPI_Isend(&_give_up, 1, MPI_INT32_T, 0, kGiveUpTag, _comm.get(), &_give_up_send),
            "PhaseSync: MPI_Isend (give-up)");
  if (_presence_receive != MPI_REQUEST_NULL) {
    _active = false;
    _broken = fmt::format("phase {} of epoch {} did not end within {:.3g} s: rank 0, which collects the phase, did "
                          "not arrive (rank {} waited for it)", _phase, _epoch, seconds, _rank);
    throw PhaseTimeout(_broken);
  }
  // Rank 0 is in the phase, waiting for someone: it answers the give-up with the outcome
  // that names the missing ranks.
  const auto until = Clock::now() + kGrace;
  int done = 0;
  while (_outcome_receive != MPI_REQUEST_NULL && Clock::now() < until) {
    mpi_check(MPI_Test(&_outcome_receive, &done, MPI_STATUS_IGNORE), "PhaseSync: MPI_Test (outcome)");
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  _active = false;
  if (_outcome_receive == MPI_REQUEST_NULL && _outcome.timed_out) {
    _outcome.message[kMessageBytes - 1] = '\0';
    _broken = _outcome.message;
  } else {
    _broken = fmt::format("phase {} of epoch {} did not end within {:.3g} s: rank 0 arrived but did not answer "
                          "within {} s when rank {} gave up (rank 0 may be stopped)", _phase, _epoch, seconds,
                          kGrace.count(), _rank);
  }
  throw PhaseTimeout(_broken);
}

PhaseStats PhaseSync::finish() {
  const auto waiting_since = Clock::now();
  while (!test()) {
    if (_rank == 0 && _give_up_in && _give_up == _sequence)
      time_out(fmt::format(" (rank {} gave up waiting)", _give_up_status.MPI_SOURCE));
    if (Clock::now() > _deadline) {
      if (_rank == 0) time_out("");
      give_up();
    }
    std::this_thread::sleep_for(poll_pause(Clock::now() - waiting_since));
  }
  _active = false;
  _outcome.message[kMessageBytes - 1] = '\0';
  if (_outcome.timed_out) {  // rank 0 timed the phase out before this rank arrived, or while it waited
    _broken = _outcome.message;
    throw PhaseTimeout(_broken);
  }
  if (_outcome.failed_rank >= 0) {
    std::string message = _outcome.message;
    if (message.empty())
      message = fmt::format("rank {} failed in phase {} of epoch {} (it gave no message)",
                            _outcome.failed_rank, _phase, _epoch);
    throw PhaseError(message, _outcome.failed_rank);
  }
  return result();
}

PhaseStats PhaseSync::result() const {
  const Outcome& o = _outcome;
  PhaseStats s;
  s.phase = _phase;
  s.epoch = _epoch;
  s.bytes = o.bytes;
  s.wrong = o.wrong;
  s.seconds_min = o.seconds_min;
  s.seconds_mean = o.seconds_mean;
  s.seconds_max = o.seconds_max;
  s.gbps_min = o.gbps_min;
  s.gbps_mean = o.gbps_mean;
  s.gbps_max = o.gbps_max;
  s.aggregate_gbps = o.seconds_max > 0 ? static_cast<double>(o.bytes) / o.seconds_max / 1e9 : 0.0;
  s.imbalance = o.seconds_mean > 0 ? o.seconds_max / o.seconds_mean : 1.0;
  s.notes_rank = o.notes_rank;
  if (o.notes_rank >= 0) s.notes = o.message;
  return s;
}

}  // namespace swapcoord
