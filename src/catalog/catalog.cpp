#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/catalog/catalog_paths.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <memory>
#include <optional>
#include <span>
#include <utility>

#include <fmt/format.h>
#include <xxhash.h>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/io/unique_fd.hpp"

#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/topology.hpp"

namespace swapcoord {
namespace {

// ---- HDF5 plumbing -------------------------------------------------------------------

// The messages on HDF5's error stack, innermost last ("; "-joined).
std::string hdf_stack() {
  std::string text;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        auto& out = *static_cast<std::string*>(data);
        if (e->desc && *e->desc) out += (out.empty() ? "" : "; ") + std::string(e->desc);
        return 0;
      },
      &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? std::string("no detail from HDF5") : text;
}

[[noreturn]] void hdf_fail(const std::string& what) { throw HdfError(fmt::format("{}: {}", what, hdf_stack())); }

hid_t hdf_check(hid_t id, const std::string& what) {
  if (id < 0) hdf_fail(what);
  return id;
}
void hdf_check_status(herr_t rc, const std::string& what) {
  if (rc < 0) hdf_fail(what);
}

// Owns an HDF5 identifier of any kind; closes it (errors ignored) on destruction.
class H5Handle {
 public:
  H5Handle() = default;
  explicit H5Handle(hid_t id) : _id(id) {}
  H5Handle(H5Handle&& other) noexcept : _id(std::exchange(other._id, H5I_INVALID_HID)) {}
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      _id = std::exchange(other._id, H5I_INVALID_HID);
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }
  hid_t get() const { return _id; }
  void reset() {
    if (_id >= 0 && H5Iis_valid(_id) > 0) {
      switch (H5Iget_type(_id)) {
        case H5I_FILE: H5Fclose(_id); break;
        case H5I_DATASET: H5Dclose(_id); break;
        case H5I_DATASPACE: H5Sclose(_id); break;
        case H5I_DATATYPE: H5Tclose(_id); break;
        case H5I_ATTR: H5Aclose(_id); break;
        case H5I_GENPROP_LST: H5Pclose(_id); break;
        default: H5Idec_ref(_id); break;
      }
    }
    _id = H5I_INVALID_HID;
  }

 private:
  hid_t _id = H5I_INVALID_HID;
};

H5Handle make(hid_t id, const std::string& what) { return H5Handle(hdf_check(id, what)); }

// Quiets HDF5's own printing of errors for the life of the process; we report them.
void quiet_hdf5() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

H5Handle fixed_string(std::size_t bytes) {
  H5Handle type = make(H5Tcopy(H5T_C_S1), "H5Tcopy");
  hdf_check_status(H5Tset_size(type.get(), bytes), "H5Tset_size");
  hdf_check_status(H5Tset_strpad(type.get(), H5T_STR_NULLTERM), "H5Tset_strpad");
  return type;
}

void copy_string(char* into, std::size_t size, const std::string& from, const char* what) {
  if (from.size() >= size)
    throw Error(fmt::format("catalog: {} '{}' is longer than {} bytes", what, from, size - 1));
  std::memset(into, 0, size);
  std::memcpy(into, from.data(), from.size());
}

std::string read_string(const char* from, std::size_t size) {
  return std::string(from, strnlen(from, size));
}

// ---- records (the in-file layout of each dataset) -----------------------------------

constexpr std::size_t kName = kCatalogNameBytes;

// /tensors, one row per piece (version 2: the tensor's name and dtype are in /names).
struct TensorRecord {
  std::uint32_t id;
  std::uint64_t numel, element_offset;
  std::uint32_t shard, shard_count;
  std::int32_t owner, node, root;
  std::uint32_t file;
  std::uint64_t offset, bytes, aligned_bytes, checksum;
  std::int32_t epoch;
};
// /tensors of a version-1 catalog, which named every piece (read only).
struct TensorRecordV1 {
  std::uint32_t id;
  char name[kName];
  char dtype[16];
  std::uint64_t numel, element_offset;
  std::uint32_t shard, shard_count;
  std::int32_t owner, node, root;
  std::uint32_t file;
  std::uint64_t offset, bytes, aligned_bytes, checksum;
  std::int32_t epoch;
};
// /names, one row per tensor: its name is bytes [name_offset, name_offset + name_bytes) of
// /name_text (UTF-8, no terminator).
struct NameRecord {
  std::uint32_t id;
  std::uint32_t name_bytes;
  std::uint64_t name_offset;
  char dtype[8];
};
struct FileRecord {
  char path[kName];
  std::int32_t owner, root;
  std::uint64_t size;
};
struct RootRecord {
  std::int32_t node, index;
  char path[1024];
};
struct RankRecord {
  std::int32_t rank, node, local_rank;
  char host[kName];
  std::uint64_t bytes;
  double swap_out_s, swap_in_s;
};

// One compound member: name, offset, HDF5 type, and the class a loaded file must have.
struct Member {
  const char* name;
  std::size_t offset;
  hid_t type;  // a predefined native type, or -1 for a fixed string of `string_bytes`
  std::size_t string_bytes;
};

#define SC_MEMBER(record, field, type) Member{#field, offsetof(record, field), type, 0}
#define SC_STRING(record, field) Member{#field, offsetof(record, field), -1, sizeof(record::field)}

#define SC_PIECE_MEMBERS(record)                                                                                  \
  SC_MEMBER(record, numel, H5T_NATIVE_UINT64), SC_MEMBER(record, element_offset, H5T_NATIVE_UINT64),             \
      SC_MEMBER(record, shard, H5T_NATIVE_UINT32), SC_MEMBER(record, shard_count, H5T_NATIVE_UINT32),             \
      SC_MEMBER(record, owner, H5T_NATIVE_INT32), SC_MEMBER(record, node, H5T_NATIVE_INT32),                     \
      SC_MEMBER(record, root, H5T_NATIVE_INT32), SC_MEMBER(record, file, H5T_NATIVE_UINT32),                     \
      SC_MEMBER(record, offset, H5T_NATIVE_UINT64), SC_MEMBER(record, bytes, H5T_NATIVE_UINT64),                 \
      SC_MEMBER(record, aligned_bytes, H5T_NATIVE_UINT64), SC_MEMBER(record, checksum, H5T_NATIVE_UINT64),       \
      SC_MEMBER(record, epoch, H5T_NATIVE_INT32)

const std::vector<Member>& tensor_members() {
  static const std::vector<Member> m{SC_MEMBER(TensorRecord, id, H5T_NATIVE_UINT32), SC_PIECE_MEMBERS(TensorRecord)};
  return m;
}
const std::vector<Member>& tensor_members_v1() {
  static const std::vector<Member> m{SC_MEMBER(TensorRecordV1, id, H5T_NATIVE_UINT32), SC_STRING(TensorRecordV1, name),
                                     SC_STRING(TensorRecordV1, dtype), SC_PIECE_MEMBERS(TensorRecordV1)};
  return m;
}
const std::vector<Member>& name_members() {
  static const std::vector<Member> m{SC_MEMBER(NameRecord, id, H5T_NATIVE_UINT32),
                                     SC_MEMBER(NameRecord, name_bytes, H5T_NATIVE_UINT32),
                                     SC_MEMBER(NameRecord, name_offset, H5T_NATIVE_UINT64), SC_STRING(NameRecord, dtype)};
  return m;
}
#undef SC_PIECE_MEMBERS
const std::vector<Member>& file_members() {
  static const std::vector<Member> m{SC_STRING(FileRecord, path), SC_MEMBER(FileRecord, owner, H5T_NATIVE_INT32),
                                     SC_MEMBER(FileRecord, root, H5T_NATIVE_INT32),
                                     SC_MEMBER(FileRecord, size, H5T_NATIVE_UINT64)};
  return m;
}
const std::vector<Member>& root_members() {
  static const std::vector<Member> m{SC_MEMBER(RootRecord, node, H5T_NATIVE_INT32),
                                     SC_MEMBER(RootRecord, index, H5T_NATIVE_INT32), SC_STRING(RootRecord, path)};
  return m;
}
const std::vector<Member>& rank_members() {
  static const std::vector<Member> m{
      SC_MEMBER(RankRecord, rank, H5T_NATIVE_INT32), SC_MEMBER(RankRecord, node, H5T_NATIVE_INT32),
      SC_MEMBER(RankRecord, local_rank, H5T_NATIVE_INT32), SC_STRING(RankRecord, host),
      SC_MEMBER(RankRecord, bytes, H5T_NATIVE_UINT64), SC_MEMBER(RankRecord, swap_out_s, H5T_NATIVE_DOUBLE),
      SC_MEMBER(RankRecord, swap_in_s, H5T_NATIVE_DOUBLE)};
  return m;
}

#undef SC_MEMBER
#undef SC_STRING

H5Handle compound(std::size_t size, const std::vector<Member>& members) {
  H5Handle type = make(H5Tcreate(H5T_COMPOUND, size), "H5Tcreate(compound)");
  for (const auto& m : members) {
    if (m.type >= 0) {
      hdf_check_status(H5Tinsert(type.get(), m.name, m.offset, m.type), "H5Tinsert");
    } else {
      H5Handle s = fixed_string(m.string_bytes);
      hdf_check_status(H5Tinsert(type.get(), m.name, m.offset, s.get()), "H5Tinsert");
    }
  }
  return type;
}

// ---- writing ----------------------------------------------------------------------------

void write_attribute(hid_t file, const char* name, const std::string& value) {
  const std::size_t size = std::max<std::size_t>(value.size() + 1, 2);  // HDF5 wants >= 2
  H5Handle type = fixed_string(size);
  H5Handle space = make(H5Screate(H5S_SCALAR), "H5Screate");
  H5Handle attr = make(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                       fmt::format("creating attribute '{}'", name));
  std::vector<char> buffer(size, '\0');  // as long as the type, also for an empty value
  std::memcpy(buffer.data(), value.data(), value.size());
  hdf_check_status(H5Awrite(attr.get(), type.get(), buffer.data()), fmt::format("writing attribute '{}'", name));
}

template <class T>
void write_attribute(hid_t file, const char* name, hid_t type, T value) {
  H5Handle space = make(H5Screate(H5S_SCALAR), "H5Screate");
  H5Handle attr = make(H5Acreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                       fmt::format("creating attribute '{}'", name));
  hdf_check_status(H5Awrite(attr.get(), type, &value), fmt::format("writing attribute '{}'", name));
}

// Writes `records` as the one-dimensional compound dataset `name` (zero rows: an empty
// dataset), on rank 0 into the in-memory file; the rows' order is the file's.
template <class Record>
void write_table(hid_t file, const char* name, const std::vector<Member>& members, std::span<const Record> records) {
  H5Handle type = compound(sizeof(Record), members);
  const hsize_t dims[1] = {records.size()};
  H5Handle space = make(H5Screate_simple(1, dims, nullptr), "H5Screate_simple");
  H5Handle dataset = make(H5Dcreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          fmt::format("creating dataset '{}'", name));
  if (records.empty()) return;  // HDF5 refuses to write nothing
  hdf_check_status(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, records.data()),
                   fmt::format("writing dataset '{}'", name));
}

// Writes `bytes` as the one-dimensional uint8 dataset `name`.
void write_bytes(hid_t file, const char* name, std::span<const char> bytes) {
  const hsize_t dims[1] = {bytes.size()};
  H5Handle space = make(H5Screate_simple(1, dims, nullptr), "H5Screate_simple");
  H5Handle dataset = make(H5Dcreate2(file, name, H5T_NATIVE_UINT8, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          fmt::format("creating dataset '{}'", name));
  if (bytes.empty()) return;
  hdf_check_status(H5Dwrite(dataset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()),
                   fmt::format("writing dataset '{}'", name));
}

// An allocator that leaves trivial elements uninitialised: rank 0's buffers of every
// rank's records and of the file image are written in full before they are read, and
// zeroing hundreds of MB first would cost a pass over them.
//
// Large buffers (4 MiB and more) are mappings of their own with transparent huge pages
// (madvise(MADV_HUGEPAGE), which also works where the system's setting is "madvise"): a
// catalog of a million pieces fills hundreds of MB of fresh memory, and on a virtual
// machine the 4 KiB page faults were a third of a commit's and a load's time. A fresh
// mapping is zero-filled.
constexpr std::size_t kHugePage = std::size_t{2} << 20;

// Asks for huge pages for the whole 2 MiB pages inside [p, p + bytes), before they are
// touched. Advice only: a kernel that cannot give them is fine.
void advise_huge_pages(void* p, std::size_t bytes) noexcept {
  const auto begin = (reinterpret_cast<std::uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(kHugePage - 1);
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

template <class T>
struct LargeAlloc : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = LargeAlloc<U>;
  };
  LargeAlloc() = default;
  template <class U>
  LargeAlloc(const LargeAlloc<U>&) noexcept {}
  static constexpr std::size_t kLarge = 2 * kHugePage;
  T* allocate(std::size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kLarge) return std::allocator<T>::allocate(n);
    // A mapping of the size rounded up to 2 MiB, starting at a 2 MiB boundary: map one
    // huge page more, then unmap the unaligned head and the rest of the tail.
    const std::size_t size = (bytes + kHugePage - 1) & ~(kHugePage - 1);
    void* raw = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto base = reinterpret_cast<std::uintptr_t>(raw);
    const auto aligned = (base + kHugePage - 1) & ~(kHugePage - 1);
    if (aligned > base) ::munmap(raw, aligned - base);
    if (const auto tail = base + size + kHugePage - (aligned + size); tail > 0)
      ::munmap(reinterpret_cast<void*>(aligned + size), tail);
    advise_huge_pages(reinterpret_cast<void*>(aligned), size);
    return reinterpret_cast<T*>(aligned);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kLarge) return std::allocator<T>::deallocate(p, n);
    ::munmap(p, (bytes + kHugePage - 1) & ~(kHugePage - 1));
  }
};

template <class T>
struct NoInit : LargeAlloc<T> {
  template <class U>
  struct rebind {
    using other = NoInit<U>;
  };
  NoInit() = default;
  template <class U>
  NoInit(const NoInit<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <class T>
using Buffer = std::vector<T, NoInit<T>>;

// The tables of a catalog as fixed-size records (the in-file layout), and the text of the
// tensor names. A rank's own records are value-initialised, so that the padding in each
// record is zero in the file. A rank's `names` hold one entry per tensor id among its rows,
// their offsets into its own `text`.
template <template <class> class Vector>
struct Tables {
  Vector<TensorRecord> tensors;
  Vector<FileRecord> files;
  Vector<RootRecord> roots;
  Vector<RankRecord> ranks;
  Vector<NameRecord> names;
  Vector<char> text;
};
template <class T>
using Zeroed = std::vector<T, LargeAlloc<T>>;
using Records = Tables<Zeroed>;   // one rank's
using Gathered = Tables<Buffer>;  // every rank's, on rank 0

// An MPI datatype of one record (`bytes` contiguous bytes), so that counts and
// displacements of MPI_Gatherv count rows, not bytes. Freed on destruction.
class RecordType {
 public:
  explicit RecordType(std::size_t bytes) {
    mpi_check(MPI_Type_contiguous(static_cast<int>(bytes), MPI_BYTE, &_type), "MPI_Type_contiguous (catalog record)");
    const int rc = MPI_Type_commit(&_type);
    if (rc != MPI_SUCCESS) {
      MPI_Type_free(&_type);
      mpi_check(rc, "MPI_Type_commit (catalog record)");
    }
  }
  RecordType(const RecordType&) = delete;
  RecordType& operator=(const RecordType&) = delete;
  ~RecordType() {
    if (_type != MPI_DATATYPE_NULL) MPI_Type_free(&_type);
  }
  MPI_Datatype get() const { return _type; }

 private:
  MPI_Datatype _type = MPI_DATATYPE_NULL;
};

// Collective: every rank's `mine` on rank 0, in rank order (the order of the rows in the
// file, as the parallel writer's exclusive scan had it); an empty vector elsewhere.
// `counts` (rank 0 only) are the ranks' row counts, whose sum fits an int.
template <class Record>
Buffer<Record> gather_rows(MPI_Comm comm, int rank, const Zeroed<Record>& mine, const std::vector<int>& counts,
                           const char* name) {
  const RecordType type(sizeof(Record));
  Buffer<Record> all;
  std::vector<int> displacements(counts.size(), 0);
  if (rank == 0) {
    std::size_t total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      displacements[r] = static_cast<int>(total);
      total += static_cast<std::size_t>(counts[r]);
    }
    all.resize(total);
  }
  mpi_check(MPI_Gatherv(mine.data(), static_cast<int>(mine.size()), type.get(), all.data(), counts.data(),
                        displacements.data(), type.get(), 0, comm),
            fmt::format("MPI_Gatherv (catalog /{})", name));
  return all;
}

std::string dtype_text(DType dtype) { return std::string(dtype_name(dtype)); }

// ---- loading ----------------------------------------------------------------------------

std::string read_string_attribute(hid_t file, const char* name, const std::string& path) {
  if (H5Aexists(file, name) <= 0)
    throw Error(fmt::format("catalog '{}': attribute '{}' is missing", path, name));
  H5Handle attr = make(H5Aopen(file, name, H5P_DEFAULT), fmt::format("catalog '{}': opening attribute '{}'", path, name));
  H5Handle stored = make(H5Aget_type(attr.get()), "H5Aget_type");
  if (H5Tget_class(stored.get()) != H5T_STRING || H5Tis_variable_str(stored.get()) > 0)
    throw Error(fmt::format("catalog '{}': attribute '{}' is not a fixed-length string", path, name));
  const std::size_t size = H5Tget_size(stored.get());
  if (size == 0 || size > (std::size_t{64} << 20))
    throw Error(fmt::format("catalog '{}': attribute '{}' has an implausible size {}", path, name, size));
  H5Handle type = fixed_string(size);
  std::vector<char> buffer(size + 1, '\0');
  hdf_check_status(H5Aread(attr.get(), type.get(), buffer.data()),
                   fmt::format("catalog '{}': reading attribute '{}'", path, name));
  return read_string(buffer.data(), size);
}

template <class T>
T read_number_attribute(hid_t file, const char* name, hid_t type, H5T_class_t want, const std::string& path) {
  if (H5Aexists(file, name) <= 0)
    throw Error(fmt::format("catalog '{}': attribute '{}' is missing", path, name));
  H5Handle attr = make(H5Aopen(file, name, H5P_DEFAULT), fmt::format("catalog '{}': opening attribute '{}'", path, name));
  H5Handle stored = make(H5Aget_type(attr.get()), "H5Aget_type");
  H5Handle space = make(H5Aget_space(attr.get()), "H5Aget_space");
  if (H5Tget_class(stored.get()) != want || H5Sget_simple_extent_npoints(space.get()) != 1)
    throw Error(fmt::format("catalog '{}': attribute '{}' is not a single {}", path, name,
                            want == H5T_INTEGER ? "integer" : "number"));
  T value{};
  hdf_check_status(H5Aread(attr.get(), type, &value), fmt::format("catalog '{}': reading attribute '{}'", path, name));
  return value;
}

// Reads dataset `name` after checking that it is a 1-d compound with every member of the
// expected class (integers as integers of the expected signedness, strings as strings).
template <class Record>
Buffer<Record> read_rows(hid_t file, const char* name, const std::vector<Member>& members,
                              const std::string& path) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
    throw Error(fmt::format("catalog '{}': dataset '{}' is missing", path, name));
  H5Handle dataset = make(H5Dopen2(file, name, H5P_DEFAULT), fmt::format("catalog '{}': opening '{}'", path, name));
  H5Handle stored = make(H5Dget_type(dataset.get()), "H5Dget_type");
  if (H5Tget_class(stored.get()) != H5T_COMPOUND)
    throw Error(fmt::format("catalog '{}': dataset '{}' is not a table of records", path, name));
  const std::size_t record_size = H5Tget_size(stored.get());
  if (record_size == 0 || record_size > (std::size_t{1} << 20))
    throw Error(fmt::format("catalog '{}': dataset '{}' has records of an implausible size {}", path, name, record_size));
  for (const auto& m : members) {
    const int index = H5Tget_member_index(stored.get(), m.name);
    if (index < 0)
      throw Error(fmt::format("catalog '{}': dataset '{}' has no column '{}'", path, name, m.name));
    H5Handle column = make(H5Tget_member_type(stored.get(), static_cast<unsigned>(index)), "H5Tget_member_type");
    const H5T_class_t cls = H5Tget_class(column.get());
    bool ok = false;
    if (m.type < 0) {
      ok = cls == H5T_STRING && H5Tis_variable_str(column.get()) == 0;
    } else if (H5Tget_class(m.type) == H5T_FLOAT) {
      ok = cls == H5T_FLOAT;
    } else {
      ok = cls == H5T_INTEGER && H5Tget_sign(column.get()) == H5Tget_sign(m.type) &&
           H5Tget_size(column.get()) == H5Tget_size(m.type);
    }
    if (!ok)
      throw Error(fmt::format("catalog '{}': column '{}' of dataset '{}' has the wrong type", path, m.name, name));
    // HDF5 itself does not check that a member lies inside its record (and crashes on it).
    const std::size_t column_offset = H5Tget_member_offset(stored.get(), static_cast<unsigned>(index));
    if (column_offset > record_size || H5Tget_size(column.get()) > record_size - column_offset)
      throw Error(fmt::format("catalog '{}': column '{}' of dataset '{}' lies outside its {}-byte record", path,
                              m.name, name, record_size));
  }
  H5Handle space = make(H5Dget_space(dataset.get()), "H5Dget_space");
  if (H5Sget_simple_extent_ndims(space.get()) != 1)
    throw Error(fmt::format("catalog '{}': dataset '{}' is not one-dimensional", path, name));
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  constexpr hsize_t kMaxRows = hsize_t{1} << 28;
  if (dims[0] > kMaxRows)
    throw Error(fmt::format("catalog '{}': dataset '{}' claims {} rows, more than this reader accepts ({})",
                            path, name, dims[0], kMaxRows));
  // A small file must not make us allocate for rows it does not hold.
  const hsize_t stored_bytes = H5Dget_storage_size(dataset.get());
  if (dims[0] > 0 && stored_bytes / record_size < dims[0])
    throw Error(fmt::format("catalog '{}': dataset '{}' claims {} rows but holds only {} bytes", path, name, dims[0],
                            stored_bytes));
  Buffer<Record> records(static_cast<std::size_t>(dims[0]));  // HDF5 writes every byte
  if (!records.empty()) {
    H5Handle type = compound(sizeof(Record), members);
    hdf_check_status(H5Dread(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, records.data()),
                     fmt::format("catalog '{}': reading '{}'", path, name));
  }
  return records;
}

// Reads the one-dimensional uint8 dataset `name` (checked: its type, its rank, and that the
// file holds the bytes it claims).
std::vector<char> read_bytes(hid_t file, const char* name, const std::string& path) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
    throw Error(fmt::format("catalog '{}': dataset '{}' is missing", path, name));
  H5Handle dataset = make(H5Dopen2(file, name, H5P_DEFAULT), fmt::format("catalog '{}': opening '{}'", path, name));
  H5Handle stored = make(H5Dget_type(dataset.get()), "H5Dget_type");
  if (H5Tget_class(stored.get()) != H5T_INTEGER || H5Tget_size(stored.get()) != 1)
    throw Error(fmt::format("catalog '{}': dataset '{}' is not a string of bytes", path, name));
  H5Handle space = make(H5Dget_space(dataset.get()), "H5Dget_space");
  if (H5Sget_simple_extent_ndims(space.get()) != 1)
    throw Error(fmt::format("catalog '{}': dataset '{}' is not one-dimensional", path, name));
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (dims[0] > H5Dget_storage_size(dataset.get()))
    throw Error(fmt::format("catalog '{}': dataset '{}' claims {} bytes but holds only {}", path, name, dims[0],
                            H5Dget_storage_size(dataset.get())));
  std::vector<char> bytes(static_cast<std::size_t>(dims[0]));
  if (!bytes.empty())
    hdf_check_status(H5Dread(dataset.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()),
                     fmt::format("catalog '{}': reading '{}'", path, name));
  return bytes;
}

DType parse_stored_dtype(const char* text, std::size_t size, const std::string& where) {
  const std::string dtype = read_string(text, size);
  try {
    return parse_dtype(dtype);
  } catch (const std::exception&) {
    throw Error(fmt::format("{} has an unknown dtype '{}'", where, dtype));
  }
}

void check_relative(const std::string& text, const std::string& path, const char* what) {
  const std::filesystem::path p(text);
  if (text.empty() || p.is_absolute())
    throw Error(fmt::format("catalog '{}': {} '{}' is not a relative path", path, what, text));
  for (const auto& part : p)
    if (part == "..")
      throw Error(fmt::format("catalog '{}': {} '{}' contains '..'", path, what, text));
}

// ---- integrity trailer --------------------------------------------------------------
// 16 bytes after the HDF5 data: a magic and the XXH64 of every byte before it. The loader
// checks it before HDF5 parses anything, so a truncated or altered catalog is rejected
// cleanly instead of being handed to a library that is not hardened against bad files.

constexpr char kTrailerMagic[8] = {'S', 'C', 'C', 'A', 'T', 'v', '1', '\0'};
constexpr std::size_t kTrailerBytes = 16;

// XXH64 of the first `length` bytes of the open file `fd`.
std::uint64_t hash_prefix(int fd, std::uint64_t length, const std::string& path) {
  std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> hash(XXH64_createState(), &XXH64_freeState);
  XXH64_reset(hash.get(), 0);
  // At most 4 MiB, and no more than the file: a catalog is usually a few KiB.
  std::vector<char> buffer(static_cast<std::size_t>(std::min<std::uint64_t>(length, std::uint64_t{4} << 20)));
  for (std::uint64_t done = 0; done < length;) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), length - done));
    const ssize_t got = ::pread(fd, buffer.data(), want, static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw SystemError(fmt::format("catalog '{}': reading it to check its checksum", path), got < 0 ? errno : EIO);
    XXH64_update(hash.get(), buffer.data(), static_cast<std::size_t>(got));
    done += static_cast<std::uint64_t>(got);
  }
  return XXH64_digest(hash.get());
}

// The trailer for data whose XXH64 is `digest`: the magic, then the digest little-endian.
std::array<char, kTrailerBytes> trailer_for(std::uint64_t digest) {
  std::array<char, kTrailerBytes> trailer{};
  std::memcpy(trailer.data(), kTrailerMagic, sizeof kTrailerMagic);
  for (int i = 0; i < 8; ++i) trailer[8 + static_cast<std::size_t>(i)] = static_cast<char>((digest >> (8 * i)) & 0xff);
  return trailer;
}

// Truncates the file to `length` bytes and appends the trailer for them.
void write_trailer(const std::string& path, std::uint64_t length) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw SystemError(fmt::format("catalog: cannot open '{}' to seal it", path), errno);
  std::string problem;
  int err = 0;
  std::array<char, kTrailerBytes> trailer{};
  try {
    trailer = trailer_for(hash_prefix(fd, length, path));
  } catch (const SystemError& e) {
    problem = e.what();
  }
  if (problem.empty() && (::ftruncate(fd, static_cast<off_t>(length)) != 0 ||
                          ::pwrite(fd, trailer.data(), kTrailerBytes, static_cast<off_t>(length)) != static_cast<ssize_t>(kTrailerBytes))) {
    err = errno;
    problem = fmt::format("catalog: cannot write the checksum trailer of '{}'", path);
  }
  ::close(fd);
  if (!problem.empty()) throw SystemError(problem, err ? err : EIO);
}

void check_trailer(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SystemError(fmt::format("catalog '{}': cannot open it", path), errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const off_t size = ::lseek(fd, 0, SEEK_END);
  char trailer[kTrailerBytes] = {};
  if (size < static_cast<off_t>(kTrailerBytes) ||
      ::pread(fd, trailer, kTrailerBytes, size - static_cast<off_t>(kTrailerBytes)) != static_cast<ssize_t>(kTrailerBytes) ||
      std::memcmp(trailer, kTrailerMagic, sizeof kTrailerMagic) != 0)
    throw Error(fmt::format("catalog '{}': no checksum trailer at its end (the file is truncated, or was not "
                            "written by swapcoord, or was edited without seal_catalog)", path));
  std::uint64_t want = 0;
  for (int i = 0; i < 8; ++i) want |= static_cast<std::uint64_t>(static_cast<unsigned char>(trailer[8 + i])) << (8 * i);
  const std::uint64_t got = hash_prefix(fd, static_cast<std::uint64_t>(size) - kTrailerBytes, path);
  if (got != want)
    throw Error(fmt::format("catalog '{}': checksum {:016x} does not match its trailer's {:016x} (the file was "
                            "changed after it was written)", path, got, want));
}

// ---- the commit's file (rank 0) -------------------------------------------------------
// Rank 0 writes the catalog alone with plain POSIX calls on a descriptor of the catalog
// directory. No MPI-IO: through HDF5's mpio driver, Open MPI's ompio overflowed a buffer
// in its sharedfp component for paths longer than about 240 bytes, and a full disk left
// every rank waiting in HDF5's collective close until the phase timeout. Here no symbolic
// link is followed (openat with O_EXCL | O_NOFOLLOW, unlinkat, renameat), the file is 0600
// whatever the umask, and every failure names the file and its errno.

constexpr const char* kTmpName = "catalog.h5.tmp";
constexpr const char* kFinalName = "catalog.h5";

// The memory of HDF5's in-memory file, through its file image callbacks: huge pages, as
// for our own buffers (LargeAlloc), and mremap to grow.
class ImageMemory {
 public:
  ImageMemory() = default;
  ImageMemory(const ImageMemory&) = delete;
  ImageMemory& operator=(const ImageMemory&) = delete;
  ~ImageMemory() {
    for (const auto& [p, size] : _sizes) ::munmap(p, size);
  }
  H5FD_file_image_callbacks_t callbacks() {
    H5FD_file_image_callbacks_t c{};
    c.image_malloc = [](std::size_t size, H5FD_file_image_op_t, void* self) {
      return static_cast<ImageMemory*>(self)->allocate(size);
    };
    c.image_memcpy = [](void* dest, const void* src, std::size_t size, H5FD_file_image_op_t, void*) {
      return std::memcpy(dest, src, size);
    };
    c.image_realloc = [](void* p, std::size_t size, H5FD_file_image_op_t, void* self) {
      return static_cast<ImageMemory*>(self)->reallocate(p, size);
    };
    c.image_free = [](void* p, H5FD_file_image_op_t, void* self) -> herr_t {
      static_cast<ImageMemory*>(self)->release(p);
      return 0;
    };
    c.udata_copy = [](void* self) { return self; };
    c.udata_free = [](void*) -> herr_t { return 0; };
    c.udata = this;
    return c;
  }

 private:
  static std::size_t rounded(std::size_t size) { return std::max<std::size_t>((size + kHugePage - 1) & ~(kHugePage - 1), kHugePage); }
  void* allocate(std::size_t size) {
    const std::size_t length = rounded(size);
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    advise_huge_pages(p, length);
    _sizes.emplace_back(p, length);
    return p;
  }
  void* reallocate(void* p, std::size_t size) {
    if (p == nullptr) return allocate(size);
    for (auto& [q, length] : _sizes)
      if (q == p) {
        const std::size_t want = rounded(size);
        void* moved = ::mremap(q, length, want, MREMAP_MAYMOVE);
        if (moved == MAP_FAILED) return nullptr;
        advise_huge_pages(moved, want);
        q = moved;
        length = want;
        return moved;
      }
    return nullptr;
  }
  void release(void* p) {
    for (std::size_t i = 0; i < _sizes.size(); ++i)
      if (_sizes[i].first == p) {
        ::munmap(p, _sizes[i].second);
        _sizes.erase(_sizes.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
  }
  std::vector<std::pair<void*, std::size_t>> _sizes;
};

// Every rank's name entries (offsets already into all.text), reduced to one per tensor id,
// in id order, each name once in a new text. Two ranks that name one tensor id
// differently (another model) are an error naming both.
void merge_names(Gathered& all) {
  const auto& names = all.names;
  std::vector<std::uint32_t> order(names.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return names[a].id < names[b].id; });
  const auto text_of = [&](const NameRecord& n) { return std::string_view(all.text.data() + n.name_offset, n.name_bytes); };
  Buffer<NameRecord> merged;
  Buffer<char> text;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const NameRecord& n = names[order[i]];
    if (!merged.empty() && merged.back().id == n.id) {
      const NameRecord& first = names[order[i - 1]];
      if (text_of(n) != text_of(first) || std::memcmp(n.dtype, first.dtype, sizeof n.dtype) != 0)
        throw Error(fmt::format("catalog: tensor {} is '{}' ({}) on one rank and '{}' ({}) on another", n.id,
                                text_of(first), read_string(first.dtype, sizeof first.dtype), text_of(n),
                                read_string(n.dtype, sizeof n.dtype)));
      continue;
    }
    NameRecord out = n;
    out.name_offset = text.size();
    const std::string_view name = text_of(n);
    text.insert(text.end(), name.begin(), name.end());
    merged.push_back(out);
  }
  all.names = std::move(merged);
  all.text = std::move(text);
}

// The catalog's bytes: the HDF5 file built in memory by HDF5's core driver (nothing
// touches the disk; `name` only labels it), then the trailer for exactly those bytes, as
// seal_catalog writes it. Empties `records` as it goes (rank 0's memory: see commit_catalog).
Buffer<char> catalog_image(const std::string& name, const Catalog& header, Gathered& records) {
  merge_names(records);
  // Every row's tensor is named (a part whose names left one out is damaged): a catalog
  // that load_catalog would refuse never replaces a good one.
  for (const TensorRecord& t : records.tensors) {
    const auto it = std::lower_bound(records.names.begin(), records.names.end(), t.id,
                                     [](const NameRecord& n, std::uint32_t id) { return n.id < id; });
    if (it == records.names.end() || it->id != t.id)
      throw Error(fmt::format("catalog: tensor {} has rows but no name (damaged catalog rows)", t.id));
  }
  // The core driver grows its memory in steps of this size: one step for the whole file.
  const std::size_t expected = records.tensors.size() * sizeof(TensorRecord) +
                               records.names.size() * sizeof(NameRecord) + records.text.size() +
                               records.files.size() * sizeof(FileRecord) + records.roots.size() * sizeof(RootRecord) +
                               records.ranks.size() * sizeof(RankRecord) + header.config_json.size() + header.metadata.size() +
                               (std::size_t{1} << 20);
  ImageMemory memory;  // outlives the file
  H5Handle access = make(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(fapl)");
  hdf_check_status(H5Pset_fapl_core(access.get(), expected, /*backing_store=*/0), "H5Pset_fapl_core");
  const H5FD_file_image_callbacks_t callbacks = memory.callbacks();
  hdf_check_status(H5Pset_file_image_callbacks(access.get(), const_cast<H5FD_file_image_callbacks_t*>(&callbacks)),
                   "H5Pset_file_image_callbacks");
  H5Handle file = make(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()),
                       fmt::format("catalog: creating '{}' in memory", name));
  const hid_t f = file.get();
  write_attribute(f, "format", std::string(kCatalogFormat));
  write_attribute<std::int32_t>(f, "version", H5T_NATIVE_INT32, kCatalogVersion);
  write_attribute(f, "job", header.job);
  write_attribute<std::int32_t>(f, "epoch", H5T_NATIVE_INT32, header.epoch);
  write_attribute<std::int32_t>(f, "slot", H5T_NATIVE_INT32, header.slot);
  write_attribute<std::int32_t>(f, "slots", H5T_NATIVE_INT32, header.slots);
  write_attribute<std::int32_t>(f, "world_size", H5T_NATIVE_INT32, header.world_size);
  write_attribute<std::int32_t>(f, "node_count", H5T_NATIVE_INT32, header.node_count);
  write_attribute(f, "layout", header.layout);
  write_attribute(f, "policy", header.policy);
  write_attribute<std::uint64_t>(f, "alignment", H5T_NATIVE_UINT64, header.alignment);
  write_attribute(f, "plan_fingerprint", header.plan_fingerprint);
  write_attribute(f, "config", header.config_json);
  write_attribute(f, "created", header.created);
  write_attribute<std::int32_t>(f, "generation", H5T_NATIVE_INT32, header.generation);
  write_attribute(f, "metadata", header.metadata);
  write_attribute(f, "checksum", std::string(checksum_name(header.checksum)));
  write_table<TensorRecord>(f, "tensors", tensor_members(), std::exchange(records.tensors, {}));
  write_table<NameRecord>(f, "names", name_members(), std::exchange(records.names, {}));
  write_bytes(f, "name_text", std::exchange(records.text, {}));
  write_table<FileRecord>(f, "files", file_members(), std::exchange(records.files, {}));
  write_table<RootRecord>(f, "roots", root_members(), std::exchange(records.roots, {}));
  write_table<RankRecord>(f, "ranks", rank_members(), std::exchange(records.ranks, {}));
  // The flush releases HDF5's free-space aggregators, so the end of the image is the end of
  // the data, as in a closed file.
  hdf_check_status(H5Fflush(f, H5F_SCOPE_GLOBAL), fmt::format("catalog: flushing '{}' in memory", name));
  const ssize_t bytes = H5Fget_file_image(f, nullptr, 0);
  if (bytes <= 0) hdf_fail(fmt::format("catalog: H5Fget_file_image of '{}'", name));
  Buffer<char> image(static_cast<std::size_t>(bytes) + kTrailerBytes);
  if (H5Fget_file_image(f, image.data(), static_cast<std::size_t>(bytes)) != bytes)
    hdf_fail(fmt::format("catalog: H5Fget_file_image of '{}'", name));
  file.reset();
  const auto trailer = trailer_for(XXH64(image.data(), static_cast<std::size_t>(bytes), 0));
  std::memcpy(image.data() + bytes, trailer.data(), kTrailerBytes);
  return image;
}

// Writes `bytes` to <dir>/catalog.h5.tmp, makes it durable, calls stage("written"),
// renames it over <dir>/catalog.h5 (rename replaces a symbolic link of that name, never
// its target), calls stage("renamed") and fsyncs the directory. Until the rename any
// failure removes the temporary file and leaves catalog.h5 as it was.
UniqueFd open_catalog_dir(const std::string& dir) {
  UniqueFd directory(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!directory)
    throw SystemError(fmt::format("catalog: cannot open the directory of '{}'", dir + "/" + kTmpName), errno);
  return directory;
}

// Writes `bytes` to <dir>/catalog.h5.tmp and makes it durable; on failure removes it.
void write_temp(const std::string& dir, std::span<const char> bytes) {
  const std::string tmp = dir + "/" + kTmpName;
  const UniqueFd directory = open_catalog_dir(dir);
  const int at = directory.get();
  // A stale temporary file (a crash between write and rename), or a link planted there:
  // unlinkat removes the name itself, and O_EXCL | O_NOFOLLOW refuses whatever appears
  // under that name before the openat.
  if (::unlinkat(at, kTmpName, 0) != 0 && errno != ENOENT)
    throw SystemError(fmt::format("catalog: cannot remove the stale '{}'", tmp), errno);
  UniqueFd file(::openat(at, kTmpName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!file) throw SystemError(fmt::format("catalog: cannot create '{}'", tmp), errno);
  try {
    if (::fchmod(file.get(), 0600) != 0)  // the umask may have taken bits away
      throw SystemError(fmt::format("catalog: cannot set mode 0600 on '{}'", tmp), errno);
    for (std::size_t done = 0; done < bytes.size();) {  // a short write is not an error: go on
      const std::size_t want = std::min<std::size_t>(bytes.size() - done, std::size_t{1} << 30);
      const ssize_t got = ::pwrite(file.get(), bytes.data() + done, want, static_cast<off_t>(done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0)
        throw SystemError(fmt::format("catalog: writing '{}' ({} bytes at offset {} of {})", tmp, want, done,
                                      bytes.size()),
                          got < 0 ? errno : EIO);
      done += static_cast<std::size_t>(got);
    }
    if (::fsync(file.get()) != 0) throw SystemError(fmt::format("catalog: fsync of '{}'", tmp), errno);
    if (::close(file.release()) != 0) throw SystemError(fmt::format("catalog: closing '{}'", tmp), errno);
  } catch (...) {
    file.reset();
    ::unlinkat(at, kTmpName, 0);  // best effort: the error above is the one to report
    throw;
  }
}

// Calls stage("written"), renames <dir>/catalog.h5.tmp over <dir>/catalog.h5 (rename
// replaces a symbolic link of that name, never its target), calls stage("renamed") and
// fsyncs the directory. A failed rename removes the temporary file.
void rename_temp(const std::string& dir, const std::function<void(const char*)>& stage) {
  const std::string tmp = dir + "/" + kTmpName, final_path = dir + "/" + kFinalName;
  UniqueFd directory;
  try {
    directory = open_catalog_dir(dir);
    if (stage) stage("written");
    if (::renameat(directory.get(), kTmpName, directory.get(), kFinalName) != 0)
      throw SystemError(fmt::format("catalog: renaming '{}' to '{}'", tmp, final_path), errno);
  } catch (...) {
    // Best effort: the error above is the one to report.
    if (directory) {
      ::unlinkat(directory.get(), kTmpName, 0);
    } else {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
    }
    throw;
  }
  if (stage) stage("renamed");
  if (::fsync(directory.get()) != 0) throw SystemError(fmt::format("catalog: fsync of the directory '{}'", dir), errno);
}

// Writes <dir>/catalog.h5.tmp, makes it durable, renames it over <dir>/catalog.h5 and
// fsyncs the directory (stage: see rename_temp). Until the rename any failure removes the
// temporary file and leaves catalog.h5 as it was.
void install_catalog(const std::string& dir, std::span<const char> bytes,
                     const std::function<void(const char*)>& stage) {
  write_temp(dir, bytes);
  rename_temp(dir, stage);
}

}  // namespace

// ---- one rank's rows: as records, and packed (pack_catalog_part) ------------------------

namespace {

// A packed part: this header, then its tensor, file, root, rank and name records as in the
// file, then the text of its names.
struct PackedPart {
  char magic[8];
  std::int64_t epoch;
  std::uint64_t tensors, files, roots, names, text;
};
constexpr char kPartMagic[8] = {'S', 'C', 'P', 'A', 'R', 'T', '2', '\0'};

Records to_records(const CatalogPart& part) {
  Records out;
  out.tensors.resize(part.tensors.size());
  out.files.resize(part.files.size());
  out.roots.resize(part.roots.size());
  out.ranks.resize(1);
  // The names: one entry per tensor id (the rows of a session's part come in id order; any
  // order works), each name once in `text`.
  std::vector<std::uint32_t> by_id(part.tensors.size());
  std::iota(by_id.begin(), by_id.end(), 0u);
  std::uint32_t max_id = 0;
  bool sorted = true;
  for (std::size_t i = 0; i < part.tensors.size(); ++i) {
    max_id = std::max(max_id, part.tensors[i].id);
    sorted = sorted && (i == 0 || part.tensors[i - 1].id <= part.tensors[i].id);
  }
  if (!sorted && max_id < 4 * part.tensors.size() + 1024) {  // a counting sort by id (stable)
    std::vector<std::uint32_t> first(std::size_t{max_id} + 2, 0);
    for (const CatalogRow& r : part.tensors) ++first[std::size_t{r.id} + 1];
    for (std::size_t k = 1; k < first.size(); ++k) first[k] += first[k - 1];
    for (std::uint32_t i = 0; i < part.tensors.size(); ++i) by_id[first[part.tensors[i].id]++] = i;
  } else if (!sorted) {
    std::stable_sort(by_id.begin(), by_id.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return part.tensors[a].id < part.tensors[b].id; });
  }
  for (std::size_t k = 0; k < by_id.size(); ++k) {
    const CatalogRow& r = part.tensors[by_id[k]];
    if (k > 0 && part.tensors[by_id[k - 1]].id == r.id) {
      const CatalogRow& first = part.tensors[by_id[k - 1]];
      if (first.name != r.name || first.dtype != r.dtype)
        throw Error(fmt::format("catalog: tensor {} is '{}' ({}) in one row and '{}' ({}) in another", r.id, first.name,
                                dtype_name(first.dtype), r.name, dtype_name(r.dtype)));
      continue;
    }
    if (r.name.size() >= kName)
      throw Error(fmt::format("catalog: tensor name '{}' is longer than {} bytes", r.name, kName - 1));
    NameRecord n{};
    n.id = r.id;
    n.name_bytes = static_cast<std::uint32_t>(r.name.size());
    n.name_offset = out.text.size();
    copy_string(n.dtype, sizeof n.dtype, dtype_text(r.dtype), "dtype");
    out.text.insert(out.text.end(), r.name.begin(), r.name.end());
    out.names.push_back(n);
  }
  for (std::size_t i = 0; i < part.tensors.size(); ++i) {
    const CatalogRow& r = part.tensors[i];
    TensorRecord& t = out.tensors[i];
    t.id = r.id;
    t.numel = r.numel;
    t.element_offset = r.element_offset;
    t.shard = r.shard;
    t.shard_count = r.shard_count;
    t.owner = r.owner;
    t.node = r.node;
    t.root = r.root;
    t.file = r.file;
    t.offset = r.offset;
    t.bytes = r.bytes;
    t.aligned_bytes = r.aligned_bytes;
    t.checksum = r.checksum;
    t.epoch = r.epoch;
  }
  for (std::size_t i = 0; i < part.files.size(); ++i) {
    copy_string(out.files[i].path, sizeof out.files[i].path, part.files[i].path, "file path");
    out.files[i].owner = part.files[i].owner;
    out.files[i].root = part.files[i].root;
    out.files[i].size = part.files[i].size;
  }
  for (std::size_t i = 0; i < part.roots.size(); ++i) {
    out.roots[i].node = part.roots[i].node;
    out.roots[i].index = part.roots[i].index;
    copy_string(out.roots[i].path, sizeof out.roots[i].path, part.roots[i].path, "root path");
  }
  RankRecord& k = out.ranks[0];
  k.rank = part.rank.rank;
  k.node = part.rank.node;
  k.local_rank = part.rank.local_rank;
  copy_string(k.host, sizeof k.host, part.rank.host, "host name");
  k.bytes = part.rank.bytes;
  k.swap_out_s = part.rank.swap_out_s;
  k.swap_in_s = part.rank.swap_in_s;
  return out;
}

template <class Record>
std::byte* put(std::byte* at, const Zeroed<Record>& records) {
  if (!records.empty()) std::memcpy(at, records.data(), records.size() * sizeof(Record));
  return at + records.size() * sizeof(Record);
}

template <class Record, class Vector>
const std::byte* take(const std::byte* at, std::uint64_t count, Vector& into) {
  const std::size_t first = into.size();
  into.resize(first + count);
  if (count > 0) std::memcpy(into.data() + first, at, count * sizeof(Record));
  return at + count * sizeof(Record);
}

}  // namespace

void seal_catalog(const std::string& path) {
  quiet_hdf5();
  H5Handle handle = make(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), fmt::format("catalog '{}': opening", path));
  haddr_t eoa = 0;
  hdf_check_status(H5Fget_eoa(handle.get(), &eoa), fmt::format("catalog '{}': H5Fget_eoa", path));
  handle.reset();
  write_trailer(path, eoa);
}

std::string Catalog::file_path(std::uint32_t index) const {
  if (index >= files.size()) throw Error(fmt::format("catalog: file index {} out of range", index));
  const CatalogFile& f = files[index];
  int node = -1;
  for (const auto& r : ranks)
    if (r.rank == f.owner) node = r.node;
  for (const auto& r : roots)
    if (r.node == node && r.index == f.root) return (std::filesystem::path(r.path) / f.path).string();
  throw Error(fmt::format("catalog: no root {} for node {} (file '{}')", f.root, node, f.path));
}

void commit_catalog(MPI_Comm comm, const std::string& dir, const Catalog& header, const CatalogPart& part,
                    const std::function<void(const char*)>& stage) {
  quiet_hdf5();
  int rank = 0, size = 1;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  std::string problem;
  Records mine;
  auto& tensors = mine.tensors;
  auto& files = mine.files;
  auto& roots = mine.roots;
  auto& ranks = mine.ranks;
  auto& names = mine.names;
  auto& text = mine.text;
  try {
    mine = to_records(part);
    if (tensors.size() > INT_MAX || files.size() > INT_MAX || roots.size() > INT_MAX || text.size() > INT_MAX)
      throw Error(fmt::format("catalog: {} rows, {} files, {} roots and {} bytes of names on one rank are more than a "
                              "commit can gather", tensors.size(), files.size(), roots.size(), text.size()));
  } catch (const std::exception& e) {
    problem = e.what();
  }
  // Every rank's row counts on rank 0, which checks that each table stays addressable by
  // MPI_Gatherv's int displacements.
  constexpr std::size_t kCounts = 6;
  const std::array<int, kCounts> counts{problem.empty() ? static_cast<int>(tensors.size()) : 0,
                                        problem.empty() ? static_cast<int>(files.size()) : 0,
                                        problem.empty() ? static_cast<int>(roots.size()) : 0, 1,
                                        problem.empty() ? static_cast<int>(names.size()) : 0,
                                        problem.empty() ? static_cast<int>(text.size()) : 0};
  std::vector<int> all_counts(rank == 0 ? kCounts * static_cast<std::size_t>(size) : 0);
  mpi_check(MPI_Gather(counts.data(), kCounts, MPI_INT, all_counts.data(), kCounts, MPI_INT, 0, comm),
            "MPI_Gather (catalog row counts)");
  std::array<std::vector<int>, kCounts> per_rank;  // per table: each rank's rows (rank 0)
  if (rank == 0) {
    constexpr std::array<const char*, kCounts> kTables{"tensors", "files", "roots", "ranks", "names", "name_text"};
    for (std::size_t k = 0; k < kCounts; ++k) {
      std::uint64_t total = 0;
      for (int r = 0; r < size; ++r) {
        per_rank[k].push_back(all_counts[kCounts * static_cast<std::size_t>(r) + k]);
        total += static_cast<std::uint64_t>(per_rank[k].back());
      }
      if (total > INT_MAX && problem.empty())
        problem = fmt::format("catalog: /{} would have {} rows, more than one commit can gather ({})", kTables[k],
                              total, INT_MAX);
    }
  }
  // A local problem (a name too long for the file) stops every rank here, before the
  // gathers: no rank is left waiting in a collective call.
  auto fail_if = [&](const std::pair<int, std::string>& first) {
    const auto& [bad, message] = first;
    if (bad >= 0)  // the rank that failed keeps its whole message; the others get 1 KiB of it
      throw Error(fmt::format("catalog commit of epoch {} failed on rank {}: {}", header.epoch, bad,
                              bad == rank ? problem : message));
  };
  fail_if(first_message(comm, problem));
  // Rank 0 holds every rank's records (88 bytes per piece, and each rank's names once),
  // then HDF5's in-memory file of them and the copy of its image that is written (each
  // table's records are freed once in the file): about twice the catalog's size at the
  // peak, 0.2 GB for a million pieces.
  // That is of the order of what rank 0 already reads and holds alone when a job resumes
  // (load_catalog_collective: the records, then the Catalog made of them), so a job that
  // can resume can commit; the other ranks hold only their own records.
  Gathered all;
  all.tensors = gather_rows(comm, rank, tensors, per_rank[0], "tensors");
  all.files = gather_rows(comm, rank, files, per_rank[1], "files");
  all.roots = gather_rows(comm, rank, roots, per_rank[2], "roots");
  all.ranks = gather_rows(comm, rank, ranks, per_rank[3], "ranks");
  all.names = gather_rows(comm, rank, names, per_rank[4], "names");
  all.text = gather_rows(comm, rank, text, per_rank[5], "name_text");
  mine = Records{};
  if (rank == 0) {  // each rank's names point into its own text: into all of it now
    std::size_t name = 0;
    std::uint64_t base = 0;
    for (int r = 0; r < size; ++r) {
      for (int k = 0; k < per_rank[4][static_cast<std::size_t>(r)]; ++k) all.names[name++].name_offset += base;
      base += static_cast<std::uint64_t>(per_rank[5][static_cast<std::size_t>(r)]);
    }
  }
  // The commit is rank 0's: it builds the file in memory, writes and renames it. The other
  // ranks wait for the outcome in first_message (a failure there takes seconds, not a
  // timeout: nothing but rank 0 touches the file).
  if (rank == 0) {
    try {
      const Buffer<char> image = catalog_image(dir + "/" + kTmpName, header, all);
      install_catalog(dir, image, stage);
    } catch (const std::exception& e) {
      problem = e.what();
    }
  }
  fail_if(first_message(comm, problem));
}

CatalogIndex::CatalogIndex(const Catalog& catalog, std::span<const TensorSpec> tensors)
    : _catalog(catalog), _rows(tensors.size()) {
  for (std::size_t i = 0; i < catalog.tensors.size(); ++i) {
    const CatalogRow& r = catalog.tensors[i];
    if (r.id >= tensors.size())
      throw Error(fmt::format("catalog row {} ('{}') is tensor {}, but the model has {} tensors", i, r.name, r.id,
                              tensors.size()));
    const TensorSpec& t = tensors[r.id];
    if (r.name != t.name || r.dtype != t.dtype)
      throw Error(fmt::format("catalog tensor {} is '{}' ({}), but the model's is '{}' ({})", r.id, r.name,
                              dtype_name(r.dtype), t.name, dtype_name(t.dtype)));
    _rows[r.id].push_back(i);
  }
  for (std::size_t id = 0; id < tensors.size(); ++id) {
    auto& rows = _rows[id];
    std::sort(rows.begin(), rows.end(), [&](std::size_t a, std::size_t b) {
      return catalog.tensors[a].element_offset < catalog.tensors[b].element_offset;
    });
    std::uint64_t next = 0;
    for (std::size_t i : rows) {
      const CatalogRow& r = catalog.tensors[i];
      if (r.element_offset != next)
        throw Error(fmt::format("catalog: tensor '{}' has {} at element {} (expected element {})", tensors[id].name,
                                r.element_offset < next ? "overlapping pieces" : "a gap", r.element_offset, next));
      next += r.numel;
    }
    if (next != tensors[id].numel())
      throw Error(fmt::format("catalog: tensor '{}' covers {} of its {} elements", tensors[id].name, next,
                              tensors[id].numel()));
  }
}

void CatalogIndex::locate(std::uint32_t id, std::uint64_t begin, std::uint64_t end,
                          std::vector<CatalogSegment>& out) const {
  for (std::size_t i : _rows.at(id)) {
    const CatalogRow& r = _catalog.tensors[i];
    const std::size_t element = dtype_size(r.dtype);
    const std::uint64_t row_begin = r.element_offset * element, row_end = row_begin + r.bytes;
    const std::uint64_t from = std::max(begin, row_begin), to = std::min(end, row_end);
    if (from >= to) continue;
    const std::uint64_t offset_in_row = from - row_begin;
    const std::uint64_t read = std::min(align_up(to - from, _catalog.alignment), r.aligned_bytes - offset_in_row);
    out.push_back({r.file, r.offset + offset_in_row, to - from, read, from, i});
  }
}

CatalogCheck verify_catalog(const Catalog& catalog, IoEngine& engine, std::size_t buffer_bytes, int rank, int size,
                            DirectMode direct, std::span<const std::string> roots) {
  std::vector<std::size_t> rows;
  for (std::size_t i = static_cast<std::size_t>(rank); i < catalog.tensors.size(); i += static_cast<std::size_t>(size))
    rows.push_back(i);
  return verify_catalog_rows(catalog, engine, buffer_bytes, rows, direct, roots);
}

CatalogCheck verify_catalog_rows(const Catalog& catalog, IoEngine& engine, std::size_t buffer_bytes,
                                 std::span<const std::size_t> rows, DirectMode direct,
                                 std::span<const std::string> roots) {
  CatalogCheck result;
  const std::vector<std::string> allowed =
      roots.empty() ? readable_catalog_roots(catalog) : std::vector<std::string>(roots.begin(), roots.end());
  buffer_bytes = std::max<std::size_t>(align_up(buffer_bytes, catalog.alignment), catalog.alignment);
  PinnedAllocation buffer(buffer_bytes);
  std::vector<std::optional<SwapFile>> files(catalog.files.size());
  Checksum hash(catalog.checksum);
  auto note = [&](std::string text) {
    ++result.mismatches;
    if (result.notes.size() < 5) result.notes.push_back(std::move(text));
  };
  for (const std::size_t i : rows) {
    const CatalogRow& r = catalog.tensors.at(i);
    ++result.pieces;
    try {
      if (!files[r.file]) files[r.file].emplace(SwapFile::open(checked_file_path(catalog, r.file, allowed), direct));
      hash.reset();
      for (std::uint64_t done = 0; done < r.aligned_bytes; done += buffer_bytes) {
        const std::uint64_t length = std::min<std::uint64_t>(buffer_bytes, r.aligned_bytes - done);
        const IoRequest read{IoOp::read, &*files[r.file], buffer.data(), r.offset + done, length};
        engine.run({&read, 1});
        result.bytes += length;
        if (done < r.bytes)
          hash.update(buffer.data(), static_cast<std::size_t>(std::min<std::uint64_t>(length, r.bytes - done)));
      }
      const std::uint64_t got = hash.digest();
      if (got != r.checksum)
        note(fmt::format("tensor '{}' shard {} ({} bytes at offset {} of '{}'): checksum {:016x}, catalog says {:016x}",
                         r.name, r.shard, r.bytes, r.offset, files[r.file]->path(), got, r.checksum));
    } catch (const std::exception& e) {
      note(fmt::format("tensor '{}' shard {}: {}", r.name, r.shard, e.what()));
    }
  }
  return result;
}

Catalog load_catalog(const std::string& path, TrailerCheck trailer) {
  quiet_hdf5();
  if (!std::filesystem::is_regular_file(path))
    throw Error(fmt::format("catalog '{}': no such file", path));
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw Error(fmt::format("catalog '{}': not an HDF5 file", path));
  if (trailer == TrailerCheck::required) check_trailer(path);
  H5Handle handle = make(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), fmt::format("catalog '{}': opening", path));
  const hid_t f = handle.get();
  if (H5Aexists(f, "format") <= 0 || read_string_attribute(f, "format", path) != kCatalogFormat)
    throw Error(fmt::format("catalog '{}': not a swapcoord catalog (no format attribute '{}')", path, kCatalogFormat));
  const auto version = read_number_attribute<std::int32_t>(f, "version", H5T_NATIVE_INT32, H5T_INTEGER, path);
  if (version > kCatalogVersion || version < 1)
    throw Error(fmt::format("catalog '{}': format version {} is not supported (this swapcoord reads version {})",
                            path, version, kCatalogVersion));
  Catalog c;
  c.version = version;
  c.job = read_string_attribute(f, "job", path);
  c.epoch = read_number_attribute<std::int32_t>(f, "epoch", H5T_NATIVE_INT32, H5T_INTEGER, path);
  c.slot = read_number_attribute<std::int32_t>(f, "slot", H5T_NATIVE_INT32, H5T_INTEGER, path);
  c.slots = read_number_attribute<std::int32_t>(f, "slots", H5T_NATIVE_INT32, H5T_INTEGER, path);
  c.world_size = read_number_attribute<std::int32_t>(f, "world_size", H5T_NATIVE_INT32, H5T_INTEGER, path);
  c.node_count = read_number_attribute<std::int32_t>(f, "node_count", H5T_NATIVE_INT32, H5T_INTEGER, path);
  c.layout = read_string_attribute(f, "layout", path);
  c.policy = read_string_attribute(f, "policy", path);
  c.alignment = read_number_attribute<std::uint64_t>(f, "alignment", H5T_NATIVE_UINT64, H5T_INTEGER, path);
  c.plan_fingerprint = read_string_attribute(f, "plan_fingerprint", path);
  c.config_json = read_string_attribute(f, "config", path);
  c.created = read_string_attribute(f, "created", path);
  if (H5Aexists(f, "generation") > 0)  // optional (written since per-piece slots)
    c.generation = read_number_attribute<std::int32_t>(f, "generation", H5T_NATIVE_INT32, H5T_INTEGER, path);
  if (H5Aexists(f, "metadata") > 0)  // optional (written since SwapSession::commit(metadata))
    c.metadata = read_string_attribute(f, "metadata", path);
  c.checksum = ChecksumKind::xxh64;  // versions 1 and 2
  if (version >= 3) {
    const std::string name = read_string_attribute(f, "checksum", path);
    const auto kind = parse_checksum(name);
    if (!kind)
      throw Error(fmt::format("catalog '{}': checksum algorithm '{}' is not one this swapcoord knows (xxh3_64, xxh64)",
                              path, name));
    c.checksum = *kind;
  }
  if (c.epoch < 0 || c.generation < 0 || c.slots < 1 || c.slots > 2 || c.slot < 0 || c.slot >= c.slots || c.world_size < 1 ||
      c.node_count < 1 || c.node_count > c.world_size || c.alignment == 0 || (c.alignment & (c.alignment - 1)) != 0)
    throw Error(fmt::format("catalog '{}': inconsistent attributes (epoch {}, slot {} of {}, world {}, nodes {}, "
                            "alignment {})", path, c.epoch, c.slot, c.slots, c.world_size, c.node_count, c.alignment));

  for (const auto& r : read_rows<RootRecord>(f, "roots", root_members(), path)) {
    CatalogRoot root{r.node, r.index, read_string(r.path, sizeof r.path)};
    if (root.path.empty() || root.node < 0 || root.node >= c.node_count || root.index < 0)
      throw Error(fmt::format("catalog '{}': bad root row (node {}, index {}, '{}')", path, root.node, root.index, root.path));
    c.roots.push_back(std::move(root));
  }
  for (const auto& r : read_rows<RankRecord>(f, "ranks", rank_members(), path)) {
    if (r.rank < 0 || r.rank >= c.world_size || r.node < 0 || r.node >= c.node_count)
      throw Error(fmt::format("catalog '{}': bad rank row (rank {}, node {})", path, r.rank, r.node));
    c.ranks.push_back({r.rank, r.node, r.local_rank, read_string(r.host, sizeof r.host), r.bytes, r.swap_out_s, r.swap_in_s});
  }
  if (c.ranks.size() != static_cast<std::size_t>(c.world_size))
    throw Error(fmt::format("catalog '{}': {} rank rows for a world of {}", path, c.ranks.size(), c.world_size));
  for (const auto& r : read_rows<FileRecord>(f, "files", file_members(), path)) {
    CatalogFile file{read_string(r.path, sizeof r.path), r.owner, r.root, r.size};
    check_relative(file.path, path, "file path");
    if (file.owner < 0 || file.owner >= c.world_size)
      throw Error(fmt::format("catalog '{}': file '{}' has owner {} outside the world of {}", path, file.path, file.owner, c.world_size));
    c.files.push_back(std::move(file));
  }
  for (std::uint32_t i = 0; i < c.files.size(); ++i) {  // every file has its root
    try {
      (void)c.file_path(i);
    } catch (const Error& e) {
      throw Error(fmt::format("catalog '{}': {}", path, e.what()));
    }
  }

  // Each piece's tensor name and dtype: in its row (version 1), or once per tensor in
  // /names and /name_text (version 2).
  struct Named {
    std::string name;
    DType dtype;
  };
  std::vector<std::pair<std::uint32_t, Named>> named;  // version 2: by id
  std::vector<std::int32_t> dense;  // id -> index into named, when the ids are dense enough
  const auto name_of = [&](std::uint32_t id, std::size_t row) -> const Named& {
    if (id < dense.size() && dense[id] >= 0) return named[static_cast<std::size_t>(dense[id])].second;
    const auto it = std::lower_bound(named.begin(), named.end(), id, [](const auto& e, std::uint32_t v) { return e.first < v; });
    if (it == named.end() || it->first != id)
      throw Error(fmt::format("catalog '{}': tensor row {} is tensor {}, which /names does not name", path, row, id));
    return it->second;
  };
  Buffer<TensorRecord> rows;
  Buffer<TensorRecordV1> rows_v1;
  if (version >= 2) {
    const auto text = read_bytes(f, "name_text", path);
    for (const auto& n : read_rows<NameRecord>(f, "names", name_members(), path)) {
      if (n.name_bytes >= kName || n.name_offset > text.size() || n.name_bytes > text.size() - n.name_offset)
        throw Error(fmt::format("catalog '{}': the name of tensor {} ({} bytes at {}) lies outside /name_text ({} "
                                "bytes) or is longer than {} bytes", path, n.id, n.name_bytes, n.name_offset,
                                text.size(), kName - 1));
      named.push_back({n.id, {std::string(text.data() + n.name_offset, n.name_bytes),
                              parse_stored_dtype(n.dtype, sizeof n.dtype, fmt::format("catalog '{}': tensor {}", path, n.id))}});
    }
    std::sort(named.begin(), named.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 1; i < named.size(); ++i)
      if (named[i].first == named[i - 1].first)
        throw Error(fmt::format("catalog '{}': /names names tensor {} twice", path, named[i].first));
    if (!named.empty() && named.back().first < 4 * named.size() + 1024) {
      dense.assign(named.back().first + 1, -1);
      for (std::size_t i = 0; i < named.size(); ++i) dense[named[i].first] = static_cast<std::int32_t>(i);
    }
    rows = read_rows<TensorRecord>(f, "tensors", tensor_members(), path);
  } else {
    rows_v1 = read_rows<TensorRecordV1>(f, "tensors", tensor_members_v1(), path);
  }
  const std::size_t row_count = version >= 2 ? rows.size() : rows_v1.size();
  c.tensors.reserve(row_count);
  advise_huge_pages(c.tensors.data(), c.tensors.capacity() * sizeof(CatalogRow));
  // Per file, the extents of its rows (offset, end), to find overlaps.
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> extents(c.files.size());
  {
    std::vector<std::size_t> per_file(c.files.size(), 0);
    for (std::size_t i = 0; i < row_count; ++i) {
      const std::uint32_t file = version >= 2 ? rows[i].file : rows_v1[i].file;
      if (file < per_file.size()) ++per_file[file];
    }
    for (std::size_t k = 0; k < extents.size(); ++k) extents[k].reserve(per_file[k]);
  }
  for (std::size_t i = 0; i < row_count; ++i) {
    CatalogRow r;
    const auto copy = [&](const auto& t) {
      r.id = t.id;
      r.numel = t.numel;
      r.element_offset = t.element_offset;
      r.shard = t.shard;
      r.shard_count = t.shard_count;
      r.owner = t.owner;
      r.node = t.node;
      r.root = t.root;
      r.file = t.file;
      r.offset = t.offset;
      r.bytes = t.bytes;
      r.aligned_bytes = t.aligned_bytes;
      r.checksum = t.checksum;
      r.epoch = t.epoch;
    };
    if (version >= 2) {
      copy(rows[i]);
      const Named& n = name_of(r.id, i);
      r.name = n.name;
      r.dtype = n.dtype;
    } else {
      const TensorRecordV1& t = rows_v1[i];
      copy(t);
      r.name = read_string(t.name, sizeof t.name);
      r.dtype = parse_stored_dtype(t.dtype, sizeof t.dtype, fmt::format("catalog '{}': tensor row {}", path, i));
    }
    const auto where = [&] { return fmt::format("catalog '{}': tensor row {} ('{}')", path, i, r.name); };
    if (r.file >= c.files.size())
      throw Error(fmt::format("{} points to file {} of {}", where(), r.file, c.files.size()));
    const CatalogFile& file = c.files[r.file];
    std::uint64_t end = 0;
    if (r.numel > UINT64_MAX / dtype_size(r.dtype) || r.numel * dtype_size(r.dtype) != r.bytes ||
        r.bytes > r.aligned_bytes || r.aligned_bytes % c.alignment != 0 || r.offset % c.alignment != 0 ||
        __builtin_add_overflow(r.offset, r.aligned_bytes, &end) || end > file.size)
      throw Error(fmt::format("{}: {} bytes ({} aligned) at offset {} do not fit file '{}' of {} bytes or its alignment",
                              where(), r.bytes, r.aligned_bytes, r.offset, file.path, file.size));
    if (r.owner != file.owner || r.owner < 0 || r.owner >= c.world_size || r.shard_count == 0 || r.shard >= r.shard_count)
      throw Error(fmt::format("{}: owner {} / shard {} of {} disagree with its file (owner {})", where(), r.owner,
                              r.shard, r.shard_count, file.owner));
    if (r.epoch < 0 || r.epoch > c.epoch)
      throw Error(fmt::format("{}: epoch {} is outside the catalog's epochs 0..{}", where(), r.epoch, c.epoch));
    if (r.aligned_bytes > 0) extents[r.file].emplace_back(r.offset, end);
    c.tensors.push_back(std::move(r));
  }
  for (std::size_t file = 0; file < extents.size(); ++file) {
    auto& list = extents[file];
    std::sort(list.begin(), list.end());
    for (std::size_t i = 1; i < list.size(); ++i)
      if (list[i].first < list[i - 1].second)
        throw Error(fmt::format("catalog '{}': rows overlap in file '{}' (bytes {}..{} and {}..{})", path,
                                c.files[file].path, list[i - 1].first, list[i - 1].second, list[i].first, list[i].second));
  }
  return c;
}


// ---- the commit in two halves (pack on every rank, write on rank 0) --------------------

std::vector<std::byte> pack_catalog_part(int epoch, const CatalogPart& part) {
  const Records r = to_records(part);
  PackedPart head{};
  std::memcpy(head.magic, kPartMagic, sizeof head.magic);
  head.epoch = epoch;
  head.tensors = r.tensors.size();
  head.files = r.files.size();
  head.roots = r.roots.size();
  head.names = r.names.size();
  head.text = r.text.size();
  std::vector<std::byte> out;
  const std::size_t bytes = sizeof head + r.tensors.size() * sizeof(TensorRecord) + r.files.size() * sizeof(FileRecord) +
                            r.roots.size() * sizeof(RootRecord) + sizeof(RankRecord) +
                            r.names.size() * sizeof(NameRecord) + r.text.size();
  out.reserve(bytes);
  advise_huge_pages(out.data(), bytes);
  out.resize(bytes);
  std::memcpy(out.data(), &head, sizeof head);
  std::byte* at = out.data() + sizeof head;
  at = put(at, r.tensors);
  at = put(at, r.files);
  at = put(at, r.roots);
  at = put(at, r.ranks);
  at = put(at, r.names);
  put(at, r.text);
  return out;
}

int catalog_part_epoch(std::span<const std::byte> packed) {
  PackedPart head{};
  if (packed.size() < sizeof head) return -1;
  std::memcpy(&head, packed.data(), sizeof head);
  if (std::memcmp(head.magic, kPartMagic, sizeof kPartMagic) != 0) return -1;
  return static_cast<int>(head.epoch);
}

void write_catalog(const std::string& dir, const Catalog& header, std::span<const std::vector<std::byte>> parts,
                   const std::function<void(const char*)>& stage) {
  write_catalog_temp(dir, header, parts);
  rename_catalog_temp(dir, stage);
}

void rename_catalog_temp(const std::string& dir, const std::function<void(const char*)>& stage) {
  rename_temp(dir, stage);
}

void write_catalog_temp(const std::string& dir, const Catalog& header, std::span<const std::vector<std::byte>> parts) {
  quiet_hdf5();
  Gathered all;
  std::uint64_t file_base = 0;
  for (std::size_t p = 0; p < parts.size(); ++p) {
    const auto& bytes = parts[p];
    PackedPart head{};
    if (bytes.size() >= sizeof head) std::memcpy(&head, bytes.data(), sizeof head);
    // The counts come from another rank: checked against the bytes there are, one table at
    // a time, so that no product or sum can wrap.
    const auto damaged = [&] {
      return Error(fmt::format("catalog commit of epoch {}: the rows of rank {} are damaged ({} bytes)", header.epoch,
                               p, bytes.size()));
    };
    if (bytes.size() < sizeof head || std::memcmp(head.magic, kPartMagic, sizeof kPartMagic) != 0 ||
        head.epoch != header.epoch)
      throw damaged();
    std::uint64_t left = bytes.size() - sizeof head;
    const auto consume = [&](std::uint64_t count, std::size_t record) {
      if (count > left / record) throw damaged();
      left -= count * record;
    };
    consume(head.tensors, sizeof(TensorRecord));
    consume(head.files, sizeof(FileRecord));
    consume(head.roots, sizeof(RootRecord));
    consume(1, sizeof(RankRecord));
    consume(head.names, sizeof(NameRecord));
    consume(head.text, 1);
    if (left != 0) throw damaged();
    const std::size_t first_tensor = all.tensors.size(), first_name = all.names.size();
    const std::uint64_t text_base = all.text.size();
    const std::byte* at = bytes.data() + sizeof head;
    at = take<TensorRecord>(at, head.tensors, all.tensors);
    at = take<FileRecord>(at, head.files, all.files);
    at = take<RootRecord>(at, head.roots, all.roots);
    at = take<RankRecord>(at, 1, all.ranks);
    at = take<NameRecord>(at, head.names, all.names);
    take<char>(at, head.text, all.text);
    for (std::size_t i = first_name; i < all.names.size(); ++i) {
      NameRecord& n = all.names[i];
      if (n.name_bytes > head.text || n.name_offset > head.text - n.name_bytes)
        throw Error(fmt::format("catalog commit of epoch {}: the rows of rank {} are damaged (a name outside its text)",
                                header.epoch, p));
      n.name_offset += text_base;
    }
    for (std::size_t i = first_tensor; i < all.tensors.size(); ++i) {
      if (all.tensors[i].file >= head.files)
        throw Error(fmt::format("catalog commit of epoch {}: rank {} names file {} of its {}", header.epoch, p,
                                all.tensors[i].file, head.files));
      all.tensors[i].file += static_cast<std::uint32_t>(file_base);
    }
    file_base += head.files;
  }
  const auto image = catalog_image(dir + "/" + kTmpName, header, all);
  write_temp(dir, image);
}

}  // namespace swapcoord
