/* swapcoord C API (C99).
 *
 * Two parts, for programs in C or other languages (Python ctypes, Fortran, Julia):
 *
 *   1. An asynchronous I/O engine handle shaped like DeepSpeed's `aio_handle`
 *      (csrc/aio/py_lib/deepspeed_py_aio_handle.h): the same knobs (block_size,
 *      queue_depth, single_submit, overlap_events, intra_op_parallelism), blocking and
 *      queued pread / pwrite of whole buffers at a file offset, wait(), and pinned
 *      (page-locked, page-aligned) host memory. Unlike DeepSpeed it takes caller buffers,
 *      offsets and lengths at any alignment, and never completes a short transfer:
 *      reading past the end of a file is an error naming the path.
 *   2. The swap session (swapcoord::SwapSession): a job's tensors swapped between the
 *      caller's memory and NVMe, coordinated over an MPI communicator, committed to a
 *      catalog and resumable at another rank count.
 *
 * Conventions
 *   - Every function that can fail returns an `int`: SWAPCOORD_OK (0) or a negative
 *     SWAPCOORD_ERR_* code. A few return a count or 0/1 answer (documented) and
 *     negative codes on error. Functions returning a pointer return NULL on error.
 *   - After a failure, swapcoord_last_error() gives the text of the error in the calling
 *     thread, naming what was wrong (path, offset, key, rank), as the library's C++
 *     exceptions do. Successful calls leave it unchanged (like errno).
 *   - No C++ exception crosses this interface; out parameters are written only on
 *     success unless documented otherwise.
 *   - Handles are opaque. A handle is used by one thread at a time. Session calls that
 *     are collective (create, resume, commit, verify, remove_files) must be made by every
 *     rank of the communicator, in the same order, from the thread that initialised MPI.
 */
#ifndef SWAPCOORD_SWAPCOORD_H
#define SWAPCOORD_SWAPCOORD_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- return codes ------------------------------------------------------------------ */

#define SWAPCOORD_OK 0
/* A bad argument: NULL where a pointer is needed, a tensor id out of range, a zero
 * length, an unknown dtype, a handle used after it was freed. */
#define SWAPCOORD_ERR_INVALID (-1)
/* A system call or I/O request failed (open, read, write, fdatasync, the end of a file
 * reached before a read was complete); the text names the path, offset and errno. */
#define SWAPCOORD_ERR_IO (-2)
/* A configuration key or value that cannot be used (options JSON, aio knobs, backend
 * name); the text names the key. */
#define SWAPCOORD_ERR_CONFIG (-3)
/* An MPI call failed; the text has the MPI error string. */
#define SWAPCOORD_ERR_MPI (-4)
/* Data read back differs from what was written (checksum mismatch on swap-in, or
 * mismatches found by swapcoord_session_verify); the text names tensor, file, offset. */
#define SWAPCOORD_ERR_WRONG_DATA (-5)
/* A collective call failed because some rank failed (or did not answer in time); the
 * text names the rank and its error. */
#define SWAPCOORD_ERR_PHASE (-6)
/* The catalog (HDF5) could not be written or read, or does not match the tensors. */
#define SWAPCOORD_ERR_CATALOG (-7)
/* Memory could not be had (malloc, pinned memory). */
#define SWAPCOORD_ERR_NO_MEMORY (-8)
/* Any other library error. */
#define SWAPCOORD_ERR_OTHER (-99)

/* The text of the last error in the calling thread ("" when there was none). The
 * pointer stays valid until the next failing swapcoord call in this thread. */
const char* swapcoord_last_error(void);
/* The name of a return code, e.g. "SWAPCOORD_ERR_IO" (never NULL). */
const char* swapcoord_error_name(int code);
/* The library version, e.g. "0.1.0". */
const char* swapcoord_version(void);

/* ---- element types (match swapcoord::DType) ---------------------------------------- */

#define SWAPCOORD_DTYPE_U8 0
#define SWAPCOORD_DTYPE_I8 1
#define SWAPCOORD_DTYPE_I16 2
#define SWAPCOORD_DTYPE_I32 3
#define SWAPCOORD_DTYPE_I64 4
#define SWAPCOORD_DTYPE_F16 5
#define SWAPCOORD_DTYPE_BF16 6
#define SWAPCOORD_DTYPE_F32 7
#define SWAPCOORD_DTYPE_F64 8

/* Bytes per element of `dtype`, or 0 for an unknown one. */
size_t swapcoord_dtype_size(int dtype);

/* ==== 1. I/O engine handle (DeepSpeed aio_handle) ===================================== */

typedef struct swapcoord_aio_handle swapcoord_aio_handle;

/* O_DIRECT use of the files an aio handle opens. AUTO: O_DIRECT, and buffered I/O
 * (with one warning) where the filesystem refuses it (tmpfs). */
#define SWAPCOORD_DIRECT_AUTO 0
#define SWAPCOORD_DIRECT_ON 1
#define SWAPCOORD_DIRECT_OFF 2

typedef struct swapcoord_aio_options {
  size_t block_size;        /* bytes per request sent to the kernel (multiple of 4096) */
  size_t queue_depth;       /* requests in flight per I/O thread */
  int single_submit;        /* nonzero: one request per io_submit call */
  int overlap_events;       /* nonzero: refill the queue as each request completes */
  int intra_op_parallelism; /* I/O threads (DeepSpeed's thread_count) */
  const char* backend;      /* "libaio", "io_uring", "posix"; NULL: the default (libaio) */
  int direct;               /* SWAPCOORD_DIRECT_AUTO / _ON / _OFF */
} swapcoord_aio_options;

/* Fills `options` with the defaults: 1 MiB blocks, queue depth 32, single_submit 0,
 * overlap_events 1, 1 thread, default backend, DIRECT_AUTO. */
void swapcoord_aio_options_init(swapcoord_aio_options* options);

/* Creates an engine handle as DeepSpeed's aio_handle(block_size, queue_depth,
 * single_submit, overlap_events, intra_op_parallelism), on the default backend with
 * DIRECT_AUTO. *out is set on success.
 * Returns 0, SWAPCOORD_ERR_CONFIG for an impossible knob (the text names it),
 * SWAPCOORD_ERR_IO when the kernel refuses the backend (aio limits). */
int swapcoord_aio_handle_create(swapcoord_aio_handle** out, size_t block_size, size_t queue_depth,
                                int single_submit, int overlap_events, int intra_op_parallelism);
/* As swapcoord_aio_handle_create, with every option including the backend and the
 * direct mode. `options` NULL: the defaults. SWAPCOORD_ERR_CONFIG names an unknown or
 * not-compiled backend. */
int swapcoord_aio_handle_create_with_options(swapcoord_aio_handle** out,
                                             const swapcoord_aio_options* options);
/* Waits for every queued operation (their errors are dropped) and frees the handle.
 * NULL is ignored. */
void swapcoord_aio_handle_destroy(swapcoord_aio_handle* handle);

/* The handle's knobs, as DeepSpeed's getters; 0 for a NULL handle. */
size_t swapcoord_aio_get_block_size(const swapcoord_aio_handle* handle);
size_t swapcoord_aio_get_queue_depth(const swapcoord_aio_handle* handle);
int swapcoord_aio_get_single_submit(const swapcoord_aio_handle* handle);
int swapcoord_aio_get_overlap_events(const swapcoord_aio_handle* handle);
int swapcoord_aio_get_intra_op_parallelism(const swapcoord_aio_handle* handle);
/* The backend's name ("libaio", ...); "" for a NULL handle. */
const char* swapcoord_aio_get_backend(const swapcoord_aio_handle* handle);

/* Blocking read of `bytes` bytes of file `path` at `file_offset` into `buffer`
 * (DeepSpeed's sync_pread). Buffer, offset and length may have any alignment: aligned
 * ones go straight to the device with O_DIRECT, an unaligned buffer goes through a
 * pinned bounce buffer, an unaligned offset or length through buffered I/O.
 * Returns 0 when all `bytes` were read; SWAPCOORD_ERR_IO (naming the path) when the file
 * cannot be opened or ends before file_offset + bytes (never a short read);
 * SWAPCOORD_ERR_INVALID for a NULL buffer or path or a zero length. */
int swapcoord_aio_pread(swapcoord_aio_handle* handle, void* buffer, size_t bytes, const char* path,
                        uint64_t file_offset);
/* Blocking write of `bytes` bytes from `buffer` to file `path` at `file_offset`
 * (DeepSpeed's sync_pwrite). The file is created (mode 0600) if missing; an existing
 * file is neither truncated nor shrunk. Alignment as for swapcoord_aio_pread.
 * Returns 0 when all bytes were written, SWAPCOORD_ERR_IO naming the path otherwise. */
int swapcoord_aio_pwrite(swapcoord_aio_handle* handle, const void* buffer, size_t bytes,
                         const char* path, uint64_t file_offset);
/* Queue a read / write (DeepSpeed's async_pread / async_pwrite) and return at once.
 * The buffer must stay valid, and unchanged for a write, until swapcoord_aio_wait.
 * Returns 0 when queued; errors found before queueing (the file cannot be opened, a
 * read past its end, bad arguments) are returned here and nothing is queued. */
int swapcoord_aio_async_pread(swapcoord_aio_handle* handle, void* buffer, size_t bytes,
                              const char* path, uint64_t file_offset);
int swapcoord_aio_async_pwrite(swapcoord_aio_handle* handle, const void* buffer, size_t bytes,
                               const char* path, uint64_t file_offset);
/* Waits for every queued operation (DeepSpeed's wait). Returns the number of operations
 * completed (>= 0), or, when any failed, the code of the first failure with its text in
 * swapcoord_last_error(); every operation has ended either way and none stays queued. */
int swapcoord_aio_wait(swapcoord_aio_handle* handle);
/* The number of queued operations not yet waited for (0 for a NULL handle). */
size_t swapcoord_aio_pending(const swapcoord_aio_handle* handle);

/* Page-locked (pinned) host memory, aligned to at least 4096 bytes (DeepSpeed's
 * new_cpu_locked_tensor): cudaHostAlloc when built with CUDA and a GPU is present,
 * otherwise an mlock'ed mapping (unlocked, with one warning, when RLIMIT_MEMLOCK
 * refuses). Returns NULL on failure (text in swapcoord_last_error()); `bytes` 0 gives
 * NULL with SWAPCOORD_ERR_INVALID text. */
void* swapcoord_pinned_alloc(size_t bytes);
/* Frees memory from swapcoord_pinned_alloc. NULL: 0. Returns SWAPCOORD_ERR_INVALID for a
 * pointer swapcoord_pinned_alloc did not return (or already freed). */
int swapcoord_pinned_free(void* pointer);

/* ==== 2. Swap session ================================================================== */

typedef struct swapcoord_session swapcoord_session;
typedef struct swapcoord_swap_handle swapcoord_swap_handle;

/* One tensor of the job. `shape` has `ndim` entries (ndim 0: a scalar, shape may be
 * NULL). The session copies what it needs; the spec need not outlive the call. */
typedef struct swapcoord_tensor_spec {
  const char* name;
  int dtype; /* SWAPCOORD_DTYPE_* */
  int ndim;
  const uint64_t* shape;
} swapcoord_tensor_spec;

/* What one swap call moved on this rank. */
typedef struct swapcoord_swap_figures {
  size_t pieces;
  uint64_t bytes;            /* as on disk (aligned) */
  double seconds;            /* from the start of the operation to its end */
  uint64_t prefetched_bytes; /* swap-in: bytes served from a prefetch */
} swapcoord_swap_figures;

/* Cumulative figures of this rank, per kind of call. */
typedef struct swapcoord_stats_kind {
  uint64_t calls;
  uint64_t bytes;
  double seconds;
} swapcoord_stats_kind;

typedef struct swapcoord_session_stats {
  swapcoord_stats_kind swap_out, swap_in, prefetch, commit;
} swapcoord_session_stats;

/* The result of swapcoord_session_verify (over all ranks, the same on every rank). */
typedef struct swapcoord_check {
  uint64_t pieces;
  uint64_t bytes;
  uint64_t mismatches;
} swapcoord_check;

/* Where this rank stands in the job. */
typedef struct swapcoord_session_info {
  int rank;            /* in the session's communicator */
  int world_size;
  int node;            /* this rank's node, 0 <= node < node_count */
  int node_count;
  int local_rank;      /* within the node */
  int local_size;      /* ranks on this node */
  int committed_epoch; /* -1 before the first commit */
  int resumed;         /* 1: made by swapcoord_session_resume */
  int repartitioned;   /* 1: resume found another plan than the catalog's */
  size_t tensor_count;
  size_t local_piece_count; /* pieces this rank owns */
} swapcoord_session_info;

/* Called (from a watchdog thread) when a collective call that cannot take a deadline
 * outlives the phase timeout: a peer stopped responding. The library never ends the
 * process; a program that wants the job to end calls _exit or MPI_Abort here. The
 * message names the call and how long it has waited. */
typedef void (*swapcoord_stall_callback)(const char* message, void* user);

/* Collective over the communicator `comm` (a Fortran handle: MPI_Comm_c2f(MPI_COMM_WORLD);
 * mpi4py: comm.py2f()), which is duplicated. Makes the session for `count` tensors:
 * topology, plan, swap files (created and preallocated under the roots).
 * `options_json`: the session options as JSON, in swapcoord's form
 *   {"aio": {...}, "swap": {"roots": [...], "catalog_dir": ..., "job": ..., ...}}
 * or a DeepSpeed ds_config.json (its "aio" and "zero_optimization" sections);
 * NULL or "" gives the defaults. Unknown keys and impossible values give
 * SWAPCOORD_ERR_CONFIG, the text naming the key.
 * Returns 0 and sets *out; on error *out is untouched. */
int swapcoord_session_create(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                             const swapcoord_tensor_spec* tensors, size_t count);
/* Collective: as swapcoord_session_create, then loads the last committed catalog (under
 * catalog_dir), checks it against `tensors` and re-partitions for this world size. Every
 * piece then reads as its committed copy until it is swapped out again. */
int swapcoord_session_resume(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                             const swapcoord_tensor_spec* tensors, size_t count);
/* As create / resume, with a stall callback in place from the start (NULL: the stall is
 * logged and the call keeps waiting). `user` is passed to it unchanged. */
int swapcoord_session_create_ex(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                                const swapcoord_tensor_spec* tensors, size_t count,
                                swapcoord_stall_callback on_stall, void* user);
int swapcoord_session_resume_ex(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                                const swapcoord_tensor_spec* tensors, size_t count,
                                swapcoord_stall_callback on_stall, void* user);
/* Replaces the stall callback (NULL: log only) for the session's later calls. */
int swapcoord_session_set_stall_callback(swapcoord_session* session,
                                         swapcoord_stall_callback on_stall, void* user);
/* Waits for work in flight and frees the session. Not collective; never fails. Free
 * every swapcoord_swap_handle of the session first. NULL is ignored. */
void swapcoord_session_destroy(swapcoord_session* session);

/* This rank's piece of tensor `tensor_id`: elements [*element_offset, *element_offset +
 * *numel) of the tensor (either pointer may be NULL). Returns 1 when this rank owns a
 * piece (then the out values are set), 0 when it owns none, SWAPCOORD_ERR_INVALID for an
 * id out of range. */
int swapcoord_session_local_piece(const swapcoord_session* session, uint32_t tensor_id,
                                  uint64_t* element_offset, uint64_t* numel);

/* Swap out this rank's pieces of tensors ids[0..count) from buffers[i] (numel elements
 * of the tensor's dtype, at any address alignment; see local_piece). Ids of tensors this
 * rank owns no piece of are skipped (their buffers may be NULL), so every rank may pass
 * the same list. Local (not collective). Blocks until the data is on disk (not yet
 * durable: see commit). `figures` may be NULL. */
int swapcoord_session_swap_out(swapcoord_session* session, const uint32_t* ids, size_t count,
                               const void* const* buffers, swapcoord_swap_figures* figures);
/* Swap in this rank's pieces of ids[0..count) into buffers[i]; the latest version of
 * each piece (swapped out since the last commit, else the committed one). A checksum
 * mismatch gives SWAPCOORD_ERR_WRONG_DATA. */
int swapcoord_session_swap_in(swapcoord_session* session, const uint32_t* ids, size_t count,
                              void* const* buffers, swapcoord_swap_figures* figures);
/* Async forms: queue the swap on the session's I/O thread (calls run in order) and set
 * *handle. The ids are copied; the buffers must stay valid (and, for swap-out,
 * unchanged) until the handle is waited for or freed. */
int swapcoord_session_swap_out_async(swapcoord_session* session, const uint32_t* ids, size_t count,
                                     const void* const* buffers, swapcoord_swap_handle** handle);
int swapcoord_session_swap_in_async(swapcoord_session* session, const uint32_t* ids, size_t count,
                                    void* const* buffers, swapcoord_swap_handle** handle);
/* Starts reading this rank's pieces of ids[0..count) into pinned memory (as many whole
 * pieces as fit in the prefetch memory); a later swap-in of them only copies. A new
 * prefetch replaces the previous one. `handle` may be NULL: the session keeps it (its
 * error, if any, is returned by the session's next call). */
int swapcoord_session_prefetch(swapcoord_session* session, const uint32_t* ids, size_t count,
                               swapcoord_swap_handle** handle);
/* Waits for the operation, writes its figures (`figures` may be NULL) and frees the
 * handle, also when the operation failed. Returns 0 or the operation's error. */
int swapcoord_swap_wait(swapcoord_swap_handle* handle, swapcoord_swap_figures* figures);
/* 1 when the operation is done (wait will not block), 0 otherwise. */
int swapcoord_swap_ready(const swapcoord_swap_handle* handle);
/* Frees a handle without taking its result: waits for the operation; its error, if
 * any, is returned by the session's next call. NULL is ignored. */
void swapcoord_swap_handle_free(swapcoord_swap_handle* handle);
/* Blocks until every call in flight on the session is done; returns the first error of
 * one whose handle was freed without a wait. */
int swapcoord_session_wait_all(swapcoord_session* session);

/* Collective: makes every piece swapped out since the last commit durable and records
 * the state in <catalog_dir>/catalog.h5 (atomic). Every piece must have been swapped out
 * once (or come from resume). Sets *epoch (may be NULL) to the new committed epoch. */
int swapcoord_session_commit(swapcoord_session* session, int* epoch);
/* Collective: reads every committed piece and compares its checksum with the catalog's.
 * Fills *check (may be NULL; also filled when mismatches are found). Returns 0 when all
 * match, SWAPCOORD_ERR_WRONG_DATA when some do not (the text lists the first ones, each
 * naming tensor, file and offset). */
int swapcoord_session_verify(swapcoord_session* session, swapcoord_check* check);
/* This rank's cumulative figures. */
int swapcoord_session_statistics(const swapcoord_session* session, swapcoord_session_stats* stats);
/* The last committed epoch (-1 before the first commit) in *epoch. */
int swapcoord_session_committed_epoch(const swapcoord_session* session, int* epoch);
/* Rank, world, node and plan figures. */
int swapcoord_session_get_info(const swapcoord_session* session, swapcoord_session_info* info);
/* <catalog_dir>/catalog.h5, absolute; valid as long as the session; NULL on error. */
const char* swapcoord_session_catalog_path(const swapcoord_session* session);
/* Collective: removes the job's swap files, catalog and then-empty directories. */
int swapcoord_session_remove_files(swapcoord_session* session);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SWAPCOORD_SWAPCOORD_H */
