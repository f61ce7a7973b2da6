// libFuzzer targets: the catalog loader (load_catalog, swapcoord/catalog/catalog.hpp) and
// the index that resume builds over what it loaded (CatalogIndex). One source, two targets:
//   fuzz_catalog            TrailerCheck::required, as resume and `swapcoord inspect` load:
//                           a damaged file must be refused, by the trailer check or (when
//                           its trailer is right) by the loader's own checks;
//   fuzz_catalog_unchecked  TrailerCheck::skip (built with SWAPCOORD_FUZZ_UNCHECKED):
//                           malformed files reach libhdf5. A sealed file reaches it the same
//                           way (the trailer is a checksum, not a signature). libhdf5 1.10.8
//                           is not hardened against such files: see fuzz/findings/README.md.
// Input: the bytes of a catalog file, written to a temporary file (HDF5 reads files). A
// catalog that loads is indexed with a model made from its own rows, every tensor located.
// Clean outcomes: success or swapcoord::Error (fuzz_support.hpp).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "swapcoord/catalog/catalog.hpp"

namespace {

#ifdef SWAPCOORD_FUZZ_UNCHECKED
constexpr const char* kTarget = "fuzz_catalog_unchecked";
constexpr auto kTrailerCheck = swapcoord::TrailerCheck::skip;
#else
constexpr const char* kTarget = "fuzz_catalog";
constexpr auto kTrailerCheck = swapcoord::TrailerCheck::required;
#endif

// The model a catalog describes, from its rows (names and dtypes of each id's first row,
// numel the sum of its rows'); empty when the ids are too sparse to index cheaply.
std::vector<swapcoord::TensorSpec> model_of(const swapcoord::Catalog& c) {
  std::map<std::uint32_t, swapcoord::TensorSpec> by_id;
  for (const auto& r : c.tensors) {
    auto [it, fresh] = by_id.try_emplace(r.id);
    if (fresh) {
      it->second.name = r.name;
      it->second.dtype = r.dtype;
      it->second.shape = {0};
    }
    it->second.shape[0] += r.numel;
  }
  if (by_id.empty() || by_id.rbegin()->first >= (1u << 16)) return {};
  std::vector<swapcoord::TensorSpec> model(by_id.rbegin()->first + 1);
  for (auto& [id, spec] : by_id) model[id] = std::move(spec);
  return model;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  swapcoord::fuzz::quiet_log();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const swapcoord::fuzz::TempFile file(data, size);
  swapcoord::fuzz::expect_clean(kTarget, [&] {
    const swapcoord::Catalog c = swapcoord::load_catalog(file.path(), kTrailerCheck);
    for (std::uint32_t i = 0; i < c.files.size(); ++i) (void)c.file_path(i);
    const auto model = model_of(c);
    if (model.empty()) return;
    const swapcoord::CatalogIndex index(c, model);
    std::vector<swapcoord::CatalogSegment> segments;
    for (std::uint32_t id = 0; id < model.size(); ++id)
      index.locate(id, 0, model[id].size_bytes(), segments);
  });
  return 0;
}
