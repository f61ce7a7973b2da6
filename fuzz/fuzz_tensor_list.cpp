// libFuzzer target: the tensor-list parser of `swapcoord run --tensors` (load_tensor_list,
// apps/swapcoord/model.hpp) and the partitioner that consumes its result (make_plan,
// swapcoord/coord/plan.hpp).
//
// Input: the text of a tensor-list file ({"tensors": [{"name", "shape", "dtype"}, ...]} or
// the bare list), written to a temporary file. The first byte of the input also picks what
// is swapped (params, optimizer, both) and the parameter dtype of entries that name none,
// so the seeds stay plain JSON. A list that parses is planned with each policy and layout
// on 2 nodes x 2 ranks (2 roots per node); a plan must account for every element of every
// tensor, and every piece must lie inside its file at an aligned offset.
// Clean outcomes: success or swapcoord::Error (fuzz_support.hpp).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "fuzz_support.hpp"
#include "model.hpp"
#include "swapcoord/coord/plan.hpp"

namespace {

constexpr const char* kTarget = "fuzz_tensor_list";

void check_plan(const swapcoord::SwapPlan& plan, const std::vector<swapcoord::TensorSpec>& tensors) {
  auto fail = [&](const std::string& what) { swapcoord::fuzz::finding(kTarget, "make_plan: " + what); };
  std::vector<std::uint64_t> covered(tensors.size(), 0);
  const std::uint64_t alignment = plan.options.alignment_bytes;
  for (const auto& p : plan.pieces) {
    if (p.tensor >= tensors.size()) fail(fmt::format("a piece of tensor {} of {}", p.tensor, tensors.size()));
    if (p.file >= plan.files.size()) fail(fmt::format("a piece in file {} of {}", p.file, plan.files.size()));
    const auto& t = tensors[p.tensor];
    if (p.bytes != p.numel * swapcoord::dtype_size(t.dtype) || p.aligned_bytes < p.bytes ||
        p.aligned_bytes % alignment != 0 || p.offset % alignment != 0)
      fail(fmt::format("piece of '{}': {} elements, {} bytes, {} aligned, offset {}", t.name, p.numel, p.bytes,
                       p.aligned_bytes, p.offset));
    if (p.offset > plan.files[p.file].size_bytes || p.aligned_bytes > plan.files[p.file].size_bytes - p.offset)
      fail(fmt::format("piece of '{}' at {} + {} outside its file of {} bytes", t.name, p.offset, p.aligned_bytes,
                       plan.files[p.file].size_bytes));
    if (p.element_offset != covered[p.tensor] && plan.options.policy != swapcoord::Policy::sharded)
      fail(fmt::format("piece of '{}' at element {}, expected {}", t.name, p.element_offset, covered[p.tensor]));
    covered[p.tensor] += p.numel;
  }
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (covered[i] != tensors[i].numel())
      fail(fmt::format("tensor {} ('{}'): pieces hold {} of {} elements", i, tensors[i].name, covered[i],
                       tensors[i].numel()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  swapcoord::fuzz::quiet_log();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const unsigned pick = size > 0 ? data[0] : 0;
  const auto what = static_cast<swapcoord::app::SwapWhat>(pick % 3);
  const std::optional<swapcoord::DType> dtype =
      (pick / 3) % 3 == 0 ? std::nullopt
                          : std::optional<swapcoord::DType>((pick / 3) % 3 == 1 ? swapcoord::DType::f16
                                                                                : swapcoord::DType::bf16);
  const swapcoord::fuzz::TempFile file(data, size);
  std::vector<swapcoord::TensorSpec> tensors;
  swapcoord::fuzz::expect_clean(kTarget, [&] { tensors = swapcoord::app::load_tensor_list(file.path(), what, dtype); });
  if (tensors.empty()) return 0;
  const auto topology = swapcoord::PlanTopology::uniform(2, 2, 2);
  for (auto policy : {swapcoord::Policy::balanced, swapcoord::Policy::sharded, swapcoord::Policy::round_robin}) {
    for (auto layout : {swapcoord::Layout::slab, swapcoord::Layout::file_per_tensor}) {
      swapcoord::fuzz::expect_clean(kTarget, [&] {
        swapcoord::PlanOptions options;
        options.policy = policy;
        options.layout = layout;
        const swapcoord::SwapPlan plan = swapcoord::make_plan(tensors, topology, options);
        check_plan(plan, tensors);
        for (const auto& f : plan.files) (void)swapcoord::file_relative_path(f, "job", 1);
        // Each rank's own plan is its part of the whole one, with the same fingerprint.
        for (int r = 0; r < topology.world_size; ++r) {
          const swapcoord::SwapPlan one = swapcoord::make_plan(tensors, topology, options, r);
          const auto all = plan.pieces_of(r);
          if (one.fingerprint() != plan.fingerprint() ||
              !std::equal(one.pieces.begin(), one.pieces.end(), all.begin(), all.end()))
            swapcoord::fuzz::finding(kTarget, fmt::format("make_plan: rank {}'s own plan differs from its part of the "
                                                          "whole plan ({} and {} pieces)", r, one.pieces.size(), all.size()));
        }
      });
    }
  }
  return 0;
}
