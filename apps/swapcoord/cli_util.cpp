#include "cli_util.hpp"

#include <unistd.h>

#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord::app {

std::uint64_t parse_size(std::string_view text, std::string_view what) {
  std::uint64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [rest, ec] = std::from_chars(text.data(), end, value);
  std::string unit(rest, end);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kib" || unit == "kb") scale = 1ULL << 10;
  else if (unit == "m" || unit == "mib" || unit == "mb") scale = 1ULL << 20;
  else if (unit == "g" || unit == "gib" || unit == "gb") scale = 1ULL << 30;
  else if (unit == "t" || unit == "tib" || unit == "tb") scale = 1ULL << 40;
  if (ec != std::errc{} || rest == text.data() || scale == 0 || value > UINT64_MAX / scale)
    throw ConfigError(fmt::format("{}: '{}' is not a size (examples: 4096, 4k, 1M, 1GiB)", what, text));
  return value * scale;
}

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

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0) return "unknown";
  return buffer;
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
