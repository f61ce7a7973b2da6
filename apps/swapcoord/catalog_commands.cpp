// swapcoord verify / swapcoord inspect: reading a catalog (the checkpointable swap
// metadata written by `swapcoord run`).
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/catalog/catalog_paths.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/io/io_engine.hpp"

namespace swapcoord::app {

struct CatalogCli {
  std::string catalog;
  std::vector<std::string> roots;
  std::string backend = "libaio";
  std::string direct = "auto";
  std::string buffer_size = "16M";
  bool json = false;
};

namespace {

std::uint64_t data_bytes(const Catalog& c) {
  std::uint64_t total = 0;
  for (const auto& r : c.tensors) total += r.aligned_bytes;
  return total;
}

}  // namespace

std::shared_ptr<CatalogCli> add_verify_command(CLI::App& app) {
  auto cli = std::make_shared<CatalogCli>();
  auto* cmd = app.add_subcommand("verify", "Read every piece a catalog lists and compare its checksum "
                                           "(in parallel over the ranks it is launched with)");
  cmd->add_option("catalog", cli->catalog, "The catalog file (<root>/<job>/catalog.h5)")->required();
  cmd->add_option("--roots", cli->roots,
                  "The job's swap roots (comma-separated); the catalog's files must lie in them. Default: the "
                  "catalog's own roots, when each is a directory of this user that others cannot write")
      ->delimiter(',');
  cmd->add_option("--backend", cli->backend, "I/O backend")->capture_default_str();
  cmd->add_option("--direct", cli->direct, "O_DIRECT: auto|on|off")->capture_default_str();
  cmd->add_option("--buffer-size", cli->buffer_size, "Bytes read per request")->capture_default_str();
  return cli;
}

std::shared_ptr<CatalogCli> add_inspect_command(CLI::App& app) {
  auto cli = std::make_shared<CatalogCli>();
  auto* cmd = app.add_subcommand("inspect", "Summarise a catalog: epoch, sizes per rank and node, files");
  cmd->add_option("catalog", cli->catalog, "The catalog file (<root>/<job>/catalog.h5)")->required();
  cmd->add_flag("--json", cli->json, "Print the summary as JSON");
  return cli;
}

int run_verify(const CatalogCli& cli, const std::vector<std::string>& argv) {
  MpiSession mpi(nullptr, nullptr);
  MPI_Comm world = MPI_COMM_WORLD;
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  Catalog catalog;
  std::unique_ptr<IoEngine> engine;
  std::size_t buffer_bytes = 0;
  std::string problem;
  try {
    buffer_bytes = parse_size(cli.buffer_size, "--buffer-size");
    AioConfig aio;
    aio.direct = parse_direct_mode(cli.direct);
    engine = make_engine(cli.backend, aio);
  } catch (const std::exception& e) {
    problem = e.what();
  }
  const auto [bad, message] = first_message(world, problem);
  if (bad >= 0) {
    if (rank == 0) std::fprintf(stderr, "rank %d@%s: %s\n", bad, host_name().c_str(), message.c_str());
    return kExitError;
  }
  try {
    catalog = load_catalog_collective(world, cli.catalog);  // rank 0 reads it, all get it
  } catch (const MpiError&) {
    throw;
  } catch (const Error& e) {
    if (rank == 0) std::fprintf(stderr, "rank 0@%s: %s\n", host_name().c_str(), e.what());
    return kExitError;
  }
  std::vector<std::string> roots;  // where this rank may read: an edited catalog cannot point elsewhere
  try {
    roots = readable_catalog_roots(catalog, cli.roots);
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (const auto [bad_root, root_message] = first_message(world, problem); bad_root >= 0) {
    if (rank == 0) std::fprintf(stderr, "rank %d: %s\n", bad_root, root_message.c_str());
    return kExitError;
  }
  const auto start = std::chrono::steady_clock::now();
  // Swap roots are node-local: each row is read by a rank on the node that holds it.
  const CatalogAssignment assigned = assign_catalog_rows(world, catalog, roots);
  CatalogCheck check =
      verify_catalog_rows(catalog, *engine, buffer_bytes, assigned.rows, parse_direct_mode(cli.direct), roots);
  check.pieces += assigned.unreachable.pieces;
  check.mismatches += assigned.unreachable.mismatches;
  check.notes.insert(check.notes.begin(), assigned.unreachable.notes.begin(), assigned.unreachable.notes.end());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Rank 0 gathers every rank's figures and first notes.
  struct Summary {
    std::uint64_t pieces, bytes, mismatches;
    double seconds;
    char notes[2048];
  } mine{check.pieces, check.bytes, check.mismatches, seconds, {}};
  const std::string notes = join(check.notes, "\n");
  std::memcpy(mine.notes, notes.data(), std::min(notes.size(), sizeof mine.notes - 1));
  std::vector<Summary> all(static_cast<std::size_t>(rank == 0 ? size : 1));
  mpi_check(MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0, world), "MPI_Gather (verify)");
  std::uint64_t mismatches = check.mismatches;
  mpi_check(MPI_Allreduce(&check.mismatches, &mismatches, 1, MPI_UINT64_T, MPI_SUM, world), "MPI_Allreduce (verify)");
  if (rank == 0) {
    std::printf("# swapcoord verify %s (%s)\n# command: %s\n", SWAPCOORD_VERSION, mpi_library_version().c_str(),
                join(argv, " ").c_str());
    std::printf("# catalog: %s: job %s, epoch %d (slot %d of %d), written by %d ranks on %d nodes, %zu pieces, "
                "%zu files, created %s\n", cli.catalog.c_str(), catalog.job.c_str(), catalog.epoch, catalog.slot,
                catalog.slots, catalog.world_size, catalog.node_count, catalog.tensors.size(), catalog.files.size(),
                catalog.created.c_str());
    std::printf("# checked by %d ranks, backend %s\n#\n# %5s %8s %14s %10s %9s %9s\n# %5s %8s %14s %10s %9s %9s\n",
                size, cli.backend.c_str(), "rank", "pieces", "bytes", "mismatches", "time", "read", "", "", "(B)", "",
                "(s)", "(GB/s)");
    std::uint64_t pieces = 0, bytes = 0;
    double slowest = 0;
    for (int r = 0; r < size; ++r) {
      const Summary& s = all[static_cast<std::size_t>(r)];
      std::printf("  %5d %8llu %14llu %10llu %9.3f %9.2f\n", r, static_cast<unsigned long long>(s.pieces),
                  static_cast<unsigned long long>(s.bytes), static_cast<unsigned long long>(s.mismatches), s.seconds,
                  s.seconds > 0 ? static_cast<double>(s.bytes) / s.seconds / 1e9 : 0.0);
      pieces += s.pieces;
      bytes += s.bytes;
      slowest = std::max(slowest, s.seconds);
    }
    for (int r = 0; r < size; ++r) {
      const Summary& s = all[static_cast<std::size_t>(r)];
      if (s.notes[0] != '\0') std::printf("# mismatch (rank %d): %s\n", r, s.notes);
    }
    std::printf("#\n# Checked %llu pieces (%llu bytes) in %.3f s: %llu mismatches %s\n#\n",
                static_cast<unsigned long long>(pieces), static_cast<unsigned long long>(bytes), slowest,
                static_cast<unsigned long long>(mismatches), mismatches == 0 ? "OK" : "ERROR");
  }
  return mismatches == 0 ? kExitOk : kExitWrongData;
}

int run_inspect(const CatalogCli& cli) {
  const Catalog c = load_catalog(cli.catalog);
  std::map<int, std::uint64_t> per_rank, per_node;
  for (const auto& r : c.tensors) {
    per_rank[r.owner] += r.aligned_bytes;
    per_node[r.node] += r.aligned_bytes;
  }
  if (cli.json) {
    nlohmann::json files = nlohmann::json::array(), ranks = nlohmann::json::array(), nodes = nlohmann::json::array();
    for (std::uint32_t i = 0; i < c.files.size(); ++i)
      files.push_back({{"path", c.file_path(i)}, {"owner", c.files[i].owner}, {"size", c.files[i].size}});
    for (const auto& r : c.ranks)
      ranks.push_back({{"rank", r.rank}, {"node", r.node}, {"host", r.host}, {"local_rank", r.local_rank},
                       {"bytes", per_rank[r.rank]}, {"swap_out_s", r.swap_out_s}, {"swap_in_s", r.swap_in_s}});
    for (int n = 0; n < c.node_count; ++n) nodes.push_back({{"node", n}, {"bytes", per_node[n]}});
    const nlohmann::json doc{{"catalog", cli.catalog}, {"format", kCatalogFormat}, {"version", c.version},
                             {"job", c.job}, {"epoch", c.epoch}, {"slot", c.slot}, {"slots", c.slots},
                             {"world_size", c.world_size}, {"node_count", c.node_count}, {"layout", c.layout},
                             {"policy", c.policy}, {"alignment", c.alignment},
                             {"plan_fingerprint", c.plan_fingerprint}, {"created", c.created},
                             {"checksum", checksum_name(c.checksum)},
                             {"pieces", c.tensors.size()}, {"bytes", data_bytes(c)}, {"ranks", ranks},
                             {"nodes", nodes}, {"files", files},
                             {"config", nlohmann::json::parse(c.config_json, nullptr, false)}};
    std::printf("%s\n", doc.dump(2).c_str());
    return kExitOk;
  }
  std::printf("catalog %s (format %s version %d)\n", cli.catalog.c_str(), std::string(kCatalogFormat).c_str(), c.version);
  std::printf("  job %s, epoch %d in slot %d of %d, created %s\n", c.job.c_str(), c.epoch, c.slot, c.slots, c.created.c_str());
  std::printf("  %d ranks on %d nodes, policy %s, layout %s, alignment %llu, plan fingerprint %s\n", c.world_size,
              c.node_count, c.policy.c_str(), c.layout.c_str(), static_cast<unsigned long long>(c.alignment),
              c.plan_fingerprint.c_str());
  std::printf("  %zu pieces, %.1f MB on disk, %zu files, checksums %s\n", c.tensors.size(),
              static_cast<double>(data_bytes(c)) / 1e6, c.files.size(), std::string(checksum_name(c.checksum)).c_str());
  std::printf("  per node:\n");
  for (int n = 0; n < c.node_count; ++n)
    std::printf("    node %-4d %12.1f MB\n", n, static_cast<double>(per_node[n]) / 1e6);
  std::printf("  per rank:\n");
  for (const auto& r : c.ranks)
    std::printf("    rank %-4d node %-4d %-20s %12.1f MB  last swap-out %.3f s, swap-in %.3f s\n", r.rank, r.node,
                r.host.c_str(), static_cast<double>(per_rank[r.rank]) / 1e6, r.swap_out_s, r.swap_in_s);
  std::printf("  files:\n");
  for (std::uint32_t i = 0; i < c.files.size(); ++i)
    std::printf("    %-60s %14llu B (rank %d)\n", c.file_path(i).c_str(), static_cast<unsigned long long>(c.files[i].size),
                c.files[i].owner);
  return kExitOk;
}

}  // namespace swapcoord::app
