// swapcoord: one executable, one subcommand per job: `run` (the main job, under mpirun)
// `verify` and `inspect` (catalogs), `bench` and `tune`.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/config.hpp"

int main(int argc, char** argv) {
  using namespace swapcoord;
  CLI::App app{"swapcoord " SWAPCOORD_VERSION
               ": tensor swapping between memory and NVMe, coordinated across MPI ranks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", SWAPCOORD_VERSION);
  // --log-level is accepted before the subcommand and after it (`swapcoord run
  // --log-level debug ...`); given in both places, the subcommand's wins.
  const char* level_help = "debug|info|warn|error|off";
  std::string level = "info";
  app.add_option("--log-level", level, level_help)->capture_default_str();

  app::BenchOptions bench;
  app::add_bench_command(app, bench);
  app::BenchOptions tune;
  app::add_tune_command(app, tune);
  const auto run = app::add_run_command(app);
  const auto verify = app::add_verify_command(app);
  const auto inspect = app::add_inspect_command(app);
  std::string sub_level;
  for (CLI::App* sub : app.get_subcommands({}))
    sub->add_option("--log-level", sub_level, level_help)->default_str(level);

  const std::vector<std::string> args(argv, argv + argc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // `swapcoord frobnicate`: CLI11 would say only "A subcommand is required".
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && app.get_subcommands().empty() &&
        !app.remaining().empty()) {
      std::fprintf(stderr, "unknown subcommand '%s' (known: run, verify, inspect, bench, tune)\n",
                   app.remaining().front().c_str());
      return app::kExitError;
    }
    const int rc = app.exit(e);
    return rc == 0 ? app::kExitOk : app::kExitError;
  }
  try {
    log::set_level(log::parse_level(sub_level.empty() ? level : sub_level));
    if (app.got_subcommand("bench")) return app::run_bench(bench, args);
    if (app.got_subcommand("tune")) return app::run_bench(tune, args);
    if (app.got_subcommand("run")) return app::run_job(*run, args);
    if (app.got_subcommand("verify")) return app::run_verify(*verify, args);
    if (app.got_subcommand("inspect")) return app::run_inspect(*inspect);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank 0@%s: %s\n", app::host_name().c_str(), e.what());
    return app::kExitError;
  }
  return app::kExitError;
}
