// The job's own directories and files (private_fs.hpp) and the job locks (job_lock.hpp):
// no symbolic link is followed, modes are 0700 / 0600 whatever the umask, directories of
// other users or writable by everyone are refused, and a second job on the same files is
// refused naming the holder while a dead holder's lock is taken over and said so.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "swapcoord/common/error.hpp"
#include "swapcoord/io/job_lock.hpp"
#include "swapcoord/io/private_fs.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Restores the umask at the end of a test.
struct Umask {
  explicit Umask(mode_t mask) : old(::umask(mask)) {}
  ~Umask() { ::umask(old); }
  mode_t old;
};

TEST(PrivateDirs, AreMade0700AndFilesWritten0600WhateverTheUmask) {
  test::TempDir dir;
  Umask open_umask(0);
  make_private_dirs(dir.path() + "/a/b", "test");
  const UniqueFd fd = open_private_subdirs(dir.path() + "/a/b", "job/rank-0", "test");
  EXPECT_TRUE(fd.valid());
  for (const char* d : {"/a", "/a/b", "/a/b/job", "/a/b/job/rank-0"}) EXPECT_EQ(mode_of(dir.path() + d), 0700u) << d;
  write_private_file(dir.file("report.json"), "{}\n");
  EXPECT_EQ(mode_of(dir.file("report.json")), 0600u);
  // An existing, more open file is made 0600 too.
  ::chmod(dir.file("report.json").c_str(), 0666);
  write_private_file(dir.file("report.json"), "{\"x\": 1}\n");
  EXPECT_EQ(mode_of(dir.file("report.json")), 0600u);
  EXPECT_EQ(read_text(dir.file("report.json")), "{\"x\": 1}\n");
}

TEST(PrivateDirs, ASymbolicLinkInPlaceOfAJobDirectoryIsRefusedAndItsTargetUntouched) {
  test::TempDir dir, elsewhere;
  std::filesystem::create_directories(dir.path() + "/root");
  ASSERT_EQ(::symlink(elsewhere.path().c_str(), (dir.path() + "/root/job").c_str()), 0);
  try {
    (void)open_private_subdirs(dir.path() + "/root", "job/rank-0", "swap files");
    ADD_FAILURE() << "a symbolic link was followed";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), AllOf(HasSubstr(dir.path() + "/root/job"), HasSubstr("symbolic link")));
  }
  EXPECT_FALSE(std::filesystem::exists(elsewhere.path() + "/rank-0"));
}

TEST(PrivateDirs, AReportPathThatIsASymbolicLinkIsRefusedAndItsTargetUntouched) {
  test::TempDir dir;
  { std::ofstream(dir.file("victim")) << "precious"; }
  ASSERT_EQ(::symlink(dir.file("victim").c_str(), dir.file("report.json").c_str()), 0);
  EXPECT_THROW(write_private_file(dir.file("report.json"), "{}"), SystemError);
  EXPECT_EQ(read_text(dir.file("victim")), "precious");
}

TEST(PrivateDirs, ADirectoryWritableByEveryoneIsRefused) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/shared");
  ::chmod((dir.path() + "/shared").c_str(), 01777);
  EXPECT_THAT(check_private_dir(dir.path() + "/shared", "swap root"),
              AllOf(HasSubstr("swap root '" + dir.path() + "/shared'"), HasSubstr("writable by every user"),
                    HasSubstr("1777")));
  // Below it, a job directory that is world-writable is refused too.
  std::filesystem::create_directories(dir.path() + "/root/job");
  ::chmod((dir.path() + "/root/job").c_str(), 0777);
  EXPECT_THROW((void)open_private_subdirs(dir.path() + "/root", "job", "swap files"), Error);
  EXPECT_EQ(check_private_dir(dir.path(), "swap root"), "");
}

TEST(PrivateDirs, ADirectoryOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  test::TempDir dir;
  const std::string root = dir.path() + "/theirs";
  std::filesystem::create_directories(root + "/job");
  ASSERT_EQ(::chown(root.c_str(), 65534, 65534), 0);
  EXPECT_THAT(check_private_dir(root, "swap root"), AllOf(HasSubstr(root), HasSubstr("owned by uid 65534")));
  ASSERT_EQ(::chown((root + "/job").c_str(), 65534, 65534), 0);
  ::chown(root.c_str(), 0, 0);
  try {
    (void)open_private_subdirs(root, "job", "swap files");
    ADD_FAILURE() << "a job directory of uid 65534 was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), AllOf(HasSubstr(root + "/job"), HasSubstr("owned by uid 65534")));
  }
  // A symbolic link that another user owns is refused even if it points at our directory.
  const std::string link = dir.path() + "/link";
  ASSERT_EQ(::symlink(dir.path().c_str(), link.c_str()), 0);
  ASSERT_EQ(::lchown(link.c_str(), 65534, 65534), 0);
  EXPECT_THAT(check_private_dir(link, "swap root"), HasSubstr("symbolic link owned by uid 65534"));
}

TEST(JobLock, TwoRanksOfOneJobHoldTheirOwnBytes) {
  test::TempDir dir;
  const JobLock a = JobLock::acquire(dir.path(), ".swapcoord.lock", 0, "job 'x', rank 0");
  const JobLock b = JobLock::acquire(dir.path(), ".swapcoord.lock", 1, "job 'x', rank 1");
  EXPECT_EQ(a.took_over(), "");
  EXPECT_EQ(b.took_over(), "");
  EXPECT_EQ(mode_of(a.path()), 0600u);
}

TEST(JobLock, ASecondHolderInTheSameProcessIsRefused) {  // open file description locks
  test::TempDir dir;
  const JobLock a = JobLock::acquire(dir.path(), ".swapcoord.lock", 3, "job 'x', rank 3");
  try {
    (void)JobLock::acquire(dir.path(), ".swapcoord.lock", 3, "job 'x', rank 3");
    ADD_FAILURE() << "the same lock was taken twice";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()),
                AllOf(HasSubstr(dir.path() + "/.swapcoord.lock"), HasSubstr("pid " + std::to_string(::getpid())),
                      HasSubstr("another job is using these files")));
  }
}

TEST(JobLock, ALiveHolderInAnotherProcessIsNamed) {
  test::TempDir dir;
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      const JobLock held = JobLock::acquire(dir.path(), ".swapcoord.lock", 0, "job 'x', rank 0");
      (void)!::write(ready[1], "1", 1);
      char c;
      (void)!::read(done[0], &c, 1);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  try {
    (void)JobLock::acquire(dir.path(), ".swapcoord.lock", 0, "job 'x', rank 0");
    ADD_FAILURE() << "a lock held by pid " << child << " was taken";
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), AllOf(HasSubstr("pid " + std::to_string(child) + " on host"), HasSubstr("job 'x'")));
  }
  (void)!::write(done[1], "1", 1);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Released cleanly: the next holder takes it without a word.
  const JobLock next = JobLock::acquire(dir.path(), ".swapcoord.lock", 0, "job 'x', rank 0");
  EXPECT_EQ(next.took_over(), "");
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
}

TEST(JobLock, ADeadHoldersLockIsTakenOverAndSaidSo) {
  test::TempDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      auto* held = new JobLock(JobLock::acquire(dir.path(), ".swapcoord.lock", 2, "job 'x', rank 2"));
      (void)held;  // never released: the process dies holding it, as a killed job does
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const JobLock mine = JobLock::acquire(dir.path(), ".swapcoord.lock", 2, "job 'x', rank 2");
  EXPECT_THAT(mine.took_over(), HasSubstr("pid " + std::to_string(child) + " on host"));
}

TEST(JobLock, ALockFileThatIsASymbolicLinkIsRefused) {
  test::TempDir dir;
  { std::ofstream(dir.file("victim")) << "precious"; }
  ASSERT_EQ(::symlink(dir.file("victim").c_str(), dir.file(".swapcoord.lock").c_str()), 0);
  try {
    (void)JobLock::acquire(dir.path(), ".swapcoord.lock", 0, "job 'x', rank 0");
    ADD_FAILURE() << "a symbolic link was followed";
  } catch (const SystemError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("symbolic link"));
  }
  EXPECT_EQ(read_text(dir.file("victim")), "precious");
}

}  // namespace
}  // namespace swapcoord
