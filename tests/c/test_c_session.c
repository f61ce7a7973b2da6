/* The C API's swap session from C, under mpiexec.
 *
 *   test_c_session write  <dir>   make a session over <dir>/root0, <dir>/root1 (catalog in
 *                                 <dir>/catalog), swap out tensors of awkward sizes from
 *                                 buffers at unaligned addresses, swap in and check every
 *                                 byte, commit (values v1), swap out v2, do NOT commit;
 *                                 also the error paths (bad options JSON, bad arguments).
 *   test_c_session resume <dir>   at another rank count (and policy): resume and check that
 *                                 every byte is v1, the committed values (not v2); then
 *                                 swap out v3, commit, and read v3 back.
 *
 * Every rank checks its own pieces; the result is combined with MPI_Allreduce(MAX) and
 * the exit code is non-zero on any failure on any rank. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "swapcoord/swapcoord.h"

static int g_rank = 0;
static int g_failures = 0;

#define CHECK(cond, ...)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "rank %d: %s:%d: CHECK(%s) failed: ", g_rank, __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                  \
      fprintf(stderr, "\n  last_error: %s\n", swapcoord_last_error());               \
      ++g_failures;                                                                  \
    }                                                                                \
  } while (0)

#define CHECK_OK(call)                                                                       \
  do {                                                                                       \
    int rc_ = (call);                                                                        \
    CHECK(rc_ == SWAPCOORD_OK, "%s returned %d (%s)", #call, rc_, swapcoord_error_name(rc_)); \
  } while (0)

/* Awkward sizes and every element size; "odd" and "big" are larger than the 64 KiB
 * staging buffers, "scalar" has no dimensions. */
static const uint64_t shape_embed[] = {123, 77};
static const uint64_t shape_bias[] = {1};
static const uint64_t shape_w1[] = {4099};
static const uint64_t shape_odd[] = {100003};
static const uint64_t shape_big[] = {513, 257};
static const uint64_t shape_i64[] = {3, 5, 7};
static const uint64_t shape_i8[] = {4095};
static const swapcoord_tensor_spec kTensors[] = {
    {"embed", SWAPCOORD_DTYPE_F32, 2, shape_embed}, {"bias", SWAPCOORD_DTYPE_F16, 1, shape_bias},
    {"w1", SWAPCOORD_DTYPE_F64, 1, shape_w1},       {"odd", SWAPCOORD_DTYPE_U8, 1, shape_odd},
    {"scalar", SWAPCOORD_DTYPE_I32, 0, NULL},       {"big", SWAPCOORD_DTYPE_BF16, 2, shape_big},
    {"i64", SWAPCOORD_DTYPE_I64, 3, shape_i64},     {"i8", SWAPCOORD_DTYPE_I8, 1, shape_i8},
};
enum { kCount = sizeof kTensors / sizeof kTensors[0] };

/* The byte at byte index `b` of tensor `t` in version `v` (any rank can compute it). */
static unsigned char value(uint32_t t, uint64_t b, int v) {
  return (unsigned char)(((b * 2654435761u) >> 7) + b + t * 37u + (unsigned)v * 101u);
}

/* This rank's pieces: buffers at an odd address (malloc + 1). */
typedef struct {
  int owned;
  uint64_t element_offset, numel, bytes;
  unsigned char* raw;
  unsigned char* data; /* raw + 1 */
} Piece;

static Piece g_pieces[kCount];

static int rm_entry(const char* path, const struct stat* st, int flag, struct FTW* ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void make_pieces(swapcoord_session* s) {
  for (uint32_t t = 0; t < kCount; ++t) {
    Piece* p = &g_pieces[t];
    memset(p, 0, sizeof *p);
    int owned = swapcoord_session_local_piece(s, t, &p->element_offset, &p->numel);
    CHECK(owned == 0 || owned == 1, "local_piece(%u) returned %d", t, owned);
    p->owned = owned == 1 && p->numel > 0;
    p->bytes = p->owned ? p->numel * swapcoord_dtype_size(kTensors[t].dtype) : 0;
    p->raw = malloc(p->bytes + 2);
    p->data = p->raw + 1;
  }
}

static void free_pieces(void) {
  for (int t = 0; t < kCount; ++t) free(g_pieces[t].raw);
}

static void fill(int v) {
  for (uint32_t t = 0; t < kCount; ++t) {
    const Piece* p = &g_pieces[t];
    const uint64_t first = p->element_offset * swapcoord_dtype_size(kTensors[t].dtype);
    for (uint64_t i = 0; i < p->bytes; ++i) p->data[i] = value(t, first + i, v);
  }
}

static void scribble(void) {
  for (int t = 0; t < kCount; ++t) memset(g_pieces[t].data, 0xA5, g_pieces[t].bytes);
}

/* Counts the bytes of every piece that are not version v; reports the first per tensor. */
static uint64_t wrong_bytes(int v, const char* when) {
  uint64_t wrong = 0;
  for (uint32_t t = 0; t < kCount; ++t) {
    const Piece* p = &g_pieces[t];
    const uint64_t first = p->element_offset * swapcoord_dtype_size(kTensors[t].dtype);
    uint64_t bad = 0, first_bad = 0;
    for (uint64_t i = 0; i < p->bytes; ++i) {
      if (p->data[i] != value(t, first + i, v)) {
        if (bad++ == 0) first_bad = i;
      }
    }
    if (bad) {
      int other = v == 1 ? 2 : 1;
      fprintf(stderr, "rank %d: %s: tensor %u '%s': %llu of %llu bytes are not v%d (first at "
              "byte %llu of the piece: %u, expected %u; v%d there is %u)\n", g_rank, when, t,
              kTensors[t].name, (unsigned long long)bad, (unsigned long long)p->bytes, v,
              (unsigned long long)first_bad, p->data[first_bad], value(t, first + first_bad, v),
              other, value(t, first + first_bad, other));
    }
    wrong += bad;
  }
  return wrong;
}

static void buffers(void** out) {
  for (int t = 0; t < kCount; ++t) out[t] = g_pieces[t].owned ? g_pieces[t].data : NULL;
}

static const char* policy_for(const char* mode, int world) {
  if (strcmp(mode, "write") == 0) return world == 2 ? "sharded" : world == 4 ? "round-robin" : "balanced";
  return world == 4 ? "balanced" : "sharded";
}

static char* options_json(const char* dir, const char* policy) {
  static char json[8192];
  snprintf(json, sizeof json,
           "{\"aio\": {\"block_size\": \"64k\", \"queue_depth\": 8},"
           " \"swap\": {\"roots\": [\"%s/root0\", \"%s/root1\"], \"catalog_dir\": \"%s/catalog\","
           " \"job\": \"ctest\", \"policy\": \"%s\", \"buffer_size\": \"64k\", \"buffer_count\": 2,"
           " \"phase_timeout_s\": 120}}",
           dir, dir, dir, policy);
  return json;
}

static uint32_t g_ids[kCount];

static void error_paths(const char* dir) {
  MPI_Fint world = MPI_Comm_c2f(MPI_COMM_WORLD);
  swapcoord_session* s = NULL;
  /* An unknown key in a section swapcoord reads: CONFIG, the text names the key. */
  char bad[8192];
  snprintf(bad, sizeof bad, "{\"swap\": {\"roots\": [\"%s/root0\"], \"no_such_key\": 1}}", dir);
  int rc = swapcoord_session_create(&s, world, bad, kTensors, kCount);
  CHECK(rc == SWAPCOORD_ERR_CONFIG, "unknown key gave %d (%s)", rc, swapcoord_error_name(rc));
  CHECK(strstr(swapcoord_last_error(), "no_such_key") != NULL, "last_error names the key");
  CHECK(s == NULL, "no session on error");
  /* An impossible value. */
  rc = swapcoord_session_create(&s, world, "{\"swap\": {\"slots\": 7}}", kTensors, kCount);
  CHECK(rc == SWAPCOORD_ERR_CONFIG, "slots 7 gave %d (%s)", rc, swapcoord_error_name(rc));
  CHECK(strstr(swapcoord_last_error(), "slots") != NULL, "last_error names slots");
  /* Not JSON at all. */
  rc = swapcoord_session_create(&s, world, "{\"swap\": ", kTensors, kCount);
  CHECK(rc == SWAPCOORD_ERR_CONFIG, "broken JSON gave %d (%s)", rc, swapcoord_error_name(rc));
  CHECK(strstr(swapcoord_last_error(), "options_json") != NULL, "last_error names options_json");
  /* A bad tensor spec. */
  swapcoord_tensor_spec bad_spec = {"bad", 42, 1, shape_bias};
  rc = swapcoord_session_create(&s, world, NULL, &bad_spec, 1);
  CHECK(rc == SWAPCOORD_ERR_INVALID, "dtype 42 gave %d", rc);
  CHECK(strstr(swapcoord_last_error(), "bad") != NULL, "last_error names the tensor");
  CHECK(swapcoord_session_create(NULL, world, NULL, kTensors, kCount) == SWAPCOORD_ERR_INVALID,
        "NULL out");
}

static int run_write(const char* dir, int world) {
  MPI_Fint fworld = MPI_Comm_c2f(MPI_COMM_WORLD);
  if (g_rank == 0) {
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      fprintf(stderr, "cannot create '%s': %s\n", dir, strerror(errno));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  error_paths(dir);

  const char* policy = policy_for("write", world);
  swapcoord_session* s = NULL;
  int rc = swapcoord_session_create(&s, fworld, options_json(dir, policy), kTensors, kCount);
  if (rc != SWAPCOORD_OK) {
    fprintf(stderr, "rank %d: swapcoord_session_create: %s: %s\n", g_rank,
            swapcoord_error_name(rc), swapcoord_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  swapcoord_session_info info;
  CHECK_OK(swapcoord_session_get_info(s, &info));
  CHECK(info.world_size == world && info.rank == g_rank, "info: rank %d of %d", info.rank,
        info.world_size);
  CHECK(info.committed_epoch == -1 && info.resumed == 0, "a new session: epoch %d resumed %d",
        info.committed_epoch, info.resumed);
  CHECK(info.tensor_count == kCount, "tensor_count %zu", info.tensor_count);
  CHECK(swapcoord_session_catalog_path(s) != NULL, "catalog path");
  make_pieces(s);
  void* bufs[kCount];
  buffers(bufs);

  /* v1: half blocking, half async; read back blocking and through prefetch + async. */
  fill(1);
  swapcoord_swap_figures fig;
  CHECK_OK(swapcoord_session_swap_out(s, g_ids, 4, (const void* const*)bufs, &fig));
  swapcoord_swap_handle* h = NULL;
  CHECK_OK(swapcoord_session_swap_out_async(s, g_ids + 4, kCount - 4, (const void* const*)(bufs + 4), &h));
  if (h) CHECK_OK(swapcoord_swap_wait(h, &fig));
  scribble();
  CHECK_OK(swapcoord_session_swap_in(s, g_ids, 4, bufs, NULL));
  swapcoord_swap_handle* pf = NULL;
  CHECK_OK(swapcoord_session_prefetch(s, g_ids + 4, kCount - 4, &pf));
  if (pf) CHECK_OK(swapcoord_swap_wait(pf, NULL));
  h = NULL;
  CHECK_OK(swapcoord_session_swap_in_async(s, g_ids + 4, kCount - 4, bufs + 4, &h));
  if (h) CHECK_OK(swapcoord_swap_wait(h, &fig));
  CHECK(wrong_bytes(1, "swap-in of v1") == 0, "v1 read back");

  /* Bad arguments: an id out of range names it; a NULL buffer for an owned piece. */
  uint32_t bad_id = kCount + 5;
  rc = swapcoord_session_swap_in(s, &bad_id, 1, bufs, NULL);
  CHECK(rc == SWAPCOORD_ERR_INVALID, "id out of range gave %d", rc);
  CHECK(strstr(swapcoord_last_error(), "13") != NULL, "last_error names id 13");

  int epoch = -5;
  CHECK_OK(swapcoord_session_commit(s, &epoch));
  int committed = -5;
  CHECK_OK(swapcoord_session_committed_epoch(s, &committed));
  CHECK(epoch >= 0 && committed == epoch, "commit gave epoch %d, committed_epoch %d", epoch, committed);
  swapcoord_check check;
  CHECK_OK(swapcoord_session_verify(s, &check));
  CHECK(check.mismatches == 0 && check.pieces > 0, "verify: %llu pieces, %llu mismatches",
        (unsigned long long)check.pieces, (unsigned long long)check.mismatches);

  /* v2: swapped out, read back (the pending copies), never committed. */
  fill(2);
  CHECK_OK(swapcoord_session_swap_out(s, g_ids, kCount, (const void* const*)bufs, NULL));
  scribble();
  CHECK_OK(swapcoord_session_swap_in(s, g_ids, kCount, bufs, NULL));
  CHECK(wrong_bytes(2, "swap-in of uncommitted v2") == 0, "v2 read back");

  swapcoord_session_stats st;
  CHECK_OK(swapcoord_session_statistics(s, &st));
  CHECK(st.swap_out.calls >= 2 && st.commit.calls == 1, "stats: %llu swap-outs, %llu commits",
        (unsigned long long)st.swap_out.calls, (unsigned long long)st.commit.calls);
  if (g_rank == 0)
    printf("# write at %d ranks (%s): epoch %d committed, %llu pieces verified, v2 left "
           "uncommitted; rank 0 swapped out %llu bytes in %llu calls\n", world, policy, epoch,
           (unsigned long long)check.pieces, (unsigned long long)st.swap_out.bytes,
           (unsigned long long)st.swap_out.calls);
  swapcoord_session_destroy(s);
  free_pieces();
  return 0;
}

static int run_resume(const char* dir, int world) {
  MPI_Fint fworld = MPI_Comm_c2f(MPI_COMM_WORLD);
  const char* policy = policy_for("resume", world);
  swapcoord_session* s = NULL;
  int rc = swapcoord_session_resume(&s, fworld, options_json(dir, policy), kTensors, kCount);
  if (rc != SWAPCOORD_OK) {
    fprintf(stderr, "rank %d: swapcoord_session_resume: %s: %s\n", g_rank,
            swapcoord_error_name(rc), swapcoord_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  swapcoord_session_info info;
  CHECK_OK(swapcoord_session_get_info(s, &info));
  CHECK(info.resumed == 1 && info.committed_epoch >= 0, "resumed %d at epoch %d", info.resumed,
        info.committed_epoch);
  make_pieces(s);
  void* bufs[kCount];
  buffers(bufs);
  scribble();
  CHECK_OK(swapcoord_session_swap_in(s, g_ids, kCount, bufs, NULL));
  uint64_t wrong = wrong_bytes(1, "resume: swap-in of the committed v1");
  CHECK(wrong == 0, "%llu bytes differ from the committed values", (unsigned long long)wrong);
  swapcoord_check check;
  CHECK_OK(swapcoord_session_verify(s, &check));

  /* The resumed session carries on: v3, commit, read back. */
  fill(3);
  CHECK_OK(swapcoord_session_swap_out(s, g_ids, kCount, (const void* const*)bufs, NULL));
  int epoch = -5;
  CHECK_OK(swapcoord_session_commit(s, &epoch));
  CHECK(epoch > info.committed_epoch, "commit after resume gave epoch %d (resumed at %d)", epoch,
        info.committed_epoch);
  scribble();
  CHECK_OK(swapcoord_session_swap_in(s, g_ids, kCount, bufs, NULL));
  CHECK(wrong_bytes(3, "swap-in of v3 after resume") == 0, "v3 read back");
  if (g_rank == 0)
    printf("# resume at %d ranks (%s, repartitioned %d): committed values read back; epoch %d "
           "committed after\n", world, policy, info.repartitioned, epoch);
  swapcoord_session_destroy(s);
  free_pieces();
  return 0;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (argc != 3 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "resume") != 0)) {
    if (g_rank == 0) fprintf(stderr, "usage: %s write|resume <directory>\n", argv[0]);
    MPI_Finalize();
    return 2;
  }
  for (uint32_t t = 0; t < kCount; ++t) g_ids[t] = t;
  if (strcmp(argv[1], "write") == 0)
    run_write(argv[2], world);
  else
    run_resume(argv[2], world);

  int failures = g_failures, worst = 0;
  MPI_Allreduce(&failures, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (g_rank == 0) printf("%s: %s at %d ranks\n", argv[1], worst ? "FAILED" : "passed", world);
  MPI_Finalize();
  return worst ? 1 : 0;
}
