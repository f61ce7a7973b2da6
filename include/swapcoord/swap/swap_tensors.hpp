#pragma once
// swap_out_tensors / swap_in_tensors (DeepSpeed's functions of the same names): move a
// batch of tensors to or from their swap locations, all requests submitted at once,
// one wait, every result checked. Each view's bytes must equal its location's bytes
// (use the swap view of a SwapBuffer entry, whose size is aligned).
#include <span>

#include "swapcoord/common/tensor_view.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_location.hpp"

namespace swapcoord {

// Start the batch and return; wait on the ticket (`engine.wait(std::move(ticket))`, or
// drop it, which waits too) before touching the views.
IoTicket submit_swap_out(IoEngine& engine, std::span<const TensorView> views,
                         std::span<const SwapLocation> locations);
IoTicket submit_swap_in(IoEngine& engine, std::span<const TensorView> views,
                        std::span<const SwapLocation> locations);

IoBatchResult swap_out_tensors(IoEngine& engine, std::span<const TensorView> views,
                               std::span<const SwapLocation> locations);
IoBatchResult swap_in_tensors(IoEngine& engine, std::span<const TensorView> views,
                              std::span<const SwapLocation> locations);

}  // namespace swapcoord
