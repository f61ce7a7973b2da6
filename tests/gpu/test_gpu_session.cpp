// The session with tensors in GPU memory, and the NCCL all-gather (label gpu; run at 1
// and 2 ranks; every test skips, saying why, where no GPU is visible).
//  - device views of awkward sizes round-trip through swap_out / prefetch / swap_in with
//    checksums on, alone and mixed with host views in one call, and commit;
//  - a sharded tensor swapped into GPU memory is rebuilt on every GPU by NCCL and equals
//    what the MPI all-gather rebuilds on the host (needs one GPU per rank);
//  - more ranks on a node than GPUs: NcclComm refuses on every rank, naming both ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <map>
#include <vector>

#include "mpi_test_support.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/device/nccl.hpp"
#include "swapcoord/session/session.hpp"

namespace swapcoord::test {
namespace {

using device::DeviceMemory;

bool gpu_everywhere() { return all_ranks(device::visible_device_count() > 0); }

#define REQUIRE_GPU() \
  if (!gpu_everywhere()) GTEST_SKIP() << "no GPU on every rank: " << device::no_device_reason()

std::byte value(std::uint32_t tensor, std::uint64_t byte, int version) {
  return static_cast<std::byte>(mix64((std::uint64_t{tensor} << 40) ^ (byte * 0x9e3779b97f4a7c15ULL) ^
                                      (static_cast<std::uint64_t>(version) * 0xd6e8feb86659fd93ULL + 7)));
}

std::vector<TensorSpec> tensors() {
  return {{"scalar", {}, DType::f32}, {"odd", {3, 7}, DType::f16}, {"page_plus", {1025}, DType::f32},
          {"big", {1 << 20, 3}, DType::f16}, {"wide", {4096, 129}, DType::f32}};
}

SessionOptions options_in(const std::string& dir) {
  SessionOptions o;
  o.roots = {dir + "/root"};
  o.catalog_dir = dir + "/catalog";
  o.job = "gpu";
  o.plan.policy = Policy::sharded;
  o.buffer_count = 3;
  o.buffer_size = 256 << 10;  // smaller than the big tensors: they go through in pieces
  o.phase_timeout_s = 60;
  return o;
}

// This rank's pieces in GPU memory (one allocation each) with host copies to compare.
struct GpuPieces {
  int gpu = 0;
  std::vector<std::uint32_t> ids;
  std::vector<DeviceMemory> memory;
  std::vector<TensorView> views;
  std::vector<std::uint64_t> first_byte;

  explicit GpuPieces(const SwapSession& s) {
    gpu = device::device_for_local_rank(s.topology().local_rank(), "test");
    for (const PlanPiece& p : s.local_pieces()) {
      const DType dtype = s.tensors()[p.tensor].dtype;
      ids.push_back(p.tensor);
      memory.emplace_back(gpu, p.bytes);
      views.push_back({memory.back().data(), p.numel, dtype, Device::cuda(gpu)});
      first_byte.push_back(p.element_offset * dtype_size(dtype));
    }
  }
  std::vector<std::byte> expected(std::size_t i, int version) const {
    std::vector<std::byte> bytes(views[i].size_bytes());
    for (std::size_t b = 0; b < bytes.size(); ++b) bytes[b] = value(ids[i], first_byte[i] + b, version);
    return bytes;
  }
  void upload(int version) {
    for (std::size_t i = 0; i < views.size(); ++i) memory[i].copy_from_host(0, expected(i, version));
  }
  void clear() {
    for (auto& m : memory) m.zero();
  }
  std::uint64_t wrong(int version) const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < views.size(); ++i) {
      std::vector<std::byte> got(views[i].size_bytes());
      memory[i].copy_to_host(0, got);
      const auto want = expected(i, version);
      for (std::size_t b = 0; b < got.size(); ++b) n += got[b] != want[b];
    }
    return n;
  }
};

TEST(GpuSession, DeviceTensorsRoundTripWithChecksumsPrefetchAndCommit) {
  REQUIRE_GPU();
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto s = SwapSession::create(MPI_COMM_WORLD, tensors(), options_in(dir.path()));
  GpuPieces gpu(s);
  gpu.upload(1);
  const auto out = s.swap_out(gpu.ids, gpu.views);
  gpu.clear();
  const auto in = s.swap_in(gpu.ids, gpu.views);  // checksums verified (options.verify)
  EXPECT_EQ(out.bytes, in.bytes);
  EXPECT_EQ(gpu.wrong(1), 0u);
  EXPECT_EQ(s.commit(), 0);
  // Prefetched into pinned memory, then copied to the GPU.
  gpu.clear();
  s.prefetch(gpu.ids).wait();
  EXPECT_GT(s.swap_in(gpu.ids, gpu.views).prefetched_bytes + (gpu.ids.empty() ? 1 : 0), 0u);
  EXPECT_EQ(gpu.wrong(1), 0u);
  // Host and device views in one call: every other piece in host memory.
  gpu.upload(2);
  std::vector<std::vector<std::byte>> host(gpu.ids.size());
  std::vector<TensorView> mixed = gpu.views;
  for (std::size_t i = 0; i < mixed.size(); i += 2) {
    host[i] = gpu.expected(i, 2);
    mixed[i] = {host[i].data(), mixed[i].numel, mixed[i].dtype, Device::cpu()};
  }
  s.swap_out(gpu.ids, mixed);
  gpu.clear();
  s.swap_in(gpu.ids, gpu.views);
  EXPECT_EQ(gpu.wrong(2), 0u);
  EXPECT_EQ(s.commit(), 1);
  s.remove_files();
}

TEST(GpuSession, NcclAllGatherRebuildsShardedTensorsOnEveryGpu) {
  REQUIRE_GPU();
  const Topology topo = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"."});
  if (!device::nccl_built()) GTEST_SKIP() << "swapcoord was built without NCCL";
  if (!all_ranks(topo.local_size() <= device::visible_device_count()))
    GTEST_SKIP() << "NCCL needs one GPU per rank: " << topo.local_size() << " ranks on a node with "
                 << device::visible_device_count() << " GPU(s)";
  SharedTempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto s = SwapSession::create(MPI_COMM_WORLD, tensors(), options_in(dir.path()));
  GpuPieces gpu(s);
  gpu.upload(3);
  s.swap_out(gpu.ids, gpu.views);
  gpu.clear();
  s.swap_in(gpu.ids, gpu.views);
  device::NcclComm nccl(MPI_COMM_WORLD, gpu.gpu, std::chrono::seconds(60));
  std::map<std::uint32_t, std::size_t> index;
  for (std::size_t i = 0; i < gpu.ids.size(); ++i) index[gpu.ids[i]] = i;
  for (std::uint32_t t = 0; t < s.tensors().size(); ++t) {
    const std::vector<TensorShard> pieces = s.plan().shards_of(t, s.tensors()[t]);
    const std::size_t bytes = s.tensors()[t].size_bytes();
    DeviceMemory full(gpu.gpu, bytes);
    std::span<const std::byte> local;
    if (auto it = index.find(t); it != index.end()) local = {gpu.views[it->second].bytes(), gpu.views[it->second].size_bytes()};
    nccl.allgather_tensor(pieces, dtype_size(s.tensors()[t].dtype), local, {full.data(), bytes});
    std::vector<std::byte> got(bytes);
    full.copy_to_host(0, got);
    std::uint64_t wrong = 0;
    for (std::size_t b = 0; b < bytes; ++b) wrong += got[b] != value(t, b, 3);
    EXPECT_EQ(wrong, 0u) << s.tensors()[t].name;
  }
  s.remove_files();
}

TEST(GpuSession, NcclRefusesTwoRanksOnOneGpuNamingBoth) {
  REQUIRE_GPU();
  const Topology topo = Topology::discover(MPI_COMM_WORLD, NodeKey::parse("shared"), {"."});
  if (!device::nccl_built()) GTEST_SKIP() << "swapcoord was built without NCCL";
  if (!all_ranks(topo.local_size() > device::visible_device_count()))
    GTEST_SKIP() << "every rank has a GPU of its own";
  const int gpu = device::device_for_local_rank(topo.local_rank(), "test");
  const std::string message = expect_throw_on_all_ranks<Error>(
      [&] { device::NcclComm nccl(MPI_COMM_WORLD, gpu, std::chrono::seconds(30)); });
  EXPECT_NE(message.find("would share the GPU"), std::string::npos) << message;
}

}  // namespace
}  // namespace swapcoord::test
