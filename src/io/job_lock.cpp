#include "swapcoord/io/job_lock.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"
#include "swapcoord/common/host.hpp"

namespace swapcoord {
namespace {

// Byte `slot` is locked; its record lives at kRecordBase + slot * kRecordBytes (a sparse
// file: 4,096 ranks make 1 MiB of mostly holes).
constexpr std::uint64_t kRecordBase = 4096;
constexpr std::uint64_t kRecordBytes = 256;

std::uint64_t record_offset(std::uint32_t slot) { return kRecordBase + std::uint64_t{slot} * kRecordBytes; }

std::string read_record(int fd, std::uint32_t slot) {
  char buffer[kRecordBytes] = {};
  const ssize_t n = ::pread(fd, buffer, sizeof buffer - 1, static_cast<off_t>(record_offset(slot)));
  if (n <= 0) return {};
  return std::string(buffer, ::strnlen(buffer, static_cast<std::size_t>(n)));
}


}  // namespace

JobLock JobLock::acquire(const std::string& dir, std::string_view name, std::uint32_t slot, std::string_view what) {
  JobLock lock;
  lock._path = fmt::format("{}/{}", dir, name);
  lock._slot = slot;
  lock._fd = UniqueFd(::open(lock._path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!lock._fd) {
    const int err = errno;
    throw SystemError(fmt::format("{}: cannot open the lock file '{}'{}", what, lock._path,
                                  err == ELOOP ? " (it is a symbolic link)" : ""), err);
  }
  struct stat st {};
  if (::fstat(lock._fd.get(), &st) != 0)
    throw SystemError(fmt::format("{}: cannot stat the lock file '{}'", what, lock._path), errno);
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
    throw Error(fmt::format("{}: the lock file '{}' is not a regular file of this user (uid {}, owner uid {})", what,
                            lock._path, ::geteuid(), st.st_uid));
  struct flock range {};
  range.l_type = F_WRLCK;
  range.l_whence = SEEK_SET;
  range.l_start = static_cast<off_t>(slot);
  range.l_len = 1;
  if (::fcntl(lock._fd.get(), F_OFD_SETLK, &range) != 0) {
    const int err = errno;
    if (err != EAGAIN && err != EACCES)
      throw SystemError(fmt::format("{}: cannot lock '{}'", what, lock._path), err);
    const std::string holder = read_record(lock._fd.get(), slot);
    throw Error(fmt::format("{}: another job is using these files: the lock '{}' is held by {}; wait for it to end, "
                            "or give this job another name (--job) or other roots", what, lock._path,
                            holder.empty() ? std::string("a process that has not said who it is yet") : holder));
  }
  lock._took_over = read_record(lock._fd.get(), slot);
  const std::string record = fmt::format("pid {} on host {} since {} ({})", ::getpid(), host_name(), utc_now(), what);
  char buffer[kRecordBytes] = {};
  std::memcpy(buffer, record.data(), std::min(record.size(), sizeof buffer - 1));
  if (::pwrite(lock._fd.get(), buffer, sizeof buffer, static_cast<off_t>(record_offset(slot))) !=
      static_cast<ssize_t>(sizeof buffer))
    throw SystemError(fmt::format("{}: cannot write the lock record into '{}'", what, lock._path), errno);
  return lock;
}

JobLock& JobLock::operator=(JobLock&& other) noexcept {
  if (this != &other) {
    release();
    _path = std::move(other._path);
    _fd = std::move(other._fd);
    _slot = other._slot;
    _took_over = std::move(other._took_over);
  }
  return *this;
}

JobLock::~JobLock() { release(); }

void JobLock::release() noexcept {
  if (!_fd) return;
  char zeros[kRecordBytes] = {};
  (void)::pwrite(_fd.get(), zeros, sizeof zeros, static_cast<off_t>(record_offset(_slot)));
  _fd.reset();
}

}  // namespace swapcoord
