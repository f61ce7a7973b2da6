// NcclComm in a build without NCCL: the constructor says why it cannot be had.
#include <fmt/format.h>

#include "swapcoord/device/nccl.hpp"

namespace swapcoord::device {

struct NcclComm::Impl {};

NcclComm::NcclComm(MPI_Comm, int, std::chrono::milliseconds) {
  throw Error(fmt::format("NCCL all-gather: swapcoord was built without {} (the MPI all-gather works on host "
                          "memory)", cuda_built() ? "NCCL" : "CUDA and NCCL"));
}
NcclComm::NcclComm(NcclComm&&) noexcept = default;
NcclComm& NcclComm::operator=(NcclComm&&) noexcept = default;
NcclComm::~NcclComm() = default;
int NcclComm::rank() const noexcept { return -1; }
int NcclComm::size() const noexcept { return 0; }
int NcclComm::device() const noexcept { return -1; }
void NcclComm::allgather_tensor(std::span<const TensorShard>, std::size_t, std::span<const std::byte>, std::span<std::byte>) {
  throw Error("NCCL all-gather: swapcoord was built without NCCL");
}

}  // namespace swapcoord::device
