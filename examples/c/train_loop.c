/* A training loop that keeps its parameters on NVMe through the swapcoord C API.
 *
 *   mpiexec -n 2 ./train_loop /path/to/scratch [steps]
 *
 * The model is GROUPS parameter groups of float32 tensors. Memory holds one group at a
 * time: each step walks the groups, and for group g it
 *   1. starts prefetching group g+1 (read in the background into pinned memory),
 *   2. swaps group g in (from the prefetch when it is there),
 *   3. updates it (here: adds 1 to every element, so the result is easy to check),
 *   4. swaps it out again;
 * and every COMMIT_EVERY steps it commits: everything swapped out so far becomes durable
 * and is recorded in the catalog, the state a later run resumes from. Each rank handles
 * only its own pieces of each tensor (swapcoord_session_local_piece); every rank makes
 * the same calls. At the end every element is checked. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swapcoord/swapcoord.h"

#define GROUPS 4
#define PER_GROUP 3
#define TENSORS (GROUPS * PER_GROUP)
#define COMMIT_EVERY 2

/* Ends the job with the library's message when a call fails. */
#define TRY(call)                                                                   \
  do {                                                                              \
    int rc_ = (call);                                                               \
    if (rc_ < 0) {                                                                  \
      fprintf(stderr, "rank %d: %s failed: %s: %s\n", rank, #call,                  \
              swapcoord_error_name(rc_), swapcoord_last_error());                   \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                 \
    }                                                                               \
  } while (0)

/* The initial value of element i of tensor t. */
static float initial(uint32_t t, uint64_t i) { return (float)((t * 7 + i) % 1000); }

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (argc < 2) {
    if (rank == 0) fprintf(stderr, "usage: %s <scratch directory> [steps]\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  const int steps = argc > 2 ? atoi(argv[2]) : 5;

  /* The model: GROUPS x PER_GROUP float32 tensors of different shapes. */
  char names[TENSORS][32];
  uint64_t shapes[TENSORS][2];
  swapcoord_tensor_spec specs[TENSORS];
  for (int t = 0; t < TENSORS; ++t) {
    snprintf(names[t], sizeof names[t], "layer%d.w%d", t / PER_GROUP, t % PER_GROUP);
    shapes[t][0] = 64 + 37 * (uint64_t)t;
    shapes[t][1] = 129 + (uint64_t)t;
    specs[t] = (swapcoord_tensor_spec){names[t], SWAPCOORD_DTYPE_F32, 2, shapes[t]};
  }

  /* Options as JSON (swapcoord's form; a DeepSpeed ds_config.json works too). Sharded
   * (ZeRO-3 style): every rank owns a contiguous shard of every tensor. A new session
   * refuses to start over a committed catalog (swapcoord_session_resume continues from it;
   * "overwrite": true replaces it); this example removes its files at the end. */
  char options[4096];
  snprintf(options, sizeof options,
           "{\"swap\": {\"roots\": [\"%s/nvme0\"], \"catalog_dir\": \"%s/catalog\","
           " \"job\": \"train-loop\", \"policy\": \"sharded\", \"buffer_size\": \"1M\"},"
           " \"aio\": {\"block_size\": \"1M\", \"queue_depth\": 16}}",
           argv[1], argv[1]);

  swapcoord_session* session = NULL;
  TRY(swapcoord_session_create(&session, MPI_Comm_c2f(MPI_COMM_WORLD), options, specs, TENSORS));

  /* This rank's piece of each tensor, and one group's worth of working memory. */
  uint64_t offset[TENSORS], numel[TENSORS], group_max = 0;
  for (int g = 0; g < GROUPS; ++g) {
    uint64_t group_numel = 0;
    for (int k = 0; k < PER_GROUP; ++k) {
      const uint32_t t = (uint32_t)(g * PER_GROUP + k);
      offset[t] = numel[t] = 0;
      TRY(swapcoord_session_local_piece(session, t, &offset[t], &numel[t]));
      group_numel += numel[t];
    }
    if (group_numel > group_max) group_max = group_numel;
  }
  float* work = malloc((group_max > 0 ? group_max : 1) * sizeof(float));
  void* buffers[PER_GROUP];
  uint32_t ids[GROUPS][PER_GROUP];
  for (int g = 0; g < GROUPS; ++g)
    for (int k = 0; k < PER_GROUP; ++k) ids[g][k] = (uint32_t)(g * PER_GROUP + k);

  /* Points buffers[] at group g's pieces inside `work`. */
#define BIND(g)                                                                \
  do {                                                                         \
    float* at_ = work;                                                         \
    for (int k_ = 0; k_ < PER_GROUP; ++k_) {                                   \
      buffers[k_] = at_;                                                       \
      at_ += numel[ids[(g)][k_]];                                              \
    }                                                                          \
  } while (0)

  /* Initial parameters: every piece must be swapped out once before the first commit. */
  for (int g = 0; g < GROUPS; ++g) {
    BIND(g);
    for (int k = 0; k < PER_GROUP; ++k) {
      const uint32_t t = ids[g][k];
      float* p = buffers[k];
      for (uint64_t i = 0; i < numel[t]; ++i) p[i] = initial(t, offset[t] + i);
    }
    TRY(swapcoord_session_swap_out(session, ids[g], PER_GROUP, (const void* const*)buffers, NULL));
  }
  int epoch = -1;
  TRY(swapcoord_session_commit(session, &epoch));

  for (int step = 1; step <= steps; ++step) {
    for (int g = 0; g < GROUPS; ++g) {
      /* 1. prefetch the next group while this one is in use (the session keeps the
       *    handle; a new prefetch replaces the previous one). */
      TRY(swapcoord_session_prefetch(session, ids[(g + 1) % GROUPS], PER_GROUP, NULL));
      /* 2. swap in, 3. update, 4. swap out. */
      BIND(g);
      TRY(swapcoord_session_swap_in(session, ids[g], PER_GROUP, buffers, NULL));
      for (int k = 0; k < PER_GROUP; ++k) {
        float* p = buffers[k];
        for (uint64_t i = 0; i < numel[ids[g][k]]; ++i) p[i] += 1.0f;
      }
      TRY(swapcoord_session_swap_out(session, ids[g], PER_GROUP, (const void* const*)buffers, NULL));
    }
    if (step % COMMIT_EVERY == 0 || step == steps) {
      TRY(swapcoord_session_commit(session, &epoch));
      if (rank == 0) printf("step %d: committed epoch %d\n", step, epoch);
    }
  }

  /* Check: every element is its initial value plus one per step. */
  uint64_t wrong = 0;
  for (int g = 0; g < GROUPS; ++g) {
    BIND(g);
    TRY(swapcoord_session_swap_in(session, ids[g], PER_GROUP, buffers, NULL));
    for (int k = 0; k < PER_GROUP; ++k) {
      const uint32_t t = ids[g][k];
      const float* p = buffers[k];
      for (uint64_t i = 0; i < numel[t]; ++i)
        if (p[i] != initial(t, offset[t] + i) + (float)steps) ++wrong;
    }
  }
  swapcoord_session_stats stats;
  TRY(swapcoord_session_statistics(session, &stats));
  uint64_t all_wrong = 0;
  MPI_Allreduce(&wrong, &all_wrong, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) {
    printf("rank 0: %llu swap-ins (%llu bytes, %.3f s), %llu swap-outs (%llu bytes, %.3f s), "
           "%llu bytes prefetched\n",
           (unsigned long long)stats.swap_in.calls, (unsigned long long)stats.swap_in.bytes,
           stats.swap_in.seconds, (unsigned long long)stats.swap_out.calls,
           (unsigned long long)stats.swap_out.bytes, stats.swap_out.seconds,
           (unsigned long long)stats.prefetch.bytes);
    printf("%s: %llu wrong elements after %d steps (epoch %d)\n", all_wrong ? "FAILED" : "ok",
           (unsigned long long)all_wrong, steps, epoch);
  }
  TRY(swapcoord_session_remove_files(session));
  swapcoord_session_destroy(session);
  free(work);
  MPI_Finalize();
  return all_wrong ? 1 : 0;
}
