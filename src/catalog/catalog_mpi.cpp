// The catalog across ranks: one rank loads it and sends it to all (so that a job of
// thousands of ranks does not open one HDF5 file thousands of times), and verification
// where every node's files are node-local.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <type_traits>

#include <fmt/format.h>

#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/common/host.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/topology.hpp"

namespace swapcoord {
namespace {

// A flat byte image of a Catalog (native layout: every rank runs the same binary).
class Writer {
 public:
  template <class T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const char*>(&value);
    _bytes.insert(_bytes.end(), p, p + sizeof value);
  }
  void put(const std::string& text) {
    put<std::uint64_t>(text.size());
    _bytes.insert(_bytes.end(), text.begin(), text.end());
  }
  std::vector<char>& bytes() { return _bytes; }

 private:
  std::vector<char> _bytes;
};

class Reader {
 public:
  explicit Reader(const std::vector<char>& bytes) : _bytes(bytes) {}
  template <class T>
  void get(T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof value);
    std::memcpy(&value, _bytes.data() + _at, sizeof value);
    _at += sizeof value;
  }
  void get(std::string& text) {
    std::uint64_t size = 0;
    get(size);
    need(size);
    text.assign(_bytes.data() + _at, size);
    _at += size;
  }
  std::uint64_t count() {
    std::uint64_t n = 0;
    get(n);
    return n;
  }

 private:
  void need(std::uint64_t size) const {
    if (size > _bytes.size() - _at) throw Error("broadcast_catalog: truncated catalog image");
  }
  const std::vector<char>& _bytes;
  std::size_t _at = 0;
};

void serialize(const Catalog& c, Writer& w) {
  w.put(c.job);
  w.put(c.epoch);
  w.put(c.slot);
  w.put(c.slots);
  w.put(c.world_size);
  w.put(c.node_count);
  w.put(c.layout);
  w.put(c.policy);
  w.put(c.alignment);
  w.put(c.plan_fingerprint);
  w.put(c.config_json);
  w.put(c.created);
  w.put(c.generation);
  w.put<std::uint64_t>(c.tensors.size());
  for (const auto& r : c.tensors) {
    w.put(r.id);
    w.put(r.name);
    w.put(r.dtype);
    w.put(r.numel);
    w.put(r.element_offset);
    w.put(r.shard);
    w.put(r.shard_count);
    w.put(r.owner);
    w.put(r.node);
    w.put(r.root);
    w.put(r.file);
    w.put(r.offset);
    w.put(r.bytes);
    w.put(r.aligned_bytes);
    w.put(r.checksum);
    w.put(r.epoch);
  }
  w.put<std::uint64_t>(c.files.size());
  for (const auto& f : c.files) {
    w.put(f.path);
    w.put(f.owner);
    w.put(f.root);
    w.put(f.size);
  }
  w.put<std::uint64_t>(c.roots.size());
  for (const auto& r : c.roots) {
    w.put(r.node);
    w.put(r.index);
    w.put(r.path);
  }
  w.put<std::uint64_t>(c.ranks.size());
  for (const auto& r : c.ranks) {
    w.put(r.rank);
    w.put(r.node);
    w.put(r.local_rank);
    w.put(r.host);
    w.put(r.bytes);
    w.put(r.swap_out_s);
    w.put(r.swap_in_s);
  }
}

Catalog deserialize(const std::vector<char>& bytes) {
  Reader in(bytes);
  Catalog c;
  in.get(c.job);
  in.get(c.epoch);
  in.get(c.slot);
  in.get(c.slots);
  in.get(c.world_size);
  in.get(c.node_count);
  in.get(c.layout);
  in.get(c.policy);
  in.get(c.alignment);
  in.get(c.plan_fingerprint);
  in.get(c.config_json);
  in.get(c.created);
  in.get(c.generation);
  c.tensors.resize(in.count());
  for (auto& r : c.tensors) {
    in.get(r.id);
    in.get(r.name);
    in.get(r.dtype);
    in.get(r.numel);
    in.get(r.element_offset);
    in.get(r.shard);
    in.get(r.shard_count);
    in.get(r.owner);
    in.get(r.node);
    in.get(r.root);
    in.get(r.file);
    in.get(r.offset);
    in.get(r.bytes);
    in.get(r.aligned_bytes);
    in.get(r.checksum);
    in.get(r.epoch);
  }
  c.files.resize(in.count());
  for (auto& f : c.files) {
    in.get(f.path);
    in.get(f.owner);
    in.get(f.root);
    in.get(f.size);
  }
  c.roots.resize(in.count());
  for (auto& r : c.roots) {
    in.get(r.node);
    in.get(r.index);
    in.get(r.path);
  }
  c.ranks.resize(in.count());
  for (auto& r : c.ranks) {
    in.get(r.rank);
    in.get(r.node);
    in.get(r.local_rank);
    in.get(r.host);
    in.get(r.bytes);
    in.get(r.swap_out_s);
    in.get(r.swap_in_s);
  }
  return c;
}

// Broadcasts a byte vector of any size (in pieces of at most 1 GiB).
void broadcast_bytes(MPI_Comm comm, std::vector<char>& bytes, int root) {
  std::uint64_t size = bytes.size();
  mpi_check(MPI_Bcast(&size, 1, MPI_UINT64_T, root, comm), "MPI_Bcast (catalog size)");
  bytes.resize(size);
  constexpr std::uint64_t kChunk = 1ULL << 30;
  for (std::uint64_t done = 0; done < size; done += kChunk) {
    const auto n = static_cast<int>(std::min(kChunk, size - done));
    mpi_check(MPI_Bcast(bytes.data() + done, n, MPI_CHAR, root, comm), "MPI_Bcast (catalog)");
  }
}

}  // namespace

Catalog broadcast_catalog(MPI_Comm comm, const Catalog& catalog, int root) {
  int rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  Writer w;
  if (rank == root) serialize(catalog, w);
  broadcast_bytes(comm, w.bytes(), root);
  if (rank == root) return catalog;
  return deserialize(w.bytes());
}

Catalog load_catalog_collective(MPI_Comm comm, const std::string& path, int root) {
  int rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  Catalog catalog;
  std::string problem;
  if (rank == root) {
    try {
      catalog = load_catalog(path);
    } catch (const std::exception& e) {
      problem = e.what();
    }
  }
  const auto [bad, message] = first_message(comm, problem);
  if (bad >= 0) throw Error(message);
  return broadcast_catalog(comm, catalog, root);
}

CatalogAssignment assign_catalog_rows(MPI_Comm comm, const Catalog& catalog) {
  int rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  const std::size_t files = catalog.files.size();
  if (files > static_cast<std::size_t>(INT_MAX)) throw Error("verify: too many files in the catalog for one exchange");
  const int n = static_cast<int>(files);
  // Which files this rank reaches: 2 on the host the catalog names for the file's owner,
  // 1 elsewhere, 0 not at all. Then per file, over all ranks: the best class, how many
  // ranks have it and this rank's index among them (memory and traffic O(files)).
  std::map<std::int32_t, const std::string*> host_of;
  for (const auto& r : catalog.ranks) host_of[r.rank] = &r.host;
  const std::string host = host_name();
  std::vector<unsigned char> mine(files, 0), best(files, 0);
  for (std::size_t i = 0; i < files; ++i) {
    struct stat st {};
    std::string path;
    try {
      path = catalog.file_path(static_cast<std::uint32_t>(i));
    } catch (const std::exception&) {
      continue;
    }
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<std::uint64_t>(st.st_size) < catalog.files[i].size)
      continue;
    const auto owner = host_of.find(catalog.files[i].owner);
    mine[i] = owner != host_of.end() && *owner->second == host ? 2 : 1;
  }
  mpi_check(MPI_Allreduce(mine.data(), best.data(), n, MPI_UNSIGNED_CHAR, MPI_MAX, comm),
            "MPI_Allreduce (reachable files)");
  std::vector<int> reader(files, 0), readers(files, 0), index(files, 0);
  for (std::size_t i = 0; i < files; ++i) reader[i] = best[i] > 0 && mine[i] == best[i] ? 1 : 0;
  mpi_check(MPI_Allreduce(reader.data(), readers.data(), n, MPI_INT, MPI_SUM, comm), "MPI_Allreduce (readers)");
  mpi_check(MPI_Exscan(reader.data(), index.data(), n, MPI_INT, MPI_SUM, comm), "MPI_Exscan (readers)");
  if (rank == 0) std::fill(index.begin(), index.end(), 0);
  CatalogAssignment out;
  auto& rows = out.rows;
  auto& unreachable = out.unreachable;
  std::vector<std::size_t> seen(files, 0);  // rows of each file so far (spreads them over its readers)
  for (std::size_t i = 0; i < catalog.tensors.size(); ++i) {
    const std::uint32_t f = catalog.tensors[i].file;
    if (readers[f] == 0) {
      if (rank == 0) {
        ++unreachable.mismatches;
        ++unreachable.pieces;
        if (unreachable.notes.size() < 5)
          unreachable.notes.push_back(fmt::format(
              "tensor '{}' shard {}: no rank can read '{}' (node {} of the catalog; run verify with ranks on "
              "every node that holds data)", catalog.tensors[i].name, catalog.tensors[i].shard,
              catalog.files[f].path, catalog.tensors[i].node));
      }
      continue;
    }
    if (reader[f] && seen[f] % static_cast<std::size_t>(readers[f]) == static_cast<std::size_t>(index[f])) rows.push_back(i);
    ++seen[f];
  }
  return out;
}

CatalogCheck verify_catalog_collective(MPI_Comm comm, const Catalog& catalog, IoEngine& engine,
                                       std::size_t buffer_bytes, DirectMode direct) {
  const CatalogAssignment mine = assign_catalog_rows(comm, catalog);
  const auto& unreachable = mine.unreachable;
  CatalogCheck local = verify_catalog_rows(catalog, engine, buffer_bytes, mine.rows, direct);
  local.pieces += unreachable.pieces;
  local.mismatches += unreachable.mismatches;
  local.notes.insert(local.notes.begin(), unreachable.notes.begin(), unreachable.notes.end());
  // Sums on every rank, and the notes of the first rank that has any.
  std::uint64_t sums[3] = {local.pieces, local.bytes, local.mismatches};
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, sums, 3, MPI_UINT64_T, MPI_SUM, comm), "MPI_Allreduce (verify)");
  std::string notes;
  for (const auto& n : local.notes) notes += (notes.empty() ? "" : "\n") + n;
  const auto [from, text] = first_message(comm, notes.substr(0, 1000));
  CatalogCheck out;
  out.pieces = sums[0];
  out.bytes = sums[1];
  out.mismatches = sums[2];
  if (from >= 0) {
    std::size_t start = 0;
    while (start <= text.size()) {
      const auto end = std::min(text.find('\n', start), text.size());
      if (end > start) out.notes.push_back(text.substr(start, end - start));
      start = end + 1;
    }
  }
  return out;
}

}  // namespace swapcoord
