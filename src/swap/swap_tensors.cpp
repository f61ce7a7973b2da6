#include "swapcoord/swap/swap_tensors.hpp"

#include <vector>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord {
namespace {

IoTicket submit(IoEngine& engine, IoOp op, std::span<const TensorView> views,
                std::span<const SwapLocation> locations) {
  if (views.size() != locations.size())
    throw Error(fmt::format("swap_{}_tensors: {} tensors but {} locations",
                            op == IoOp::write ? "out" : "in", views.size(), locations.size()));
  // Reused per thread so that the steady state does not allocate.
  thread_local std::vector<IoRequest> requests;
  requests.clear();
  // Emptied on the way out (capacity kept), so that no file reference outlives the call.
  struct Clear {
    std::vector<IoRequest>& list;
    ~Clear() { list.clear(); }
  } clear_on_return{requests};
  for (std::size_t i = 0; i < views.size(); ++i) {
    if (!views[i].device.is_cpu())
      throw Error(fmt::format("swap_{}_tensors: tensor {} is on {}; stage it in host memory first",
                              op == IoOp::write ? "out" : "in", i, to_string(views[i].device)));
    if (views[i].numel == 0 && locations[i].bytes == 0) continue;  // nothing to move
    requests.push_back(to_request(op, locations[i], views[i].data, views[i].size_bytes()));
  }
  return engine.submit(requests);
}

}  // namespace

IoTicket submit_swap_out(IoEngine& engine, std::span<const TensorView> views,
                         std::span<const SwapLocation> locations) {
  return submit(engine, IoOp::write, views, locations);
}

IoTicket submit_swap_in(IoEngine& engine, std::span<const TensorView> views,
                        std::span<const SwapLocation> locations) {
  return submit(engine, IoOp::read, views, locations);
}

IoBatchResult swap_out_tensors(IoEngine& engine, std::span<const TensorView> views,
                               std::span<const SwapLocation> locations) {
  return engine.wait(submit_swap_out(engine, views, locations));
}

IoBatchResult swap_in_tensors(IoEngine& engine, std::span<const TensorView> views,
                              std::span<const SwapLocation> locations) {
  return engine.wait(submit_swap_in(engine, views, locations));
}

}  // namespace swapcoord
