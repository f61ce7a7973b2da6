// MPI tests of the catalog layer (catalog/catalog.hpp): the collective commit and its atomic
// replacement, the checked serial loader (every rejection names the file and the problem; a
// fuzzed file either loads or throws swapcoord::Error), CatalogIndex and verify_catalog.
//
// Every test runs at 1, 2 and 4 ranks. Every rank makes the same collective calls in the
// same order (commit_catalog, SharedTempDir, barriers, reductions); an expected exception of
// a collective call is checked on every rank and combined over ranks. Loading is not
// collective: the loader's rejections are checked on rank 0 only, on copies of a committed
// catalog, while the other ranks wait at the next collective call.
//
// The test layout pretends that ranks come two to a node (node = rank / 2, local rank =
// rank % 2, two swap roots per node, given by each node's local rank 0), so that the /roots
// and /ranks records and Catalog::file_path are exercised across several nodes.
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/common/dtype.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "mpi_test_support.hpp"

namespace swapcoord {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

using namespace test;  // the MPI helpers of mpi_test_support.hpp

constexpr std::uint64_t kAlign = 4096;

// ---- the test layout (local, deterministic: every rank can compute every rank's part) ------

int node_of(int rank) { return rank / 2; }
int node_count(int size) { return (size + 1) / 2; }
int local_rank_of(int rank) { return rank % 2; }

std::string root_dir(const std::string& dir, int node, int index) {
  return dir + "/root-n" + std::to_string(node) + "-" + std::to_string(index);
}

Catalog make_header(int epoch, int size) {
  Catalog h;
  h.job = "job-cat";
  h.epoch = epoch;
  h.slot = epoch % 2;
  h.slots = 2;
  h.world_size = size;
  h.node_count = node_count(size);
  h.layout = "slab";
  h.policy = "balanced";
  h.alignment = kAlign;
  h.plan_fingerprint = "0123456789abcdef";
  h.config_json = R"({"swap":{"roots":["/a","/b"],"slots":2},"aio":{"queue_depth":8}})";
  h.created = "2024-05-06T07:08:09Z";
  return h;
}

constexpr std::array<DType, 9> kDTypes{DType::u8,  DType::i8,   DType::i16, DType::i32, DType::i64,
                                       DType::f16, DType::bf16, DType::f32, DType::f64};

// Rank r's part of the round-trip catalog: `rows(r)` rows in its one file (root r % 2 of its
// node; none when it has no rows), each at its own aligned slot; local rank 0 gives its
// node's two roots. File indices are global: the files of the ranks before come first.
CatalogPart make_part(int r, int epoch, const std::string& dir, const std::function<int(int)>& rows) {
  CatalogPart p;
  const int node = node_of(r);
  const int count = rows(r);
  std::uint32_t file_index = 0;
  for (int q = 0; q < r; ++q) file_index += rows(q) > 0 ? 1 : 0;
  std::uint64_t bytes_total = 0;
  for (int k = 0; k < count; ++k) {
    CatalogRow row;
    row.id = static_cast<std::uint32_t>(100 * r + k);
    row.name = "rank" + std::to_string(r) + ".tensor" + std::to_string(k);
    row.dtype = kDTypes[static_cast<std::size_t>(r + k) % kDTypes.size()];
    row.numel = 100 + 7 * static_cast<std::uint64_t>(k) + static_cast<std::uint64_t>(r);
    row.element_offset = 3 * static_cast<std::uint64_t>(k);
    row.shard = static_cast<std::uint32_t>(k);
    row.shard_count = static_cast<std::uint32_t>(count);
    row.owner = r;
    row.node = node;
    row.root = r % 2;
    row.file = file_index;
    row.offset = static_cast<std::uint64_t>(k) * kAlign;
    row.bytes = row.numel * dtype_size(row.dtype);
    row.aligned_bytes = align_up(row.bytes, kAlign);
    row.checksum = 0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(1000 * r + k + 1);
    row.epoch = epoch;
    bytes_total += row.bytes;
    p.tensors.push_back(row);
  }
  if (count > 0)
    p.files.push_back({"job-cat/rank-" + std::to_string(r) + "/slot-" + std::to_string(epoch % 2) + ".swp", r, r % 2,
                       static_cast<std::uint64_t>(count) * kAlign});
  if (local_rank_of(r) == 0) {
    p.roots.push_back({node, 0, root_dir(dir, node, 0)});
    p.roots.push_back({node, 1, root_dir(dir, node, 1)});
  }
  p.rank.rank = r;
  p.rank.node = node;
  p.rank.local_rank = local_rank_of(r);
  p.rank.host = "host-" + std::to_string(node);
  p.rank.bytes = bytes_total;
  p.rank.swap_out_s = 0.5 + r;
  p.rank.swap_in_s = 0.25 * r;
  return p;
}

int rows_plus_one(int r) { return r + 1; }

// Every row of `expected` parts (in rank order) against the loaded catalog (local).
void expect_catalog(const Catalog& c, const Catalog& header, const std::vector<CatalogPart>& parts) {
  EXPECT_EQ(c.job, header.job);
  EXPECT_EQ(c.epoch, header.epoch);
  EXPECT_EQ(c.slot, header.slot);
  EXPECT_EQ(c.slots, header.slots);
  EXPECT_EQ(c.world_size, header.world_size);
  EXPECT_EQ(c.node_count, header.node_count);
  EXPECT_EQ(c.layout, header.layout);
  EXPECT_EQ(c.policy, header.policy);
  EXPECT_EQ(c.alignment, header.alignment);
  EXPECT_EQ(c.plan_fingerprint, header.plan_fingerprint);
  EXPECT_EQ(c.config_json, header.config_json);
  EXPECT_EQ(c.created, header.created);

  std::vector<CatalogRow> rows;
  std::vector<CatalogFile> files;
  std::vector<CatalogRoot> roots;
  std::vector<CatalogRank> ranks;
  for (const auto& p : parts) {
    rows.insert(rows.end(), p.tensors.begin(), p.tensors.end());
    files.insert(files.end(), p.files.begin(), p.files.end());
    roots.insert(roots.end(), p.roots.begin(), p.roots.end());
    ranks.push_back(p.rank);
  }
  ASSERT_EQ(c.tensors.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE("tensor row " + std::to_string(i));
    const CatalogRow &got = c.tensors[i], &want = rows[i];
    EXPECT_EQ(got.id, want.id);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.numel, want.numel);
    EXPECT_EQ(got.element_offset, want.element_offset);
    EXPECT_EQ(got.shard, want.shard);
    EXPECT_EQ(got.shard_count, want.shard_count);
    EXPECT_EQ(got.owner, want.owner);
    EXPECT_EQ(got.node, want.node);
    EXPECT_EQ(got.root, want.root);
    EXPECT_EQ(got.file, want.file);
    EXPECT_EQ(got.offset, want.offset);
    EXPECT_EQ(got.bytes, want.bytes);
    EXPECT_EQ(got.aligned_bytes, want.aligned_bytes);
    EXPECT_EQ(got.checksum, want.checksum);
    EXPECT_EQ(got.epoch, want.epoch);
  }
  ASSERT_EQ(c.files.size(), files.size());
  for (std::size_t i = 0; i < files.size(); ++i) {
    SCOPED_TRACE("file " + std::to_string(i));
    EXPECT_EQ(c.files[i].path, files[i].path);
    EXPECT_EQ(c.files[i].owner, files[i].owner);
    EXPECT_EQ(c.files[i].root, files[i].root);
    EXPECT_EQ(c.files[i].size, files[i].size);
  }
  ASSERT_EQ(c.roots.size(), roots.size());
  for (std::size_t i = 0; i < roots.size(); ++i) {
    SCOPED_TRACE("root " + std::to_string(i));
    EXPECT_EQ(c.roots[i].node, roots[i].node);
    EXPECT_EQ(c.roots[i].index, roots[i].index);
    EXPECT_EQ(c.roots[i].path, roots[i].path);
  }
  ASSERT_EQ(c.ranks.size(), ranks.size());
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    SCOPED_TRACE("rank record " + std::to_string(i));
    EXPECT_EQ(c.ranks[i].rank, ranks[i].rank);
    EXPECT_EQ(c.ranks[i].node, ranks[i].node);
    EXPECT_EQ(c.ranks[i].local_rank, ranks[i].local_rank);
    EXPECT_EQ(c.ranks[i].host, ranks[i].host);
    EXPECT_EQ(c.ranks[i].bytes, ranks[i].bytes);
    EXPECT_DOUBLE_EQ(c.ranks[i].swap_out_s, ranks[i].swap_out_s);
    EXPECT_DOUBLE_EQ(c.ranks[i].swap_in_s, ranks[i].swap_in_s);
  }
}

std::vector<CatalogPart> all_parts(int size, int epoch, const std::string& dir, const std::function<int(int)>& rows) {
  std::vector<CatalogPart> parts;
  for (int r = 0; r < size; ++r) parts.push_back(make_part(r, epoch, dir, rows));
  return parts;
}

// Commits the test layout of `epoch` (collective); false on every rank if it threw anywhere.
bool commit_layout(const std::string& dir, int epoch, const std::function<int(int)>& rows = rows_plus_one) {
  bool ok = true;
  try {
    commit_catalog(MPI_COMM_WORLD, dir, make_header(epoch, world_size()), make_part(world_rank(), epoch, dir, rows));
  } catch (const std::exception& e) {
    ok = false;
    ADD_FAILURE() << "rank " << world_rank() << ": commit_catalog: " << e.what();
  }
  return all_ranks(ok);
}

// ---- small file helpers (local) ----------------------------------------------------------------

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "writing " << path;
}

std::string copy_of(const std::string& from, const std::string& to) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  return to;
}

bool have_program(const char* name) {
  return std::system((std::string("command -v ") + name + " >/dev/null 2>&1").c_str()) == 0;
}

// The message of the swapcoord::Error that load_catalog(path) throws (local); a failure if it
// returns or throws anything else.
std::string load_error(const std::string& path) {
  try {
    (void)load_catalog(path);
    ADD_FAILURE() << "load_catalog('" << path << "') returned";
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "load_catalog('" << path << "') threw " << typeid(e).name() << " (not swapcoord::Error): "
                  << e.what();
  }
  return {};
}

// load_catalog(path) in a forked child, with an address-space limit and a time limit, so that
// a crash, a hang or a huge allocation shows up as a result instead of ending the MPI job.
// The child makes no MPI call and leaves with _exit.
struct ChildLoad {
  enum Kind { returned, error, other_exception, crashed, timed_out } kind = crashed;
  std::string detail;
};

ChildLoad load_in_child(const std::string& path, unsigned timeout_s = 20, std::uint64_t extra_address_space = 2ULL << 30) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return {ChildLoad::crashed, "pipe() failed"};
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return {ChildLoad::crashed, "fork() failed"};
  if (pid == 0) {
    ::close(pipe_fds[0]);
    // The default actions, not Open MPI's handlers (which print a backtrace from the crashed
    // child as if it were the rank): a crash ends the child and the parent reports it.
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM}) ::signal(sig, SIG_DFL);
    ::alarm(timeout_s);
    // Cap the address space at what the process maps now plus `extra_address_space`.
    std::uint64_t pages = 0;
    if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
      unsigned long long vm = 0;
      if (std::fscanf(statm, "%llu", &vm) == 1) pages = vm;
      std::fclose(statm);
    }
    if (pages > 0) {
      const rlim_t cap = static_cast<rlim_t>(pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) + extra_address_space);
      const rlimit limit{cap, cap};
      ::setrlimit(RLIMIT_AS, &limit);
    }
    int code = 0;
    std::string text;
    try {
      (void)load_catalog(path);
    } catch (const Error& e) {
      code = 1;
      text = e.what();
    } catch (const std::exception& e) {
      code = 2;
      text = std::string(typeid(e).name()) + ": " + e.what();
    } catch (...) {
      code = 3;
      text = "an exception not derived from std::exception";
    }
    const char* data = text.data();
    std::size_t left = std::min<std::size_t>(text.size(), 8192);
    while (left > 0) {
      const ssize_t n = ::write(pipe_fds[1], data, left);
      if (n <= 0) break;
      data += n;
      left -= static_cast<std::size_t>(n);
    }
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  ChildLoad result;
  char chunk[4096];
  ssize_t n = 0;
  while ((n = ::read(pipe_fds[0], chunk, sizeof chunk)) > 0) result.detail.append(chunk, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    switch (WEXITSTATUS(status)) {
      case 0: result.kind = ChildLoad::returned; break;
      case 1: result.kind = ChildLoad::error; break;
      default: result.kind = ChildLoad::other_exception; break;
    }
  } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
    result.kind = ChildLoad::timed_out;
    result.detail = "no answer in " + std::to_string(timeout_s) + " s";
  } else {
    result.kind = ChildLoad::crashed;
    result.detail = WIFSIGNALED(status) ? std::string("killed by signal ") + ::strsignal(WTERMSIG(status)) : "?";
  }
  return result;
}

// ---- HDF5 surgery on copies (local; plain serial HDF5 calls) ------------------------------------

// Checked HDF5 call in a test: a negative result is a fatal failure of the calling helper.
#define H5_OK(call) ASSERT_GE((call), 0) << #call

// Rewrites the scalar int32 attribute `name` of the file's root group.
void rewrite_int_attribute(const std::string& path, const char* name, std::int32_t value) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  H5_OK(a);
  H5_OK(H5Awrite(a, H5T_NATIVE_INT32, &value));
  H5_OK(H5Aclose(a));
  H5_OK(H5Fclose(f));
  seal_catalog(path);  // edited on purpose: a fresh checksum trailer
}

// Replaces the string attribute `name` of the file's root group by `value`, or removes it
// when `value` is empty.
void rewrite_string_attribute(const std::string& path, const char* name, const std::string& value) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  H5_OK(H5Adelete(f, name));
  if (!value.empty()) {
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5_OK(H5Tset_size(type, value.size()));
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    H5_OK(a);
    H5_OK(H5Awrite(a, type, value.data()));
    H5_OK(H5Aclose(a));
    H5_OK(H5Sclose(space));
    H5_OK(H5Tclose(type));
  }
  H5_OK(H5Fclose(f));
  seal_catalog(path);  // edited on purpose: a fresh checksum trailer
}

void delete_link(const std::string& path, const char* name) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  H5_OK(H5Ldelete(f, name, H5P_DEFAULT));
  H5_OK(H5Fclose(f));
  seal_catalog(path);  // edited on purpose: a fresh checksum trailer
}

// Replaces /tensors by a dataset of the same compound layout (each column's stored type
// copied) except that `checksum` is a 64-bit float, holding the same raw bytes.
void make_checksum_column_float(const std::string& path) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  const hid_t d = H5Dopen2(f, "tensors", H5P_DEFAULT);
  H5_OK(d);
  const hid_t stored = H5Dget_type(d);
  H5_OK(stored);
  const hid_t space = H5Dget_space(d);
  H5_OK(space);
  const hssize_t rows = H5Sget_simple_extent_npoints(space);
  const std::size_t record = H5Tget_size(stored);
  std::vector<unsigned char> raw(record * static_cast<std::size_t>(std::max<hssize_t>(rows, 1)));
  if (rows > 0) {
    H5_OK(H5Dread(d, stored, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()));
  }
  const hid_t changed = H5Tcreate(H5T_COMPOUND, record);
  H5_OK(changed);
  const int members = H5Tget_nmembers(stored);
  bool found = false;
  for (int i = 0; i < members; ++i) {
    char* name = H5Tget_member_name(stored, static_cast<unsigned>(i));
    const std::size_t offset = H5Tget_member_offset(stored, static_cast<unsigned>(i));
    const hid_t type = H5Tget_member_type(stored, static_cast<unsigned>(i));
    const bool checksum = std::strcmp(name, "checksum") == 0;
    found = found || checksum;
    H5_OK(H5Tinsert(changed, name, offset, checksum ? H5T_IEEE_F64LE : type));
    H5Tclose(type);
    H5free_memory(name);
  }
  ASSERT_TRUE(found) << "no checksum column in /tensors";
  H5_OK(H5Dclose(d));
  H5_OK(H5Ldelete(f, "tensors", H5P_DEFAULT));
  const hid_t nd = H5Dcreate2(f, "tensors", changed, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5_OK(nd);
  if (rows > 0) {
    H5_OK(H5Dwrite(nd, changed, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()));
  }
  H5_OK(H5Dclose(nd));
  H5_OK(H5Tclose(changed));
  H5_OK(H5Tclose(stored));
  H5_OK(H5Sclose(space));
  H5_OK(H5Fclose(f));
  seal_catalog(path);  // edited on purpose: a fresh checksum trailer
}

// Rewrites a version-2 catalog as version 1 wrote it: /names and /name_text gone, every
// /tensors row with its tensor's name (256 bytes) and dtype (16 bytes).
void downgrade_to_version_1(const std::string& path) {
  const Catalog c = load_catalog(path);
  struct RowV1 {
    std::uint32_t id;
    char name[256];
    char dtype[16];
    std::uint64_t numel, element_offset;
    std::uint32_t shard, shard_count;
    std::int32_t owner, node, root;
    std::uint32_t file;
    std::uint64_t offset, bytes, aligned_bytes, checksum;
    std::int32_t epoch;
  };
  std::vector<RowV1> rows(c.tensors.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const CatalogRow& r = c.tensors[i];
    RowV1& v = rows[i];
    std::memset(&v, 0, sizeof v);
    v.id = r.id;
    std::memcpy(v.name, r.name.data(), r.name.size());
    const std::string dtype(dtype_name(r.dtype));
    std::memcpy(v.dtype, dtype.data(), dtype.size());
    v.numel = r.numel, v.element_offset = r.element_offset, v.shard = r.shard, v.shard_count = r.shard_count;
    v.owner = r.owner, v.node = r.node, v.root = r.root, v.file = r.file, v.offset = r.offset, v.bytes = r.bytes;
    v.aligned_bytes = r.aligned_bytes, v.checksum = r.checksum, v.epoch = r.epoch;
  }
  const hid_t name_type = H5Tcopy(H5T_C_S1), dtype_type = H5Tcopy(H5T_C_S1);
  H5_OK(H5Tset_size(name_type, 256));
  H5_OK(H5Tset_size(dtype_type, 16));
  const hid_t type = H5Tcreate(H5T_COMPOUND, sizeof(RowV1));
#define SC_V1(field, t) H5_OK(H5Tinsert(type, #field, offsetof(RowV1, field), t))
  SC_V1(id, H5T_NATIVE_UINT32);
  SC_V1(name, name_type);
  SC_V1(dtype, dtype_type);
  SC_V1(numel, H5T_NATIVE_UINT64);
  SC_V1(element_offset, H5T_NATIVE_UINT64);
  SC_V1(shard, H5T_NATIVE_UINT32);
  SC_V1(shard_count, H5T_NATIVE_UINT32);
  SC_V1(owner, H5T_NATIVE_INT32);
  SC_V1(node, H5T_NATIVE_INT32);
  SC_V1(root, H5T_NATIVE_INT32);
  SC_V1(file, H5T_NATIVE_UINT32);
  SC_V1(offset, H5T_NATIVE_UINT64);
  SC_V1(bytes, H5T_NATIVE_UINT64);
  SC_V1(aligned_bytes, H5T_NATIVE_UINT64);
  SC_V1(checksum, H5T_NATIVE_UINT64);
  SC_V1(epoch, H5T_NATIVE_INT32);
#undef SC_V1
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  for (const char* name : {"tensors", "names", "name_text"}) H5_OK(H5Ldelete(f, name, H5P_DEFAULT));
  const hsize_t dims[1] = {rows.size()};
  const hid_t space = H5Screate_simple(1, dims, nullptr);
  const hid_t d = H5Dcreate2(f, "tensors", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5_OK(d);
  if (!rows.empty()) {
    H5_OK(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data()));
  }
  H5_OK(H5Dclose(d));
  H5_OK(H5Sclose(space));
  H5_OK(H5Tclose(type));
  H5_OK(H5Tclose(name_type));
  H5_OK(H5Tclose(dtype_type));
  H5_OK(H5Fclose(f));
  rewrite_int_attribute(path, "version", 1);  // and seals it
}

// Replaces /tensors by a dataset of the same type that claims `rows` rows but has no storage
// (contiguous, allocated late, never written): a small file that claims a huge table.
void make_tensors_claim_rows(const std::string& path, hsize_t rows) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  const hid_t d = H5Dopen2(f, "tensors", H5P_DEFAULT);
  H5_OK(d);
  const hid_t stored = H5Dget_type(d);
  H5_OK(stored);
  H5_OK(H5Dclose(d));
  H5_OK(H5Ldelete(f, "tensors", H5P_DEFAULT));
  const hsize_t dims[1] = {rows};
  const hid_t space = H5Screate_simple(1, dims, nullptr);
  H5_OK(space);
  const hid_t nd = H5Dcreate2(f, "tensors", stored, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5_OK(nd);
  H5_OK(H5Dclose(nd));
  H5_OK(H5Sclose(space));
  H5_OK(H5Tclose(stored));
  H5_OK(H5Fclose(f));
  seal_catalog(path);  // edited on purpose: a fresh checksum trailer
}

// An HDF5 file with a dataset and, when `format` is non-empty, a string attribute "format".
void write_foreign_hdf5(const std::string& path, const std::string& format) {
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  H5_OK(f);
  const hsize_t dims[1] = {4};
  const hid_t space = H5Screate_simple(1, dims, nullptr);
  const hid_t d = H5Dcreate2(f, "tensors", H5T_NATIVE_INT32, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5_OK(d);
  const std::int32_t values[4] = {1, 2, 3, 4};
  H5_OK(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
  H5Dclose(d);
  H5Sclose(space);
  if (!format.empty()) {
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, format.size() + 1);
    const hid_t scalar = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(f, "format", type, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5_OK(a);
    H5_OK(H5Awrite(a, type, format.c_str()));
    H5Aclose(a);
    H5Sclose(scalar);
    H5Tclose(type);
  }
  H5_OK(H5Fclose(f));
  seal_catalog(path);  // edited on purpose: a fresh checksum trailer
}

// =====================================================================================
// 1. commit + load round trip
// =====================================================================================

TEST(CatalogCommit, RoundTripEveryRecordOnEveryRank) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size();
  const std::string path = dir.path() + "/catalog.h5";
  ASSERT_TRUE(commit_layout(dir.path(), 7));

  bool loaded = false;
  try {
    const Catalog c = load_catalog(path);
    loaded = true;
    expect_catalog(c, make_header(7, size), all_parts(size, 7, dir.path(), rows_plus_one));
    // file_path: the root of the owner's node joined with the relative path.
    ASSERT_EQ(c.files.size(), static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r)
      EXPECT_EQ(c.file_path(static_cast<std::uint32_t>(r)),
                root_dir(dir.path(), node_of(r), r % 2) + "/job-cat/rank-" + std::to_string(r) + "/slot-1.swp");
    EXPECT_THROW((void)c.file_path(static_cast<std::uint32_t>(size)), Error);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(loaded));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(CatalogCommit, ANewerEpochReplacesTheCatalogAtomically) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size(), rank = world_rank();
  const std::string path = dir.path() + "/catalog.h5", tmp = path + ".tmp";
  ASSERT_TRUE(commit_layout(dir.path(), 3));

  // The stage seam (rank 0): when the temporary file is written, catalog.h5 still holds
  // epoch 3 and catalog.h5.tmp holds epoch 4, complete; after the rename, only catalog.h5.
  std::vector<std::string> stages;
  std::vector<std::string> problems;
  auto stage = [&](const char* name) {
    stages.emplace_back(name);
    try {
      if (stages.back() == "written") {
        if (load_catalog(path).epoch != 3) problems.push_back("at 'written', catalog.h5 is not epoch 3");
        if (load_catalog(tmp).epoch != 4) problems.push_back("at 'written', catalog.h5.tmp is not epoch 4");
      } else if (stages.back() == "renamed") {
        if (fs::exists(tmp)) problems.push_back("at 'renamed', catalog.h5.tmp still exists");
        if (load_catalog(path).epoch != 4) problems.push_back("at 'renamed', catalog.h5 is not epoch 4");
      }
    } catch (const std::exception& e) {
      problems.push_back(std::string("stage ") + name + ": " + e.what());
    }
  };
  const auto rows = [](int r) { return r + 2; };
  expect_no_throw_on_all_ranks([&] {
    commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(4, size), make_part(rank, 4, dir.path(), rows), stage);
  });
  if (rank == 0) {
    EXPECT_EQ(stages, (std::vector<std::string>{"written", "renamed"}));
  } else {
    EXPECT_TRUE(stages.empty()) << "the stage seam is rank 0's";
  }
  for (const auto& problem : problems) ADD_FAILURE() << problem;

  EXPECT_FALSE(fs::exists(tmp));
  bool loaded = false;
  try {
    const Catalog c = load_catalog(path);
    loaded = true;
    EXPECT_EQ(c.epoch, 4);
    EXPECT_EQ(c.slot, 0);
    expect_catalog(c, make_header(4, size), all_parts(size, 4, dir.path(), rows));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << rank << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(loaded));
  // Only catalog.h5 and the (empty) root directories remain in the directory.
  if (rank == 0) {
    for (const auto& entry : fs::directory_iterator(dir.path()))
      EXPECT_THAT(entry.path().filename().string(), ::testing::Not(HasSubstr(".tmp")));
  }
}

TEST(CatalogCommit, ARankWithoutRowsOrFiles) {
  const int size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks (at one rank, see NoRowsAtAll)";  // the same on every rank
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/catalog.h5";
  // Rank 1 has no rows and no file; the others have theirs.
  const auto some = [](int r) { return r == 1 ? 0 : r + 1; };
  ASSERT_TRUE(commit_layout(dir.path(), 1, some));
  bool loaded = false;
  try {
    const Catalog c = load_catalog(path);
    loaded = true;
    expect_catalog(c, make_header(1, size), all_parts(size, 1, dir.path(), some));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(loaded));
}

// No rank has rows or files: /tensors and /files have zero rows in total.
TEST(CatalogCommit, NoRowsAtAll) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size();
  const auto none = [](int) { return 0; };
  ASSERT_TRUE(commit_layout(dir.path(), 2, none));
  bool loaded = false;
  try {
    const Catalog c = load_catalog(dir.path() + "/catalog.h5");
    loaded = true;
    EXPECT_TRUE(c.tensors.empty());
    EXPECT_TRUE(c.files.empty());
    EXPECT_EQ(c.ranks.size(), static_cast<std::size_t>(size));
    expect_catalog(c, make_header(2, size), all_parts(size, 2, dir.path(), none));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(loaded));
}

TEST(CatalogCommit, LongestNamesAndEmptyAttributesRoundTrip) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size(), rank = world_rank();
  Catalog header = make_header(5, size);
  header.layout.clear();
  header.created.clear();
  header.config_json = std::string(50000, 'j');  // a large config attribute (HDF5 keeps attributes under 64 KiB)
  CatalogPart part = make_part(rank, 5, dir.path(), rows_plus_one);
  part.tensors.front().name = std::string(kCatalogNameBytes - 1, static_cast<char>('a' + rank));
  part.rank.host = std::string(kCatalogNameBytes - 1, 'h');
  expect_no_throw_on_all_ranks([&] { commit_catalog(MPI_COMM_WORLD, dir.path(), header, part); });
  bool loaded = false;
  try {
    const Catalog c = load_catalog(dir.path() + "/catalog.h5");
    loaded = true;
    EXPECT_EQ(c.layout, "");
    EXPECT_EQ(c.created, "");
    EXPECT_EQ(c.config_json, header.config_json);
    std::size_t row = 0;
    for (int r = 0; r < size; ++r) {
      ASSERT_LT(row, c.tensors.size());
      EXPECT_EQ(c.tensors[row].name, std::string(kCatalogNameBytes - 1, static_cast<char>('a' + r)));
      row += static_cast<std::size_t>(r + 1);
      EXPECT_EQ(c.ranks[static_cast<std::size_t>(r)].host, std::string(kCatalogNameBytes - 1, 'h'));
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << rank << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(loaded));
}

TEST(CatalogCommit, ALeftoverTemporaryFileIsReplaced) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/catalog.h5";
  // What a crash between the write and the rename leaves: a stale catalog.h5.tmp (here
  // garbage), beside no catalog.h5.
  if (world_rank() == 0) write_bytes(path + ".tmp", std::vector<char>(10000, 'z'));
  MPI_Barrier(MPI_COMM_WORLD);
  ASSERT_TRUE(commit_layout(dir.path(), 9));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  bool ok = false;
  try {
    ok = load_catalog(path).epoch == 9;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(ok));
}

TEST(CatalogCommit, IsReadableWithH5dump) {
  const bool have = broadcast_string(world_rank() == 0 && have_program("h5dump") ? "1" : "0") == "1";
  if (!have) GTEST_SKIP() << "h5dump is not installed";  // the same decision on every rank
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ASSERT_TRUE(commit_layout(dir.path(), 2));
  if (world_rank() != 0) return;
  const std::string out = dir.path() + "/h5dump.txt";
  const int rc = std::system(("h5dump -H '" + dir.path() + "/catalog.h5' >'" + out + "' 2>&1").c_str());
  const std::vector<char> bytes = read_bytes(out);
  const std::string text(bytes.begin(), bytes.end());
  EXPECT_EQ(rc, 0) << text;
  for (const char* name : {"tensors", "files", "roots", "ranks"})
    EXPECT_THAT(text, HasSubstr(std::string("DATASET \"") + name + "\"")) << "h5dump names /" << name << ":\n" << text;
  for (const char* attribute : {"format", "version", "epoch", "plan_fingerprint", "config"})
    EXPECT_THAT(text, HasSubstr(std::string("ATTRIBUTE \"") + attribute + "\"")) << text;
  EXPECT_THAT(text, HasSubstr("\"checksum\""));
}

TEST(CatalogCommit, FailsOnEveryRankIntoAMissingDirectoryAndKeepsNothing) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string missing = dir.path() + "/no/such/dir";
  const std::string message = expect_throw_on_all_ranks<Error>([&] {
    commit_catalog(MPI_COMM_WORLD, missing, make_header(1, world_size()),
                   make_part(world_rank(), 1, dir.path(), rows_plus_one));
  });
  EXPECT_THAT(message, AllOf(HasSubstr("epoch 1"), HasSubstr(missing + "/catalog.h5.tmp")));
  EXPECT_FALSE(fs::exists(missing));
}

TEST(CatalogCommit, AFailureOnEveryRankKeepsThePreviousCatalog) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ASSERT_TRUE(commit_layout(dir.path(), 1));
  // Every rank has a tensor name that does not fit the fixed-size field.
  CatalogPart part = make_part(world_rank(), 2, dir.path(), rows_plus_one);
  part.tensors.front().name = std::string(kCatalogNameBytes, 'x');
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(2, world_size()), part); });
  EXPECT_THAT(message, AllOf(HasSubstr("epoch 2"), HasSubstr("rank 0"), HasSubstr("tensor name")));
  bool ok = false;
  try {
    ok = load_catalog(dir.path() + "/catalog.h5").epoch == 1;
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  EXPECT_TRUE(all_ranks(ok)) << "the committed epoch 1 is still the catalog";
}

// One rank fails while building its records (a name too long for its field), before the
// collective HDF5 calls: commit_catalog must stop every rank before any of them enters one
// (it used to hang, the others waiting in H5Pset_fapl_mpio's MPI_Comm_dup).
TEST(CatalogCommit, AFailureOnOneRankFailsOnEveryRankNamingIt) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size(), rank = world_rank();
  CatalogPart part = make_part(rank, 2, dir.path(), rows_plus_one);
  if (rank == size - 1) part.tensors.front().name = std::string(kCatalogNameBytes, 'x');
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(2, size), part); });
  EXPECT_THAT(message, AllOf(HasSubstr("rank " + std::to_string(size - 1)), HasSubstr("tensor name")));
}

// ---- what rank 0 does to the file system: links, modes, write errors, long paths ----------

// A symbolic link planted at catalog.h5.tmp (a crash leaves that name behind, and anyone who
// can write the directory can plant one), to a file and to a name that does not exist: the
// commit neither writes through it nor creates its target, and the link is gone afterwards.
TEST(CatalogCommit, ALinkAtTheTemporaryNameIsNotFollowed) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/catalog.h5", tmp = path + ".tmp";
  const std::string victim = dir.path() + "/victim", absent = dir.path() + "/absent";
  const std::vector<char> original(5000, 'v');
  int epoch = 1;
  for (const std::string& target : {victim, absent}) {
    SCOPED_TRACE("catalog.h5.tmp -> " + target);
    if (world_rank() == 0) {
      if (target == victim) write_bytes(victim, original);
      fs::remove(tmp);
      fs::create_symlink(target, tmp);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    ASSERT_TRUE(commit_layout(dir.path(), epoch));
    EXPECT_EQ(read_bytes(victim), original) << "the link's target was written";
    EXPECT_FALSE(fs::exists(absent)) << "the link's target was created";
    EXPECT_FALSE(fs::exists(fs::symlink_status(tmp))) << "catalog.h5.tmp is still there";
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path)));
    try {
      EXPECT_EQ(load_catalog(path).epoch, epoch);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
    }
    ++epoch;
    MPI_Barrier(MPI_COMM_WORLD);  // every rank has looked before rank 0 plants the next link
  }
}

// catalog.h5 is a symbolic link: the commit's rename replaces the link with the new catalog
// and leaves the link's target as it was.
TEST(CatalogCommit, ALinkAtTheCatalogNameIsReplacedNotFollowed) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/catalog.h5", victim = dir.path() + "/victim";
  const std::vector<char> original(5000, 'v');
  if (world_rank() == 0) {
    write_bytes(victim, original);
    fs::create_symlink(victim, path);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  ASSERT_TRUE(commit_layout(dir.path(), 3));
  EXPECT_EQ(read_bytes(victim), original) << "the link's target was written";
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path))) << "catalog.h5 is still a link";
  try {
    EXPECT_EQ(load_catalog(path).epoch, 3);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
}

// The catalog is 0600 whatever the umask: 000 would give 0666 to a file created the usual
// way, 0277 would give 0400.
TEST(CatalogCommit, TheCatalogIsMode0600WhateverTheUmask) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string path = dir.path() + "/catalog.h5";
  int epoch = 1;
  for (const mode_t mask : {mode_t{0}, mode_t{0277}}) {
    const mode_t old = ::umask(mask);
    const bool ok = commit_layout(dir.path(), epoch++);
    ::umask(old);
    ASSERT_TRUE(ok);
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0) << std::strerror(errno);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u) << "umask " << std::oct << mask << ": mode " << (st.st_mode & 07777);
  }
}

// A write that fails on rank 0 (EFBIG from a file size limit; ENOSPC on a real full file
// system is run.catalog_enospc) fails on every rank within seconds, naming the temporary
// file and the errno text; the temporary file is removed and the previous catalog stays.
TEST(CatalogCommit, AFailedWriteNamesTheFileAndErrnoAndKeepsThePreviousCatalog) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int rank = world_rank();
  const std::string path = dir.path() + "/catalog.h5", tmp = path + ".tmp";
  ASSERT_TRUE(commit_layout(dir.path(), 1));
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*old_handler)(int) = SIG_DFL;
  if (rank == 0) {  // rank 0 alone writes the catalog; 1 KiB is less than any catalog
    old_handler = ::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 1024;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string message = expect_throw_on_all_ranks<Error>([&] {
    commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(2, world_size()),
                   make_part(rank, 2, dir.path(), rows_plus_one));
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (rank == 0) {
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_handler);
  }
  EXPECT_THAT(message, AllOf(HasSubstr("epoch 2"), HasSubstr("rank 0"), HasSubstr("'" + tmp + "'"),
                             HasSubstr(std::strerror(EFBIG))));
  EXPECT_LT(seconds, 10.0);
  EXPECT_FALSE(fs::exists(fs::symlink_status(tmp))) << "the temporary file was left behind";
  bool ok = false;
  try {
    ok = load_catalog(path).epoch == 1;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << rank << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(ok)) << "the committed epoch 1 is still the catalog";
}

// A directory path of exactly `length` bytes: `base` and nested directories of at most 200
// bytes each.
std::string long_directory(const std::string& base, std::size_t length) {
  std::string path = base;
  while (path.size() + 1 < length) {
    std::size_t part = std::min<std::size_t>(200, length - path.size() - 1);
    if (length - path.size() - 1 - part == 1) --part;  // never leave one byte, too few for "/d"
    path += '/';
    path.append(part, 'd');
  }
  return path;
}

// A catalog directory of 1000 bytes and roots of 1010 (the roots' field holds 1023): the
// commit (twice: a new catalog, then its replacement) and the collective load work. Through
// MPI-IO (Open MPI's ompio) a path longer than about 240 bytes aborted the job.
TEST(CatalogCommit, PathsOf1000BytesRoundTrip) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size();
  const std::string deep = long_directory(dir.path(), 1000);
  ASSERT_EQ(deep.size(), 1000u);
  bool made = true;
  if (world_rank() == 0) {
    std::error_code error;
    fs::create_directories(deep, error);
    made = !error;
  }
  ASSERT_TRUE(all_ranks(made));
  ASSERT_TRUE(commit_layout(deep, 1));
  ASSERT_TRUE(commit_layout(deep, 2));
  bool loaded = false;
  try {
    const Catalog c = load_catalog_collective(MPI_COMM_WORLD, deep + "/catalog.h5");
    loaded = true;
    expect_catalog(c, make_header(2, size), all_parts(size, 2, deep, rows_plus_one));
    ASSERT_FALSE(c.roots.empty());
    EXPECT_EQ(c.roots.front().path.size(), 1010u);
    EXPECT_EQ(c.file_path(0), root_dir(deep, 0, 0) + "/job-cat/rank-0/slot-0.swp");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(loaded));
  EXPECT_FALSE(fs::exists(deep + "/catalog.h5.tmp"));
}

// =====================================================================================
// 2. loader rejections
// =====================================================================================

// A committed catalog of the test layout in a shared directory (collective).
class CommittedCatalog {
 public:
  explicit CommittedCatalog(int epoch = 7) {
    _ok = !_dir.path().empty() && commit_layout(_dir.path(), epoch);
  }
  bool ok() const { return _ok; }
  const std::string& dir() const { return _dir.path(); }
  std::string path() const { return _dir.path() + "/catalog.h5"; }
  std::string copy(const std::string& name) const { return copy_of(path(), _dir.path() + "/" + name); }

 private:
  SharedTempDir _dir;
  bool _ok = false;
};

TEST(CatalogLoad, MissingFile) {
  if (world_rank() != 0) return;
  TempDir dir;
  const std::string path = dir.file("catalog.h5");
  EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr("no such file")));
  // A directory is not a catalog file either.
  EXPECT_THAT(load_error(dir.path()), HasSubstr(dir.path()));
}

TEST(CatalogLoad, RandomBytesAndAnEmptyFile) {
  if (world_rank() != 0) return;
  TempDir dir;
  std::mt19937_64 random(12345);
  std::vector<char> bytes(64 * 1024);
  for (auto& b : bytes) b = static_cast<char>(random());
  const std::string path = dir.file("random.h5");
  write_bytes(path, bytes);
  EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr("not an HDF5 file")));

  const std::string empty = dir.file("empty.h5");
  write_bytes(empty, {});
  EXPECT_THAT(load_error(empty), AllOf(HasSubstr(empty), HasSubstr("not an HDF5 file")));

  // The HDF5 signature followed by garbage.
  const char signature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  std::copy(std::begin(signature), std::end(signature), bytes.begin());
  const std::string fake = dir.file("signature.h5");
  write_bytes(fake, bytes);
  EXPECT_THAT(load_error(fake), HasSubstr(fake));
}

TEST(CatalogLoad, TruncatedCatalog) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const auto size = fs::file_size(catalog.path());
  for (std::uintmax_t length : {size / 2, std::uintmax_t{100}, size - 1}) {
    SCOPED_TRACE("truncated to " + std::to_string(length) + " of " + std::to_string(size) + " bytes");
    const std::string path = catalog.copy("truncated-" + std::to_string(length) + ".h5");
    fs::resize_file(path, length);
    EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr("truncated")));
  }
}

TEST(CatalogLoad, AnHdf5FileThatIsNotACatalog) {
  if (world_rank() != 0) return;
  TempDir dir;
  const std::string plain = dir.file("plain.h5");
  write_foreign_hdf5(plain, "");
  EXPECT_THAT(load_error(plain), AllOf(HasSubstr(plain), HasSubstr("not a swapcoord catalog")));
  const std::string other = dir.file("other.h5");
  write_foreign_hdf5(other, "someone-elses-format");
  EXPECT_THAT(load_error(other), AllOf(HasSubstr(other), HasSubstr("not a swapcoord catalog")));
}

TEST(CatalogLoad, UnsupportedVersions) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const std::string v4 = catalog.copy("v4.h5");
  rewrite_int_attribute(v4, "version", 4);
  EXPECT_THAT(load_error(v4), AllOf(HasSubstr(v4), HasSubstr("version 4 is not supported")));
  const std::string v0 = catalog.copy("v0.h5");
  rewrite_int_attribute(v0, "version", 0);
  EXPECT_THAT(load_error(v0), AllOf(HasSubstr(v0), HasSubstr("version 0 is not supported")));
  // The untouched catalog still loads.
  EXPECT_NO_THROW((void)load_catalog(catalog.path()));
}

TEST(CatalogLoad, AVersion1CatalogStillLoads) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const Catalog v2 = load_catalog(catalog.path());
  ASSERT_FALSE(v2.tensors.empty());
  const std::string path = catalog.copy("v1.h5");
  downgrade_to_version_1(path);
  const Catalog v1 = load_catalog(path);
  EXPECT_EQ(v1.checksum, ChecksumKind::xxh64);  // as every catalog before version 3
  ASSERT_EQ(v1.tensors.size(), v2.tensors.size());
  for (std::size_t i = 0; i < v1.tensors.size(); ++i) {
    EXPECT_EQ(v1.tensors[i].id, v2.tensors[i].id);
    EXPECT_EQ(v1.tensors[i].name, v2.tensors[i].name);
    EXPECT_EQ(v1.tensors[i].dtype, v2.tensors[i].dtype);
    EXPECT_EQ(v1.tensors[i].checksum, v2.tensors[i].checksum);
    EXPECT_EQ(v1.tensors[i].offset, v2.tensors[i].offset);
  }
}

TEST(CatalogLoad, NamesAreStoredOncePerTensor) {
  // Rows of one tensor on every rank (a sharded tensor): /names holds it once.
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int rank = world_rank(), size = world_size();
  CatalogPart part = make_part(rank, 0, dir.path(), rows_plus_one);
  for (auto& row : part.tensors) {
    row.id = 7;
    row.name = "model.embed.weight";
    row.dtype = DType::f32;
    row.bytes = row.numel * 4;
    row.aligned_bytes = align_up(row.bytes, kAlign);
  }
  ASSERT_NO_THROW(commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(0, size), part));
  if (rank != 0) return;
  const std::string path = dir.path() + "/catalog.h5";
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  H5_OK(f);
  for (const auto& [name, want] : {std::pair<const char*, hssize_t>{"names", 1}, {"name_text", 18}}) {
    const hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    H5_OK(d);
    const hid_t space = H5Dget_space(d);
    EXPECT_EQ(H5Sget_simple_extent_npoints(space), want) << name;
    H5Sclose(space);
    H5Dclose(d);
  }
  H5Fclose(f);
  const Catalog c = load_catalog(path);
  ASSERT_EQ(c.tensors.size(), static_cast<std::size_t>(size * (size + 1) / 2));
  for (const auto& row : c.tensors) EXPECT_EQ(row.name, "model.embed.weight");
}

TEST(CatalogCommit, RanksThatNameOneTensorDifferentlyFailTheCommit) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int rank = world_rank(), size = world_size();
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  CatalogPart part = make_part(rank, 0, dir.path(), rows_plus_one);
  part.tensors.front().id = 1234;
  part.tensors.front().name = "rank" + std::to_string(rank) + ".sees.this";
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(0, size), part); });
  EXPECT_THAT(message, AllOf(HasSubstr("tensor 1234"), HasSubstr("rank0.sees.this"), HasSubstr("rank1.sees.this")));
}

TEST(CatalogCommit, DamagedPackedRowsAreRefusedWithoutTouchingTheCatalog) {
  // write_catalog reads other ranks' packed parts: counts that do not match the bytes (a
  // count near 2^64, a truncated part, another epoch) are an Error, never a crash.
  if (world_rank() != 0) return;
  TempDir dir;
  const CatalogPart part = make_part(0, 3, dir.path(), rows_plus_one);
  const std::vector<std::byte> good = pack_catalog_part(3, part);
  ASSERT_EQ(catalog_part_epoch(good), 3);
  // The header: magic[8], epoch, then the counts of tensors, files, roots, names, text.
  const auto with_count = [&](std::size_t field, std::uint64_t value) {
    std::vector<std::byte> bad = good;
    std::memcpy(bad.data() + 16 + 8 * field, &value, sizeof value);
    return bad;
  };
  std::vector<std::pair<std::string, std::vector<std::byte>>> cases = {
      {"text count near 2^64", with_count(4, ~std::uint64_t{0} - 4)},
      {"tensor count near 2^64", with_count(0, ~std::uint64_t{0} / 8)},
      {"names one too many", with_count(3, 1000)},
      {"truncated", std::vector<std::byte>(good.begin(), good.end() - 3)},
      {"empty", {}},
  };
  for (const auto& [what, bytes] : cases) {
    SCOPED_TRACE(what);
    const std::vector<std::vector<std::byte>> parts{bytes};
    try {
      write_catalog(dir.path(), make_header(3, 1), parts);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("the rows of rank 0 are damaged"));
    }
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/catalog.h5"));
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/catalog.h5.tmp"));
  }
  const std::vector<std::vector<std::byte>> parts{good};
  EXPECT_NO_THROW(write_catalog(dir.path(), make_header(3, 1), parts));
}

TEST(CatalogLoad, ANameOutsideTheTextIsRejected) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const std::string path = catalog.copy("name-outside.h5");
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5_OK(f);
  const hid_t d = H5Dopen2(f, "names", H5P_DEFAULT);
  H5_OK(d);
  const hid_t type = H5Dget_type(d);
  const hid_t space = H5Dget_space(d);
  const auto rows = static_cast<std::size_t>(H5Sget_simple_extent_npoints(space));
  ASSERT_GT(rows, 0u);
  std::vector<char> raw(rows * H5Tget_size(type));
  H5_OK(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()));
  const std::uint64_t far = 1ULL << 40;
  std::memcpy(raw.data() + H5Tget_member_offset(type, static_cast<unsigned>(H5Tget_member_index(type, "name_offset"))),
              &far, sizeof far);
  H5_OK(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()));
  H5Sclose(space);
  H5Tclose(type);
  H5Dclose(d);
  H5Fclose(f);
  seal_catalog(path);
  EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr("outside /name_text")));
}

TEST(CatalogLoad, MissingDatasetsAndAttributes) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  for (const char* dataset : {"files", "tensors", "roots", "ranks", "names", "name_text"}) {
    const std::string path = catalog.copy(std::string("no-") + dataset + ".h5");
    delete_link(path, dataset);
    EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr(std::string("dataset '") + dataset + "' is missing")));
  }
  for (const char* attribute : {"epoch", "alignment", "job", "version"}) {
    const std::string path = catalog.copy(std::string("no-attr-") + attribute + ".h5");
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Adelete(f, attribute), 0);
    H5Fclose(f);
    seal_catalog(path);
    EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr(std::string("attribute '") + attribute + "' is missing")));
  }
}

TEST(CatalogLoad, AColumnOfTheWrongType) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const std::string path = catalog.copy("float-checksum.h5");
  make_checksum_column_float(path);
  EXPECT_THAT(load_error(path),
              AllOf(HasSubstr(path), HasSubstr("column 'checksum'"), HasSubstr("wrong type"), HasSubstr("tensors")));
}

// A tiny file whose /tensors claims 2^27 rows (48 GiB of records) without any storage. The
// loader should compare the claim with what the file can hold and throw Error; loaded in a
// child with 2 GiB more address space than it has, so a huge allocation shows up as
// std::bad_alloc instead of taking the machine's memory.
TEST(CatalogLoad, ATableClaimingFarMoreRowsThanTheFileHolds) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const std::string path = catalog.copy("huge-claim.h5");
  make_tensors_claim_rows(path, hsize_t{1} << 27);
  EXPECT_LT(fs::file_size(path), std::uintmax_t{1} << 20);
  const ChildLoad result = load_in_child(path);
  EXPECT_EQ(result.kind, ChildLoad::error) << "load_catalog of a file claiming 2^27 rows: " << result.detail;
  if (result.kind == ChildLoad::error) {
    EXPECT_THAT(result.detail, HasSubstr(path));
  }
}

// Bad catalogs made by the writer itself (it does not validate rows): each case changes the
// test layout on some rank, commits (collective), and rank 0 loads and checks the message.
struct BadCase {
  const char* name;
  std::function<void(int rank, int size, Catalog& header, CatalogPart& part)> change;
  std::vector<std::string> expect;  // substrings of the message besides the path
};

std::vector<BadCase> bad_cases() {
  return {
      {"rows overlapping in one file",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank != 0) return;
         CatalogRow extra = p.tensors.front();
         extra.id = 99;
         extra.name = "overlapper";
         extra.offset = 0;  // [0, 4096) again, over row 0
         p.tensors.push_back(extra);
       },
       {"rows overlap in file 'job-cat/rank-0/slot-1.swp'"}},
      {"rows partly overlapping",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank != size - 1) return;
         p.files.front().size += 4 * kAlign;
         CatalogRow extra = p.tensors.front();
         extra.id = 98;
         extra.offset = p.tensors.back().offset + kAlign;  // past every row
         extra.aligned_bytes = 3 * kAlign;
         p.tensors.push_back(extra);
         CatalogRow inside = extra;
         inside.id = 97;
         inside.offset = extra.offset + 2 * kAlign;  // in the middle of `extra`
         inside.aligned_bytes = kAlign;
         p.tensors.push_back(inside);
       },
       {"rows overlap"}},
      {"a row past the end of its file",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank != size - 1) return;
         p.tensors.back().offset = p.files.front().size;  // offset + aligned_bytes > size
       },
       {"do not fit file"}},
      {"a row whose end overflows",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank != 0) return;
         p.tensors.front().offset = std::numeric_limits<std::uint64_t>::max() / kAlign * kAlign;
       },
       {"do not fit"}},
      {"a row at an unaligned offset",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank != 0) return;
         p.files.front().size += kAlign;
         p.tensors.front().offset = 512;
       },
       {"alignment"}},
      {"bytes that are not numel times the element size",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank == 0) p.tensors.front().bytes += 1;
       },
       {"do not fit"}},
      {"an absolute file path",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank == size - 1) p.files.front().path = "/etc/passwd";
       },
       {"'/etc/passwd' is not a relative path"}},
      {"a file path with '..'",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank == size - 1) p.files.front().path = "job-cat/../../outside.swp";
       },
       {"contains '..'", "job-cat/../../outside.swp"}},
      {"a file path that is only '..'",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank == 0) p.files.front().path = "..";
       },
       {"contains '..'"}},
      {"an empty file path",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank == 0) p.files.front().path = "";
       },
       {"not a relative path"}},
      {"a tensor row of a later epoch (rows may be of earlier epochs: versions are per piece)",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank == size - 1) p.tensors.back().epoch += 1;
       },
       {"epoch 8 is outside the catalog's epochs 0..7"}},
      {"a row pointing past the files",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank == 0) p.tensors.front().file = 1000;
       },
       {"points to file 1000"}},
      {"a row owned by another rank than its file",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank == size - 1) p.tensors.front().owner = size;  // outside the world
       },
       {"disagree with its file"}},
      {"a shard index beyond its count",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank == 0) p.tensors.front().shard = p.tensors.front().shard_count;
       },
       {"shard"}},
      {"a file owned by a rank outside the world",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank == size - 1) {
           p.files.front().owner = size + 3;
           for (auto& t : p.tensors) t.owner = size + 3;
         }
       },
       {"outside the world"}},
      {"fewer rank records than the world size",
       [](int, int, Catalog& h, CatalogPart&) {
         h.world_size += 1;  // one rank record short
       },
       {"rank rows for a world of"}},
      {"a slot outside the slots",
       [](int, int, Catalog& h, CatalogPart&) { h.slot = 2; },
       {"inconsistent attributes"}},
      {"an alignment that is not a power of two",
       [](int, int, Catalog& h, CatalogPart&) { h.alignment = 3000; },
       {"inconsistent attributes"}},
      {"a negative epoch",
       [](int, int, Catalog& h, CatalogPart& p) {
         h.epoch = -1;
         for (auto& t : p.tensors) t.epoch = -1;
       },
       {"inconsistent attributes"}},
      {"a root row with an empty path",
       [](int rank, int, Catalog&, CatalogPart& p) {
         if (rank == 0) p.roots.front().path.clear();
       },
       {"bad root row"}},
      {"a rank record outside the world",
       [](int rank, int size, Catalog&, CatalogPart& p) {
         if (rank == size - 1) p.rank.rank = size;
       },
       {"bad rank row"}},
  };
}

// Commits each case in turn (collective) and checks that rank 0's load_catalog rejects it.
void expect_rejected(const std::string& dir, const std::vector<BadCase>& cases) {
  const int rank = world_rank(), size = world_size();
  const std::string path = dir + "/catalog.h5";
  for (const BadCase& bad : cases) {
    SCOPED_TRACE(bad.name);
    Catalog header = make_header(7, size);
    CatalogPart part = make_part(rank, 7, dir, rows_plus_one);
    bad.change(rank, size, header, part);
    bool committed = true;
    try {
      commit_catalog(MPI_COMM_WORLD, dir, header, part);
    } catch (const std::exception& e) {
      committed = false;
      ADD_FAILURE() << "rank " << rank << ": commit_catalog: " << e.what();
    }
    if (!all_ranks(committed)) continue;  // the same decision on every rank
    if (rank != 0) continue;
    const std::string message = load_error(path);
    EXPECT_THAT(message, HasSubstr(path)) << "the message names the catalog file";
    for (const auto& text : bad.expect) EXPECT_THAT(message, HasSubstr(text));
  }
}

TEST(CatalogLoad, BadRowsWrittenByTheWriterAreRejected) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int rank = world_rank(), size = world_size();
  const std::string path = dir.path() + "/catalog.h5";
  expect_rejected(dir.path(), bad_cases());
  // The same layout unchanged loads, and a path that merely starts with ".." is fine.
  CatalogPart part = make_part(rank, 7, dir.path(), rows_plus_one);
  part.files.front().path = "..job/rank.swp";
  expect_no_throw_on_all_ranks([&] { commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(7, size), part); });
  if (rank == 0) {
    try {
      const Catalog c = load_catalog(path);
      EXPECT_EQ(c.files.front().path, "..job/rank.swp");
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

// The loader resolves every file's root (Catalog::file_path); its message should still name
// the catalog file like every other rejection.
TEST(CatalogLoad, AFileWithoutItsRootIsRejectedNamingTheCatalog) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  expect_rejected(dir.path(), {{"a file whose root is not in /roots",
                                [](int rank, int size, Catalog&, CatalogPart& p) {
                                  if (rank == size - 1) p.files.front().root = 7;
                                },
                                {"no root 7", "job-cat/rank-"}}});
}

// One byte changed anywhere (here in the middle of the file) fails the checksum trailer,
// before HDF5 parses anything; the message names the file.
TEST(CatalogLoad, AChangedByteFailsTheChecksumTrailer) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const std::string path = catalog.copy("changed-byte.h5");
  std::vector<char> bytes = read_bytes(path);
  bytes[bytes.size() / 2] = static_cast<char>(~bytes[bytes.size() / 2]);
  write_bytes(path, bytes);
  EXPECT_THAT(load_error(path), AllOf(HasSubstr(path), HasSubstr("does not match its trailer")));
  seal_catalog(path);  // resealed, the same file loads (the byte was in unused space) or is
                       // rejected by a content check, but never by the trailer
  try {
    load_catalog(path);
  } catch (const Error& e) {
    EXPECT_THAT(std::string(e.what()), Not(HasSubstr("trailer")));
  }
}

// A compound member placed outside its record (the datatype message of /files patched so
// that column 'path' starts at byte 0xE1000000 of a 272-byte record; found by the fuzz test
// below). HDF5 accepts the type; reading the table with it must not crash the loader.
TEST(CatalogLoad, AColumnOutsideItsRecord) {
  CommittedCatalog catalog;
  ASSERT_TRUE(catalog.ok());
  if (world_rank() != 0) return;
  const std::string path = catalog.copy("member-offset.h5");
  std::vector<char> bytes = read_bytes(path);
  // Version 1 compound member: the name padded to 8 bytes, then a 4-byte offset. /files has
  // 'path' at offset 0, /roots at offset 8.
  const std::string member("path\0\0\0\0\0\0\0\0", 12);
  const std::string text(bytes.begin(), bytes.end());
  const auto at = text.find(member);
  ASSERT_NE(at, std::string::npos) << "no member 'path' at offset 0 in the file";
  ASSERT_EQ(text.find(member, at + 1), std::string::npos) << "more than one candidate";
  bytes[at + 11] = static_cast<char>(0xE1);
  write_bytes(path, bytes);
  seal_catalog(path);  // so that the loader's own column check, not the trailer, must catch it
  const ChildLoad result = load_in_child(path);
  EXPECT_EQ(result.kind, ChildLoad::error) << result.detail;
  if (result.kind == ChildLoad::error) {
    EXPECT_THAT(result.detail, AllOf(HasSubstr(path), HasSubstr("files")));
  }
}

// =====================================================================================
// 3. fuzzing the loader
// =====================================================================================

TEST(CatalogLoad, FuzzedCatalogsLoadOrThrowError) {
  // Rank 0 alone, on a catalog it commits over MPI_COMM_SELF: the same input at every world
  // size. Eight rows, so /tensors spans several blocks; root paths that do not depend on the
  // temporary directory, so the file (and what the fixed seed finds) is the same from run to
  // run, but for HDF5's object timestamps.
  if (world_rank() != 0) return;
  TempDir dir;
  Catalog header = make_header(5, 1);
  ASSERT_NO_THROW(commit_catalog(MPI_COMM_SELF, dir.path(), header, make_part(0, 5, "/swap", [](int) { return 8; })));
  const std::string original = dir.path() + "/catalog.h5";
  const std::vector<char> valid = read_bytes(original);
  ASSERT_GT(valid.size(), 1000u);
  const std::string path = dir.path() + "/fuzzed.h5";

  // SWAPCOORD_FUZZ_SEED and SWAPCOORD_FUZZ_ITERATIONS run other or longer campaigns by hand.
  const char* seed_text = std::getenv("SWAPCOORD_FUZZ_SEED");
  const char* iterations_text = std::getenv("SWAPCOORD_FUZZ_ITERATIONS");
  std::mt19937_64 random(seed_text ? std::strtoull(seed_text, nullptr, 0) : 0x5eedc47a10cULL);
  auto uniform = [&](std::uint64_t lo, std::uint64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(random);
  };
  int returned = 0, rejected = 0;
  const auto start = std::chrono::steady_clock::now();
  const int iterations = iterations_text ? std::atoi(iterations_text) : 300;
  for (int iteration = 0; iteration < iterations; ++iteration) {
    if (!iterations_text && std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) {
      ADD_FAILURE() << "the fuzz loop took more than 60 s; stopped at iteration " << iteration;
      break;
    }
    std::vector<char> bytes = valid;
    std::ostringstream what;
    what << "iteration " << iteration << ": ";
    switch (uniform(0, 5)) {
      case 0:
      case 1:
      case 2: {  // flip 1..16 random bytes
        const auto flips = uniform(1, 16);
        what << "flipped bytes at";
        for (std::uint64_t i = 0; i < flips; ++i) {
          const auto at = uniform(0, bytes.size() - 1);
          bytes[at] = static_cast<char>(bytes[at] ^ static_cast<char>(uniform(1, 255)));
          what << ' ' << at;
        }
        break;
      }
      case 3:
      case 4: {  // overwrite a random range with random bytes
        const auto length = uniform(1, std::min<std::uint64_t>(512, bytes.size()));
        const auto at = uniform(0, bytes.size() - length);
        for (std::uint64_t i = 0; i < length; ++i) bytes[at + i] = static_cast<char>(uniform(0, 255));
        what << "overwrote " << length << " bytes at " << at;
        break;
      }
      default: {  // truncate
        const auto length = uniform(0, bytes.size() - 1);
        bytes.resize(length);
        what << "truncated to " << length << " bytes";
        break;
      }
    }
    write_bytes(path, bytes);
    const ChildLoad result = load_in_child(path, 10);
    // With SWAPCOORD_FUZZ_KEEP=<dir>, inputs that fail the test are kept there.
    const auto keep = [&](int i) -> std::string {
      const char* into = std::getenv("SWAPCOORD_FUZZ_KEEP");
      if (!into || !*into) return " (set SWAPCOORD_FUZZ_KEEP=<dir> to keep the input)";
      const std::string kept = std::string(into) + "/fuzz-" + std::to_string(i) + ".h5";
      std::error_code ignored;
      fs::copy_file(path, kept, fs::copy_options::overwrite_existing, ignored);
      return " (input kept as " + kept + ")";
    };
    switch (result.kind) {
      case ChildLoad::returned: ++returned; break;
      case ChildLoad::error: ++rejected; break;
      case ChildLoad::other_exception:
        ADD_FAILURE() << what.str() << ": load_catalog threw something other than swapcoord::Error (address space "
                      << "capped at 2 GiB above the process's): " << result.detail
                      << keep(iteration);
        break;
      case ChildLoad::crashed:
        ADD_FAILURE() << what.str() << ": load_catalog crashed (" << result.detail << ")" << keep(iteration);
        break;
      case ChildLoad::timed_out:
        ADD_FAILURE() << what.str() << ": load_catalog hung (" << result.detail << ")" << keep(iteration);
        break;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz: %d of %d mutated catalogs loaded, %d rejected with swapcoord::Error, %.1f s\n", returned,
              iterations, rejected, seconds);
  EXPECT_GT(rejected, 0);
}

// =====================================================================================
// 4. CatalogIndex (local: every rank runs the same checks on its own)
// =====================================================================================

std::vector<TensorSpec> index_model() {
  return {
      {"a", {1000}, DType::f32},   // 4000 bytes, one row
      {"b", {3000}, DType::f16},   // 6000 bytes, two shards: 4096 + 1904
      {"c", {}, DType::f64},       // a scalar, 8 bytes
      {"d", {10000}, DType::u8},   // 10000 bytes in one row of 12288 aligned bytes
      {"e", {0, 5}, DType::f32},   // empty: no rows
  };
}

CatalogRow index_row(std::uint32_t id, const TensorSpec& t, std::uint64_t element_offset, std::uint64_t numel,
                     std::uint32_t file, std::uint64_t offset, std::uint32_t shard = 0, std::uint32_t shards = 1) {
  CatalogRow r;
  r.id = id;
  r.name = t.name;
  r.dtype = t.dtype;
  r.numel = numel;
  r.element_offset = element_offset;
  r.shard = shard;
  r.shard_count = shards;
  r.file = file;
  r.offset = offset;
  r.bytes = numel * dtype_size(t.dtype);
  r.aligned_bytes = align_up(r.bytes, kAlign);
  return r;
}

Catalog index_catalog(const std::vector<TensorSpec>& m) {
  Catalog c;
  c.alignment = kAlign;
  c.files = {{"f0.swp", 0, 0, 32 * kAlign}, {"f1.swp", 0, 0, 32 * kAlign}};
  // Out of order on purpose: b's second shard before its first.
  c.tensors = {
      index_row(1, m[1], 2048, 952, 1, 0, 1, 2),   // b[2048, 3000): file 1 @ 0
      index_row(0, m[0], 0, 1000, 0, 0),           // a: file 0 @ 0
      index_row(1, m[1], 0, 2048, 0, kAlign, 0, 2),  // b[0, 2048): file 0 @ 4096
      index_row(2, m[2], 0, 1, 1, kAlign),         // c: file 1 @ 4096
      index_row(3, m[3], 0, 10000, 0, 2 * kAlign), // d: file 0 @ 8192, 12288 aligned bytes
  };
  return c;
}

std::string describe(const std::vector<CatalogSegment>& segments) {
  std::ostringstream out;
  for (const auto& s : segments)
    out << "{file " << s.file << ", file_offset " << s.file_offset << ", bytes " << s.bytes << ", read_bytes "
        << s.read_bytes << ", tensor_offset " << s.tensor_offset << "} ";
  return out.str();
}

void expect_segments(const CatalogIndex& index, std::uint32_t id, std::uint64_t begin, std::uint64_t end,
                     const std::vector<CatalogSegment>& want) {
  std::vector<CatalogSegment> got;
  index.locate(id, begin, end, got);
  const std::string where = "locate(" + std::to_string(id) + ", " + std::to_string(begin) + ", " + std::to_string(end) +
                            ") gave " + describe(got) + "; want " + describe(want);
  ASSERT_EQ(got.size(), want.size()) << where;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].file, want[i].file) << where;
    EXPECT_EQ(got[i].file_offset, want[i].file_offset) << where;
    EXPECT_EQ(got[i].bytes, want[i].bytes) << where;
    EXPECT_EQ(got[i].read_bytes, want[i].read_bytes) << where;
    EXPECT_EQ(got[i].tensor_offset, want[i].tensor_offset) << where;
  }
}

TEST(CatalogIndex, LocatesRangesInOneRowAcrossShardsAndAtTheEnd) {
  const auto m = index_model();
  const Catalog c = index_catalog(m);
  const CatalogIndex index(c, m);
  // Inside one row.
  expect_segments(index, 0, 0, 4000, {{0, 0, 4000, 4096, 0}});
  expect_segments(index, 0, 0, 100, {{0, 0, 100, 4096, 0}});
  expect_segments(index, 3, 4096, 8192, {{0, 2 * kAlign + 4096, 4096, 4096, 4096}});
  // Across the two shards of b.
  expect_segments(index, 1, 0, 6000, {{0, kAlign, 4096, 4096, 0}, {1, 0, 1904, 4096, 4096}});
  expect_segments(index, 1, 0, 4097, {{0, kAlign, 4096, 4096, 0}, {1, 0, 1, 4096, 4096}});
  // Only the second shard; only the first.
  expect_segments(index, 1, 4096, 6000, {{1, 0, 1904, 4096, 4096}});
  expect_segments(index, 1, 0, 4096, {{0, kAlign, 4096, 4096, 0}});
  // At the tensor's end: read_bytes rounded up to the alignment, never past the row.
  expect_segments(index, 2, 0, 8, {{1, kAlign, 8, 4096, 0}});
  expect_segments(index, 3, 8192, 10000, {{0, 2 * kAlign + 8192, 1808, 4096, 8192}});
  expect_segments(index, 3, 4096, 10000, {{0, 2 * kAlign + 4096, 5904, 8192, 4096}});
  expect_segments(index, 3, 0, 10000, {{0, 2 * kAlign, 10000, 12288, 0}});
  // A range starting inside an aligned block (not something the job asks for: its pieces
  // start at aligned bytes): the data bytes are exact and the read stays within the row.
  {
    std::vector<CatalogSegment> got;
    index.locate(3, 5000, 10000, got);
    ASSERT_EQ(got.size(), 1u) << describe(got);
    EXPECT_EQ(got[0].file, 0u);
    EXPECT_EQ(got[0].bytes, 5000u);
    EXPECT_EQ(got[0].tensor_offset, 5000u);
    EXPECT_GE(got[0].read_bytes, got[0].bytes);
    EXPECT_LE(got[0].file_offset + got[0].read_bytes, 2 * kAlign + 12288) << describe(got) << ": past the row";
    EXPECT_LE(got[0].file_offset, 2 * kAlign + 5000) << describe(got);
  }
  // Ranges beyond the tensor are clipped; empty ranges and empty tensors give nothing.
  expect_segments(index, 0, 0, 1 << 20, {{0, 0, 4000, 4096, 0}});
  expect_segments(index, 0, 100, 100, {});
  expect_segments(index, 4, 0, 0, {});
  expect_segments(index, 4, 0, 100, {});
  // Appends to what `out` holds.
  std::vector<CatalogSegment> out(1);
  index.locate(2, 0, 8, out);
  EXPECT_EQ(out.size(), 2u);
  // A tensor id beyond the model is an error, not undefined behaviour.
  EXPECT_ANY_THROW(index.locate(5, 0, 8, out));
}

TEST(CatalogIndex, RejectsRowsThatDoNotCoverTheModelExactly) {
  const auto m = index_model();
  auto expect_error = [&](const char* what, const std::function<void(Catalog&)>& change,
                          const std::vector<std::string>& texts) {
    SCOPED_TRACE(what);
    Catalog c = index_catalog(m);
    change(c);
    try {
      const CatalogIndex index(c, m);
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      for (const auto& t : texts) EXPECT_THAT(e.what(), HasSubstr(t));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a swapcoord::Error: " << e.what();
    }
  };
  expect_error("name mismatch", [](Catalog& c) { c.tensors[1].name = "not-a"; }, {"'not-a'", "'a'"});
  expect_error("dtype mismatch", [](Catalog& c) { c.tensors[3].dtype = DType::f32; }, {"'c'", "f32", "f64"});
  expect_error("gap", [](Catalog& c) { c.tensors[0].element_offset = 2050; }, {"'b'", "a gap", "2050", "2048"});
  expect_error("overlap", [](Catalog& c) { c.tensors[0].element_offset = 2000; }, {"'b'", "overlapping", "2000"});
  expect_error("duplicate row", [](Catalog& c) { c.tensors.push_back(c.tensors[1]); }, {"'a'", "overlapping"});
  expect_error("tensor id beyond the model", [](Catalog& c) { c.tensors[3].id = 9; }, {"tensor 9", "5 tensors"});
  expect_error("missing row", [](Catalog& c) { c.tensors.erase(c.tensors.begin() + 3); }, {"'c'", "covers 0 of its 1"});
  expect_error("short last shard", [](Catalog& c) { c.tensors[0].numel = 900; }, {"'b'", "covers 2948 of its 3000"});
  expect_error("too long", [](Catalog& c) { c.tensors[1].numel = 1001; }, {"'a'", "covers 1001 of its 1000"});
  // An empty catalog covers only a model without elements.
  Catalog none = index_catalog(m);
  none.tensors.clear();
  EXPECT_THROW({ const CatalogIndex index(none, m); }, Error);
  const std::vector<TensorSpec> empty_model{{"e", {0}, DType::f32}};
  EXPECT_NO_THROW({ const CatalogIndex index(none, empty_model); });
}

// =====================================================================================
// 5. verify_catalog on real data files
// =====================================================================================

// Rank r's data: r + 2 rows in one file <root>/job-cat/rank-r/data.swp, the last one larger
// than a small verify buffer; the data bytes follow a pattern, the padding is 0xAB.
struct DataLayout {
  std::vector<CatalogPart> parts;  // every rank's, rows with checksums
  std::uint64_t rows = 0, aligned = 0;
};

DataLayout data_layout(const std::string& dir, int size, int epoch) {
  DataLayout layout;
  for (int r = 0; r < size; ++r) {
    CatalogPart p;
    const int node = node_of(r);
    std::uint64_t offset = 0;
    for (int k = 0; k < r + 2; ++k) {
      CatalogRow row;
      row.id = static_cast<std::uint32_t>(100 * r + k);
      row.name = "data.r" + std::to_string(r) + ".t" + std::to_string(k);
      row.dtype = k % 2 == 0 ? DType::f32 : DType::bf16;
      row.numel = k == r + 1 ? 5000 + 3 * static_cast<std::uint64_t>(r) : 300 + 11 * static_cast<std::uint64_t>(k);
      row.owner = r;
      row.node = node;
      row.root = 0;
      row.file = static_cast<std::uint32_t>(r);
      row.offset = offset;
      row.bytes = row.numel * dtype_size(row.dtype);
      row.aligned_bytes = align_up(row.bytes, kAlign);
      row.epoch = epoch;
      offset += row.aligned_bytes;
      layout.rows += 1;
      layout.aligned += row.aligned_bytes;
      p.tensors.push_back(row);
    }
    p.files.push_back({"job-cat/rank-" + std::to_string(r) + "/data.swp", r, 0, offset});
    if (local_rank_of(r) == 0) p.roots.push_back({node, 0, root_dir(dir, node, 0)});
    p.rank = {r, node, local_rank_of(r), "host-" + std::to_string(node), offset, 0, 0};
    layout.parts.push_back(std::move(p));
  }
  return layout;
}

std::string data_file(const std::string& dir, int r) {
  return root_dir(dir, node_of(r), 0) + "/job-cat/rank-" + std::to_string(r) + "/data.swp";
}

// Writes rank r's data file (pwrite) and fills in its rows' checksums (local).
void write_data_file(const std::string& dir, int r, CatalogPart& part, ChecksumKind kind = kDefaultChecksum) {
  const std::string path = data_file(dir, r);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  for (CatalogRow& row : part.tensors) {
    std::vector<std::byte> bytes(row.aligned_bytes, std::byte{0xAB});
    fill_pattern(std::span<std::byte>(bytes.data(), row.bytes), 1000 + row.id);
    row.checksum = checksum(kind, bytes.data(), row.bytes);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(row.offset)),
              static_cast<ssize_t>(bytes.size()));
  }
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
}

void poke_byte(const std::string& path, std::uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  unsigned char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  byte ^= 0x5a;
  ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(offset)), 1);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
}

struct VerifyTotals {
  std::uint64_t pieces = 0, bytes = 0, mismatches = 0;
};

// Every rank checks its share of `c` (collective only through the sums).
VerifyTotals verify_everywhere(const Catalog& c, std::size_t buffer_bytes, CatalogCheck& mine) {
  const int rank = world_rank(), size = world_size();
  try {
    mine = verify_catalog(c, *make_engine("posix"), buffer_bytes, rank, size);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << rank << ": verify_catalog threw: " << e.what();
    mine = {};
  }
  std::uint64_t local[3] = {mine.pieces, mine.bytes, mine.mismatches}, total[3] = {0, 0, 0};
  MPI_Allreduce(local, total, 3, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  return {total[0], total[1], total[2]};
}

TEST(CatalogVerify, RowsAreCheckedWithTheCatalogsChecksumKind) {
  // A catalog of XXH64 rows, as every catalog was before version 3: it says so, and its
  // rows check out. The same catalog read as version 2 (no `checksum` attribute) is XXH64
  // too; one that claims XXH3 for those rows finds every row wrong; an unknown or missing
  // kind in version 3 is refused, naming it.
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int rank = world_rank(), size = world_size();
  DataLayout layout = data_layout(dir.path(), size, 2);
  if (rank == 0)
    for (int r = 0; r < size; ++r) fs::create_directories(fs::path(data_file(dir.path(), r)).parent_path());
  MPI_Barrier(MPI_COMM_WORLD);
  write_data_file(dir.path(), rank, layout.parts[static_cast<std::size_t>(rank)], ChecksumKind::xxh64);
  ASSERT_TRUE(all_ranks(!::testing::Test::HasFatalFailure()));
  Catalog header = make_header(2, size);
  header.checksum = ChecksumKind::xxh64;
  expect_no_throw_on_all_ranks([&] {
    commit_catalog(MPI_COMM_WORLD, dir.path(), header, layout.parts[static_cast<std::size_t>(rank)]);
  });
  const std::string path = dir.path() + "/catalog.h5";
  Catalog c;
  bool loaded = false;
  try {
    c = load_catalog(path);
    loaded = true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << rank << ": " << e.what();
  }
  ASSERT_TRUE(all_ranks(loaded));
  EXPECT_EQ(c.checksum, ChecksumKind::xxh64);
  CatalogCheck mine;
  const VerifyTotals total = verify_everywhere(c, 4096, mine);
  EXPECT_EQ(total.pieces, c.tensors.size());
  EXPECT_EQ(total.mismatches, 0u);
  if (rank != 0) return;

  const std::string v2 = copy_of(path, dir.path() + "/v2.h5");
  rewrite_string_attribute(v2, "checksum", "");
  rewrite_int_attribute(v2, "version", 2);
  const Catalog old = load_catalog(v2);
  EXPECT_EQ(old.checksum, ChecksumKind::xxh64);
  EXPECT_EQ(verify_catalog(old, *make_engine("posix"), 1 << 20, 0, 1).mismatches, 0u);

  const std::string claims = copy_of(path, dir.path() + "/claims-xxh3.h5");
  rewrite_string_attribute(claims, "checksum", "xxh3_64");
  const Catalog wrong = load_catalog(claims);
  EXPECT_EQ(wrong.checksum, ChecksumKind::xxh3);
  const CatalogCheck check = verify_catalog(wrong, *make_engine("posix"), 1 << 20, 0, 1);
  EXPECT_EQ(check.pieces, c.tensors.size());
  EXPECT_EQ(check.mismatches, c.tensors.size());

  const std::string unknown = copy_of(path, dir.path() + "/unknown.h5");
  rewrite_string_attribute(unknown, "checksum", "crc32c");
  EXPECT_THAT(load_error(unknown), AllOf(HasSubstr(unknown), HasSubstr("checksum algorithm 'crc32c'")));
  const std::string missing = copy_of(path, dir.path() + "/missing.h5");
  rewrite_string_attribute(missing, "checksum", "");
  EXPECT_THAT(load_error(missing), AllOf(HasSubstr(missing), HasSubstr("attribute 'checksum' is missing")));
}

TEST(CatalogVerify, ChecksumsOfRealDataFiles) {
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const int rank = world_rank(), size = world_size();
  DataLayout layout = data_layout(dir.path(), size, 3);
  if (rank == 0) {
    for (int r = 0; r < size; ++r) fs::create_directories(fs::path(data_file(dir.path(), r)).parent_path());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  // Each rank writes its own file; every rank computes every rank's checksums (the same data).
  bool written = true;
  for (int r = 0; r < size; ++r) {
    if (r == rank) {
      write_data_file(dir.path(), r, layout.parts[static_cast<std::size_t>(r)]);
      written = !::testing::Test::HasFatalFailure();
    } else {
      for (CatalogRow& row : layout.parts[static_cast<std::size_t>(r)].tensors) {
        std::vector<std::byte> bytes(row.bytes);
        fill_pattern(bytes, 1000 + row.id);
        row.checksum = checksum(kDefaultChecksum, bytes.data(), row.bytes);
      }
    }
  }
  ASSERT_TRUE(all_ranks(written));
  expect_no_throw_on_all_ranks([&] {
    commit_catalog(MPI_COMM_WORLD, dir.path(), make_header(3, size), layout.parts[static_cast<std::size_t>(rank)]);
  });

  Catalog c;
  bool loaded = false;
  try {
    c = load_catalog(dir.path() + "/catalog.h5");
    loaded = true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << rank << ": " << e.what();
  }
  ASSERT_TRUE(all_ranks(loaded));
  ASSERT_EQ(c.tensors.size(), layout.rows);
  for (std::uint32_t f = 0; f < c.files.size(); ++f)
    EXPECT_EQ(c.file_path(f), data_file(dir.path(), static_cast<int>(f)));

  // Intact: no mismatch, every row checked once over the ranks, with a large and a small
  // buffer (the last row of each file is larger than 4096 bytes: several reads).
  for (std::size_t buffer : {std::size_t{1} << 20, std::size_t{4096}, std::size_t{1000}}) {
    SCOPED_TRACE("buffer " + std::to_string(buffer));
    CatalogCheck mine;
    const VerifyTotals total = verify_everywhere(c, buffer, mine);
    EXPECT_EQ(mine.mismatches, 0u);
    for (const auto& note : mine.notes) ADD_FAILURE() << "unexpected note: " << note;
    EXPECT_EQ(total.pieces, layout.rows);
    EXPECT_EQ(total.bytes, layout.aligned);
    EXPECT_EQ(total.mismatches, 0u);
  }
  // One rank alone checks everything when it says it is the only one.
  if (rank == 0) {
    const CatalogCheck all = verify_catalog(c, *make_engine("posix"), 1 << 20, 0, 1);
    EXPECT_EQ(all.pieces, layout.rows);
    EXPECT_EQ(all.mismatches, 0u);
  }

  // A changed byte in the padding of a row is not part of its checksum.
  const int victim_rank = size - 1;
  const std::size_t victim_row = 1;  // global index of rank (size-1)'s second row
  std::size_t global = 0;
  for (int r = 0; r < victim_rank; ++r) global += static_cast<std::size_t>(r + 2);
  global += victim_row;
  const CatalogRow& victim = c.tensors[global];
  const std::string victim_file = data_file(dir.path(), victim_rank);
  ASSERT_LT(victim.bytes, victim.aligned_bytes);
  if (rank == 0) poke_byte(victim_file, victim.offset + victim.bytes);  // first padding byte
  MPI_Barrier(MPI_COMM_WORLD);
  {
    CatalogCheck mine;
    EXPECT_EQ(verify_everywhere(c, 1 << 20, mine).mismatches, 0u) << "padding is not checksummed";
  }

  // One corrupted data byte: exactly one mismatch over all ranks, noted by the rank that
  // checked that row, naming the tensor and the file.
  if (rank == 0) poke_byte(victim_file, victim.offset + victim.bytes / 2);
  MPI_Barrier(MPI_COMM_WORLD);
  {
    CatalogCheck mine;
    const VerifyTotals total = verify_everywhere(c, 4096, mine);
    EXPECT_EQ(total.mismatches, 1u);
    EXPECT_EQ(total.pieces, layout.rows);
    if (static_cast<int>(global % static_cast<std::size_t>(size)) == rank) {
      EXPECT_EQ(mine.mismatches, 1u);
      ASSERT_EQ(mine.notes.size(), 1u);
      EXPECT_THAT(mine.notes[0], AllOf(HasSubstr(victim.name), HasSubstr(victim_file)));
    } else {
      EXPECT_EQ(mine.mismatches, 0u);
    }
  }

  // A short file (rank 0's cut after its first row): its other row is a mismatch.
  // A missing file (the victim's): each of its rows is a mismatch with the error in the
  // note; no exception.
  if (rank == 0) {
    fs::resize_file(data_file(dir.path(), 0), c.tensors[0].aligned_bytes);
    if (victim_rank != 0) fs::remove(victim_file);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {
    CatalogCheck mine;
    const VerifyTotals total = verify_everywhere(c, 1 << 20, mine);
    const std::uint64_t expected = victim_rank == 0 ? 1 : 1 + static_cast<std::uint64_t>(victim_rank + 2);
    EXPECT_EQ(total.mismatches, expected);
    EXPECT_EQ(total.pieces, layout.rows);
    if (victim_rank != 0) {
      for (const auto& note : mine.notes) {
        if (note.find(victim_file) != std::string::npos) {
          EXPECT_THAT(note, HasSubstr("No such file"));
        }
      }
    }
  }
  if (rank == 0) fs::remove(data_file(dir.path(), 0));
  MPI_Barrier(MPI_COMM_WORLD);
  {
    CatalogCheck mine;
    const VerifyTotals total = verify_everywhere(c, 1 << 20, mine);
    const std::uint64_t expected = 2 + (victim_rank == 0 ? 0 : static_cast<std::uint64_t>(victim_rank + 2));
    EXPECT_EQ(total.mismatches, expected);
    for (const auto& note : mine.notes) {
      if (note.find("'" + c.tensors[0].name + "'") != std::string::npos ||
          note.find("'" + c.tensors[1].name + "'") != std::string::npos) {
        EXPECT_THAT(note, AllOf(HasSubstr(data_file(dir.path(), 0)), HasSubstr("No such file")));
      }
    }
  }
}

}  // namespace
}  // namespace swapcoord
