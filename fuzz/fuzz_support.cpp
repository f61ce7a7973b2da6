#include "fuzz_support.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "swapcoord/common/log.hpp"

namespace swapcoord::fuzz {

std::string temp_dir() {
  const char* dir = std::getenv("TMPDIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string("/tmp");
}

TempFile::TempFile(const void* data, std::size_t size) {
  std::string pattern = temp_dir() + "/swapcoord-fuzz-XXXXXX";
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) {
    std::perror("mkstemp");
    std::abort();  // the environment, not the input: stop the run
  }
  _path = name.data();
  const char* from = static_cast<const char*>(data);
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, from + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::perror("write");
      ::close(fd);
      ::unlink(_path.c_str());
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

TempFile::~TempFile() { ::unlink(_path.c_str()); }

void finding(std::string_view target, std::string_view what) {
  std::fprintf(stderr, "%.*s: FINDING: %.*s\n", static_cast<int>(target.size()), target.data(),
               static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

void quiet_log() { log::set_level(log::Level::off); }

}  // namespace swapcoord::fuzz

// Defaults for hand runs (environment variables still override them). Open MPI and HDF5
// keep allocations until exit by design (as tests/lsan.supp says for the asan preset);
// leaks in swapcoord's own code are not suppressed.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libmpi.so\n"
         "leak:libopen-pal.so\n"
         "leak:libopen-rte.so\n"
         "leak:libhwloc.so\n"
         "leak:libpmix.so\n"
         "leak:libevent\n"
         "leak:mca_\n"
         "leak:libhdf5\n";
}
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }
