#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace swapcoord::app {

struct BenchOptions {
  std::string dir = ".";
  std::string size = "1G";
  std::vector<std::string> backends{"libaio"};
  std::vector<std::string> block_sizes{"1M"};
  std::vector<std::size_t> queue_depths{32};
  std::vector<std::size_t> threads{1};
  std::string direct = "auto";
  bool single_submit = false;
  bool no_overlap_events = false;
  int iterations = 3;
  std::string json;
  bool keep = false;
  std::string device = "cpu";       // cuda: also device-to-file and file-to-device through staging
  std::size_t buffer_count = 4;     // --device cuda: pinned staging buffers
  std::string buffer_size = "16M";  // ... of this size each
  bool tune = false;                // `swapcoord tune`: pick the best and print it as an aio section
  std::string write_config;         // tune: also write that section to this file
};

void add_bench_command(CLI::App& app, BenchOptions& options);
// `swapcoord tune`: bench's sweep with wider defaults, then the best settings.
void add_tune_command(CLI::App& app, BenchOptions& options);
// Returns the exit code (kExitOk, kExitWrongData); throws on errors.
int run_bench(const BenchOptions& options, const std::vector<std::string>& argv);

}  // namespace swapcoord::app

namespace swapcoord::app {

struct RunCli;  // the flags of `swapcoord run` (run.cpp)

std::shared_ptr<RunCli> add_run_command(CLI::App& app);
// Initialises MPI; collective over MPI_COMM_WORLD; returns the exit code.
int run_job(const RunCli& cli, const std::vector<std::string>& argv);

struct CatalogCli;  // the flags of `swapcoord verify` and `inspect` (catalog_commands.cpp)
std::shared_ptr<CatalogCli> add_verify_command(CLI::App& app);
std::shared_ptr<CatalogCli> add_inspect_command(CLI::App& app);
// verify: collective over MPI_COMM_WORLD (initialises MPI); inspect: no MPI.
int run_verify(const CatalogCli& cli, const std::vector<std::string>& argv);
int run_inspect(const CatalogCli& cli);

}  // namespace swapcoord::app
