// Catalog write and load time for a large catalog: `mpirun -np N bench_catalog [--rows R]
// [--dir D] [--repeat K]`. Every rank contributes R / N rows (sharded-style pieces of 1,000
// tensors spread over one slab file per rank), commits them (commit_catalog: the rows
// gathered on rank 0, which writes the file), then rank 0 loads and checks the whole catalog
// (load_catalog). Prints the median of K repetitions of each.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "swapcoord/catalog/catalog.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::uint64_t rows = 1000000;
  std::string dir = std::filesystem::temp_directory_path().string() + "/swapcoord-catalog-bench";
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key == "--rows") rows = std::strtoull(argv[i + 1], nullptr, 10);
    else if (key == "--dir") dir = argv[i + 1];
    else if (key == "--repeat") repeat = std::atoi(argv[i + 1]);
  }
  if (rank == 0) std::filesystem::create_directories(dir);
  MPI_Barrier(MPI_COMM_WORLD);

  using namespace swapcoord;
  constexpr std::uint32_t kTensors = 1000;
  const std::uint64_t mine = rows / static_cast<std::uint64_t>(size) + (static_cast<std::uint64_t>(rank) < rows % static_cast<std::uint64_t>(size) ? 1 : 0);
  CatalogPart part;
  part.tensors.reserve(mine);
  std::uint64_t offset = 0;
  for (std::uint64_t i = 0; i < mine; ++i) {
    CatalogRow r;
    r.id = static_cast<std::uint32_t>(i % kTensors);
    r.name = "model.layers." + std::to_string(r.id / 10) + ".mlp.weight." + std::to_string(r.id % 10);
    r.dtype = DType::f32;
    r.numel = 1024;
    r.element_offset = (i / kTensors) * 1024;
    r.shard = static_cast<std::uint32_t>(i / kTensors);
    r.shard_count = static_cast<std::uint32_t>(rows / kTensors + 1);
    r.owner = rank;
    r.file = static_cast<std::uint32_t>(rank);
    r.offset = offset;
    r.bytes = r.aligned_bytes = 4096;
    r.checksum = i * 0x9e3779b97f4a7c15ULL;
    offset += 4096;
    part.tensors.push_back(std::move(r));
  }
  part.files.push_back({"bench/rank-" + std::to_string(rank) + "/slot-0.swp", rank, 0, offset});
  if (rank == 0) part.roots.push_back({0, 0, dir});
  part.rank = {rank, 0, rank, "bench", offset, 0, 0};
  Catalog header;
  header.job = "bench";
  header.world_size = size;
  header.layout = "slab";
  header.policy = "sharded";
  header.plan_fingerprint = "0";
  header.config_json = "{}";
  header.created = "now";

  std::vector<double> writes, loads;
  for (int k = 0; k < repeat; ++k) {
    header.epoch = k;
    for (auto& r : part.tensors) r.epoch = k;
    MPI_Barrier(MPI_COMM_WORLD);
    auto start = Clock::now();
    commit_catalog(MPI_COMM_WORLD, dir, header, part);
    writes.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    if (rank == 0) {
      start = Clock::now();
      const Catalog loaded = load_catalog(dir + "/catalog.h5");
      loads.push_back(std::chrono::duration<double>(Clock::now() - start).count());
      if (loaded.tensors.size() != rows) {
        std::fprintf(stderr, "loaded %zu rows, expected %llu\n", loaded.tensors.size(), static_cast<unsigned long long>(rows));
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  if (rank == 0) {
    const auto bytes = std::filesystem::file_size(dir + "/catalog.h5");
    std::printf("# bench_catalog: %llu rows from %d ranks, catalog %.1f MB, %d repetitions (median)\n",
                static_cast<unsigned long long>(rows), size, static_cast<double>(bytes) / 1e6, repeat);
    std::printf("commit (gather to rank 0 + write + fsync + rename): %.3f s\n", median(writes));
    std::printf("load (read + checks, rank 0):                %.3f s\n", median(loads));
    std::filesystem::remove_all(dir);
  }
  MPI_Finalize();
  return 0;
}
