// MPI tests of PhaseSync (coord/phase_sync.hpp): the end of a phase is a barrier that
// reduces every rank's report into statistics every rank sees identically; a failure on
// one rank is a PhaseError on every rank; notes travel to all ranks; the non-blocking form
// makes progress with test(); a rank that never arrives makes rank 0 throw PhaseTimeout
// naming the phase, the epoch, and who did and did not arrive, instead of hanging.
//
// Every test runs at 1, 2 and 4 ranks. Every rank makes the same collective calls in the
// same order; an expected exception is checked on every rank and the result is combined
// over ranks, so a rank that does not throw fails the test instead of hanging.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/phase_sync.hpp"
#include "mpi_test_support.hpp"

namespace swapcoord {
namespace {

using namespace std::chrono_literals;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

// A timeout no healthy test comes near (the phases here take microseconds).
constexpr auto kTimeout = 20s;

using namespace test;  // the MPI helpers of mpi_test_support.hpp

// ---- helpers (collective unless said otherwise) -------------------------------------------

double max_over_ranks(double mine) {
  double all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return all;
}

// Every figure of `stats` as bytes; true on every rank when they are the same on every rank.
bool same_on_all_ranks(const PhaseStats& stats) {
  std::vector<char> mine;
  auto put = [&](const void* data, std::size_t bytes) {
    const auto* p = static_cast<const char*>(data);
    mine.insert(mine.end(), p, p + bytes);
  };
  put(&stats.epoch, sizeof stats.epoch);
  put(&stats.bytes, sizeof stats.bytes);
  for (double value : {stats.seconds_min, stats.seconds_mean, stats.seconds_max, stats.gbps_min,
                       stats.gbps_mean, stats.gbps_max, stats.aggregate_gbps, stats.imbalance})
    put(&value, sizeof value);
  put(&stats.wrong, sizeof stats.wrong);
  put(&stats.notes_rank, sizeof stats.notes_rank);
  put(stats.phase.data(), stats.phase.size());
  put(stats.notes.data(), stats.notes.size());
  int length = static_cast<int>(mine.size()), max_length = 0;
  MPI_Allreduce(&length, &max_length, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  std::vector<char> padded(mine);
  padded.resize(static_cast<std::size_t>(max_length) + 1, '\0');
  padded.back() = static_cast<char>(length == max_length);
  std::vector<char> root(padded);
  MPI_Bcast(root.data(), max_length + 1, MPI_CHAR, 0, MPI_COMM_WORLD);
  return all_ranks(root == padded);
}

// What the statistics of a phase must be, computed here from every rank's report.
struct Expected {
  std::uint64_t bytes = 0, wrong = 0;
  double seconds_min = 0, seconds_mean = 0, seconds_max = 0;
  double gbps_min = 0, gbps_mean = 0, gbps_max = 0;
};

Expected expected_from(const std::vector<std::uint64_t>& bytes, const std::vector<double>& seconds,
                       const std::vector<std::uint64_t>& wrong) {
  Expected e;
  const auto n = static_cast<double>(bytes.size());
  std::vector<double> gbps;
  for (std::size_t r = 0; r < bytes.size(); ++r) {
    e.bytes += bytes[r];
    e.wrong += wrong[r];
    gbps.push_back(seconds[r] > 0 ? static_cast<double>(bytes[r]) / seconds[r] / 1e9 : 0.0);
  }
  e.seconds_min = *std::min_element(seconds.begin(), seconds.end());
  e.seconds_max = *std::max_element(seconds.begin(), seconds.end());
  for (double s : seconds) e.seconds_mean += s / n;
  e.gbps_min = *std::min_element(gbps.begin(), gbps.end());
  e.gbps_max = *std::max_element(gbps.begin(), gbps.end());
  for (double g : gbps) e.gbps_mean += g / n;
  return e;
}

// Relative closeness (the mean is a sum of quotients; the order of summation may differ).
#define EXPECT_CLOSE(actual, expected) \
  EXPECT_NEAR((actual), (expected), 1e-12 * std::max(1.0, std::abs(expected))) << #actual

void expect_stats(const PhaseStats& stats, const Expected& e) {
  EXPECT_EQ(stats.bytes, e.bytes);
  EXPECT_EQ(stats.wrong, e.wrong);
  EXPECT_CLOSE(stats.seconds_min, e.seconds_min);
  EXPECT_CLOSE(stats.seconds_mean, e.seconds_mean);
  EXPECT_CLOSE(stats.seconds_max, e.seconds_max);
  EXPECT_CLOSE(stats.gbps_min, e.gbps_min);
  EXPECT_CLOSE(stats.gbps_mean, e.gbps_mean);
  EXPECT_CLOSE(stats.gbps_max, e.gbps_max);
  EXPECT_CLOSE(stats.aggregate_gbps, static_cast<double>(e.bytes) / e.seconds_max / 1e9);
  EXPECT_CLOSE(stats.imbalance, e.seconds_max / e.seconds_mean);
}

// The report of the statistics tests: rank r moved (r+1)*1000 bytes in 0.5*(r+1) s and
// found r wrong values.
PhaseReport report_of(int rank) {
  PhaseReport report;
  report.bytes = static_cast<std::uint64_t>(rank + 1) * 1000;
  report.seconds = 0.5 * (rank + 1);
  report.wrong = static_cast<std::uint64_t>(rank);
  return report;
}

Expected expected_of_report_of(int size) {
  std::vector<std::uint64_t> bytes, wrong;
  std::vector<double> seconds;
  for (int r = 0; r < size; ++r) {
    const PhaseReport report = report_of(r);
    bytes.push_back(report.bytes);
    seconds.push_back(report.seconds);
    wrong.push_back(report.wrong);
  }
  return expected_from(bytes, seconds, wrong);
}

// ---- statistics -----------------------------------------------------------------------------

TEST(PhaseSync, StatisticsAreReducedOverRanks) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  EXPECT_EQ(sync.rank(), rank);
  EXPECT_EQ(sync.size(), size);

  const PhaseStats stats = sync.end_phase("swap-out", 3, report_of(rank));
  EXPECT_EQ(stats.phase, "swap-out");
  EXPECT_EQ(stats.epoch, 3);
  expect_stats(stats, expected_of_report_of(size));
  // The closed forms, for the record.
  const auto n = static_cast<std::uint64_t>(size);
  EXPECT_EQ(stats.bytes, 1000 * n * (n + 1) / 2);
  EXPECT_EQ(stats.wrong, n * (n - 1) / 2);
  EXPECT_DOUBLE_EQ(stats.seconds_min, 0.5);
  EXPECT_DOUBLE_EQ(stats.seconds_max, 0.5 * size);
  EXPECT_DOUBLE_EQ(stats.seconds_mean, 0.25 * (size + 1));
  EXPECT_DOUBLE_EQ(stats.gbps_min, 2e-6);  // every rank: 2000 bytes per second
  EXPECT_DOUBLE_EQ(stats.gbps_max, 2e-6);
  EXPECT_EQ(stats.notes, "");
  EXPECT_EQ(stats.notes_rank, -1);
  EXPECT_TRUE(same_on_all_ranks(stats));
}

TEST(PhaseSync, UnevenRanksGiveMinMeanMaxAndImbalance) {
  // Bandwidths that differ per rank: rank r moves (r+1)^2 MB in 0.25 + 0.1 r seconds.
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  std::vector<std::uint64_t> bytes, wrong;
  std::vector<double> seconds;
  for (int r = 0; r < size; ++r) {
    bytes.push_back(static_cast<std::uint64_t>(r + 1) * (r + 1) * 1'000'000);
    seconds.push_back(0.25 + 0.1 * r);
    wrong.push_back(r == size - 1 ? 5 : 0);
  }
  PhaseReport report;
  report.bytes = bytes[static_cast<std::size_t>(rank)];
  report.seconds = seconds[static_cast<std::size_t>(rank)];
  report.wrong = wrong[static_cast<std::size_t>(rank)];
  const PhaseStats stats = sync.end_phase("swap-in", 0, report);
  expect_stats(stats, expected_from(bytes, seconds, wrong));
  EXPECT_EQ(stats.wrong, 5u);
  if (size > 1) {
    EXPECT_LT(stats.gbps_min, stats.gbps_max);
    EXPECT_GT(stats.imbalance, 1.0);
  } else {
    EXPECT_DOUBLE_EQ(stats.imbalance, 1.0);
  }
  EXPECT_TRUE(same_on_all_ranks(stats));
}

TEST(PhaseSync, AnEmptyPhaseHasNoBandwidthAndNoImbalance) {
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  const PhaseStats stats = sync.end_phase("swap-out", 1, PhaseReport{});
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.seconds_max, 0.0);
  EXPECT_EQ(stats.gbps_min, 0.0);
  EXPECT_EQ(stats.gbps_max, 0.0);
  EXPECT_EQ(stats.aggregate_gbps, 0.0);
  EXPECT_EQ(stats.imbalance, 1.0);
  EXPECT_FALSE(std::isnan(stats.gbps_mean));
  EXPECT_TRUE(same_on_all_ranks(stats));
}

// ---- notes ----------------------------------------------------------------------------------

TEST(PhaseSync, NotesOfTheLowestRankReachEveryRank) {
  // Every rank but 0 has notes (not a failure); all ranks see rank 1's.
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report = report_of(rank);
  if (rank >= 1) report.message = "rank " + std::to_string(rank) + ": 3 wrong values in tensor 7";
  const PhaseStats stats = sync.end_phase("swap-in", 2, report);
  if (size >= 2) {
    EXPECT_EQ(stats.notes_rank, 1);
    EXPECT_EQ(stats.notes, "rank 1: 3 wrong values in tensor 7");
  } else {
    EXPECT_EQ(stats.notes_rank, -1);
    EXPECT_EQ(stats.notes, "");
  }
  expect_stats(stats, expected_of_report_of(size));
  EXPECT_TRUE(same_on_all_ranks(stats));
}

TEST(PhaseSync, NotesOfRankZero) {
  const int rank = world_rank();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report = report_of(rank);
  if (rank == 0) report.message = "notes from rank 0";
  const PhaseStats stats = sync.end_phase("swap-in", 0, report);
  EXPECT_EQ(stats.notes_rank, 0);
  EXPECT_EQ(stats.notes, "notes from rank 0");
}

TEST(PhaseSync, LongNotesAreCutNotLost) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  std::string long_notes;
  for (int i = 0; long_notes.size() < 5000; ++i) long_notes += "tensor " + std::to_string(i) + " wrong; ";
  PhaseReport report;
  if (rank == size - 1) report.message = long_notes;
  const PhaseStats stats = sync.end_phase("swap-in", 0, report);
  EXPECT_EQ(stats.notes_rank, size - 1);
  EXPECT_GE(stats.notes.size(), 1000u);
  EXPECT_LT(stats.notes.size(), PhaseSync::kMessageBytes);
  EXPECT_EQ(long_notes.compare(0, stats.notes.size(), stats.notes), 0) << "not a prefix";
}

// ---- failures -------------------------------------------------------------------------------

TEST(PhaseSync, AFailureOnTheLastRankIsAPhaseErrorOnEveryRank) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report = report_of(rank);
  const std::string failure = "pwrite /swap/rank-" + std::to_string(size - 1) + "/slot-0.swp: No space left";
  if (rank == size - 1) {
    report.failed = true;
    report.message = failure;
  }
  expect_throw_on_all_ranks<PhaseError>([&] { sync.end_phase("swap-out", 4, report); },
                                        [&](const PhaseError& e) {
                                          EXPECT_EQ(e.failed_rank(), size - 1);
                                          // The header says what() is the message "prefixed
                                          // with its rank"; either way it holds the message.
                                          EXPECT_THAT(e.what(), HasSubstr(failure));
                                        });

  // The PhaseSync is still usable: the next phase ends normally.
  const PhaseStats stats = sync.end_phase("swap-out", 5, report_of(rank));
  EXPECT_EQ(stats.epoch, 5);
  expect_stats(stats, expected_of_report_of(size));
  EXPECT_EQ(stats.notes_rank, -1) << "the failure's message must not leak into the next phase";
  EXPECT_EQ(stats.notes, "");
  EXPECT_TRUE(same_on_all_ranks(stats));
}

TEST(PhaseSync, AFailureOnRankZero) {
  const int rank = world_rank();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report;
  if (rank == 0) {
    report.failed = true;
    report.message = "rank 0 failed";
  }
  expect_throw_on_all_ranks<PhaseError>([&] { sync.end_phase("swap-in", 0, report); },
                                        [&](const PhaseError& e) {
                                          EXPECT_EQ(e.failed_rank(), 0);
                                          EXPECT_THAT(e.what(), HasSubstr("rank 0 failed"));
                                        });
}

TEST(PhaseSync, TheLowestFailedRankWinsOverNotesAndLaterFailures) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report;
  if (rank == 0) report.message = "notes on rank 0";
  if (rank >= 1) {
    report.failed = true;
    report.message = "failure on rank " + std::to_string(rank);
  }
  expect_throw_on_all_ranks<PhaseError>([&] { sync.end_phase("swap-in", 0, report); },
                                        [&](const PhaseError& e) {
                                          EXPECT_EQ(e.failed_rank(), 1);
                                          EXPECT_THAT(e.what(), HasSubstr("failure on rank 1"));
                                          EXPECT_THAT(e.what(), Not(HasSubstr("notes on rank 0")));
                                        });
}

TEST(PhaseSync, AFailureWithoutAMessageStillNamesTheRank) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report;
  report.failed = rank == size - 1;
  expect_throw_on_all_ranks<PhaseError>([&] { sync.end_phase("swap-in", 0, report); },
                                        [&](const PhaseError& e) {
                                          EXPECT_EQ(e.failed_rank(), size - 1);
                                          // what() is "that rank's message prefixed with its
                                          // rank" (phase_sync.hpp): never empty.
                                          EXPECT_THAT(e.what(), HasSubstr(std::to_string(size - 1)))
                                              << "what() = '" << e.what() << "'";
                                        });
}

TEST(PhaseSync, ARankInAnotherEpochIsAPhaseError) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";  // same decision on every rank
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  const int epoch = rank == size - 1 ? 8 : 7;
  const std::string message = expect_throw_on_all_ranks<PhaseError>(
      [&] { sync.end_phase("swap-out", epoch, report_of(rank)); },
      [&](const PhaseError& e) { EXPECT_EQ(e.failed_rank(), size - 1); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank " + std::to_string(size - 1)), HasSubstr("epoch 8"),
                             HasSubstr("epoch 7")));
  // And the next phase, with agreeing epochs, ends normally.
  EXPECT_EQ(sync.end_phase("swap-out", 9, report_of(rank)).epoch, 9);
}

// ---- non-blocking ---------------------------------------------------------------------------

TEST(PhaseSync, BeginTestFinish) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  sync.begin("swap-out", 11, report_of(rank));
  // Other communication may go on while the phase is in flight.
  int one = 1, sum = 0;
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(sum, size);
  const auto deadline = Clock::now() + 10s;
  bool done = false;
  long polls = 0;
  while (!(done = sync.test()) && Clock::now() < deadline) ++polls;
  EXPECT_TRUE(done) << "test() never returned true (" << polls << " polls)";
  const PhaseStats stats = sync.finish();
  EXPECT_EQ(stats.phase, "swap-out");
  EXPECT_EQ(stats.epoch, 11);
  expect_stats(stats, expected_of_report_of(size));
  EXPECT_TRUE(same_on_all_ranks(stats));

  // No phase in progress any more: test() says so (a local check on every rank).
  expect_throw_on_all_ranks<Error>([&] { sync.test(); });
  // And the blocking form still works after the non-blocking one.
  EXPECT_EQ(sync.end_phase("swap-in", 11, report_of(rank)).phase, "swap-in");
}

TEST(PhaseSync, FinishWithoutPollingAndAFailure) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  PhaseReport report = report_of(rank);
  report.failed = rank == size - 1;
  report.message = report.failed ? "late failure" : "";
  sync.begin("swap-in", 1, report);
  expect_throw_on_all_ranks<PhaseError>([&] { sync.finish(); },
                                        [&](const PhaseError& e) { EXPECT_EQ(e.failed_rank(), size - 1); });
  sync.begin("swap-in", 2, report_of(rank));
  EXPECT_EQ(sync.finish().epoch, 2);
}

TEST(PhaseSync, BeginTwiceIsAnError) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  sync.begin("swap-out", 1, report_of(rank));
  const std::string message =
      expect_throw_on_all_ranks<Error>([&] { sync.begin("swap-in", 1, report_of(rank)); });
  EXPECT_THAT(message, AllOf(HasSubstr("swap-in"), HasSubstr("swap-out")));
  // The first phase is still in flight and ends as it began.
  const PhaseStats stats = sync.finish();
  EXPECT_EQ(stats.phase, "swap-out");
  EXPECT_EQ(stats.epoch, 1);
  expect_stats(stats, expected_of_report_of(size));
}

TEST(PhaseSync, TestOrFinishWithoutBeginIsAnError) {
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  expect_throw_on_all_ranks<Error>([&] { sync.test(); });
  expect_throw_on_all_ranks<Error>([&] { sync.finish(); });
}

// ---- many phases ----------------------------------------------------------------------------

TEST(PhaseSync, ManyPhasesInARowAreFast) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  constexpr int kPhases = 200;
  const Expected expected = expected_of_report_of(size);
  const auto start = Clock::now();
  int bad = 0;
  for (int i = 0; i < kPhases; ++i) {
    const int epoch = i / 2;
    const char* phase = i % 2 == 0 ? "swap-out" : "swap-in";
    const PhaseStats stats = sync.end_phase(phase, epoch, report_of(rank));
    if (stats.epoch != epoch || stats.phase != phase || stats.bytes != expected.bytes ||
        stats.wrong != expected.wrong)
      ++bad;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(bad, 0);
  const double slowest = max_over_ranks(seconds);
  EXPECT_LT(slowest, 5.0) << kPhases << " phases at " << size << " ranks";
  if (rank == 0) std::printf("# %d phases at %d ranks in %.3f s\n", kPhases, size, slowest);
}

TEST(PhaseSync, ManyNonBlockingPhasesInARow) {
  const int rank = world_rank(), size = world_size();
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  const Expected expected = expected_of_report_of(size);
  int bad = 0;
  for (int epoch = 0; epoch < 100; ++epoch) {
    sync.begin("swap-in", epoch, report_of(rank));
    const auto deadline = Clock::now() + 10s;
    while (!sync.test() && Clock::now() < deadline) {
    }
    const PhaseStats stats = sync.finish();
    if (stats.epoch != epoch || stats.bytes != expected.bytes) ++bad;
  }
  EXPECT_EQ(bad, 0);
}

// How late a waiting rank notices the last arrival, from the pauses alone (no clock): a
// waiter that polls at 0 and then after each poll_pause, with the peer arriving at W, sees
// it at most max(20 us, min(W / 8, 2 ms)) after W. Pauses that doubled (20, 40, 80 us ...)
// were up to W late (polls at 1.26 and 2.54 ms: an arrival at 1.27 ms was seen 1.27 ms
// late), several ms per step over a commit's barriers on a fast disk.
TEST(PhaseSync, AWaitingRankPollsSoonAfterTheLastArrival) {
  using std::chrono::microseconds;
  EXPECT_EQ(poll_pause(microseconds(0)), microseconds(20));
  EXPECT_EQ(poll_pause(microseconds(800)), microseconds(100));
  EXPECT_EQ(poll_pause(microseconds(8'000)), microseconds(1'000));
  EXPECT_EQ(poll_pause(std::chrono::seconds(30)), microseconds(2'000));
  int late = 0;
  for (microseconds arrival(0); arrival <= microseconds(200'000); arrival += microseconds(37)) {
    microseconds now(0);
    while (now < arrival) now += poll_pause(now);
    const auto bound = std::max(microseconds(20), std::min(arrival / 8, microseconds(2'000)));
    if (now - arrival > bound) {
      if (late++ < 3) ADD_FAILURE() << "arrival at " << arrival.count() << " us noticed at " << now.count() << " us";
    }
  }
  EXPECT_EQ(late, 0);
}

// ---- communicators and construction ---------------------------------------------------------

TEST(PhaseSync, PhasesOnSubCommunicatorsAreIndependent) {
  // Pairs of ranks, each pair with its own PhaseSync; a failure in one pair stays there.
  const int rank = world_rank(), size = world_size();
  MPI_Comm pair = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, rank / 2, rank, &pair), MPI_SUCCESS);
  {
    PhaseSync sync(pair, kTimeout);
    const int pair_size = std::min(2, size - 2 * (rank / 2));
    EXPECT_EQ(sync.size(), pair_size);
    EXPECT_EQ(sync.rank(), rank % 2);
    PhaseReport report;
    report.bytes = 100;
    report.seconds = 1;
    const PhaseStats stats = sync.end_phase("swap-out", rank / 2, report);
    EXPECT_EQ(stats.bytes, 100u * static_cast<std::uint64_t>(pair_size));
    EXPECT_EQ(stats.epoch, rank / 2);

    // The last pair (of two) fails; other pairs do not notice.
    const bool failing_pair = size >= 2 && rank / 2 == (size - 1) / 2 && pair_size == 2;
    report.failed = failing_pair && rank % 2 == 1;
    report.message = report.failed ? "pair failure" : "";
    bool threw = false;
    try {
      sync.end_phase("swap-in", 0, report);
    } catch (const PhaseError& e) {
      threw = true;
      EXPECT_EQ(e.failed_rank(), 1);  // the rank in the pair's communicator
    }
    EXPECT_EQ(threw, failing_pair) << "rank " << rank;
  }
  MPI_Comm_free(&pair);
}

TEST(PhaseSync, ANonPositiveTimeoutIsAConfigError) {
  for (auto timeout : {0ms, -5ms}) {
    const std::string message =
        expect_throw_on_all_ranks<ConfigError>([&] { PhaseSync sync(MPI_COMM_WORLD, timeout); });
    EXPECT_THAT(message, HasSubstr(std::to_string(timeout.count()) + " ms"));
  }
  // Construction still works afterwards (the failed ones left no collective behind).
  PhaseSync sync(MPI_COMM_WORLD, kTimeout);
  EXPECT_EQ(sync.end_phase("swap-out", 0, PhaseReport{}).bytes, 0u);
}

// ---- timeout --------------------------------------------------------------------------------

TEST(PhaseSyncTimeout, RankZeroNamesThePhaseTheEpochAndTheMissingRanks) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs a rank that does not arrive";  // same on every rank
  constexpr auto timeout = 300ms;
  // Abandoned after the timeout: rank 0 has receives posted that never complete, and a rank
  // that began waits for an outcome that never comes. The destructor cancels and frees them.
  auto sync = std::make_unique<PhaseSync>(MPI_COMM_WORLD, timeout);

  // At three ranks or more, rank 1 arrives (begin() only) and the others never do.
  std::vector<int> arrived{0}, missing;
  for (int r = 1; r < size; ++r) (size >= 3 && r == 1 ? arrived : missing).push_back(r);
  auto list = [](const std::vector<int>& ranks) {
    return ranks.size() == 1 ? std::to_string(ranks[0])
                             : std::to_string(ranks.front()) + "-" + std::to_string(ranks.back());
  };

  if (rank == 0) {
    const auto start = Clock::now();
    try {
      sync->end_phase("swap-in", 17, report_of(rank));
      ADD_FAILURE() << "end_phase returned although ranks " << list(missing) << " never arrived";
    } catch (const PhaseTimeout& e) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      EXPECT_GE(elapsed, 0.3);
      EXPECT_LT(elapsed, 0.3 + 1.5);
      const std::string message = e.what();
      EXPECT_THAT(message, AllOf(HasSubstr("swap-in"), HasSubstr("epoch 17"),
                                 HasSubstr("ranks " + list(arrived) + " arrived"),
                                 HasSubstr("ranks " + list(missing) + " did not")));
      // The timeout it names must not read "0 s" for a 300 ms timeout.
      EXPECT_THAT(message, Not(HasSubstr("within 0 s"))) << message;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "another exception: " << e.what();
    }
  } else if (size >= 3 && rank == 1) {
    sync->begin("swap-in", 17, report_of(rank));  // arrives; never waits for the outcome
  }
  // The missing ranks wait here without arriving; rank 0 joins after its timeout.
  MPI_Barrier(MPI_COMM_WORLD);
}

// Rank 0 is the one that stops: every other rank ends within the timeout plus the grace,
// naming rank 0 (it used to wait 1.5 x timeout + 5 s and blame no one).
TEST(PhaseSyncTimeout, EveryRankNamesAMissingRankZeroWithinTheTimeout) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs a rank that does not arrive";
  constexpr auto timeout = 300ms;
  auto sync = std::make_unique<PhaseSync>(MPI_COMM_WORLD, timeout);
  if (rank != 0) {
    const auto start = Clock::now();
    try {
      sync->end_phase("swap-out", 4, report_of(rank));
      ADD_FAILURE() << "end_phase returned although rank 0 never arrived";
    } catch (const PhaseTimeout& e) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      EXPECT_GE(elapsed, 0.3);
      EXPECT_LT(elapsed, 0.3 + 1.0) << "a rank waited " << elapsed << " s for a 0.3 s timeout";
      EXPECT_THAT(std::string(e.what()), AllOf(HasSubstr("swap-out"), HasSubstr("epoch 4"),
                                               HasSubstr("rank 0, which collects the phase, did not arrive")));
    }
    // No further phase on a PhaseSync that timed out.
    EXPECT_THROW(sync->end_phase("swap-in", 4, report_of(rank)), PhaseTimeout);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Rank 0 arrives late and the last rank never: the early ranks' deadline passes first,
// they give up, and rank 0 answers at once naming the missing rank; all of them end within
// the timeout plus the grace from their own arrival.
TEST(PhaseSyncTimeout, RanksThatGiveUpLearnTheMissingRanksFromRankZero) {
  const int rank = world_rank(), size = world_size();
  if (size < 3) GTEST_SKIP() << "needs rank 0, an early rank and a missing rank";
  constexpr auto timeout = 400ms;
  auto sync = std::make_unique<PhaseSync>(MPI_COMM_WORLD, timeout);
  const int missing = size - 1;
  const std::string missing_text = "ranks " + std::to_string(missing) + " did not";
  if (rank != missing) {
    if (rank == 0) std::this_thread::sleep_for(250ms);
    const auto start = Clock::now();
    try {
      sync->end_phase("commit", 9, report_of(rank));
      ADD_FAILURE() << "end_phase returned although rank " << missing << " never arrived";
    } catch (const PhaseTimeout& e) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      EXPECT_LT(elapsed, 0.4 + 1.0) << "rank " << rank << " waited " << elapsed << " s";
      EXPECT_THAT(std::string(e.what()), AllOf(HasSubstr("commit"), HasSubstr("epoch 9"), HasSubstr(missing_text),
                                               HasSubstr("gave up waiting")));
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// A rank that arrives after rank 0 timed the phase out learns the outcome at once.
TEST(PhaseSyncTimeout, ALateRankGetsTheTimeoutAtOnce) {
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs a late rank";
  constexpr auto timeout = 200ms;
  auto sync = std::make_unique<PhaseSync>(MPI_COMM_WORLD, timeout);
  const int late = size - 1;
  if (rank == late) std::this_thread::sleep_for(1500ms);  // rank 0 and the others time out meanwhile
  const auto start = Clock::now();
  try {
    sync->end_phase("swap-in", 2, report_of(rank));
    ADD_FAILURE() << "end_phase returned although rank " << late << " was late";
  } catch (const PhaseTimeout& e) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_LT(elapsed, 0.2 + 1.0);
    EXPECT_THAT(std::string(e.what()), HasSubstr("ranks " + std::to_string(late) + " did not"));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace swapcoord
