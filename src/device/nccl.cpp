// NcclComm with NCCL: a non-blocking communicator bootstrapped from MPI, every call
// polled against the deadline.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <thread>

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
    int previous = 0;
    (void)cudaGetDevice(&previous);
    (void)cudaSetDevice(device);
    if (comm != nullptr) {
      const ncclResult_t finalize = broken ? ncclInternalError : ncclCommFinalize(comm);
      bool clean = finalize == ncclSuccess || finalize == ncclInProgress;
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
    (void)cudaSetDevice(previous);
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

int NcclComm::rank() const noexcept { return _impl->rank; }
int NcclComm::size() const noexcept { return _impl->size; }
int NcclComm::device() const noexcept { return _impl->device; }

void NcclComm::allgather_tensor(std::span<const PlanPiece> pieces, std::size_t element_size,
                                std::span<const std::byte> local, std::span<std::byte> full) {
  Impl& s = *_impl;
  if (s.broken)
    throw Error(fmt::format("{}: NCCL: the communicator failed earlier and was aborted; make a new one", who()));
  std::uint64_t own = 0;
  bool equal = static_cast<int>(pieces.size()) == s.size;
  for (const auto& p : pieces) {
    const std::uint64_t offset = p.element_offset * element_size;
    if (p.owner < 0 || p.owner >= s.size)
      throw Error(fmt::format("{}: NCCL allgather_tensor: shard {} of tensor {} has owner {} (ranks 0-{})", who(),
                              p.shard, p.tensor, p.owner, s.size - 1));
    if (offset + p.bytes > full.size())
      throw Error(fmt::format("{}: NCCL allgather_tensor: shard {} of tensor {} ends at byte {}, past the {}-byte "
                              "output", who(), p.shard, p.tensor, offset + p.bytes, full.size()));
    if (p.owner == s.rank) own = p.bytes;
    equal = equal && p.bytes == pieces.front().bytes && offset == static_cast<std::uint64_t>(p.owner) * p.bytes;
  }
  const auto [bad, problem] = first_message(
      s.mpi.get(), own != local.size() ? fmt::format("{}: NCCL allgather_tensor: rank {} passes {} bytes but owns a "
                                                     "shard of {}", who(), s.rank, local.size(), own)
                                       : std::string());
  if (bad >= 0) throw Error(problem);
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
  for (const auto& p : pieces) {
    std::byte* at = full.data() + p.element_offset * element_size;
    s.check(ncclBroadcast(p.owner == s.rank ? static_cast<const void*>(local.data()) : at, at, p.bytes, ncclUint8,
                          p.owner, s.comm, s.stream),
            "ncclBroadcast", what);
  }
  s.check(ncclGroupEnd(), "ncclGroupEnd", what);
  s.wait_comm("ncclGroupEnd", what, deadline);
  s.wait_stream("ncclBroadcast (grouped)", what, deadline);
}

}  // namespace swapcoord::device
