// gtest main for the MPI tests: every rank runs every test; only rank 0 prints, and the
// exit code is the maximum over ranks, so a failure on any rank fails the ctest entry.
// Other ranks print their failures, prefixed with the rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace {

// On ranks other than 0: print only failures, prefixed with the rank.
class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : _rank(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const auto* test = testing::UnitTest::GetInstance()->current_test_info();
    std::fprintf(stderr, "[rank %d] FAILED %s.%s at %s:%d\n%s\n", _rank,
                 test ? test->test_suite_name() : "?", test ? test->name() : "?",
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.message());
  }

 private:
  int _rank;
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
  MPI_Finalize();
  return worst;
}
