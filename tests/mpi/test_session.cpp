// MPI tests of the session layer (session/session.hpp), at 1, 2 and 4 ranks: caller tensors
// of awkward sizes at unaligned addresses round-trip byte for byte under every policy and
// layout; group-wise swapping with prefetch; the per-piece A/B rule across a "crash" (a
// session dropped without commit) and resume; resume at another world size (a
// sub-communicator of the job) re-partitions and restores the committed state bit for
// bit; a failure on one rank raises on every rank; async handles dropped without wait();
// ranks of one node with different roots; a multi-node job without a catalog directory.
// (Separate filesystems per node: tests/mpi/run/emulated_nodes.sh.)
#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <mpi.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mpi_test_support.hpp"
#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/catalog/catalog_paths.hpp"
#include "swapcoord/common/checksum.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/io/unique_fd.hpp"
#include "swapcoord/session/session.hpp"

namespace swapcoord::test {
namespace {

// Tensors of awkward sizes: 1 element, odd counts, just past a 4 KiB boundary, several MiB.
std::vector<TensorSpec> awkward_tensors() {
  return {{"scalar", {}, DType::f32},          {"odd", {3, 7}, DType::f16},
          {"page_plus", {1025}, DType::f32},   {"bytes", {12345}, DType::u8},
          {"bf", {333, 17}, DType::bf16},      {"big", {1 << 20, 3}, DType::f16},
          {"empty", {0, 4}, DType::f32},       {"wide", {4096, 129}, DType::f32}};
}

std::uint8_t value(std::uint32_t tensor, std::uint64_t byte, int version) {
  return static_cast<std::uint8_t>(mix64((std::uint64_t{tensor} << 40) ^ (byte * 0x9e3779b97f4a7c15ULL) ^
                                         (static_cast<std::uint64_t>(version) * 0xd6e8feb86659fd93ULL + 7)));
}

// This rank's pieces in caller memory at an unaligned address (not on a page boundary).
struct Memory {
  std::vector<std::vector<std::uint8_t>> storage;
  std::vector<std::uint32_t> ids;
  std::vector<TensorView> views;
  std::vector<std::uint64_t> first_byte;  // of each piece in its tensor

  // page_aligned: each view starts on a page instead, so the session moves it in place.
  explicit Memory(const SwapSession& s, bool page_aligned = false) {
    for (const PlanPiece& p : s.local_pieces()) {
      storage.emplace_back(p.bytes + 4096);
      ids.push_back(p.tensor);
      const DType dtype = s.tensors()[p.tensor].dtype;
      const auto address = reinterpret_cast<std::uintptr_t>(storage.back().data());
      const std::size_t skip = page_aligned ? (4096 - address % 4096) % 4096 : (address % 4096 == 0 ? 1 : 0);
      views.push_back({storage.back().data() + skip, p.numel, dtype, Device::cpu()});
      first_byte.push_back(p.element_offset * dtype_size(dtype));
    }
  }
  void fill(int version) {
    for (std::size_t i = 0; i < views.size(); ++i)
      for (std::uint64_t b = 0; b < views[i].size_bytes(); ++b)
        views[i].bytes()[b] = std::byte{value(ids[i], first_byte[i] + b, version)};
  }
  void clear() {
    for (auto& v : views) std::memset(v.data, 0xEE, v.size_bytes());
  }
  // Elements of piece i that differ from `version`'s values.
  std::uint64_t wrong(std::size_t i, int version) const {
    std::uint64_t n = 0;
    for (std::uint64_t b = 0; b < views[i].size_bytes(); ++b)
      n += views[i].bytes()[b] != std::byte{value(ids[i], first_byte[i] + b, version)};
    return n;
  }
  std::uint64_t wrong(int version) const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < views.size(); ++i) n += wrong(i, version);
    return n;
  }
};

SessionOptions options_in(const std::string& dir, Policy policy = Policy::balanced, Layout layout = Layout::slab) {
  SessionOptions o;
  o.roots = {dir + "/root-a", dir + "/root-b"};
  o.catalog_dir = dir + "/catalog";
  o.job = "job";
  o.plan.policy = policy;
  o.plan.layout = layout;
  o.buffer_count = 3;
  o.buffer_size = 256 << 10;  // smaller than the big tensors: they go through in pieces
  o.backend = "posix";        // tmpfs-safe; libaio is exercised by the run tests
  o.phase_timeout_s = 60;
  return o;
}

std::uint64_t sum_over_ranks(std::uint64_t mine) {
  MPI_Allreduce(MPI_IN_PLACE, &mine, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  return mine;
}

class SessionTest : public ::testing::Test {
 protected:
  SharedTempDir dir;
};

TEST_F(SessionTest, RoundTripsAwkwardTensorsUnderEveryPolicyAndLayout) {
  ASSERT_FALSE(dir.path().empty());
  int run = 0;
  for (const Policy policy : {Policy::balanced, Policy::sharded, Policy::round_robin})
    for (const Layout layout : {Layout::slab, Layout::file_per_tensor}) {
      SessionOptions o = options_in(dir.path() + "/" + std::to_string(run++), policy, layout);
      SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
      Memory m(s);
      m.fill(1);
      const SwapFigures out = s.swap_out(m.ids, m.views);
      EXPECT_EQ(out.pieces, m.ids.size());
      m.clear();
      s.swap_in(m.ids, m.views);
      EXPECT_EQ(m.wrong(1), 0u) << to_string(policy) << " " << to_string(layout);
      // Every byte of every tensor is on some rank.
      std::uint64_t bytes = 0;
      for (const auto& v : m.views) bytes += v.size_bytes();
      std::uint64_t want = 0;
      for (const auto& t : awkward_tensors()) want += t.size_bytes();
      EXPECT_EQ(sum_over_ranks(bytes), want);
      EXPECT_EQ(s.commit(), 0);
      const SessionCheck check = s.verify();
      EXPECT_EQ(check.mismatches, 0u);
      EXPECT_EQ(check.pieces, s.plan().rank_first_piece.back()) << "every rank's pieces";
      s.remove_files();
    }
}

TEST_F(SessionTest, PageAlignedMemoryMovesInPlaceAndIsStillChecked) {
  // Views on page boundaries are read and written in place (their unaligned tails through
  // staging): the same bytes on disk, and swap-in still checks every piece's checksum.
  ASSERT_FALSE(dir.path().empty());
  for (const char* backend : {"posix", "libaio"}) {
    SCOPED_TRACE(backend);
    SessionOptions o = options_in(dir.path() + "/" + backend, Policy::balanced, Layout::file_per_tensor);
    o.backend = backend;
    o.slots = 1;  // one file per piece, the piece at its start
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory aligned(s, true), staged(s);
    aligned.fill(1);
    s.swap_out(aligned.ids, aligned.views);
    staged.clear();
    s.swap_in(staged.ids, staged.views);  // what was written in place reads back through staging
    EXPECT_EQ(staged.wrong(1), 0u);
    staged.fill(2);
    s.swap_out(staged.ids, staged.views);
    aligned.clear();
    s.swap_in(aligned.ids, aligned.views);  // and the other way round
    EXPECT_EQ(aligned.wrong(2), 0u);
    // One flipped byte at the start of each of this rank's files: every non-empty piece's
    // swap-in into aligned memory fails naming its tensor.
    for (const std::string& path : s.local_files()) {
      if (!std::filesystem::exists(path) || std::filesystem::file_size(path) == 0) continue;  // slot 1's
      std::FILE* f = std::fopen(path.c_str(), "r+b");
      ASSERT_NE(f, nullptr) << path;
      const int c = std::fgetc(f);
      std::fseek(f, 0, SEEK_SET);
      std::fputc(c ^ 0x01, f);
      std::fclose(f);
    }
    for (std::size_t i = 0; i < aligned.ids.size(); ++i) {
      if (aligned.views[i].size_bytes() == 0) continue;
      const std::string name = s.tensors()[aligned.ids[i]].name;
      try {
        s.swap_in(std::span(&aligned.ids[i], 1), std::span(&aligned.views[i], 1));
        ADD_FAILURE() << "no checksum error for tensor '" << name << "'";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("'" + name + "'"), std::string::npos) << e.what();
      }
    }
    s.remove_files();
  }
}

// Bytes of `path` in unwritten (allocated, never written) extents, from FIEMAP; -1 where
// the filesystem has no FIEMAP (tmpfs).
std::int64_t unwritten_bytes(const std::string& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY));
  if (!fd) return -1;
  constexpr unsigned kExtents = 64;
  std::vector<std::byte> buffer(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
  auto* map = reinterpret_cast<fiemap*>(buffer.data());
  std::int64_t unwritten = 0;
  for (std::uint64_t start = 0;;) {
    std::fill(buffer.begin(), buffer.end(), std::byte{0});
    map->fm_start = start;
    map->fm_length = FIEMAP_MAX_OFFSET;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kExtents;
    if (::ioctl(fd.get(), FS_IOC_FIEMAP, map) != 0) return -1;
    if (map->fm_mapped_extents == 0) return unwritten;
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& e = map->fm_extents[i];
      if (e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) unwritten += static_cast<std::int64_t>(e.fe_length);
      if (e.fe_flags & FIEMAP_EXTENT_LAST) return unwritten;
      start = e.fe_logical + e.fe_length;
    }
  }
}

TEST_F(SessionTest, PreparedFilesHoldNoUnwrittenExtents) {
  // swap.prepare "write" (the default) writes each new file at set-up, so the first
  // swap-out into a slot is an overwrite; "allocate" leaves the preallocated (unwritten)
  // extents that ext4 and XFS convert on the first write. Seen through FIEMAP.
  ASSERT_FALSE(dir.path().empty());
  for (const char* prepare : {"allocate", "write"}) {
    SCOPED_TRACE(prepare);
    SessionOptions o = options_in(dir.path() + "/" + prepare);
    o.prepare = prepare;
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    std::int64_t unwritten = 0, files = 0;
    for (const std::string& path : s.local_files()) {
      if (!std::filesystem::exists(path) || std::filesystem::file_size(path) == 0) continue;
      const std::int64_t u = unwritten_bytes(path);
      if (u < 0) GTEST_SKIP() << "no FIEMAP on the filesystem of " << path;
      unwritten += u;
      ++files;
    }
    if (std::string(prepare) == "write") {
      EXPECT_EQ(unwritten, 0) << "over " << files << " files";
    }
    // On ext4, "allocate" shows them: the check above tells the two apart.
    struct statfs fs {};
    if (std::string(prepare) == "allocate" && files > 0 && ::statfs(dir.path().c_str(), &fs) == 0 &&
        fs.f_type == 0xEF53) {
      EXPECT_GT(unwritten, 0) << "ext4 keeps fallocate'd blocks unwritten until written";
    }
    // The prepared files work as ever.
    Memory m(s);
    m.fill(5);
    s.swap_out(m.ids, m.views);
    EXPECT_EQ(s.commit(), 0);
    m.clear();
    s.swap_in(m.ids, m.views);
    EXPECT_EQ(m.wrong(5), 0u);
    s.remove_files();
  }
}

TEST_F(SessionTest, GroupsWithPrefetchOverlapAndKeepEveryValue) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path(), Policy::sharded);
  o.prefetch_bytes = 64 << 20;
  std::vector<TensorSpec> tensors;
  for (int i = 0; i < 12; ++i) tensors.push_back({"layer" + std::to_string(i), {1000 + 77u * i, 33}, DType::f32});
  SwapSession s = SwapSession::create(MPI_COMM_WORLD, tensors, o);
  Memory m(s);
  m.fill(0);
  s.swap_out(m.ids, m.views);
  // Groups of 4 tensors: prefetch the next group, swap in this one, "update", swap out.
  const std::size_t groups = 3;
  auto group = [&](std::size_t g, std::vector<std::uint32_t>& ids, std::vector<TensorView>& views) {
    ids.clear();
    views.clear();
    for (std::size_t i = 0; i < m.ids.size(); ++i)
      if (m.ids[i] / 4 == g) ids.push_back(m.ids[i]), views.push_back(m.views[i]);
  };
  std::uint64_t prefetched = 0;
  for (int step = 1; step <= 3; ++step) {
    std::vector<std::uint32_t> ids, next_ids;
    std::vector<TensorView> views, next_views;
    group(0, ids, views);
    SwapHandle ahead = s.prefetch(ids);
    for (std::size_t g = 0; g < groups; ++g) {
      group(g, ids, views);
      ahead.wait();
      for (auto& v : views) std::memset(v.data, 0, v.size_bytes());
      const SwapFigures in = s.swap_in(ids, views);
      prefetched += in.prefetched_bytes;
      if (g + 1 < groups) {
        group(g + 1, next_ids, next_views);
        ahead = s.prefetch(next_ids);  // reads while this group is "computed"
      }
      for (std::size_t i = 0; i < m.ids.size(); ++i)
        if (m.ids[i] / 4 == g) {
          EXPECT_EQ(m.wrong(i, step - 1), 0u) << "tensor " << m.ids[i] << " step " << step;
          for (std::uint64_t b = 0; b < m.views[i].size_bytes(); ++b)
            m.views[i].bytes()[b] = std::byte{value(m.ids[i], m.first_byte[i] + b, step)};
        }
      SwapHandle out = s.swap_out_async(ids, views);
      out.wait();
    }
    s.commit();
  }
  if (!m.ids.empty()) {
    EXPECT_GT(prefetched, 0u) << "swap_in never used a prefetched piece";
  }
  EXPECT_GT(s.statistics().prefetch.calls, 0u);
  EXPECT_EQ(s.committed_epoch(), 2);
  s.remove_files();
}

TEST_F(SessionTest, PerPieceABSurvivesADroppedSessionAndResumes) {
  ASSERT_FALSE(dir.path().empty());
  const SessionOptions o = options_in(dir.path());
  const auto tensors = awkward_tensors();
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, tensors, o);
    Memory m(s);
    m.fill(1);
    s.swap_out(m.ids, m.views);
    s.commit();  // epoch 0: everything at version 1
    // Tensors with even ids move on to version 2 and are committed (epoch 1); then every
    // tensor is swapped out at version 3, twice for the odd ones, and never committed.
    std::vector<std::uint32_t> even;
    std::vector<TensorView> even_views;
    for (std::size_t i = 0; i < m.ids.size(); ++i)
      if (m.ids[i] % 2 == 0) even.push_back(m.ids[i]), even_views.push_back(m.views[i]);
    m.fill(2);
    s.swap_out(even, even_views);
    EXPECT_EQ(s.commit(), 1);
    m.fill(3);
    s.swap_out(m.ids, m.views);
    s.swap_out(m.ids, m.views);
    m.clear();
    s.swap_in(m.ids, m.views);  // reads the pending copies
    EXPECT_EQ(m.wrong(3), 0u);
  }  // dropped without commit: as after a crash, epoch 1 is what is committed
  SwapSession r = SwapSession::resume(MPI_COMM_WORLD, tensors, o);
  EXPECT_FALSE(r.repartitioned());
  EXPECT_EQ(r.committed_epoch(), 1);
  Memory m(r);
  m.clear();
  r.swap_in(m.ids, m.views);
  for (std::size_t i = 0; i < m.ids.size(); ++i)
    EXPECT_EQ(m.wrong(i, m.ids[i] % 2 == 0 ? 2 : 1), 0u) << "tensor " << m.ids[i];
  EXPECT_EQ(r.verify().mismatches, 0u);
  r.remove_files();
}

TEST_F(SessionTest, ResumesAtAnotherWorldSizeBitForBit) {
  ASSERT_FALSE(dir.path().empty());
  const int size = world_size();
  const auto tensors = awkward_tensors();
  SessionOptions o = options_in(dir.path(), Policy::sharded);
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, tensors, o);
    Memory m(s);
    m.fill(5);
    s.swap_out(m.ids, m.views);
    s.commit();
    m.fill(6);
    s.swap_out(m.ids, m.views);  // not committed
  }
  // The first half of the ranks (at least one) resumes, balanced: a re-partition.
  const int half = std::max(1, size / 2);
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() < half ? 0 : MPI_UNDEFINED, world_rank(), &sub);
  bool ok = true;
  if (sub != MPI_COMM_NULL) {
    try {
      o.plan.policy = Policy::balanced;
      SwapSession r = SwapSession::resume(sub, tensors, o);
      EXPECT_TRUE(r.repartitioned());  // another policy and world size
      Memory m(r);
      m.clear();
      r.swap_in(m.ids, m.views);  // from the old files, re-partitioned
      EXPECT_EQ(m.wrong(5), 0u);
      EXPECT_EQ(r.commit(), 1);   // copies what was not swapped out into the new files
      EXPECT_FALSE(r.repartitioned());
      EXPECT_EQ(r.verify().mismatches, 0u);
      m.clear();
      r.swap_in(m.ids, m.views);
      EXPECT_EQ(m.wrong(5), 0u);
    } catch (const std::exception& e) {
      ok = false;
      ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
    }
    MPI_Comm_free(&sub);
  }
  ASSERT_TRUE(all_ranks(ok));
  // And back to every rank, sharded again (another re-partition, the other file set).
  o.plan.policy = Policy::sharded;
  SwapSession w = SwapSession::resume(MPI_COMM_WORLD, tensors, o);
  EXPECT_EQ(w.committed_epoch(), 1);
  Memory m(w);
  m.clear();
  w.swap_in(m.ids, m.views);
  EXPECT_EQ(m.wrong(5), 0u);
  // remove_files() also removes the files of the generations written at other world sizes.
  w.remove_files();
  if (world_rank() == 0)
    for (const auto& root : o.roots) {
      std::vector<std::string> left;
      for (const auto& e : std::filesystem::recursive_directory_iterator(root)) left.push_back(e.path().string());
      EXPECT_TRUE(left.empty()) << "left in " << root << ": " << (left.empty() ? "" : left.front());
    }
  EXPECT_FALSE(std::filesystem::exists(o.catalog_dir + "/catalog.h5"));
}

TEST_F(SessionTest, AFailureOnOneRankRaisesOnEveryRank) {
  ASSERT_FALSE(dir.path().empty());
  SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), options_in(dir.path(), Policy::sharded));
  Memory m(s);
  m.fill(1);
  // The last rank forgets its first tensor: commit must fail everywhere, naming it.
  const bool forget = world_rank() == world_size() - 1 && !m.ids.empty();
  std::vector<std::uint32_t> ids(m.ids.begin() + (forget ? 1 : 0), m.ids.end());
  std::vector<TensorView> views(m.views.begin() + (forget ? 1 : 0), m.views.end());
  s.swap_out(ids, views);
  const std::string message = expect_throw_on_all_ranks<PhaseError>([&] { s.commit(); });
  EXPECT_NE(message.find("rank " + std::to_string(world_size() - 1) + "@"), std::string::npos) << message;
  EXPECT_NE(message.find("was never swapped out"), std::string::npos) << message;
  EXPECT_EQ(s.committed_epoch(), -1);
  // A local mistake raises at once, naming the tensor and the sizes.
  if (!m.ids.empty()) {
    TensorView wrong = m.views[0];
    wrong.numel += 1;
    try {
      s.swap_out({&m.ids[0], 1}, {&wrong, 1});
      ADD_FAILURE() << "a view of the wrong size was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(s.tensors()[m.ids[0]].name), std::string::npos) << e.what();
    }
  }
  s.swap_out(m.ids, m.views);
  EXPECT_EQ(s.commit(), 0);
  s.remove_files();
}

TEST_F(SessionTest, DroppedAsyncHandlesWaitAndKeepTheirErrors) {
  ASSERT_FALSE(dir.path().empty());
  SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), options_in(dir.path()));
  Memory m(s);
  m.fill(4);
  { (void)s.swap_out_async(m.ids, m.views); }  // dropped: its destructor waits
  m.clear();
  { SwapHandle h = s.swap_in_async(m.ids, m.views); }
  EXPECT_EQ(m.wrong(4), 0u);
  // A prefetch of a tensor never swapped out fails on the I/O thread; dropped, its error
  // comes back at the next call.
  SwapSession fresh = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), options_in(dir.path() + "/fresh"));
  Memory f(fresh);
  if (!f.ids.empty()) {
    { (void)fresh.prefetch(f.ids); }
    try {
      fresh.wait_all();
      ADD_FAILURE() << "the dropped handle's error was lost";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("never swapped out"), std::string::npos) << e.what();
    }
  }
  s.remove_files();
  fresh.remove_files();
}

TEST_F(SessionTest, AFailedCommitAfterTheRenameKeepsTheCommittedCopy) {
  ASSERT_FALSE(dir.path().empty());
  const SessionOptions o = options_in(dir.path());
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory m(s);
    m.fill(1);
    s.swap_out(m.ids, m.views);
    s.commit();
    m.fill(2);
    s.swap_out(m.ids, m.views);
    // The directory fsync after the rename "fails" (the hook throws on rank 0 there):
    // epoch 1 is committed on disk although commit() raises.
    s.set_commit_stage_hook([](const char* stage) {
      if (std::string(stage) == "renamed") throw Error("injected: directory fsync failed");
    });
    const std::string message = expect_throw_on_all_ranks<PhaseError>([&] { s.commit(); });
    EXPECT_NE(message.find("injected"), std::string::npos) << message;
    EXPECT_EQ(s.committed_epoch(), 1) << "the rename happened: epoch 1 is what is committed";
    s.set_commit_stage_hook({});
    m.fill(3);
    s.swap_out(m.ids, m.views);  // must not overwrite epoch 1's copies
  }  // dropped: a crash before the next commit
  SwapSession r = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), o);
  EXPECT_EQ(r.committed_epoch(), 1);
  Memory m(r);
  m.clear();
  r.swap_in(m.ids, m.views);
  EXPECT_EQ(m.wrong(2), 0u);
  EXPECT_EQ(r.verify().mismatches, 0u);
  r.remove_files();
}

TEST_F(SessionTest, BadCallsChangeNothing) {
  ASSERT_FALSE(dir.path().empty());
  SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), options_in(dir.path(), Policy::round_robin));
  Memory m(s);
  if (m.ids.size() >= 2) {
    m.fill(7);
    s.swap_out({&m.ids[0], 1}, {&m.views[0], 1});
    // A prefetch naming a piece that was never swapped out fails before it prefetches any.
    try {
      s.prefetch(m.ids).wait();
      ADD_FAILURE() << "prefetch of a piece never swapped out";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("never swapped out"), std::string::npos) << e.what();
    }
    m.clear();
    s.swap_in({&m.ids[0], 1}, {&m.views[0], 1});
    EXPECT_EQ(m.wrong(0, 7), 0u);
    // The same tensor twice in one streaming call.
    const std::uint32_t twice[2] = {m.ids[0], m.ids[0]};
    try {
      s.swap_in_stream(twice, [](std::uint32_t, std::uint64_t, std::span<const std::byte>) {});
      ADD_FAILURE() << "a tensor named twice was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("named twice"), std::string::npos) << e.what();
    }
  }
  // A config error on one rank only is a ConfigError on every rank.
  SessionOptions bad = options_in(dir.path() + "/bad");
  if (world_rank() == world_size() - 1) bad.slots = 3;
  const std::string message =
      expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), bad); });
  EXPECT_NE(message.find("swap.slots: 3"), std::string::npos) << message;
  s.remove_files();
}

TEST_F(SessionTest, AReRepartitionedResumeChecksTheOldRowsAndRefusesAnotherJob) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path());
  o.plan.alignment_bytes = 1 << 20;  // the old run's alignment is larger than the new staging buffers
  o.buffer_size = 1 << 20;
  std::string victim;
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory m(s);
    m.fill(1);
    s.swap_out(m.ids, m.views);
    s.commit();
    // Tensor 0 (one element): whole in every plan, so the re-partitioned reader checks it.
    if (s.local_piece(0) != nullptr) victim = s.where(0).path + ":" + std::to_string(s.where(0).offset);
  }
  SessionOptions other = o;
  other.job = "another-job";
  other.plan.alignment_bytes = 4096;
  expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), other); });
  SessionOptions next = o;
  next.plan.alignment_bytes = 4096;
  next.plan.policy = Policy::sharded;
  next.buffer_size = 64 << 10;
  {
    SwapSession r = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), next);
    EXPECT_TRUE(r.repartitioned());
    Memory m(r);
    r.swap_in(m.ids, m.views);
    EXPECT_EQ(m.wrong(1), 0u);
  }
  // One flipped byte in the old files: the re-partitioned swap-in that reads that row says so.
  int owner = victim.empty() ? -1 : world_rank();
  MPI_Allreduce(MPI_IN_PLACE, &owner, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ASSERT_GE(owner, 0);
  victim = broadcast_string(victim, owner);
  if (world_rank() == 0) {
    const auto colon = victim.rfind(':');
    std::FILE* f = std::fopen(victim.substr(0, colon).c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, std::stol(victim.substr(colon + 1)), SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, std::stol(victim.substr(colon + 1)), SEEK_SET);
    std::fputc(c ^ 0x5a, f);
    std::fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  SwapSession r = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), next);
  Memory m(r);
  bool caught = false;
  try {
    r.swap_in(m.ids, m.views);
  } catch (const Error& e) {
    caught = std::string(e.what()).find("checksum") != std::string::npos;
    EXPECT_TRUE(caught) << e.what();
  }
  int any = caught ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(any, 1) << "no rank found the flipped byte";
  r.remove_files();
}

TEST_F(SessionTest, ANewSessionOverACommittedCatalogIsRefusedUnlessOverwrite) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path());
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory m(s);
    m.fill(1);
    s.swap_out(m.ids, m.views);
    s.commit();
  }
  const std::string message =
      expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o); });
  EXPECT_NE(message.find(o.catalog_dir + "/catalog.h5' holds the committed catalog of job 'job', epoch 0"),
            std::string::npos) << message;
  {  // the refused create touched nothing: the committed state is still there
    SwapSession r = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory m(r);
    r.swap_in(m.ids, m.views);
    EXPECT_EQ(m.wrong(1), 0u);
  }
  o.overwrite = true;
  SwapSession fresh = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
  EXPECT_FALSE(std::filesystem::exists(o.catalog_dir + "/catalog.h5")) << "the old catalog must be gone at create";
  EXPECT_EQ(fresh.committed_epoch(), -1);
  fresh.remove_files();
}

TEST_F(SessionTest, CommitMetadataIsStoredAndCheckedOnEveryRank) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path());
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory m(s);
    m.fill(3);
    s.swap_out(m.ids, m.views);
    s.commit(R"({"step": 7})");
    // Too long, or a NUL byte: rank 0 refuses, and every rank gets the PhaseError.
    std::string message = expect_throw_on_all_ranks<PhaseError>(
        [&] { (void)s.commit(std::string(kCatalogMetadataBytes + 1, 'x')); });
    EXPECT_NE(message.find("the metadata has 32769 bytes, more than the catalog's 32768"), std::string::npos)
        << message;
    message = expect_throw_on_all_ranks<PhaseError>([&] { (void)s.commit(std::string("a\0b", 3)); });
    EXPECT_NE(message.find("the metadata holds a NUL byte at offset 1"), std::string::npos) << message;
  }
  SwapSession r = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), o);
  ASSERT_NE(r.resumed_from(), nullptr);
  EXPECT_EQ(r.resumed_from()->epoch, 0);  // the refused commits left epoch 0 in place
  EXPECT_EQ(r.resumed_from()->metadata, R"({"step": 7})");
  r.remove_files();
}

TEST_F(SessionTest, SwitchingFromOneSlotToTwoOnResumeKeepsTheCommittedCopy) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path());
  o.slots = 1;
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    Memory m(s);
    for (int epoch = 0; epoch < 2; ++epoch) {  // two commits, both in slot 0 (in place)
      m.fill(10 + epoch);
      s.swap_out(m.ids, m.views);
      s.commit();
    }
  }
  o.slots = 2;  // epoch 2 would be "slot 0" by epoch parity: the per-piece rule writes slot 1
  {
    SwapSession s = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), o);
    EXPECT_FALSE(s.repartitioned());
    Memory m(s);
    m.fill(12);
    s.swap_out(m.ids, m.views);
  }  // a crash before the commit
  SwapSession r = SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), o);
  Memory m(r);
  r.swap_in(m.ids, m.views);
  EXPECT_EQ(m.wrong(11), 0u) << "the committed epoch 1 was overwritten";
  EXPECT_EQ(r.verify().mismatches, 0u);
  r.remove_files();
}

// Rank 0: every row of the committed catalog against the checksum (of the catalog's
// kind) of its bytes as they lie in the file; `kind` is what the catalog must record.
void expect_catalog_checksums(const std::string& catalog_dir, ChecksumKind kind) {
  if (world_rank() != 0) return;
  const Catalog c = load_catalog(catalog_dir + "/catalog.h5");
  EXPECT_EQ(c.checksum, kind);
  EXPECT_EQ(nlohmann::json::parse(c.config_json)["swap"]["checksum"], checksum_name(kind));
  ASSERT_FALSE(c.tensors.empty());
  for (const CatalogRow& r : c.tensors) {
    std::vector<char> bytes(r.bytes);
    const UniqueFd fd(::open(c.file_path(r.file).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << c.file_path(r.file);
    ASSERT_EQ(::pread(fd.get(), bytes.data(), bytes.size(), static_cast<off_t>(r.offset)),
              static_cast<ssize_t>(bytes.size()));
    EXPECT_EQ(r.checksum, checksum(kind, bytes.data(), bytes.size())) << "tensor '" << r.name << "' shard " << r.shard;
  }
}

TEST_F(SessionTest, AJobKeepsTheChecksumItsFirstCatalogRecords) {
  ASSERT_FALSE(dir.path().empty());
  const auto tensors = awkward_tensors();
  SessionOptions o = options_in(dir.path());
  o.checksum = ChecksumKind::xxh64;  // a job begun with XXH64 (as every job before version 3)
  {
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, tensors, o);
    Memory m(s);
    m.fill(1);
    s.swap_out(m.ids, m.views);
    s.commit();
  }
  expect_catalog_checksums(o.catalog_dir, ChecksumKind::xxh64);
  // Resumed with the default (XXH3) and another policy: a re-partition whose swap-in checks
  // the old rows as it reads them (with XXH64: XXH3 would call every row wrong), and whose
  // commit copies them and records XXH64 again.
  SessionOptions d = options_in(dir.path(), Policy::sharded);
  ASSERT_EQ(d.checksum, ChecksumKind::xxh3);
  {
    SwapSession r = SwapSession::resume(MPI_COMM_WORLD, tensors, d);
    EXPECT_TRUE(r.repartitioned());
    EXPECT_EQ(r.options().checksum, ChecksumKind::xxh64);
    Memory m(r);
    m.clear();
    r.swap_in(m.ids, m.views);
    EXPECT_EQ(m.wrong(1), 0u);
    std::vector<std::uint32_t> even;  // the odd ones are copied by the commit
    std::vector<TensorView> even_views;
    for (std::size_t i = 0; i < m.ids.size(); ++i)
      if (m.ids[i] % 2 == 0) even.push_back(m.ids[i]), even_views.push_back(m.views[i]);
    m.fill(2);
    r.swap_out(even, even_views);
    m.clear();
    r.swap_in(even, even_views);  // checked against the swap-out's XXH64
    for (std::size_t i = 0; i < m.ids.size(); ++i) {
      if (m.ids[i] % 2 != 0) continue;
      EXPECT_EQ(m.wrong(i, 2), 0u) << "tensor " << m.ids[i];
    }
    EXPECT_EQ(r.commit(), 1);
    EXPECT_EQ(r.verify().mismatches, 0u);
  }
  expect_catalog_checksums(o.catalog_dir, ChecksumKind::xxh64);
  // A new job over it (overwrite) with the default: XXH3.
  d.overwrite = true;
  SwapSession n = SwapSession::create(MPI_COMM_WORLD, tensors, d);
  EXPECT_EQ(n.options().checksum, ChecksumKind::xxh3);
  Memory m(n);
  m.fill(3);
  n.swap_out(m.ids, m.views);
  n.commit();
  expect_catalog_checksums(o.catalog_dir, ChecksumKind::xxh3);
  EXPECT_EQ(n.verify().mismatches, 0u);
  n.remove_files();
}

TEST_F(SessionTest, NamesTooLongForTheCatalogAreRefusedAtCreate) {
  ASSERT_FALSE(dir.path().empty());
  auto tensors = awkward_tensors();
  tensors[3].name = std::string(300, 'n');
  const std::string message = expect_throw_on_all_ranks<ConfigError>(
      [&] { (void)SwapSession::create(MPI_COMM_WORLD, tensors, options_in(dir.path())); });
  EXPECT_NE(message.find("tensor 3 ('nnnn"), std::string::npos) << message;
  EXPECT_NE(message.find("300 bytes"), std::string::npos) << message;
}

TEST_F(SessionTest, RanksThatDisagreeStopAtCreateNamingTheKey) {
  ASSERT_FALSE(dir.path().empty());
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SessionOptions o = options_in(dir.path());
  if (world_rank() == 1) o.slots = 1;
  std::string message =
      expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o); });
  EXPECT_NE(message.find("rank 1 has swap.slots = 1, rank 0 has 2"), std::string::npos) << message;
  // One rank calling resume while the others call create.
  o.slots = 2;
  message = expect_throw_on_all_ranks<ConfigError>([&] {
    if (world_rank() == 1)
      (void)SwapSession::resume(MPI_COMM_WORLD, awkward_tensors(), o);
    else
      (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
  });
  EXPECT_NE(message.find("rank 1 has call = \"resume\", rank 0 has \"create\""), std::string::npos) << message;
}

TEST_F(SessionTest, RanksOfOneNodeWithDifferentRootsAreAnError) {
  ASSERT_FALSE(dir.path().empty());
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks on one node";
  SessionOptions o = options_in(dir.path());
  o.roots = {dir.path() + "/r" + std::to_string(world_rank())};
  const std::string message =
      expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o); });
  EXPECT_NE(message.find("different roots"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.path() + "/r0"), std::string::npos) << message;
}

TEST_F(SessionTest, SeveralNodesNeedACatalogDirectory) {
  ASSERT_FALSE(dir.path().empty());
  if (world_size() < 2) GTEST_SKIP() << "needs two ranks";
  SessionOptions o = options_in(dir.path());
  o.catalog_dir.clear();
  o.node_key = "env:SWAPCOORD_SESSION_TEST_NODE";
  ::setenv("SWAPCOORD_SESSION_TEST_NODE", std::to_string(world_rank() % 2).c_str(), 1);
  const std::string message =
      expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o); });
  EXPECT_NE(message.find("--catalog-dir"), std::string::npos) << message;
  ::unsetenv("SWAPCOORD_SESSION_TEST_NODE");
}

// Two jobs on the same files: the second is refused, naming the lock and its holder, until
// the first ends. A job of another name with the same catalog directory is refused too.
TEST_F(SessionTest, ASecondJobOnTheSameFilesIsRefusedNamingTheHolder) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path());
  std::optional<SwapSession> first(SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o));
  const std::string message =
      expect_throw_on_all_ranks<Error>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o); });
  EXPECT_NE(message.find("another job is using these files"), std::string::npos) << message;
  EXPECT_NE(message.find(".swapcoord"), std::string::npos) << message;
  EXPECT_NE(message.find("pid "), std::string::npos) << message;
  SessionOptions other = o;
  other.job = "other";
  const std::string same_catalog =
      expect_throw_on_all_ranks<Error>([&] { (void)SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), other); });
  EXPECT_NE(same_catalog.find(o.catalog_dir + "/.swapcoord-catalog.lock"), std::string::npos) << same_catalog;
  first.reset();
  expect_no_throw_on_all_ranks([&] {
    SwapSession again = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    again.remove_files();
  });
}

// A plan that cannot fit (16 TiB) is refused before any file is made, with the figures.
TEST_F(SessionTest, AJobThatDoesNotFitIsRefusedBeforeAnyFileIsMade) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path());
  const std::vector<TensorSpec> huge{{"huge", {1u << 20, 1u << 20, 1024}, DType::f32}};
  const std::string message =
      expect_throw_on_all_ranks<ConfigError>([&] { (void)SwapSession::create(MPI_COMM_WORLD, huge, o); });
  EXPECT_NE(message.find("does not fit"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.path() + "/root-"), std::string::npos) << message;
  EXPECT_NE(message.find("GiB"), std::string::npos) << message;
  std::uint64_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path()))
    files += e.path().extension() == ".swp";
  EXPECT_EQ(sum_over_ranks(files), 0u);
}

// A swap-out whose file creation fails half way removes the files it made.
TEST_F(SessionTest, AFailedFileCreationRemovesWhatItMade) {
  ASSERT_FALSE(dir.path().empty());
  SessionOptions o = options_in(dir.path(), Policy::balanced, Layout::file_per_tensor);
  o.roots = {dir.path() + "/root-a"};
  std::vector<std::string> files;  // slot 0's, then slot 1's
  {  // every slot's files are made at set-up, not by the first swap-out into the slot
    SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);
    files = s.local_files();
    for (const auto& f : files) EXPECT_TRUE(std::filesystem::is_regular_file(f)) << f;
    s.remove_files();
  }
  const bool planted = files.size() / 2 >= 2;
  if (planted) std::filesystem::create_directories(files[1]);  // a directory where this rank's second file goes
  if (!all_ranks(!planted)) {  // some rank planted one: the set-up fails on every rank
    const std::string message =
        expect_throw_on_all_ranks<Error>([&] { SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o); });
    EXPECT_NE(message.find(".swp"), std::string::npos) << message;
    if (planted) {
      EXPECT_FALSE(std::filesystem::exists(files[0])) << files[0] << " was made by the failed set-up and left behind";
      std::filesystem::remove(files[1]);
    }
  }
  SwapSession s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), o);  // once the way is clear, it works
  Memory m(s);
  m.fill(1);
  s.swap_out(m.ids, m.views);
  s.commit();
  EXPECT_EQ(s.verify().mismatches, 0u);
  s.remove_files();
}

// Where a catalog may point: only into the roots the reader allows, and, links resolved,
// still inside its root.
TEST(CatalogPaths, FilesOutsideTheAllowedRootsOrBehindALinkAreRefused) {
  if (world_rank() != 0) return;
  TempDir dir;
  const std::string root = dir.path() + "/root", outside = dir.path() + "/outside";
  std::filesystem::create_directories(root + "/job/rank-0");
  std::filesystem::create_directories(outside);
  std::FILE* f = std::fopen((outside + "/secret.swp").c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("secret", f);
  std::fclose(f);
  Catalog c;
  c.job = "job";
  c.world_size = 1;
  c.ranks.push_back({0, 0, 0, "host", 0, 0, 0});
  c.roots.push_back({0, 0, root});
  c.roots.push_back({0, 1, "/etc"});
  c.files.push_back({"job/rank-0/0.0.swp", 0, 0, 6});
  c.files.push_back({"passwd", 0, 1, 6});
  c.files.push_back({"job/rank-0/link.swp", 0, 0, 6});
  const std::vector<std::string> allowed{root};
  EXPECT_EQ(checked_file_path(c, 0, allowed), root + "/job/rank-0/0.0.swp");  // missing: the open says so
  try {
    (void)checked_file_path(c, 1, allowed);
    ADD_FAILURE() << "a file in /etc was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lies in root '/etc', which is not one of the swap roots"), std::string::npos)
        << e.what();
  }
  std::filesystem::create_symlink(outside + "/secret.swp", root + "/job/rank-0/link.swp");
  try {
    (void)checked_file_path(c, 2, allowed);
    ADD_FAILURE() << "a link out of the root was followed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside its root"), std::string::npos) << e.what();
  }
  // swapcoord verify without --roots: the catalog's own roots, only if they are this user's
  // and closed to others; with --roots, the catalog's roots must be among them.
  EXPECT_THROW((void)readable_catalog_roots(c, std::vector<std::string>{root}), ConfigError);
  std::filesystem::permissions(root, std::filesystem::perms::others_write, std::filesystem::perm_options::add);
  Catalog own = c;
  own.roots.pop_back();
  own.files.pop_back();
  own.files.pop_back();
  EXPECT_THROW((void)readable_catalog_roots(own), ConfigError);
  std::filesystem::permissions(root, std::filesystem::perms::others_write, std::filesystem::perm_options::remove);
  EXPECT_EQ(readable_catalog_roots(own), std::vector<std::string>{root});
}

// A view on a GPU where none is visible (or the build has no CUDA): refused on the rank
// that passed it, naming the rank, the tensor, the device and why; nothing is swapped and
// the session stays usable. (Where a GPU is visible, tests/gpu swaps such views.)
TEST_F(SessionTest, DeviceViewWithoutAGpuIsRefusedNamingTheTensorAndWhy) {
  if (!all_ranks(device::visible_device_count() == 0)) GTEST_SKIP() << "a GPU is visible: tests/gpu covers this";
  ASSERT_FALSE(dir.path().empty());
  auto s = SwapSession::create(MPI_COMM_WORLD, awkward_tensors(), options_in(dir.path()));
  Memory memory(s);
  memory.fill(1);
  if (!memory.views.empty()) {
    std::vector<TensorView> views = memory.views;
    views.back().device = Device::cuda(0);
    try {
      s.swap_out(memory.ids, views);
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      const std::string text = e.what();
      const std::string expected = "rank " + std::to_string(world_rank()) + "@";
      EXPECT_EQ(text.rfind(expected, 0), 0u) << text;
      EXPECT_NE(text.find("the view of tensor '" + s.tensors()[memory.ids.back()].name +
                          "' is on cuda:0: a tensor on a CUDA device: "), std::string::npos) << text;
      EXPECT_NE(text.find(device::cuda_built() ? "no CUDA device is visible" : "built without CUDA"),
                std::string::npos) << text;
    }
  }
  s.swap_out(memory.ids, memory.views);  // still usable
  memory.clear();
  s.swap_in(memory.ids, memory.views);
  EXPECT_EQ(memory.wrong(1), 0u);
  s.remove_files();
}

}  // namespace
}  // namespace swapcoord::test
