#include "cli_util.hpp"

#include <unistd.h>

#include <fmt/format.h>


namespace swapcoord::app {

std::vector<std::uint64_t> parse_sizes(const std::vector<std::string>& items, std::string_view what) {
  std::vector<std::uint64_t> out;
  for (const auto& item : items) out.push_back(parse_size(item, what));
  return out;
}

std::string format_size(std::uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (unit < 4 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return fmt::format("{} {}", bytes, units[unit]);
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

}  // namespace swapcoord::app
