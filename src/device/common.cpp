// The parts of the device layer that need no CUDA.
#include <mpi.h>

#include <atomic>

#include <fmt/format.h>

#include "swapcoord/common/host.hpp"
#include "swapcoord/device/device.hpp"

namespace swapcoord::device {

namespace {
std::atomic<int> remembered_rank{-1};
}  // namespace

void remember_rank() noexcept {
  if (remembered_rank.load() >= 0) return;
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  int rank = -1;
  if (initialised && !finalised && MPI_Comm_rank(MPI_COMM_WORLD, &rank) == MPI_SUCCESS) remembered_rank.store(rank);
}

std::string who() {
  const int rank = remembered_rank.load();
  return rank >= 0 ? fmt::format("rank {}@{}", rank, host_name()) : host_name();
}

void require_device(const std::string& what) {
  if (visible_device_count() == 0)
    throw Error(fmt::format("{}: no CUDA device is visible ({})", what, no_device_reason()));
}

int device_for_local_rank(int local_rank, const std::string& what) {
  require_device(what);
  return local_rank % visible_device_count();
}

}  // namespace swapcoord::device
