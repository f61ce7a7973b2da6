#pragma once
// A catalog names its files relative to its swap roots. An edited catalog must not make a
// job read, print checksums of, or remove anything else: every file is opened through
// checked_file_path, which accepts only files in the roots the caller allows (the job's
// own) and, with every symbolic link resolved, still inside that root.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "swapcoord/catalog/catalog.hpp"

namespace swapcoord {

// The path of file `index` of `catalog`. Throws Error when the file's root is not one of
// `allowed_roots` (absolute paths) or when the file resolves (realpath) outside its root.
// A file that does not exist is returned unchecked: opening it fails and says so.
std::string checked_file_path(const Catalog& catalog, std::uint32_t index, std::span<const std::string> allowed_roots);

// The roots a reader of `catalog` may open files in. With `given` (`swapcoord verify
// --roots`), every root of the catalog that holds files must be one of them. Without,
// the catalog's own roots that exist on this host, each of which must be a directory of
// this user that others cannot write (check_private_dir); roots missing here are another
// node's. Throws ConfigError naming the root.
std::vector<std::string> readable_catalog_roots(const Catalog& catalog, std::span<const std::string> given = {});

}  // namespace swapcoord
