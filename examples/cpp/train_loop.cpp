// A training loop that keeps its parameters on NVMe through swapcoord::SwapSession.
//
//   mpiexec -n 2 ./train_loop /path/to/scratch [steps]
//
// The model is kGroups parameter groups of float32 tensors. Memory holds two groups at a
// time: each step walks the groups, and for group g it
//   1. swaps group g in (copied from pinned memory: it was prefetched),
//   2. starts prefetching group g+1 (read in the background while group g is updated),
//   3. updates it (adds 1 to every element, so that the result is easy to check),
//   4. swaps it out asynchronously (the write overlaps the work on the next group);
// and every kCommitEvery steps it commits: everything swapped out so far becomes durable
// and is recorded in the catalog, the state that SwapSession::resume continues from. Each
// rank holds only its own piece of each tensor (local_piece); every rank makes the same
// collective calls (create, commit, remove_files). At the end every element is checked.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "swapcoord/session/session.hpp"

namespace {

constexpr int kGroups = 4, kPerGroup = 3, kCommitEvery = 2;

float initial(std::uint32_t t, std::uint64_t i) { return static_cast<float>((t * 7 + i) % 1000); }

int train(const std::string& scratch, int steps) {
  using namespace swapcoord;
  // The model: kGroups x kPerGroup float32 tensors of different shapes.
  std::vector<TensorSpec> tensors;
  for (int t = 0; t < kGroups * kPerGroup; ++t)
    tensors.push_back({"layer" + std::to_string(t / kPerGroup) + ".w" + std::to_string(t % kPerGroup),
                       {64 + 37 * static_cast<std::uint64_t>(t), 129 + static_cast<std::uint64_t>(t)}, DType::f32});

  // Options in code (or apply_config(options, read_config_file("ds_config.json"), ...)).
  SessionOptions options;
  options.roots = {scratch + "/nvme0"};           // this node's NVMe directories
  options.catalog_dir = scratch + "/catalog";     // on a filesystem every node reaches
  options.job = "train-loop-cpp";
  options.plan.policy = Policy::sharded;          // ZeRO-3: every rank owns a shard of each tensor
  options.buffer_size = 1 << 20;
  SwapSession session = SwapSession::create(MPI_COMM_WORLD, tensors, options);

  // This rank's piece of each tensor, and working memory for two groups.
  struct Group {
    std::vector<std::uint32_t> ids;
    std::vector<std::vector<float>> data;
    std::vector<TensorView> views;
  };
  std::vector<Group> groups(kGroups);
  for (int g = 0; g < kGroups; ++g)
    for (int k = 0; k < kPerGroup; ++k) {
      const auto t = static_cast<std::uint32_t>(g * kPerGroup + k);
      if (session.local_piece(t) != nullptr) groups[g].ids.push_back(t);
    }
  auto bind = [&](Group& group, std::vector<float>& memory) {
    std::size_t total = 0;
    for (auto t : group.ids) total += session.local_piece(t)->numel;
    memory.resize(total);
    group.views.clear();
    std::size_t at = 0;
    for (auto t : group.ids) {
      const std::uint64_t n = session.local_piece(t)->numel;
      group.views.push_back({memory.data() + at, n, DType::f32, Device::cpu()});
      at += n;
    }
  };
  std::vector<float> memory[2];  // double buffer: group g in memory[g % 2]

  // Initial parameters: every piece is swapped out once before the first commit.
  for (int g = 0; g < kGroups; ++g) {
    bind(groups[g], memory[0]);
    for (std::size_t k = 0; k < groups[g].ids.size(); ++k) {
      const PlanPiece& p = *session.local_piece(groups[g].ids[k]);
      auto values = groups[g].views[k].as<float>();
      for (std::uint64_t i = 0; i < p.numel; ++i) values[i] = initial(p.tensor, p.element_offset + i);
    }
    session.swap_out(groups[g].ids, groups[g].views);
  }
  session.commit();

  SwapHandle writing[2];
  for (int step = 1; step <= steps; ++step) {
    SwapHandle next = session.prefetch(groups[0].ids);
    for (int g = 0; g < kGroups; ++g) {
      Group& group = groups[g];
      next.wait();                                   // the prefetch of this group is done
      if (writing[g % 2].valid()) writing[g % 2].wait();  // memory[g % 2] is free again
      bind(group, memory[g % 2]);
      session.swap_in(group.ids, group.views);       // 1. (a copy from the prefetched pieces)
      if (g + 1 < kGroups) next = session.prefetch(groups[g + 1].ids);  // 2. reads during 3.
      for (auto& v : group.views)                    // 3.
        for (float& x : v.as<float>()) x += 1.0f;
      writing[g % 2] = session.swap_out_async(group.ids, group.views);  // 4.
    }
    for (auto& w : writing)
      if (w.valid()) w.wait();
    if (step % kCommitEvery == 0 || step == steps) {
      const int epoch = session.commit();
      if (session.topology().rank() == 0) std::printf("step %d: committed epoch %d\n", step, epoch);
    }
  }

  // Check: every element is its initial value plus one per step.
  std::uint64_t wrong = 0;
  for (Group& group : groups) {
    bind(group, memory[0]);
    session.swap_in(group.ids, group.views);
    for (std::size_t k = 0; k < group.ids.size(); ++k) {
      const PlanPiece& p = *session.local_piece(group.ids[k]);
      const auto values = group.views[k].as<float>();
      for (std::uint64_t i = 0; i < p.numel; ++i)
        wrong += values[i] != initial(p.tensor, p.element_offset + i) + static_cast<float>(steps);
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  const SessionStats stats = session.statistics();
  if (session.topology().rank() == 0)
    std::printf("rank 0: swapped out %.1f MB, in %.1f MB (prefetched %llu calls); %llu wrong elements %s\n",
                static_cast<double>(stats.swap_out.bytes) / 1e6, static_cast<double>(stats.swap_in.bytes) / 1e6,
                static_cast<unsigned long long>(stats.prefetch.calls), static_cast<unsigned long long>(wrong),
                wrong == 0 ? "OK" : "ERROR");
  session.remove_files();
  return wrong == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 2;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <scratch directory> [steps]\n", argv[0]);
  } else {
    try {
      rc = train(argv[1], argc > 2 ? std::atoi(argv[2]) : 5);
    } catch (const std::exception& e) {  // the same error on every rank for collective calls
      std::fprintf(stderr, "train_loop: %s\n", e.what());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
  }
  MPI_Finalize();
  return rc;
}
