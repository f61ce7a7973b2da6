#pragma once
// The catalog: checkpointable swap metadata in HDF5 (DESIGN.md). One file
// per job, <dir>/catalog.h5, always holding the last committed epoch: every rank sends its
// rows of the next epoch's catalog to rank 0, which builds the HDF5 file in memory, writes
// it to <dir>/catalog.h5.tmp (mode 0600, no symbolic link followed), fsyncs it and renames it
// over catalog.h5 (the commit), only after every rank has written and fdatasync'ed that
// epoch's data. No MPI-IO: paths up to the roots' 1023 bytes work, and a write error (a
// full disk) fails the commit at once on every rank, naming the file and the errno.
//
// Schema, format version 3 (readable with h5dump, h5ls and h5py; versions 1 and 2 are still read):
//   root attributes: format ("swapcoord-catalog"), version (3), job, epoch, slot, slots,
//     world_size, node_count, layout, policy, alignment, plan_fingerprint (hex string),
//     config (JSON), created (ISO 8601 UTC), generation, metadata (the application's
//     string given to SwapSession::commit, e.g. JSON with its training step; may be empty),
//     checksum ("xxh3_64" or "xxh64": the algorithm of every row's checksum; since version
//     3, and versions 1 and 2 have no such attribute: their rows are XXH64)
//   /tensors  compound, one row per swapped piece: id, numel, element_offset, shard,
//     shard_count, owner, node, root, file, offset, bytes, aligned_bytes, checksum (of the
//     piece's bytes, seed 0), epoch (version 1 also had name and dtype in every row)
//   /names    compound, one row per tensor (by id): id, name_bytes, name_offset, dtype;
//     the name is bytes [name_offset, name_offset + name_bytes) of /name_text
//   /name_text  uint8: the tensors' names, each once, one after the other (UTF-8)
//   /files    compound: path (relative to its root), owner, root, size
//   /roots    compound: node, index, path (the node's root directory)
//   /ranks    compound: rank, node, host, local_rank, bytes, swap_out_s, swap_in_s
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <span>
#include <string_view>
#include <vector>

#include "swapcoord/common/checksum.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/io/io_engine.hpp"

namespace swapcoord {

// HDF5 failed; what() includes the HDF5 error stack's messages.
class HdfError : public Error {
 public:
  explicit HdfError(const std::string& message) : Error(message) {}
};

inline constexpr std::string_view kCatalogFormat = "swapcoord-catalog";
inline constexpr int kCatalogVersion = 3;
inline constexpr std::size_t kCatalogNameBytes = 256;  // fixed-size strings in the file
inline constexpr std::size_t kCatalogMetadataBytes = 32 * 1024;  // the `metadata` attribute, at most

struct CatalogRow {
  std::uint32_t id = 0;            // tensor id (index in the model's tensor list)
  std::string name;
  DType dtype = DType::u8;
  std::uint64_t numel = 0;         // of this piece
  std::uint64_t element_offset = 0;  // of this piece in its tensor
  std::uint32_t shard = 0, shard_count = 1;
  std::int32_t owner = 0, node = 0, root = 0;
  std::uint32_t file = 0;          // index into files
  std::uint64_t offset = 0, bytes = 0, aligned_bytes = 0;
  std::uint64_t checksum = 0;      // of the piece's `bytes` bytes, by the catalog's `checksum` kind
  std::int32_t epoch = 0;
};

struct CatalogFile {
  std::string path;                // relative to its root, e.g. "job/rank-0/slot-1.swp"
  std::int32_t owner = 0, root = 0;
  std::uint64_t size = 0;
};

struct CatalogRoot {
  std::int32_t node = 0, index = 0;
  std::string path;
};

struct CatalogRank {
  std::int32_t rank = 0, node = 0, local_rank = 0;
  std::string host;
  std::uint64_t bytes = 0;
  double swap_out_s = 0, swap_in_s = 0;
};

struct Catalog {
  // root attributes
  std::int32_t version = kCatalogVersion;  // of the file it was loaded from; the writer writes kCatalogVersion
  std::string job;
  std::int32_t epoch = 0, slot = 0, slots = 2, world_size = 1, node_count = 1;
  std::string layout, policy;
  std::uint64_t alignment = 4096;
  std::string plan_fingerprint;
  std::string config_json;
  std::string created;
  // Which set of file names the data files use (optional attribute, 0 when absent): a
  // re-partitioned resume writes its pieces into the other set, so that the committed
  // files are never overwritten before the next commit. Slot s of generation g is named
  // slot-(2 * (g % 2) + s).
  std::int32_t generation = 0;
  // What the application recorded with this epoch (SwapSession::commit's `metadata`), as
  // given; "" when none (an optional attribute: older catalogs have none).
  std::string metadata;
  // The algorithm of every row's checksum (attribute `checksum`, since version 3; versions
  // 1 and 2 are XXH64).
  ChecksumKind checksum = kDefaultChecksum;
  // datasets
  std::vector<CatalogRow> tensors;
  std::vector<CatalogFile> files;
  std::vector<CatalogRoot> roots;
  std::vector<CatalogRank> ranks;

  // The absolute path of file `index`: the root of its owner's node joined with its path.
  std::string file_path(std::uint32_t index) const;
};

// What each rank contributes to a commit: its own rows, files, roots (local rank 0 of a
// node gives the node's roots, others none) and rank line. Row and file indices are
// global (file indices as in the plan).
struct CatalogPart {
  std::vector<CatalogRow> tensors;
  std::vector<CatalogFile> files;
  std::vector<CatalogRoot> roots;
  CatalogRank rank;
};

// The commit in two halves, for a caller that moves the rows itself with waits of its own
// (the session, whose every wait has a deadline and names the ranks that do not arrive):
// every rank packs its part; rank 0 writes the catalog from every rank's packed part, in
// rank order, exactly as commit_catalog does. In a packed part a row's `file` is the index
// of the file among that part's own files; write_catalog numbers the files across parts.
// catalog_part_epoch reads the epoch a packed part was made for (-1: not a packed part).
std::vector<std::byte> pack_catalog_part(int epoch, const CatalogPart& part);
int catalog_part_epoch(std::span<const std::byte> packed);
void write_catalog(const std::string& dir, const Catalog& header, std::span<const std::vector<std::byte>> parts,
                   const std::function<void(const char* stage)>& stage = {});
// write_catalog in its two steps, for a caller that makes its data durable between them
// (the session: the catalog file is written while the ranks fdatasync their swap files,
// and renamed once they all have). write_catalog_temp leaves <dir>/catalog.h5.tmp
// complete and fsynced, catalog.h5 untouched; rename_catalog_temp calls stage("written"),
// renames it over catalog.h5, calls stage("renamed") and fsyncs <dir>. A failure of either
// removes catalog.h5.tmp and (before the rename) leaves catalog.h5 as it was.
void write_catalog_temp(const std::string& dir, const Catalog& header, std::span<const std::vector<std::byte>> parts);
void rename_catalog_temp(const std::string& dir, const std::function<void(const char* stage)>& stage = {});

// Collective over `comm`: gathers every rank's part on rank 0 (rows in rank order), which
// builds the catalog in memory (HDF5's core driver) with its trailer (seal_catalog), then
// removes a stale <dir>/catalog.h5.tmp (a link there is removed, not followed), creates it
// anew (O_EXCL | O_NOFOLLOW, mode 0600 whatever the umask), writes it, fsyncs it, renames it
// over <dir>/catalog.h5 (a link named catalog.h5 is replaced, not followed) and fsyncs <dir>.
// `header` supplies the root attributes (its vectors are ignored; rank 0's are used).
// Throws the same Error on every rank if any rank failed (other ranks than the one that
// failed get the first 1 KiB of its message); a failure on rank 0 names the file and the
// errno text, and before the rename it removes catalog.h5.tmp and leaves
// catalog.h5 as it was. Rank 0 holds the whole catalog in memory, as when it loads it.
// `stage`, when given, is called on rank 0 with "written" (the temporary file is complete
// and fsynced, not yet renamed) and "renamed" (committed, directory not yet fsynced): a
// seam for tests that kill the process there.
void commit_catalog(MPI_Comm comm, const std::string& dir, const Catalog& header,
                    const CatalogPart& part,
                    const std::function<void(const char* stage)>& stage = {});

// Where tensor bytes live according to a catalog.
struct CatalogSegment {
  std::uint32_t file = 0;          // index into Catalog::files
  std::uint64_t file_offset = 0;   // aligned
  std::uint64_t bytes = 0;         // data bytes
  std::uint64_t read_bytes = 0;    // bytes rounded up to the alignment (within the row)
  std::uint64_t tensor_offset = 0; // byte offset in the tensor
  std::size_t row = 0;             // index into Catalog::tensors
};

// An index of a catalog's rows by tensor, checked against a model.
class CatalogIndex {
 public:
  // Throws Error (naming the catalog's tensor and the problem) unless the rows cover every
  // one of `tensors` exactly once, with matching names and dtypes.
  CatalogIndex(const Catalog& catalog, std::span<const TensorSpec> tensors);
  // Appends the segments holding bytes [begin, end) of tensor `id` to `out`.
  void locate(std::uint32_t id, std::uint64_t begin, std::uint64_t end, std::vector<CatalogSegment>& out) const;

 private:
  const Catalog& _catalog;
  std::vector<std::vector<std::size_t>> _rows;  // per tensor: row indices by element offset
};

struct CatalogCheck {
  std::uint64_t pieces = 0, bytes = 0;   // checked by this rank
  std::uint64_t mismatches = 0;          // wrong checksums, unreadable or short pieces
  std::vector<std::string> notes;        // the first few, each naming tensor, file, offset
};

// Reads every row `i` with i % size == rank from its file and compares the checksum of its
// bytes with the recorded checksum. Not collective. An unreadable file counts as a
// mismatch (with the error in the notes) rather than throwing.
//
// Files are opened through checked_file_path (catalog_paths.hpp): only files in `roots`
// are read; with `roots` empty, in the catalog's roots that belong to this user
// (readable_catalog_roots).
CatalogCheck verify_catalog(const Catalog& catalog, IoEngine& engine, std::size_t buffer_bytes, int rank,
                            int size, DirectMode direct = DirectMode::automatic,
                            std::span<const std::string> roots = {});

// As verify_catalog, for the rows listed (indices into catalog.tensors).
CatalogCheck verify_catalog_rows(const Catalog& catalog, IoEngine& engine, std::size_t buffer_bytes,
                                 std::span<const std::size_t> rows, DirectMode direct = DirectMode::automatic,
                                 std::span<const std::string> roots = {});

// Collective: which rows of `catalog` this rank should check when every node's files are
// node-local. Each row goes to a rank that can open its file (a regular file of at least
// the recorded size), preferring ranks on the host the catalog records for the file's
// owner; rows are spread over those ranks. Rows no rank can reach are counted (on rank 0)
// as mismatches in `unreachable`, with notes naming the files.
struct CatalogAssignment {
  std::vector<std::size_t> rows;
  CatalogCheck unreachable;
};
CatalogAssignment assign_catalog_rows(MPI_Comm comm, const Catalog& catalog, std::span<const std::string> roots = {});

// Collective: verify_catalog over all ranks of `comm`, where every node's files are
// node-local. Each row is read by a rank that can open its file (a regular file of at
// least the recorded size), preferring ranks on the host the catalog records for the
// file's owner; rows are spread over those ranks. A row no rank can reach is a mismatch
// naming the file. The result (sums and the first notes) is the same on every rank.
CatalogCheck verify_catalog_collective(MPI_Comm comm, const Catalog& catalog, IoEngine& engine,
                                       std::size_t buffer_bytes, DirectMode direct = DirectMode::automatic,
                                       std::span<const std::string> roots = {});

// Collective: rank `root` loads the catalog at `path` (load_catalog) and sends it to every
// rank. A failure throws the same Error on every rank.
Catalog load_catalog_collective(MPI_Comm comm, const std::string& path, int root = 0);
// Collective: `catalog` (significant on rank `root` only) on every rank.
Catalog broadcast_catalog(MPI_Comm comm, const Catalog& catalog, int root = 0);

// (Re)writes a catalog's integrity trailer: 16 bytes after the HDF5 data ("SCCATv1\0" and
// the little-endian XXH64 of every byte before them). commit_catalog seals every catalog;
// a tool that edits one on purpose (h5py, the tests) must seal it again.
void seal_catalog(const std::string& path);

// Reads and checks a catalog (serial HDF5; any rank may call it). The trailer is checked
// first, so a truncated or altered file never reaches the HDF5 parser. Throws Error naming
// the file and the problem for: a missing or wrong trailer, not an HDF5 file or not a catalog, a newer format version,
// missing datasets or attributes, columns of the wrong type, rows that overlap or point
// outside their file, absolute paths or paths with "..".
// TrailerCheck::skip leaves the trailer out, to read a catalog that has none or a wrong one
// (edited with h5py and not resealed, or damaged, to salvage what it holds). The file then
// reaches the HDF5 parser unchecked, and HDF5 is not hardened against malformed files:
// skip the check only for files you trust. Every other check is made as with `required`.
enum class TrailerCheck { required, skip };
Catalog load_catalog(const std::string& path, TrailerCheck trailer = TrailerCheck::required);

}  // namespace swapcoord
