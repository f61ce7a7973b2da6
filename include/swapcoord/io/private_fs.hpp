#pragma once
// The directories and small files a job makes: never through a symbolic link, directories
// 0700 and files 0600 whatever the umask, each new entry made durable in its parent
// directory (fsync) before anything that names it is committed.
#include <string>
#include <string_view>

#include "swapcoord/io/unique_fd.hpp"

namespace swapcoord {

// What is wrong with a directory the user named (a swap root, the catalog directory), or
// "": it must be a directory owned by this user and not writable by others (a directory
// another user can write or own lets that user plant links and files in the job's place).
// `what` names the setting in the message ("swap root", "swap.catalog_dir").
std::string check_private_dir(const std::string& path, std::string_view what);

// `mkdir -p` with mode 0700 for every directory it makes (whatever the umask); the parent of
// each one made is fsynced. Existing components are left as they are. Throws SystemError
// naming the component.
void make_private_dirs(const std::string& path, std::string_view what);

// Opens the directory `relative` (one or more '/'-separated components) below the existing
// directory `base`, one component at a time with openat(O_NOFOLLOW): a symbolic link in
// its place is refused, a missing component is made 0700 and its parent fsynced, and each
// must be owned by this user and not writable by others. Returns the last directory open.
UniqueFd open_private_subdirs(const std::string& base, const std::string& relative, std::string_view what);

// fsync of a directory (its entries are durable afterwards). Throws SystemError.
void fsync_directory(const std::string& path);
void fsync_fd(int fd, const std::string& path);

// Writes `text` to `path`, created 0600 (whatever the umask) and never through a symbolic
// link; an existing file is replaced (truncated). Throws SystemError naming the path.
void write_private_file(const std::string& path, std::string_view text);

}  // namespace swapcoord
