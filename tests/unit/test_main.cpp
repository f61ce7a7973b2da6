// gtest main shared by the unit tests: exit code 77 (ctest's SKIP_RETURN_CODE) when every
// test that ran was skipped, so a skip is reported as one, with GTEST_SKIP's reason.
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  const auto* unit = testing::UnitTest::GetInstance();
  if (rc == 0 && unit->test_to_run_count() > 0 &&
      unit->skipped_test_count() == unit->test_to_run_count())
    return 77;
  return rc;
}
