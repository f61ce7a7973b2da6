#pragma once
// NCCL on GPU memory: the device counterpart of allgather_tensor (coord/topology.hpp).
// After a sharded swap-in into GPU memory, every rank rebuilds whole tensors on its GPU.
//
// The communicator is bootstrapped from MPI (rank 0 makes the unique id and broadcasts
// it) and is non-blocking: NCCL's initialisation and every collective are polled against
// a deadline, so a rank that died or never came ends the NCCL call with an NcclError
// naming the call and the timeout (and the communicator is aborted) instead of a hang.
// The MPI exchanges around them (the bootstrap, and the agreement on errors before each
// collective) are plain MPI collectives, as the session's start-up exchanges: a caller
// that must not wait on a dead peer there runs them under a Watchdog (coord/watchdog.hpp),
// as `swapcoord run` does.
// Built without NCCL (or CUDA), the constructor throws Error saying so.
#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>

#include "swapcoord/coord/plan.hpp"
#include "swapcoord/device/device.hpp"

namespace swapcoord::device {

class NcclComm {
 public:
  // Collective over `comm`: every rank joins with its GPU `device` (see
  // device_for_local_rank; two ranks may not share a GPU: NCCL refuses, and so does this,
  // naming both ranks). `timeout` bounds every call of this object.
  NcclComm(MPI_Comm comm, int device, std::chrono::milliseconds timeout);
  NcclComm(NcclComm&&) noexcept;
  NcclComm& operator=(NcclComm&&) noexcept;
  ~NcclComm();  // ncclCommFinalize + ncclCommDestroy; ncclCommAbort after a failed call or
                // while an exception unwinds (peers may never finalise)

  int rank() const noexcept;
  int size() const noexcept;
  int device() const noexcept;

  // Collective: `pieces` are all the pieces of one tensor (the same on every rank, in any
  // order; at most one per rank: SwapPlan::shards_of), `local` this rank's piece in device memory (empty when it
  // owns none), `full` the whole tensor in device memory on this rank's GPU. Equal
  // shards in rank order go through ncclAllGather, anything else through grouped
  // ncclBroadcasts (an all-gather-v). Returns when `full` is complete on this rank.
  // A rank that passes a wrong size makes every rank throw Error naming it.
  void allgather_tensor(std::span<const TensorShard> pieces, std::size_t element_size,
                        std::span<const std::byte> local, std::span<std::byte> full);

  struct Impl;

 private:
  std::unique_ptr<Impl> _impl;
};

}  // namespace swapcoord::device
