// gtest main for the MPI tests: every rank runs every test; only rank 0 prints, and the
// exit code is the maximum over ranks, so a failure on any rank fails the ctest entry
// (77, skipped, when every test was skipped on every rank).
// Other ranks print their failures, prefixed with the rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <string>

namespace {

// On ranks other than 0: print only failures, prefixed with the rank.
class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : _rank(rank) {}
  // The name is taken here: asking gtest for the current test inside OnTestPartResult
  // would take a lock that gtest already holds there.
  void OnTestStart(const testing::TestInfo& test) override {
    _name = std::string(test.test_suite_name()) + "." + test.name();
  }
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] FAILED %s at %s:%d\n%s\n", _rank, _name.c_str(),
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.message());
  }

 private:
  int _rank;
  std::string _name;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && worst != 0 && rc == 0) std::printf("a test failed on another rank\n");
  // Every test that ran was skipped on every rank: exit 77 (ctest's SKIP_RETURN_CODE).
  const auto* unit = testing::UnitTest::GetInstance();
  int all_skipped = unit->test_to_run_count() > 0 && unit->skipped_test_count() == unit->test_to_run_count();
  MPI_Allreduce(MPI_IN_PLACE, &all_skipped, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst == 0 && all_skipped ? 77 : worst;
}
