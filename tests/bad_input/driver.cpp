#include "driver.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "swapcoord/catalog/catalog.hpp"

namespace swapcoord::bad_input {
namespace fs = std::filesystem;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string quoted(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$*?;&|<>(){}") == std::string::npos;
    out += plain ? a : "'" + a + "'";
  }
  return out;
}

// Children: leak checking off, sanitizer exit code 86 (never 1 or 2), MPI as root allowed.
void child_environment() {
  auto append = [](const char* name, const char* more) {
    const char* old = std::getenv(name);
    const std::string value = old && *old ? std::string(old) + ":" + more : std::string(more);
    ::setenv(name, value.c_str(), 1);
  };
  append("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1:exitcode=86");
  append("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1:exitcode=86");
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
}

// fork + exec with stdout and stderr to files; the child leads its own process group.
pid_t spawn(const std::vector<std::string>& argv, const std::string& cwd, const std::string& out,
            const std::string& err) {
  static const bool once = (child_environment(), true);
  (void)once;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (o < 0 || e < 0 || in < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0 || ::dup2(in, 0) < 0 ||
        ::chdir(cwd.c_str()) != 0)
      ::_exit(127);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  if (pid > 0) ::setpgid(pid, pid);  // also here: no race with the kill below
  return pid;
}

}  // namespace

Result run_command(const std::vector<std::string>& argv, const std::string& cwd, int timeout_s) {
  Result r;
  r.command = quoted(argv);
  static int counter = 0;
  const std::string base = fs::path(cwd) / (".cmd" + std::to_string(counter++));
  const pid_t pid = spawn(argv, cwd, base + ".out", base + ".err");
  if (pid < 0) {
    r.err = std::string("fork failed: ") + std::strerror(errno);
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(-pid, SIGKILL);  // what the command left behind in its group (mpiexec's daemons)
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

pid_t start_background(Work& w, const std::vector<std::string>& argv, const std::string& name) {
  const pid_t pid = spawn(argv, w.dir, w.path(name + ".out"), w.path(name + ".err"));
  if (pid > 0) w.background.push_back(pid);
  return pid;
}

const std::string& app() {
  static const std::string path = SWAPCOORD_APP;
  return path;
}

std::vector<std::string> mpiexec(int ranks) {
  std::vector<std::string> out{SWAPCOORD_MPIEXEC, "-n", std::to_string(ranks)};
  std::istringstream flags(SWAPCOORD_MPIEXEC_FLAGS);
  for (std::string flag; flags >> flag;) out.push_back(flag);
  return out;
}

std::string tests_dir() { return SWAPCOORD_TESTS_DIR; }

// ---- files -------------------------------------------------------------------------------

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

void make_fifo(const std::string& path) {
  fs::remove_all(path);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path << ": " << std::strerror(errno);
}

void make_directory(const std::string& path) {
  fs::remove_all(path);
  fs::create_directories(path);
}

void truncate_file(const std::string& path, std::uint64_t size) {
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size)), 0) << path << ": " << std::strerror(errno);
}

void flip_byte(const std::string& path, std::uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  ASSERT_TRUE(f.get(byte)) << path << " has no byte at " << offset;
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(~byte));
  ASSERT_TRUE(f.good()) << path;
}

void copy_tree(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  fs::copy(from, to, fs::copy_options::recursive);
}

// ---- a committed job ---------------------------------------------------------------------

std::vector<std::string> job_args(const Work& w) {
  return {"--roots", w.path("root"), "--tensors", w.path("model.json"), "--swap", "params", "--steps", "0",
          "--buffer-size", "64k", "--phase-timeout", "60"};
}

void prepare_job(Work& w, int ranks, const std::vector<std::string>& extra) {
  if (!fs::exists(w.path("model.json"))) write_file(w.path("model.json"), kModel);
  std::vector<std::string> argv = ranks > 0 ? mpiexec(ranks) : std::vector<std::string>{};
  argv.push_back(app());
  argv.push_back("run");
  for (const auto& a : job_args(w)) argv.push_back(a);
  for (const auto& a : extra) argv.push_back(a);
  const Result r = run_command(argv, w.dir, 120);
  ASSERT_EQ(r.exit_code, 0) << "the job that prepares this case failed: " << r.command << "\n--- stdout\n"
                            << r.out << "\n--- stderr\n" << r.err;
  ASSERT_TRUE(fs::is_regular_file(catalog_of(w))) << "no catalog after " << r.command;
}

std::string catalog_of(const Work& w) { return w.path("root/swapcoord/catalog.h5"); }
std::string slab_of(const Work& w, int rank) {
  return w.path("root/swapcoord/rank-" + std::to_string(rank) + "/slot-0.swp");
}

// ---- catalog edits ----------------------------------------------------------------------

namespace {

// Every row of `dataset` as stored, one column changed by `change(bytes, member type)`.
void edit_column(const std::string& catalog, const char* dataset, std::size_t row, const char* column,
                 const std::function<void(char*, hid_t)>& change) {
  const hid_t f = H5Fopen(catalog.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0) << catalog;
  const hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
  ASSERT_GE(d, 0) << dataset;
  const hid_t type = H5Dget_type(d);
  const hid_t space = H5Dget_space(d);
  const auto rows = static_cast<std::size_t>(H5Sget_simple_extent_npoints(space));
  ASSERT_LT(row, rows) << dataset << " has " << rows << " rows";
  const std::size_t record = H5Tget_size(type);
  std::vector<char> raw(rows * record);
  ASSERT_GE(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()), 0);
  const int member = H5Tget_member_index(type, column);
  ASSERT_GE(member, 0) << dataset << " has no column " << column;
  const hid_t member_type = H5Tget_member_type(type, static_cast<unsigned>(member));
  change(raw.data() + row * record + H5Tget_member_offset(type, static_cast<unsigned>(member)), member_type);
  ASSERT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()), 0);
  H5Tclose(member_type);
  H5Sclose(space);
  H5Tclose(type);
  H5Dclose(d);
  ASSERT_GE(H5Fclose(f), 0);
  seal_catalog(catalog);  // edited on purpose: a fresh checksum trailer
}

}  // namespace

void set_catalog_column(const std::string& catalog, const char* dataset, std::size_t row, const char* column,
                        std::uint64_t value) {
  edit_column(catalog, dataset, row, column, [&](char* at, hid_t type) {
    ASSERT_EQ(H5Tget_class(type), H5T_INTEGER) << column;
    const std::size_t size = H5Tget_size(type);  // little-endian, as written on this machine
    std::memcpy(at, &value, std::min(size, sizeof value));
  });
}

void set_catalog_column(const std::string& catalog, const char* dataset, std::size_t row, const char* column,
                        const std::string& value) {
  edit_column(catalog, dataset, row, column, [&](char* at, hid_t type) {
    ASSERT_EQ(H5Tget_class(type), H5T_STRING) << column;
    const std::size_t size = H5Tget_size(type);
    ASSERT_LT(value.size(), size) << column;
    std::memset(at, 0, size);
    std::memcpy(at, value.data(), value.size());
  });
}

void set_catalog_attribute(const std::string& catalog, const char* name, std::int32_t value) {
  const hid_t f = H5Fopen(catalog.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0) << catalog;
  const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  ASSERT_GE(a, 0) << name;
  ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT32, &value), 0);
  H5Aclose(a);
  ASSERT_GE(H5Fclose(f), 0);
  seal_catalog(catalog);
}

void set_catalog_attribute(const std::string& catalog, const char* name, const std::string& value) {
  const hid_t f = H5Fopen(catalog.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0) << catalog;
  ASSERT_GE(H5Adelete(f, name), 0) << name;  // a string of another length: a new attribute
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size() + 1);
  H5Tset_strpad(type, H5T_STR_NULLTERM);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(a, 0) << name;
  ASSERT_GE(H5Awrite(a, type, value.c_str()), 0);
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(type);
  ASSERT_GE(H5Fclose(f), 0);
  seal_catalog(catalog);
}

}  // namespace swapcoord::bad_input
