/* The C API's aio engine handle (no MPI): pwrite / pread round trips at aligned and
 * unaligned buffers, offsets and lengths, queued operations and wait, pinned memory, and
 * the errors a user meets (reading past the end names the path, bad knobs name the key).
 *
 * usage: test_c_engine <scratch directory> [backend]
 * Exits 0 on success, 1 on the first failed check (after printing it). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "swapcoord/swapcoord.h"

static int g_failures = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                        \
      fprintf(stderr, "\n  last_error: %s\n", swapcoord_last_error());     \
      ++g_failures;                                                        \
      return 1;                                                            \
    }                                                                      \
  } while (0)

#define CHECK_OK(call)                                                                  \
  do {                                                                                  \
    int rc_ = (call);                                                                   \
    CHECK(rc_ == SWAPCOORD_OK, "%s returned %d (%s)", #call, rc_, swapcoord_error_name(rc_)); \
  } while (0)

static unsigned char pattern(uint64_t file_offset, unsigned seed) {
  return (unsigned char)((file_offset * 2654435761u) >> 13 ^ seed * 97u ^ file_offset);
}

static void fill(unsigned char* p, size_t n, uint64_t file_offset, unsigned seed) {
  for (size_t i = 0; i < n; ++i) p[i] = pattern(file_offset + i, seed);
}

/* The index of the first byte that differs from the pattern, or n. */
static size_t first_wrong(const unsigned char* p, size_t n, uint64_t file_offset, unsigned seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != pattern(file_offset + i, seed)) return i;
  return n;
}

static uint64_t file_size(const char* path) {
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_size : UINT64_MAX;
}

/* Writes `bytes` at `offset` from a buffer at `misalign` bytes past an aligned address,
 * blocking or queued, then reads them back (the other way) and compares. */
static int round_trip(swapcoord_aio_handle* h, const char* path, size_t bytes, uint64_t offset,
                      size_t misalign, unsigned seed, int async_write, int async_read) {
  unsigned char* raw_out = NULL;
  unsigned char* raw_in = NULL;
  CHECK(posix_memalign((void**)&raw_out, 4096, bytes + 4096) == 0, "posix_memalign");
  CHECK(posix_memalign((void**)&raw_in, 4096, bytes + 4096) == 0, "posix_memalign");
  unsigned char* out = raw_out + misalign;
  unsigned char* in = raw_in + misalign;
  fill(out, bytes, offset, seed);
  memset(in, 0xEE, bytes);
  if (async_write) {
    CHECK_OK(swapcoord_aio_async_pwrite(h, out, bytes, path, offset));
    CHECK(swapcoord_aio_pending(h) == 1, "one queued write");
    int n = swapcoord_aio_wait(h);
    CHECK(n == 1, "wait returned %d, expected 1", n);
  } else {
    CHECK_OK(swapcoord_aio_pwrite(h, out, bytes, path, offset));
  }
  CHECK(file_size(path) >= offset + bytes, "file '%s' has %llu bytes, expected >= %llu", path,
        (unsigned long long)file_size(path), (unsigned long long)(offset + bytes));
  if (async_read) {
    CHECK_OK(swapcoord_aio_async_pread(h, in, bytes, path, offset));
    int n = swapcoord_aio_wait(h);
    CHECK(n == 1, "wait returned %d, expected 1", n);
  } else {
    CHECK_OK(swapcoord_aio_pread(h, in, bytes, path, offset));
  }
  size_t wrong = first_wrong(in, bytes, offset, seed);
  CHECK(wrong == bytes, "%zu bytes at offset %llu (buffer +%zu): byte %zu differs", bytes,
        (unsigned long long)offset, misalign, wrong);
  free(raw_out);
  free(raw_in);
  return 0;
}

static int test_knobs(void) {
  swapcoord_aio_handle* h = NULL;
  CHECK_OK(swapcoord_aio_handle_create(&h, 65536, 16, 1, 0, 2));
  CHECK(swapcoord_aio_get_block_size(h) == 65536, "block_size");
  CHECK(swapcoord_aio_get_queue_depth(h) == 16, "queue_depth");
  CHECK(swapcoord_aio_get_single_submit(h) == 1, "single_submit");
  CHECK(swapcoord_aio_get_overlap_events(h) == 0, "overlap_events");
  CHECK(swapcoord_aio_get_intra_op_parallelism(h) == 2, "intra_op_parallelism");
  CHECK(strlen(swapcoord_aio_get_backend(h)) > 0, "backend name");
  swapcoord_aio_handle_destroy(h);

  /* A block size that is not a multiple of 4096: a config error naming the key. */
  h = NULL;
  int rc = swapcoord_aio_handle_create(&h, 1000, 16, 0, 1, 1);
  CHECK(rc == SWAPCOORD_ERR_CONFIG, "block_size 1000 gave %d", rc);
  CHECK(h == NULL, "no handle on error");
  CHECK(strstr(swapcoord_last_error(), "block_size") != NULL, "last_error names block_size");

  /* An unknown backend. */
  swapcoord_aio_options o;
  swapcoord_aio_options_init(&o);
  o.backend = "no-such-backend";
  rc = swapcoord_aio_handle_create_with_options(&h, &o);
  CHECK(rc < 0, "unknown backend accepted");
  CHECK(strstr(swapcoord_last_error(), "no-such-backend") != NULL, "last_error names the backend");
  printf("ok   knobs and config errors\n");
  return 0;
}

static int test_round_trips(const char* dir, const char* backend, int direct) {
  swapcoord_aio_options o;
  swapcoord_aio_options_init(&o);
  o.block_size = 8192; /* several blocks per request */
  o.queue_depth = 4;
  o.intra_op_parallelism = 2;
  o.backend = backend;
  o.direct = direct;
  swapcoord_aio_handle* h = NULL;
  CHECK_OK(swapcoord_aio_handle_create_with_options(&h, &o));

  char path[4096];
  snprintf(path, sizeof path, "%s/rt-%s-%d.bin", dir, swapcoord_aio_get_backend(h), direct);
  unlink(path);
  /* bytes, offset, buffer misalignment: aligned, unaligned buffer, unaligned offset,
   * unaligned length, all three, a single byte, many blocks. */
  static const struct { size_t bytes; uint64_t offset; size_t misalign; } cases[] = {
      {65536, 0, 0},     {65536, 65536, 1},  {12288, 4097, 0},  {5000, 8192, 0},
      {77777, 12345, 3}, {1, 3, 1},          {4096, 1 << 20, 0}, {300001, 200000, 7},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    for (int mode = 0; mode < 3; ++mode) {
      const int async_write = mode == 1, async_read = mode >= 1;
      if (round_trip(h, path, cases[i].bytes, cases[i].offset, cases[i].misalign,
                     (unsigned)(i * 3 + mode + 1), async_write, async_read) != 0) {
        fprintf(stderr, "  in case %zu mode %d (%s, direct %d)\n", i, mode,
                swapcoord_aio_get_backend(h), direct);
        swapcoord_aio_handle_destroy(h);
        return 1;
      }
    }
  }
  /* Rewriting part of an existing file neither truncates nor shrinks it. */
  const uint64_t size_before = file_size(path);
  unsigned char small[10];
  memset(small, 7, sizeof small);
  CHECK_OK(swapcoord_aio_pwrite(h, small, sizeof small, path, 10));
  CHECK(file_size(path) == size_before, "pwrite changed the size from %llu to %llu",
        (unsigned long long)size_before, (unsigned long long)file_size(path));

  /* Many queued operations in one wait: 8 writes of different pieces, then 8 reads. */
  enum { kOps = 8, kPiece = 10000 };
  unsigned char* buf = malloc(kOps * kPiece + 1);
  unsigned char* back = malloc(kOps * kPiece + 1);
  CHECK(buf && back, "malloc");
  char path2[4096];
  snprintf(path2, sizeof path2, "%s/queued-%s-%d.bin", dir, swapcoord_aio_get_backend(h), direct);
  unlink(path2);
  fill(buf + 1, kOps * kPiece, 0, 42);
  for (int i = 0; i < kOps; ++i)
    CHECK_OK(swapcoord_aio_async_pwrite(h, buf + 1 + i * kPiece, kPiece, path2, (uint64_t)i * kPiece));
  CHECK(swapcoord_aio_pending(h) == kOps, "pending");
  int n = swapcoord_aio_wait(h);
  CHECK(n == kOps, "wait after %d writes returned %d", kOps, n);
  CHECK(file_size(path2) == kOps * kPiece, "queued writes made %llu bytes",
        (unsigned long long)file_size(path2));
  memset(back, 0, kOps * kPiece + 1);
  for (int i = kOps - 1; i >= 0; --i)
    CHECK_OK(swapcoord_aio_async_pread(h, back + 1 + i * kPiece, kPiece, path2, (uint64_t)i * kPiece));
  n = swapcoord_aio_wait(h);
  CHECK(n == kOps, "wait after %d reads returned %d", kOps, n);
  CHECK(first_wrong(back + 1, kOps * kPiece, 0, 42) == kOps * kPiece, "queued reads differ");
  CHECK(swapcoord_aio_wait(h) == 0, "a second wait completes nothing");
  free(buf);
  free(back);

  /* Reading past the end of the file: an I/O error naming the path, blocking and queued,
   * also when only the last byte is missing. */
  unsigned char* tail = malloc(4096);
  CHECK(tail != NULL, "malloc");
  int rc = swapcoord_aio_pread(h, tail, 4096, path2, kOps * kPiece - 4095);
  CHECK(rc == SWAPCOORD_ERR_IO, "read past the end gave %d", rc);
  CHECK(strstr(swapcoord_last_error(), path2) != NULL, "last_error names '%s'", path2);
  rc = swapcoord_aio_async_pread(h, tail, 4096, path2, (uint64_t)kOps * kPiece);
  CHECK(rc == SWAPCOORD_ERR_IO, "queued read past the end gave %d", rc);
  CHECK(strstr(swapcoord_last_error(), path2) != NULL, "last_error names '%s'", path2);
  CHECK(swapcoord_aio_pending(h) == 0, "nothing queued after a refused read");

  /* A missing file names its path; bad arguments are INVALID. */
  char missing[4096];
  snprintf(missing, sizeof missing, "%s/no-such-file.bin", dir);
  rc = swapcoord_aio_pread(h, tail, 100, missing, 0);
  CHECK(rc == SWAPCOORD_ERR_IO, "missing file gave %d", rc);
  CHECK(strstr(swapcoord_last_error(), missing) != NULL, "last_error names '%s'", missing);
  CHECK(swapcoord_aio_pread(h, NULL, 100, path2, 0) == SWAPCOORD_ERR_INVALID, "NULL buffer");
  CHECK(swapcoord_aio_pread(h, tail, 0, path2, 0) == SWAPCOORD_ERR_INVALID, "zero length");
  CHECK(swapcoord_aio_pwrite(h, tail, 100, NULL, 0) == SWAPCOORD_ERR_INVALID, "NULL path");
  CHECK(swapcoord_aio_pread(NULL, tail, 100, path2, 0) == SWAPCOORD_ERR_INVALID, "NULL handle");
  free(tail);

  /* A write into a directory that does not exist: an I/O error naming the path. */
  char nodir[4096];
  snprintf(nodir, sizeof nodir, "%s/no-such-dir/x.bin", dir);
  unsigned char one = 1;
  rc = swapcoord_aio_pwrite(h, &one, 1, nodir, 0);
  CHECK(rc == SWAPCOORD_ERR_IO, "write into a missing directory gave %d", rc);
  CHECK(strstr(swapcoord_last_error(), nodir) != NULL, "last_error names '%s'", nodir);

  swapcoord_aio_handle_destroy(h);
  unlink(path);
  unlink(path2);
  printf("ok   round trips (%s, direct %d)\n", backend ? backend : "default", direct);
  return 0;
}

static int test_created_mode(const char* dir) {
  swapcoord_aio_handle* h = NULL;
  CHECK_OK(swapcoord_aio_handle_create(&h, 1 << 20, 8, 0, 1, 1));
  char path[4096];
  snprintf(path, sizeof path, "%s/mode.bin", dir);
  unlink(path);
  const char text[] = "hello";
  CHECK_OK(swapcoord_aio_pwrite(h, text, sizeof text, path, 0));
  struct stat st;
  CHECK(stat(path, &st) == 0, "stat '%s'", path);
  CHECK((st.st_mode & 0777) == 0600, "created with mode %o, expected 600", st.st_mode & 0777);
  swapcoord_aio_handle_destroy(h);
  unlink(path);
  printf("ok   pwrite creates missing files with mode 0600\n");
  return 0;
}

static int test_pinned(const char* dir) {
  unsigned char* p = swapcoord_pinned_alloc(3 * 4096 + 5);
  CHECK(p != NULL, "pinned_alloc");
  CHECK(((uintptr_t)p % 4096) == 0, "pinned memory at %p is not 4096-aligned", (void*)p);
  fill(p, 3 * 4096 + 5, 0, 9);
  swapcoord_aio_handle* h = NULL;
  CHECK_OK(swapcoord_aio_handle_create(&h, 1 << 20, 8, 0, 1, 1));
  char path[4096];
  snprintf(path, sizeof path, "%s/pinned.bin", dir);
  unlink(path);
  CHECK_OK(swapcoord_aio_pwrite(h, p, 3 * 4096, path, 0));
  memset(p, 0, 3 * 4096);
  CHECK_OK(swapcoord_aio_pread(h, p, 3 * 4096, path, 0));
  CHECK(first_wrong(p, 3 * 4096, 0, 9) == 3 * 4096, "pinned round trip differs");
  swapcoord_aio_handle_destroy(h);
  CHECK_OK(swapcoord_pinned_free(p));
  CHECK(swapcoord_pinned_free(p) == SWAPCOORD_ERR_INVALID, "double free is refused");
  CHECK_OK(swapcoord_pinned_free(NULL));
  CHECK(swapcoord_pinned_alloc(0) == NULL, "zero bytes");
  unlink(path);
  printf("ok   pinned memory\n");
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <scratch directory> [backend]\n", argv[0]);
    return 2;
  }
  const char* dir = argv[1];
  const char* backend = argc > 2 ? argv[2] : NULL;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "cannot create '%s': %s\n", dir, strerror(errno));
    return 1;
  }
  printf("# swapcoord %s C API engine test in %s\n", swapcoord_version(), dir);
  test_knobs();
  test_round_trips(dir, backend, SWAPCOORD_DIRECT_AUTO);
  test_round_trips(dir, backend, SWAPCOORD_DIRECT_OFF);
  if (!backend) test_round_trips(dir, "posix", SWAPCOORD_DIRECT_AUTO);
  test_created_mode(dir);
  test_pinned(dir);
  if (g_failures) {
    fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  printf("all engine checks passed\n");
  return 0;
}
