#pragma once
// Exclusive locks that keep two jobs out of each other's files. A lock is an open file
// description lock (fcntl F_OFD_SETLK: per open file, not per process, and carried to
// the server on NFS) on one byte of a lock file; the holder writes a record (host, pid,
// start time) next to it so that the next job can name it. The kernel drops the lock of
// a process that dies; a record still there then shows that its holder did not end
// cleanly, and the new holder says that it took the lock over.
#include <cstdint>
#include <string>
#include <string_view>

#include "swapcoord/io/unique_fd.hpp"

namespace swapcoord {

class JobLock {
 public:
  // Locks byte `slot` of `<dir>/<name>` (created 0600, never through a symbolic link).
  // Throws Error when another job holds it, naming the file and the holder; `what` says
  // what is locked ("job 'x', rank 3").
  static JobLock acquire(const std::string& dir, std::string_view name, std::uint32_t slot, std::string_view what);

  JobLock() = default;
  JobLock(JobLock&&) noexcept = default;
  JobLock& operator=(JobLock&&) noexcept;
  JobLock(const JobLock&) = delete;
  JobLock& operator=(const JobLock&) = delete;
  // Clears the record and closes the file, which releases the lock.
  ~JobLock();

  const std::string& path() const noexcept { return _path; }
  // The holder whose lock this one took over ("" when the lock was free).
  const std::string& took_over() const noexcept { return _took_over; }

 private:
  void release() noexcept;

  std::string _path;
  UniqueFd _fd;
  std::uint32_t _slot = 0;
  std::string _took_over;
};

}  // namespace swapcoord
