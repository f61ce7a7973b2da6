// NcclComm with NCCL: a non-blocking communicator bootstrapped from MPI, every call
// polled against the deadline.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cuda_check.hpp"
#include "swapcoord/common/host.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/device/nccl.hpp"

namespace swapcoord::device {
namespace {

using Clock = std::chrono::steady_clock;

std::string nccl_text(ncclResult_t rc, ncclComm_t comm) {
  std::string text = fmt::format("{} (ncclResult_t {})", ncclGetErrorString(rc), static_cast<int>(rc));
  if (const char* last = ncclGetLastError(comm); last != nullptr && *last != '\0') text += fmt::format(": {}", last);
  return text;
}

}  // namespace

struct NcclComm::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int rank = 0, size = 0, device = -1;
  std::chrono::milliseconds timeout{0};
  bool broken = false;  // a call failed or timed out: abort, do not finalise
  Comm mpi;             // for the agreement checks

  ~Impl() {
    if (device < 0) return;
    DeviceGuard guard(device, std::nothrow);
    if (comm != nullptr) {
      // ncclCommFinalize waits for every rank to finalise too: only when all is well. After
      // a failure, or while an exception unwinds this rank (its peers may never finalise),
      // abort at once.
      bool clean = !broken && std::uncaught_exceptions() == 0 && guard.ok();
      if (clean) {
        const ncclResult_t finalize = ncclCommFinalize(comm);
        clean = finalize == ncclSuccess || finalize == ncclInProgress;
      }
      const auto deadline = Clock::now() + timeout;
      ncclResult_t state = ncclInProgress;
      while (clean && ncclCommGetAsyncError(comm, &state) == ncclSuccess && state == ncclInProgress) {
        if (Clock::now() > deadline) clean = false;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (clean && state == ncclSuccess) (void)ncclCommDestroy(comm);
      else (void)ncclCommAbort(comm);
    }
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }

  [[noreturn]] void fail(const char* call, const std::string& what, ncclResult_t rc) {
    broken = true;
    throw NcclError(fmt::format("{}: {} ({}): {}", who(), call, what, nccl_text(rc, comm)), call, static_cast<int>(rc));
  }
  void check(ncclResult_t rc, const char* call, const std::string& what) {
    if (rc != ncclSuccess && rc != ncclInProgress) fail(call, what, rc);
  }
  [[noreturn]] void timed_out(const char* call, const std::string& what) {
    broken = true;
    throw NcclError(fmt::format("{}: {} ({}): not done after {:.1f} s; a rank stopped responding (the "
                                "communicator is aborted)", who(), call, what, timeout.count() / 1000.0),
                    call, static_cast<int>(ncclInProgress));
  }
  // A non-blocking call returned: wait until the communicator has taken it.
  void wait_comm(const char* call, const std::string& what, Clock::time_point deadline) {
    for (;;) {
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm, &state), "ncclCommGetAsyncError", what);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(call, what, state);
      if (Clock::now() > deadline) timed_out(call, what);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  // The stream's work (the collective) is done; NCCL errors and the deadline end the wait.
  void wait_stream(const char* call, const std::string& what, Clock::time_point deadline) {
    for (;;) {
      const cudaError_t rc = cudaStreamQuery(stream);
      if (rc == cudaSuccess) return;
      if (rc != cudaErrorNotReady) {
        broken = true;
        cuda_check(rc, "cudaStreamQuery", fmt::format("{} on device {}", call, device));
      }
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm, &state), "ncclCommGetAsyncError", what);
      if (state != ncclSuccess && state != ncclInProgress) fail(call, what, state);
      if (Clock::now() > deadline) timed_out(call, what);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
};

NcclComm::NcclComm(MPI_Comm comm, int device, std::chrono::milliseconds timeout) : _impl(std::make_unique<Impl>()) {
  remember_rank();
  Impl& s = *_impl;
  s.mpi = Comm::dup(comm);
  s.rank = s.mpi.rank();
  s.size = s.mpi.size();
  s.timeout = timeout;
  // Every rank learns the first rank that cannot take part, and why.
  std::string problem;
  std::array<char, 64> bus{};
  if (visible_device_count() == 0) {
    problem = fmt::format("{}: NCCL: no CUDA device is visible ({})", who(), no_device_reason());
  } else if (device < 0 || device >= visible_device_count()) {
    problem = fmt::format("{}: NCCL: device {} is not one of the {} visible", who(), device, visible_device_count());
  } else if (const cudaError_t rc = cudaDeviceGetPCIBusId(bus.data(), static_cast<int>(bus.size()), device);
             rc != cudaSuccess) {
    problem = fmt::format("{}: cudaDeviceGetPCIBusId (device {}): {}", who(), device, cuda_text(rc));
  }
  if (const auto [bad, message] = first_message(s.mpi.get(), problem); bad >= 0) throw Error(message);
  // Two ranks on one GPU: NCCL would refuse with "Duplicate GPU detected"; say which.
  const std::string mine = fmt::format("{}|{}", host_name(), bus.data());
  std::vector<char> all(static_cast<std::size_t>(s.size) * 128, '\0');
  std::array<char, 128> own{};
  std::memcpy(own.data(), mine.data(), std::min(mine.size(), own.size() - 1));
  mpi_check(MPI_Allgather(own.data(), 128, MPI_CHAR, all.data(), 128, MPI_CHAR, s.mpi.get()), "MPI_Allgather (GPUs)");
  for (int r = 0; r < s.size; ++r)
    for (int q = 0; q < r; ++q)
      if (std::strcmp(&all[static_cast<std::size_t>(r) * 128], &all[static_cast<std::size_t>(q) * 128]) == 0)
        throw Error(fmt::format("NCCL: ranks {} and {} would share the GPU {} (NCCL needs one GPU per rank; "
                                "start at most as many ranks per node as it has GPUs)", q, r,
                                &all[static_cast<std::size_t>(r) * 128]));
  struct {
    int rc;
    ncclUniqueId id;
  } hello{};
  if (s.rank == 0) hello.rc = static_cast<int>(ncclGetUniqueId(&hello.id));
  mpi_check(MPI_Bcast(&hello, sizeof hello, MPI_BYTE, 0, s.mpi.get()), "MPI_Bcast (NCCL unique id)");
  if (hello.rc != ncclSuccess)
    throw NcclError(fmt::format("NCCL: ncclGetUniqueId on rank 0: {}", nccl_text(static_cast<ncclResult_t>(hello.rc), nullptr)),
                    "ncclGetUniqueId", hello.rc);
  problem.clear();
  try {
    DeviceGuard guard(device);
    s.device = device;
    cuda_check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags",
               fmt::format("device {}", device));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const std::string what = fmt::format("rank {} of {} on device {}", s.rank, s.size, device);
    s.check(ncclCommInitRankConfig(&s.comm, s.size, hello.id, s.rank, &config), "ncclCommInitRankConfig", what);
    s.wait_comm("ncclCommInitRankConfig", what, Clock::now() + timeout);
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (const auto [bad, message] = first_message(s.mpi.get(), problem); bad >= 0) {
    s.broken = true;
    throw NcclError(message, "ncclCommInitRankConfig", static_cast<int>(ncclInternalError));
  }
}

NcclComm::NcclComm(NcclComm&&) noexcept = default;
NcclComm& NcclComm::operator=(NcclComm&&) noexcept = default;
NcclComm::~NcclComm() = default;

int NcclComm::rank() const noexcept { return _impl ? _impl->rank : -1; }
int NcclComm::size() const noexcept { return _impl ? _impl->size : 0; }
int NcclComm::device() const noexcept { return _impl ? _impl->device : -1; }

void NcclComm::allgather_tensor(std::span<const TensorShard> pieces_in, std::size_t element_size,
                                std::span<const std::byte> local, std::span<std::byte> full) {
  if (!_impl) throw Error("NcclComm: used after it was moved from");
  Impl& s = *_impl;
  if (s.broken)
    throw Error(fmt::format("{}: NCCL: the communicator failed earlier and was aborted; make a new one", who()));
  // Every rank must issue the grouped broadcasts in the same order: by owner.
  std::vector<TensorShard> pieces(pieces_in.begin(), pieces_in.end());
  std::sort(pieces.begin(), pieces.end(), [](const TensorShard& a, const TensorShard& b) { return a.owner < b.owner; });
  // What is wrong on one rank is agreed on by all before any NCCL call (a rank that threw
  // alone would leave the others waiting in the collective).
  std::string problem;
  std::uint64_t own = 0;
  bool equal = static_cast<int>(pieces.size()) == s.size;
  for (std::size_t i = 0; i < pieces.size() && problem.empty(); ++i) {
    const TensorShard& p = pieces[i];
    const std::uint64_t offset = p.element_offset * element_size;
    if (p.owner < 0 || p.owner >= s.size || (i > 0 && pieces[i - 1].owner == p.owner))
      problem = fmt::format("{}: NCCL allgather_tensor: shard {} of tensor {} has owner {} (ranks 0-{}, one piece "
                            "each)", who(), p.shard, p.tensor, p.owner, s.size - 1);
    else if (offset + p.bytes > full.size())
      problem = fmt::format("{}: NCCL allgather_tensor: shard {} of tensor {} ends at byte {}, past the {}-byte output",
                            who(), p.shard, p.tensor, offset + p.bytes, full.size());
    if (p.owner == s.rank) own = p.bytes;
    equal = equal && p.bytes == pieces.front().bytes && offset == static_cast<std::uint64_t>(p.owner) * p.bytes;
  }
  if (problem.empty() && own != local.size())
    problem = fmt::format("{}: NCCL allgather_tensor: rank {} passes {} bytes but owns a shard of {}", who(), s.rank,
                          local.size(), own);
  if (problem.empty()) {
    try {  // NCCL would refuse host memory on this rank alone, the others waiting out the deadline
      check_device_pointer(local.data(), local.size(), s.device, "NCCL allgather_tensor: the local piece");
      check_device_pointer(full.data(), full.size(), s.device, "NCCL allgather_tensor: the output");
    } catch (const Error& e) {
      problem = fmt::format("{}: {}", who(), e.what());
    }
  }
  if (const auto [bad, message] = first_message(s.mpi.get(), problem); bad >= 0) throw Error(message);
  DeviceGuard guard(s.device);
  const std::string what = fmt::format("{} bytes of tensor {} in {} pieces, rank {} of {}", full.size(),
                                       pieces.empty() ? 0 : pieces.front().tensor, pieces.size(), s.rank, s.size);
  const auto deadline = Clock::now() + s.timeout;
  if (equal && !pieces.empty()) {
    s.check(ncclAllGather(local.data(), full.data(), pieces.front().bytes, ncclUint8, s.comm, s.stream), "ncclAllGather",
            what);
    s.wait_comm("ncclAllGather", what, deadline);
    s.wait_stream("ncclAllGather", what, deadline);
    return;
  }
  s.check(ncclGroupStart(), "ncclGroupStart", what);
  try {
    for (const auto& p : pieces) {
      std::byte* at = full.data() + p.element_offset * element_size;
      s.check(ncclBroadcast(p.owner == s.rank ? static_cast<const void*>(local.data()) : at, at, p.bytes, ncclUint8,
                            p.owner, s.comm, s.stream),
              "ncclBroadcast", what);
    }
  } catch (...) {
    (void)ncclGroupEnd();  // the group must be closed, or later NCCL calls of this thread wait for it
    throw;
  }
  s.check(ncclGroupEnd(), "ncclGroupEnd", what);
  s.wait_comm("ncclGroupEnd", what, deadline);
  s.wait_stream("ncclBroadcast (grouped)", what, deadline);
}

}  // namespace swapcoord::device
