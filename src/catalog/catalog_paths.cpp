#include "swapcoord/catalog/catalog_paths.hpp"

#include <limits.h>
#include <stdlib.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"
#include "swapcoord/io/private_fs.hpp"

namespace swapcoord {
namespace {

std::string normal(const std::string& path) { return std::filesystem::path(path).lexically_normal().string(); }

std::string real_path(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> resolved(::realpath(path.c_str(), nullptr), &std::free);
  return resolved ? std::string(resolved.get()) : std::string();
}

}  // namespace

std::string checked_file_path(const Catalog& catalog, std::uint32_t index, std::span<const std::string> allowed_roots) {
  const std::string path = catalog.file_path(index);  // in range, relative, no '..', with a root (load_catalog)
  const CatalogFile& f = catalog.files[index];
  int node = -1;
  for (const auto& r : catalog.ranks)
    if (r.rank == f.owner) node = r.node;
  std::string root;
  for (const auto& r : catalog.roots)
    if (r.node == node && r.index == f.root) root = normal(r.path);
  const bool allowed = std::any_of(allowed_roots.begin(), allowed_roots.end(),
                                   [&](const std::string& a) { return normal(a) == root; });
  if (!allowed) {
    std::string list;
    for (const auto& a : allowed_roots) list += fmt::format("{}'{}'", list.empty() ? "" : ", ", a);
    throw Error(fmt::format("catalog file {} ('{}') lies in root '{}', which is not one of the swap roots this job "
                            "may read here ({}): a catalog may only point into the job's own roots",
                            index, f.path, root, list.empty() ? std::string("none") : list));
  }
  const std::string real_file = real_path(path);
  if (real_file.empty()) return path;
  const std::string real_root = real_path(root);
  if (real_root.empty() || real_file.compare(0, real_root.size() + 1, real_root + "/") != 0)
    throw Error(fmt::format("catalog file {} ('{}') resolves to '{}', outside its root '{}' (a symbolic link on the "
                            "way): refused", index, path, real_file, root));
  return path;
}

std::vector<std::string> readable_catalog_roots(const Catalog& catalog, std::span<const std::string> given) {
  std::vector<std::string> out;
  std::set<std::pair<int, int>> used;  // (node, root) of the catalog's files
  std::map<int, int> node_of;
  for (const auto& r : catalog.ranks) node_of[r.rank] = r.node;
  for (const auto& f : catalog.files) used.insert({node_of[f.owner], f.root});
  for (const auto& r : catalog.roots) {
    if (!used.count({r.node, r.index})) continue;
    if (!given.empty()) {
      if (std::none_of(given.begin(), given.end(), [&](const std::string& g) { return normal(g) == normal(r.path); }))
        throw ConfigError(fmt::format("--roots: the catalog's files lie in root '{}' (node {}), which is not one of "
                                      "the roots given ({} roots); a catalog may only point into the job's roots",
                                      r.path, r.node, given.size()));
      continue;
    }
    struct stat st {};
    if (::lstat(r.path.c_str(), &st) != 0 && errno == ENOENT) continue;  // another node's
    if (const std::string problem = check_private_dir(r.path, "catalog root"); !problem.empty())
      throw ConfigError(fmt::format("{} (the catalog names it for node {}); give the job's roots with --roots to "
                                    "read it anyway", problem, r.node));
    out.push_back(r.path);
  }
  if (!given.empty()) out.assign(given.begin(), given.end());
  return out;
}

}  // namespace swapcoord
