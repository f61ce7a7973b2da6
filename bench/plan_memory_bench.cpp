// Memory of planning per rank (coord/plan.hpp): what make_plan adds to a rank's resident
// memory beyond the caller's tensor list, at its peak and once it returns, and the time it
// takes; then the same for computing another rank's pieces on demand. Each case runs in a
// child process of its own (fork), so that one case's freed memory cannot hide another's
// peak. The job: 4,096 ranks on 512 nodes (8 per node, 2 roots each); the tensors those of
// bench_plan (1 KiB .. 64 MiB, log-uniform, half f16, half f32) or a Llama-7B's parameters
// and optimizer state.
//
//   build/release/bench/bench_plan_memory [--tensors N] [--sharded-tensors N] [--rank R]
//                                         [--all-ranks] [--json FILE]
//
// Resident memory is VmRSS from /proc/self/status after malloc_trim; the peak is VmHWM
// after resetting it (echo 5 > /proc/self/clear_refs) just before the stage. --all-ranks
// adds the same cases with a plan that holds every rank's pieces (as every rank did before
// plans were per rank), for comparison.
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "swapcoord/coord/plan.hpp"

namespace {

using namespace swapcoord;
using Clock = std::chrono::steady_clock;

constexpr int kNodes = 512;
constexpr int kRanksPerNode = 8;
constexpr int kRootsPerNode = 2;

std::vector<TensorSpec> log_uniform_tensors(std::size_t count) {
  std::mt19937_64 rng(20240601);
  std::vector<TensorSpec> tensors(count);
  for (std::size_t i = 0; i < count; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const auto bytes = static_cast<std::uint64_t>(std::exp2(10 + u * 16));  // 1 KiB .. 64 MiB
    TensorSpec& tensor = tensors[i];
    tensor.dtype = (i % 2 == 0) ? DType::f16 : DType::f32;
    const std::uint64_t numel = std::max<std::uint64_t>(1, bytes / dtype_size(tensor.dtype));
    tensor.shape = numel >= 4096 && i % 3 == 0 ? std::vector<std::uint64_t>{numel / 1024, 1024}
                                               : std::vector<std::uint64_t>{numel};
    tensor.name = "layers." + std::to_string(i / 8) + ".param." + std::to_string(i % 8);
  }
  return tensors;
}

// Llama-7B (hidden 4096, 32 layers, FFN 11008, vocabulary 32000): bf16 parameters, and
// for each an f32 master, exp_avg and exp_avg_sq, as ZeRO-Infinity offloads them.
std::vector<TensorSpec> llama_7b() {
  const std::uint64_t h = 4096, f = 11008, v = 32000;
  std::vector<std::pair<std::string, std::vector<std::uint64_t>>> params = {{"embed_tokens", {v, h}}};
  for (int l = 0; l < 32; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* w : {"q_proj", "k_proj", "v_proj", "o_proj"}) params.push_back({p + w, {h, h}});
    for (const char* w : {"gate_proj", "up_proj"}) params.push_back({p + w, {f, h}});
    params.push_back({p + "down_proj", {h, f}});
    params.push_back({p + "input_layernorm", {h}});
    params.push_back({p + "post_attention_layernorm", {h}});
  }
  params.push_back({"norm", {h}});
  params.push_back({"lm_head", {v, h}});
  std::vector<TensorSpec> tensors;
  for (const auto& [name, shape] : params) {
    tensors.push_back({name, shape, DType::bf16});
    for (const char* state : {".master", ".exp_avg", ".exp_avg_sq"}) tensors.push_back({name + state, shape, DType::f32});
  }
  return tensors;
}

std::uint64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') return std::strtoull(line.c_str() + n + 1, nullptr, 10);
  return 0;
}

double resident_mb() {
  malloc_trim(0);
  return static_cast<double>(status_kib("VmRSS")) / 1024.0;
}

bool reset_peak() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

double peak_mb() { return static_cast<double>(status_kib("VmHWM")) / 1024.0; }

struct Case {
  std::string name;
  std::function<std::vector<TensorSpec>()> tensors;
  PlanOptions options;
  int rank = 0;  // or kAllRanks
};

struct Figures {
  double list_mb = 0;            // resident with the tensor list, before planning
  double plan_peak_mb = 0;       // make_plan's peak above that
  double plan_retained_mb = 0;   // resident above that once the plan is made
  double plan_object_mb = 0;     // SwapPlan::memory_bytes
  double plan_seconds = 0;
  double compute_peak_mb = 0;    // compute_pieces of another rank: peak above the retained
  double compute_seconds = 0;
  double pieces = 0;             // held
  double all_pieces = 0;         // of every rank
  double imbalance = 0;
  double node_imbalance = 0;
  bool peak_ok = false;          // clear_refs worked (else the peaks are since start-up)
};

// Runs in the child.
Figures measure(const Case& c) {
  Figures f;
  const std::vector<TensorSpec> tensors = c.tensors();
  const PlanTopology topology = PlanTopology::uniform(kNodes, kRanksPerNode, kRootsPerNode);
  f.list_mb = resident_mb();
  f.peak_ok = reset_peak();
  auto start = Clock::now();
  const SwapPlan plan = make_plan(tensors, topology, c.options, c.rank);
  f.plan_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  f.plan_peak_mb = peak_mb() - f.list_mb;
  const double retained = resident_mb();
  f.plan_retained_mb = retained - f.list_mb;
  f.plan_object_mb = static_cast<double>(plan.memory_bytes()) / (1024.0 * 1024.0);
  f.pieces = static_cast<double>(plan.pieces.size());
  f.all_pieces = static_cast<double>(plan.rank_first_piece.back());
  f.imbalance = plan.rank_imbalance();
  f.node_imbalance = plan.node_imbalance();
  reset_peak();
  start = Clock::now();
  const int other = c.rank == kAllRanks || c.rank == 0 ? topology.world_size - 1 : 0;
  const std::vector<PlanPiece> theirs = plan.compute_pieces(other, tensors);
  f.compute_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  f.compute_peak_mb = peak_mb() - retained;
  if (theirs.size() != plan.rank_first_piece[static_cast<std::size_t>(other) + 1] -
                           plan.rank_first_piece[static_cast<std::size_t>(other)])
    f.compute_seconds = -1;  // cannot happen: make_plan checks the counts
  return f;
}

// Forks, measures in the child, reads the figures back through a pipe.
Figures measure_apart(const Case& c) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error(fmt::format("pipe: {}", std::strerror(errno)));
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    close(fds[0]);
    int status = 0;
    try {
      const Figures f = measure(c);
      if (write(fds[1], &f, sizeof f) != static_cast<ssize_t>(sizeof f)) status = 3;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_plan_memory: %s: %s\n", c.name.c_str(), e.what());
      status = 2;
    }
    _exit(status);
  }
  close(fds[1]);
  Figures f;
  const ssize_t got = read(fds[0], &f, sizeof f);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != static_cast<ssize_t>(sizeof f) || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(fmt::format("case '{}' failed (child status {})", c.name, status));
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t count = 1'000'000, sharded_count = 10'000;
  int rank = 2049;
  bool all_ranks = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_plan_memory: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tensors") count = std::stoull(value());
    else if (a == "--sharded-tensors") sharded_count = std::stoull(value());
    else if (a == "--rank") rank = std::stoi(value());
    else if (a == "--all-ranks") all_ranks = true;
    else if (a == "--json") json_path = value();
    else {
      std::fprintf(stderr,
                   "usage: bench_plan_memory [--tensors N] [--sharded-tensors N] [--rank R] [--all-ranks] "
                   "[--json FILE]\n");
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  if (rank < 0 || rank >= kNodes * kRanksPerNode) {
    std::fprintf(stderr, "bench_plan_memory: --rank %d is outside 0..%d\n", rank, kNodes * kRanksPerNode - 1);
    return 2;
  }
  const auto big = [count] { return log_uniform_tensors(count); };
  const auto small = [sharded_count] { return log_uniform_tensors(sharded_count); };
  const PlanOptions balanced{Policy::balanced, Layout::slab};
  const PlanOptions per_tensor{Policy::balanced, Layout::file_per_tensor};
  const PlanOptions round_robin{Policy::round_robin, Layout::slab};
  const PlanOptions sharded{Policy::sharded, Layout::slab};
  std::vector<Case> cases = {
      {fmt::format("balanced, {} tensors", count), big, balanced, rank},
      {fmt::format("balanced file-per-tensor, {} tensors", count), big, per_tensor, rank},
      {fmt::format("round-robin, {} tensors", count), big, round_robin, rank},
      {fmt::format("sharded, {} tensors", sharded_count), small, sharded, rank},
      {"sharded, Llama-7B + Adam state", llama_7b, sharded, rank},
      {"balanced, Llama-7B + Adam state", llama_7b, balanced, rank},
  };
  if (all_ranks) {
    cases.push_back({fmt::format("balanced, {} tensors, all ranks held", count), big, balanced, kAllRanks});
    cases.push_back({fmt::format("sharded, {} tensors, all ranks held", sharded_count), small, sharded, kAllRanks});
  }

  std::printf("# bench_plan_memory: %d ranks on %d nodes; the plan of rank %d (MB = MiB, resident, beyond the "
              "tensor list)\n",
              kNodes * kRanksPerNode, kNodes, rank);
  std::printf("%-44s %9s %9s %9s %9s %8s %12s %10s %9s %8s %8s\n", "case", "list_MB", "peak_MB", "kept_MB",
              "object_MB", "plan_s", "pieces", "compute_s", "comp_MB", "imbal", "node_imb");
  nlohmann::json out = nlohmann::json::array();
  bool peaks = true;
  for (const Case& c : cases) {
    Figures f;
    try {
      f = measure_apart(c);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_plan_memory: %s\n", e.what());
      return 1;
    }
    peaks = peaks && f.peak_ok;
    std::printf("%-44s %9.1f %9.1f %9.1f %9.1f %8.3f %5.0f/%-6.0f %10.3f %9.1f %8.4f %8.4f\n", c.name.c_str(), f.list_mb,
                f.plan_peak_mb, f.plan_retained_mb, f.plan_object_mb, f.plan_seconds, f.pieces, f.all_pieces,
                f.compute_seconds, f.compute_peak_mb, f.imbalance, f.node_imbalance);
    out.push_back({{"case", c.name},
                   {"policy", std::string(to_string(c.options.policy))},
                   {"layout", std::string(to_string(c.options.layout))},
                   {"rank", c.rank},
                   {"list_mb", f.list_mb},
                   {"plan_peak_mb", f.plan_peak_mb},
                   {"plan_retained_mb", f.plan_retained_mb},
                   {"plan_object_mb", f.plan_object_mb},
                   {"plan_seconds", f.plan_seconds},
                   {"pieces_held", f.pieces},
                   {"pieces_all_ranks", f.all_pieces},
                   {"compute_pieces_seconds", f.compute_seconds},
                   {"compute_pieces_peak_mb", f.compute_peak_mb},
                   {"rank_imbalance", f.imbalance},
                   {"node_imbalance", f.node_imbalance}});
  }
  if (!peaks)
    std::printf("# note: /proc/self/clear_refs could not reset the peak; peak_MB is since the process began\n");
  if (!json_path.empty()) {
    std::ofstream file(json_path);
    file << out.dump(2) << "\n";
    if (!file) {
      std::fprintf(stderr, "bench_plan_memory: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}
