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
#include "swapcoord/catalog/catalog_paths.hpp"
#include "swapcoord/common/host.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/topology.hpp"

namespace swapcoord {
namespace {

// A flat byte image of a Catalog (native layout: every rank runs the same binary). The
// fields are listed once (fields()); Writer and Reader walk them in the same order.
class Writer {
 public:
  template <class T>
  void operator()(T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const char*>(&value);
    _bytes.insert(_bytes.end(), p, p + sizeof value);
  }
  void operator()(std::string& text) {
    std::uint64_t size = text.size();
    (*this)(size);
    _bytes.insert(_bytes.end(), text.begin(), text.end());
  }
  template <class T>
  void operator()(std::vector<T>& items, void (*each)(Writer&, T&)) {
    std::uint64_t size = items.size();
    (*this)(size);
    for (auto& item : items) each(*this, item);
  }
  std::vector<char>& bytes() { return _bytes; }

 private:
  std::vector<char> _bytes;
};

class Reader {
 public:
  explicit Reader(const std::vector<char>& bytes) : _bytes(bytes) {}
  template <class T>
  void operator()(T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof value);
    std::memcpy(&value, _bytes.data() + _at, sizeof value);
    _at += sizeof value;
  }
  void operator()(std::string& text) {
    std::uint64_t size = 0;
    (*this)(size);
    need(size);
    text.assign(_bytes.data() + _at, size);
    _at += size;
  }
  template <class T>
  void operator()(std::vector<T>& items, void (*each)(Reader&, T&)) {
    std::uint64_t size = 0;
    (*this)(size);
    need(size);  // every item takes at least one byte: a bad count cannot allocate much
    items.resize(size);
    for (auto& item : items) each(*this, item);
  }

 private:
  void need(std::uint64_t size) const {
    if (size > _bytes.size() - _at) throw Error("broadcast_catalog: truncated catalog image");
  }
  const std::vector<char>& _bytes;
  std::size_t _at = 0;
};

// The tensors' names and dtypes once per tensor id (as the catalog file holds them), then
// the rows without them.
struct Named {
  std::uint32_t id = 0;
  std::string name;
  DType dtype = DType::u8;
};

template <class IO>
void rows(IO& io, Catalog& c) {
  std::vector<Named> names;
  if constexpr (std::is_same_v<IO, Writer>) {
    std::vector<std::size_t> order(c.tensors.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return c.tensors[a].id < c.tensors[b].id; });
    for (std::size_t i : order)
      if (names.empty() || names.back().id != c.tensors[i].id)
        names.push_back({c.tensors[i].id, c.tensors[i].name, c.tensors[i].dtype});
  }
  io(names, +[](IO& x, Named& n) { x(n.id), x(n.name), x(n.dtype); });
  io(c.tensors, +[](IO& x, CatalogRow& r) {
    x(r.id), x(r.numel), x(r.element_offset), x(r.shard), x(r.shard_count), x(r.owner);
    x(r.node), x(r.root), x(r.file), x(r.offset), x(r.bytes), x(r.aligned_bytes), x(r.checksum), x(r.epoch);
  });
  if constexpr (std::is_same_v<IO, Reader>) {
    for (CatalogRow& r : c.tensors) {
      const auto it = std::lower_bound(names.begin(), names.end(), r.id,
                                       [](const Named& n, std::uint32_t id) { return n.id < id; });
      if (it == names.end() || it->id != r.id) throw Error("broadcast_catalog: a row's tensor has no name");
      r.name = it->name;
      r.dtype = it->dtype;
    }
  }
}

template <class IO>
void fields(IO& io, Catalog& c) {
  io(c.job), io(c.epoch), io(c.slot), io(c.slots), io(c.world_size), io(c.node_count), io(c.layout), io(c.policy);
  io(c.alignment), io(c.plan_fingerprint), io(c.config_json), io(c.created), io(c.generation), io(c.metadata);
  io(c.version), io(c.checksum);
  rows(io, c);
  io(c.files, +[](IO& x, CatalogFile& f) { x(f.path), x(f.owner), x(f.root), x(f.size); });
  io(c.roots, +[](IO& x, CatalogRoot& r) { x(r.node), x(r.index), x(r.path); });
  io(c.ranks, +[](IO& x, CatalogRank& r) {
    x(r.rank), x(r.node), x(r.local_rank), x(r.host), x(r.bytes), x(r.swap_out_s), x(r.swap_in_s);
  });
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
  if (rank == root) fields(w, const_cast<Catalog&>(catalog));  // Writer only reads
  broadcast_bytes(comm, w.bytes(), root);
  if (rank == root) return catalog;
  Catalog out;
  Reader in(w.bytes());
  fields(in, out);
  return out;
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

CatalogAssignment assign_catalog_rows(MPI_Comm comm, const Catalog& catalog, std::span<const std::string> roots) {
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
  std::map<std::size_t, std::string> refused;  // file -> why this rank may not read it (the first few)
  const std::vector<std::string> allowed =
      roots.empty() ? readable_catalog_roots(catalog) : std::vector<std::string>(roots.begin(), roots.end());
  for (std::size_t i = 0; i < files; ++i) {
    struct stat st {};
    std::string path;
    try {
      path = checked_file_path(catalog, static_cast<std::uint32_t>(i), allowed);
    } catch (const std::exception& e) {
      if (refused.size() < 5) refused.emplace(i, e.what());
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
              "every node that holds data){}", catalog.tensors[i].name, catalog.tensors[i].shard,
              catalog.files[f].path, catalog.tensors[i].node,
              refused.count(f) ? fmt::format(" ({})", refused.at(f)) : std::string()));
      }
      continue;
    }
    if (reader[f] && seen[f] % static_cast<std::size_t>(readers[f]) == static_cast<std::size_t>(index[f])) rows.push_back(i);
    ++seen[f];
  }
  return out;
}

CatalogCheck verify_catalog_collective(MPI_Comm comm, const Catalog& catalog, IoEngine& engine,
                                       std::size_t buffer_bytes, DirectMode direct,
                                       std::span<const std::string> roots) {
  const CatalogAssignment mine = assign_catalog_rows(comm, catalog, roots);
  const auto& unreachable = mine.unreachable;
  CatalogCheck local = verify_catalog_rows(catalog, engine, buffer_bytes, mine.rows, direct, roots);
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
