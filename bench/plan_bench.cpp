// CPU cost of planning (coord/plan.hpp): every rank runs make_plan at start-up and on
// resume, so it must stay cheap at scale. The job here: 4,096 ranks on 512 nodes (8 per
// node, 2 swap roots each), tensors of 1 KiB to 64 MiB drawn log-uniformly from a fixed
// seed, half f16 and half f32. Balanced and round-robin plan 1,000,000 tensors; sharded
// plans 10,000 (up to world_size pieces per tensor at or above the shard threshold, ~11
// million in all). Each plan is rank 2049's, as a session makes it; bench_plan_memory
// measures the memory of the same plans.
// Run: build/bench/bench_plan [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "swapcoord/coord/plan.hpp"

namespace {

using namespace swapcoord;

constexpr int kNodes = 512;
constexpr int kRanksPerNode = 8;
constexpr int kRootsPerNode = 2;
constexpr int kRank = 2049;  // whose plan (its pieces) each rank makes

// Log-uniform sizes in [1 KiB, 64 MiB] (raw engine output only, so every standard
// library makes the same list), 1-D or 2-D shapes, names like a model's.
std::vector<TensorSpec> make_tensors(std::size_t count) {
  std::mt19937_64 rng(20240601);
  std::vector<TensorSpec> tensors(count);
  const double lo = std::log2(1024.0);
  const double hi = std::log2(64.0 * 1024 * 1024);
  for (std::size_t i = 0; i < count; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const auto bytes = static_cast<std::uint64_t>(std::exp2(lo + u * (hi - lo)));
    TensorSpec& tensor = tensors[i];
    tensor.dtype = (i % 2 == 0) ? DType::f16 : DType::f32;
    const std::uint64_t numel = std::max<std::uint64_t>(1, bytes / dtype_size(tensor.dtype));
    if (numel >= 4096 && i % 3 == 0)
      tensor.shape = {numel / 1024, 1024};
    else
      tensor.shape = {numel};
    tensor.name = "layers." + std::to_string(i / 8) + ".param." + std::to_string(i % 8);
  }
  return tensors;
}

const std::vector<TensorSpec>& tensors_1m() {
  static const auto tensors = make_tensors(1'000'000);
  return tensors;
}
const std::vector<TensorSpec>& tensors_10k() {
  static const auto tensors = make_tensors(10'000);
  return tensors;
}
const PlanTopology& topology() {
  static const auto t = PlanTopology::uniform(kNodes, kRanksPerNode, kRootsPerNode);
  return t;
}

void BM_MakePlan(benchmark::State& state, Policy policy, Layout layout, std::size_t count) {
  const auto& tensors = count == 10'000 ? tensors_10k() : tensors_1m();
  const PlanOptions options{policy, layout, kDefaultAlignmentBytes};
  std::size_t pieces = 0;
  double imbalance = 0;
  for (auto _ : state) {
    SwapPlan plan = make_plan(tensors, topology(), options, kRank);
    pieces = plan.pieces.size();
    imbalance = plan.rank_imbalance();
    benchmark::DoNotOptimize(plan.pieces.data());
  }
  state.counters["tensors"] = static_cast<double>(tensors.size());
  state.counters["pieces"] = static_cast<double>(pieces);
  state.counters["imbalance"] = imbalance;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * tensors.size()));
}
BENCHMARK_CAPTURE(BM_MakePlan, balanced_slab_1M, Policy::balanced, Layout::slab, 1'000'000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MakePlan, balanced_file_per_tensor_1M, Policy::balanced,
                  Layout::file_per_tensor, 1'000'000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MakePlan, round_robin_slab_1M, Policy::round_robin, Layout::slab, 1'000'000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MakePlan, sharded_slab_10k, Policy::sharded, Layout::slab, 10'000)
    ->Unit(benchmark::kMillisecond);

// What every rank hashes to compare plans: the job-wide part (a placement per tensor and
// a few figures per rank), not the pieces.
void BM_Fingerprint(benchmark::State& state, Policy policy, std::size_t count) {
  const auto& tensors = count == 10'000 ? tensors_10k() : tensors_1m();
  const SwapPlan plan = make_plan(tensors, topology(), {policy}, kRank);
  for (auto _ : state) benchmark::DoNotOptimize(plan.fingerprint());
  state.counters["tensors"] = static_cast<double>(tensors.size());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * tensors.size()));
}

// Another rank's pieces, on demand (resume, verify): O(tensors).
void BM_ComputePieces(benchmark::State& state, Policy policy, std::size_t count) {
  const auto& tensors = count == 10'000 ? tensors_10k() : tensors_1m();
  const SwapPlan plan = make_plan(tensors, topology(), {policy}, kRank);
  std::size_t pieces = 0;
  for (auto _ : state) pieces = plan.compute_pieces(7, tensors).size();
  state.counters["pieces"] = static_cast<double>(pieces);
}
BENCHMARK_CAPTURE(BM_ComputePieces, balanced_1M, Policy::balanced, 1'000'000)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ComputePieces, sharded_10k, Policy::sharded, 10'000)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Fingerprint, balanced_1M, Policy::balanced, 1'000'000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Fingerprint, sharded_10k, Policy::sharded, 10'000)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
