#pragma once
// The catalog: checkpointable swap metadata in HDF5 (format version 1, DESIGN.md). One file
// per job, <dir>/catalog.h5, always holding the last committed epoch: every rank writes its
// rows of the next epoch's catalog into <dir>/catalog.h5.tmp in one collective parallel-HDF5
// write, and rank 0 fsyncs it and renames it over catalog.h5 (the commit) only after every
// rank has written and fdatasync'ed that epoch's data.
//
// Schema (readable with h5dump, h5ls and h5py):
//   root attributes: format ("swapcoord-catalog"), version (1), job, epoch, slot, slots,
//     world_size, node_count, layout, policy, alignment, plan_fingerprint (hex string),
//     config (JSON), created (ISO 8601 UTC)
//   /tensors  compound, one row per swapped piece: id, name, dtype, numel, element_offset,
//     shard, shard_count, owner, node, root, file, offset, bytes, aligned_bytes,
//     checksum (xxh64 of the piece's bytes), epoch
//   /files    compound: path (relative to its root), owner, root, size
//   /roots    compound: node, index, path (the node's root directory)
//   /ranks    compound: rank, node, host, local_rank, bytes, swap_out_s, swap_in_s
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <span>
#include <string_view>
#include <vector>

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
inline constexpr int kCatalogVersion = 1;
inline constexpr std::size_t kCatalogNameBytes = 256;  // fixed-size strings in the file

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
  std::uint64_t checksum = 0;      // XXH64 (seed 0) of the piece's `bytes` bytes
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

// Collective over `comm`: writes <dir>/catalog.h5.tmp with parallel HDF5 (each rank its rows
// at offsets from an exclusive scan, in one collective write per dataset), then rank 0
// fsyncs it, renames it over <dir>/catalog.h5 and fsyncs <dir>. `header` supplies the root
// attributes (its vectors are ignored). Throws on every rank if any rank failed.
// `stage`, when given, is called on rank 0 with "written" (the temporary file is complete,
// not yet renamed) and "renamed" (committed, directory not yet fsynced): a seam for tests
// that kill the process there.
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

// Reads every row `i` with i % size == rank from its file and compares the XXH64 of its
// bytes with the recorded checksum. Not collective. An unreadable file counts as a
// mismatch (with the error in the notes) rather than throwing.
CatalogCheck verify_catalog(const Catalog& catalog, IoEngine& engine, std::size_t buffer_bytes, int rank,
                            int size, DirectMode direct = DirectMode::automatic);

// As verify_catalog, for the rows listed (indices into catalog.tensors).
CatalogCheck verify_catalog_rows(const Catalog& catalog, IoEngine& engine, std::size_t buffer_bytes,
                                 std::span<const std::size_t> rows, DirectMode direct = DirectMode::automatic);

// Collective: which rows of `catalog` this rank should check when every node's files are
// node-local. Each row goes to a rank that can open its file (a regular file of at least
// the recorded size), preferring ranks on the host the catalog records for the file's
// owner; rows are spread over those ranks. Rows no rank can reach are counted (on rank 0)
// as mismatches in `unreachable`, with notes naming the files.
struct CatalogAssignment {
  std::vector<std::size_t> rows;
  CatalogCheck unreachable;
};
CatalogAssignment assign_catalog_rows(MPI_Comm comm, const Catalog& catalog);

// Collective: verify_catalog over all ranks of `comm`, where every node's files are
// node-local. Each row is read by a rank that can open its file (a regular file of at
// least the recorded size), preferring ranks on the host the catalog records for the
// file's owner; rows are spread over those ranks. A row no rank can reach is a mismatch
// naming the file. The result (sums and the first notes) is the same on every rank.
CatalogCheck verify_catalog_collective(MPI_Comm comm, const Catalog& catalog, IoEngine& engine,
                                       std::size_t buffer_bytes, DirectMode direct = DirectMode::automatic);

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
Catalog load_catalog(const std::string& path);

}  // namespace swapcoord
