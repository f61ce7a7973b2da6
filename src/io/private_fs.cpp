#include "swapcoord/io/private_fs.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord {
namespace {

std::string user_name(uid_t uid) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found != nullptr)
    return fmt::format("uid {} ({})", uid, found->pw_name);
  return fmt::format("uid {}", uid);
}

// What is wrong with an open or stat'ed directory, or "".
std::string check_owner(const struct stat& st, const std::string& path, std::string_view what) {
  if (!S_ISDIR(st.st_mode)) return fmt::format("{} '{}' is not a directory", what, path);
  if (st.st_uid != ::geteuid())
    return fmt::format("{} '{}' is owned by {}, not by this user ({}): another user could replace the job's "
                       "files there; use a directory of your own", what, path, user_name(st.st_uid),
                       user_name(::geteuid()));
  if ((st.st_mode & S_IWOTH) != 0)
    return fmt::format("{} '{}' is writable by every user (mode {:04o}): another user could plant links and files "
                       "there; use a directory of your own inside it (mode 0700) or chmod o-w it", what, path,
                       st.st_mode & 07777);
  return {};
}

UniqueFd open_directory(const std::string& path, int flags, std::string_view what) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | flags));
  if (!fd) throw SystemError(fmt::format("{}: cannot open directory '{}'", what, path), errno);
  return fd;
}

}  // namespace

std::string check_private_dir(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno_message(fmt::format("{} '{}' cannot be used", what, path), errno);
  if (S_ISLNK(st.st_mode) && st.st_uid != ::geteuid() && st.st_uid != 0)
    return fmt::format("{} '{}' is a symbolic link owned by {}: another user chose where it points; give the "
                       "directory itself", what, path, user_name(st.st_uid));
  if (::stat(path.c_str(), &st) != 0) return errno_message(fmt::format("{} '{}' cannot be used", what, path), errno);
  return check_owner(st, path, what);
}

void fsync_fd(int fd, const std::string& path) {
  while (::fsync(fd) != 0)
    if (errno != EINTR) throw SystemError(fmt::format("fsync of '{}' failed", path), errno);
}

void fsync_directory(const std::string& path) {
  const UniqueFd fd = open_directory(path, 0, "fsync");
  fsync_fd(fd.get(), path);
}

void make_private_dirs(const std::string& path, std::string_view what) {
  const std::filesystem::path full = std::filesystem::absolute(path).lexically_normal();
  std::filesystem::path prefix;
  for (const auto& part : full) {
    if (part.empty()) continue;
    prefix /= part;
    const std::string here = prefix.string();
    struct stat st {};
    if (::stat(here.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) throw SystemError(fmt::format("{}: cannot use '{}'", what, here), ENOTDIR);
      continue;
    }
    if (errno != ENOENT) throw SystemError(fmt::format("{}: cannot use '{}'", what, here), errno);
    if (::mkdir(here.c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;  // made by someone else meanwhile: checked by the caller
      throw SystemError(fmt::format("{}: cannot create directory '{}'", what, here), errno);
    }
    const UniqueFd made = open_directory(here, O_NOFOLLOW, what);
    if (::fchmod(made.get(), 0700) != 0) throw SystemError(fmt::format("{}: chmod 0700 '{}'", what, here), errno);
    fsync_directory(prefix.parent_path().string());
  }
}

UniqueFd open_private_subdirs(const std::string& base, const std::string& relative, std::string_view what) {
  UniqueFd dir = open_directory(base, 0, what);
  std::string shown = base;
  std::size_t begin = 0;
  while (begin <= relative.size()) {
    const std::size_t end = std::min(relative.find('/', begin), relative.size());
    const std::string name = relative.substr(begin, end - begin);
    begin = end + 1;
    if (name.empty() || name == ".") continue;
    if (name == "..") throw Error(fmt::format("{}: '{}' leaves '{}' ('..')", what, relative, base));
    shown += "/" + name;
    const bool made = ::mkdirat(dir.get(), name.c_str(), 0700) == 0;
    if (!made && errno != EEXIST) throw SystemError(fmt::format("{}: cannot create directory '{}'", what, shown), errno);
    UniqueFd next(::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) {
      const int err = errno;
      struct stat st {};
      const bool link = ::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
      if (err == ELOOP || err == ENOTDIR)
        throw Error(fmt::format("{}: '{}' is {}; swapcoord makes its own directories there and never follows a "
                                "link (remove it)", what, shown, link ? "a symbolic link" : "not a directory"));
      throw SystemError(fmt::format("{}: cannot open directory '{}'", what, shown), err);
    }
    if (made) {
      if (::fchmod(next.get(), 0700) != 0) throw SystemError(fmt::format("{}: chmod 0700 '{}'", what, shown), errno);
      fsync_fd(dir.get(), shown.substr(0, shown.size() - name.size() - 1));
    }
    struct stat st {};
    if (::fstat(next.get(), &st) != 0) throw SystemError(fmt::format("{}: cannot stat '{}'", what, shown), errno);
    if (const std::string problem = check_owner(st, shown, what); !problem.empty()) throw Error(problem);
    dir = std::move(next);
  }
  return dir;
}

void write_private_file(const std::string& path, std::string_view text) {
  const UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    const int err = errno;
    throw SystemError(fmt::format("cannot write '{}'{}", path, err == ELOOP ? " (it is a symbolic link)" : ""), err);
  }
  if (::fchmod(fd.get(), 0600) != 0) throw SystemError(fmt::format("cannot chmod 0600 '{}'", path), errno);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw SystemError(fmt::format("cannot write '{}' ({} of {} bytes written)", path, done, text.size()),
                                  n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace swapcoord
