#pragma once
// The driver of the bad-input table (bad_input_test.cpp): runs the swapcoord executable as a
// user would, in a fresh directory per case, and prepares what a case damages (a committed
// job, a catalog edited on purpose, a FIFO where a file should be).
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace swapcoord::bad_input {

// One case's directory and what its setup started.
struct Work {
  std::string dir;                          // empty at the start of the case, removed after it
  std::map<std::string, std::string> vars;  // @NAME@ replacements for args and patterns (W, HOST, ...)
  std::vector<pid_t> background;            // process groups killed at the end of the case

  std::string path(const std::string& relative) const { return dir + "/" + relative; }
};

// What a command did.
struct Result {
  int exit_code = -1;   // when it exited
  int signal = 0;       // when a signal ended it
  bool timed_out = false;
  std::string out, err;
  std::string command;  // as a shell would read it, for messages
};

// Runs argv (argv[0] looked up in PATH) in `cwd` with stdout and stderr captured; after
// `timeout_s` the process group is killed (a hang is a failure, not a stuck test).
// Children get leak checking off (MPI's components leave allocations LeakSanitizer cannot
// attribute, as in tests/mpi) and sanitizer exit code 86, so that a sanitizer report can
// never pass for exit code 1 or 2.
Result run_command(const std::vector<std::string>& argv, const std::string& cwd, int timeout_s = 60);

// Starts argv in the background (its own process group, output to files in `w.dir`);
// Work::background holds it and the case's end kills it.
pid_t start_background(Work& w, const std::vector<std::string>& argv, const std::string& name);

// The swapcoord executable, mpiexec and its flags (from CMake).
const std::string& app();
std::vector<std::string> mpiexec(int ranks);
// tests/ in the source tree (for shared scripts such as tests/mpi/run/rank1_other_steps.sh).
std::string tests_dir();

// ---- files -------------------------------------------------------------------------------

void write_file(const std::string& path, const std::string& text);  // creates parent dirs
void make_fifo(const std::string& path);                            // replaces what is there
void make_directory(const std::string& path);                       // replaces what is there
void truncate_file(const std::string& path, std::uint64_t size);
void flip_byte(const std::string& path, std::uint64_t offset);      // the byte's complement
void copy_tree(const std::string& from, const std::string& to);

// ---- a committed job ---------------------------------------------------------------------

// The small model of the prepared job (tensors in this order; 1 rank, slab layout, so that
// rank-0/slot-0.swp holds them at offsets 0, 4096 and 12288).
inline constexpr const char* kModel = R"({"tensors": [
  {"name": "layer0.w", "shape": [1000], "dtype": "f32"},
  {"name": "layer0.b", "shape": [3000], "dtype": "f16"},
  {"name": "layer1.w", "shape": [50, 100], "dtype": "f32"}
]})";
// The arguments of that job (after "run"): W/model.json on root W/root, 0 steps (epoch 0
// committed in slot 0), small buffers.
std::vector<std::string> job_args(const Work& w);
// Runs the job at `ranks` ranks (0: without mpiexec) and requires exit code 0; afterwards
// W/root/swapcoord/catalog.h5 holds epoch 0 and W/root/swapcoord/rank-0/slot-0.swp its data.
void prepare_job(Work& w, int ranks = 0, const std::vector<std::string>& extra = {});
std::string catalog_of(const Work& w);            // W/root/swapcoord/catalog.h5
std::string slab_of(const Work& w, int rank = 0);  // W/root/swapcoord/rank-<rank>/slot-0.swp

// Edits a catalog on purpose (HDF5), then reseals it (seal_catalog), as a tool using h5py
// would: the loader's trailer check passes and its other checks must find the problem.
void set_catalog_column(const std::string& catalog, const char* dataset, std::size_t row, const char* column,
                        std::uint64_t value);
void set_catalog_column(const std::string& catalog, const char* dataset, std::size_t row, const char* column,
                        const std::string& value);
void set_catalog_attribute(const std::string& catalog, const char* name, std::int32_t value);
void set_catalog_attribute(const std::string& catalog, const char* name, const std::string& value);

}  // namespace swapcoord::bad_input
