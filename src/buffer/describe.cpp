#include "swapcoord/buffer/describe.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/buffer/swap_buffer_pool.hpp"
#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/swap_file.hpp"

namespace swapcoord {
namespace {

using Fields = std::vector<std::pair<std::string_view, std::string>>;

// "Name:\n  field ....... value\n" per field not excluded, names padded to one column.
std::string format(std::string_view title, const Fields& fields, Exclude exclude) {
  std::size_t width = 0;
  for (const auto& [name, value] : fields) width = std::max(width, name.size());
  std::string out = fmt::format("{}:\n", title);
  for (const auto& [name, value] : fields) {
    if (std::find(exclude.begin(), exclude.end(), name) != exclude.end()) continue;
    out += fmt::format("  {} {} {}\n", name, std::string(width + 3 - name.size(), '.'), value);
  }
  return out;
}

std::string path_of(const SwapLocation& location) {
  return location.file ? location.file->path() : std::string("(none)");
}

std::string yes_no(bool value) { return value ? "yes" : "no"; }

}  // namespace

std::string describe(const TensorView& v, Exclude exclude) {
  return format("TensorView",
                {{"data", fmt::format("{}", v.data)},
                 {"numel", std::to_string(v.numel)},
                 {"dtype", std::string(dtype_name(v.dtype))},
                 {"device", to_string(v.device)},
                 {"size_bytes", std::to_string(v.size_bytes())}},
                exclude);
}

std::string describe(const SwapLocation& l, Exclude exclude) {
  return format("SwapLocation",
                {{"file", path_of(l)},
                 {"offset", std::to_string(l.offset)},
                 {"bytes", std::to_string(l.bytes)}},
                exclude);
}

std::string describe(const AioConfig& c, Exclude exclude) {
  return format("AioConfig",
                {{"block_size", std::to_string(c.block_size)},
                 {"queue_depth", std::to_string(c.queue_depth)},
                 {"intra_op_parallelism", std::to_string(c.intra_op_parallelism)},
                 {"single_submit", yes_no(c.single_submit)},
                 {"overlap_events", yes_no(c.overlap_events)},
                 {"direct", std::string(to_string(c.direct))},
                 {"fsync", yes_no(c.fsync)}},
                exclude);
}

std::string describe(const PinnedAllocation& m, Exclude exclude) {
  return format("PinnedAllocation",
                {{"data", fmt::format("{}", static_cast<void*>(m.data()))},
                 {"size_bytes", std::to_string(m.size_bytes())},
                 {"kind", std::string(to_string(m.kind()))},
                 {"locked", yes_no(m.locked())},
                 {"huge_pages", yes_no(m.huge_pages())}},
                exclude);
}

std::string describe(const SwapBuffer& b, Exclude exclude) {
  std::string entries;
  for (const auto& e : b.entries())
    entries += fmt::format("\n    [{}] numel {} aligned {} -> '{}' @ {} ({} bytes)", e.offset_numel,
                           e.compute.numel, e.swap.numel, path_of(e.location), e.location.offset,
                           e.location.bytes);
  return format("SwapBuffer",
                {{"data", fmt::format("{}", b.buffer().data)},
                 {"dtype", std::string(dtype_name(b.dtype()))},
                 {"alignment_bytes", std::to_string(b.alignment_bytes())},
                 {"capacity_numel", std::to_string(b.capacity_numel())},
                 {"used_numel", std::to_string(b.used_numel())},
                 {"count", std::to_string(b.count())},
                 {"entries", entries.empty() ? std::string("(none)") : entries}},
                exclude);
}

std::string describe(const SwapBufferPool& p, Exclude exclude) {
  std::string used;
  for (const auto& b : p.buffers())
    used += fmt::format("{}{}/{}", used.empty() ? "" : " ", b.used_numel(), b.capacity_numel());
  return format("SwapBufferPool",
                {{"buffers", std::to_string(p.buffers().size())},
                 {"current", std::to_string(p.current())},
                 {"count", std::to_string(p.count())},
                 {"used_numel", used}},
                exclude);
}

std::string describe(const SwapBufferManager& m, Exclude exclude) {
  return format("SwapBufferManager",
                {{"num_elems", std::to_string(m.num_elems())},
                 {"count", std::to_string(m.count())},
                 {"dtype", std::string(dtype_name(m.dtype()))},
                 {"free_count", std::to_string(m.free_count())},
                 {"used_count", std::to_string(m.used_count())},
                 {"gigabytes", fmt::format("{:.3f}", m.gigabytes())},
                 {"memory", std::string(to_string(m.memory().kind()))}},
                exclude);
}

}  // namespace swapcoord
