#include "cli_util.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>


namespace swapcoord::app {

const CLI::Validator& decimal_integer(bool allow_negative) {
  static auto make = [](bool sign) {
    return CLI::Validator(
        [sign](std::string& text) -> std::string {
          const std::size_t digits = sign && !text.empty() && text[0] == '-' ? 1 : 0;
          if (digits == text.size() || text.find_first_not_of("0123456789", digits) != std::string::npos)
            return fmt::format("'{}' is not a {}decimal integer", text, sign ? "" : "non-negative ");
          // Leading zeros dropped, so that CLI11's conversion (base 0) reads decimal.
          const std::size_t nonzero = text.find_first_not_of('0', digits);
          text.erase(digits, (nonzero == std::string::npos ? text.size() - 1 : nonzero) - digits);
          return {};
        },
        "");
  };
  static const CLI::Validator with_sign = make(true), without_sign = make(false);
  return allow_negative ? with_sign : without_sign;
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

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

}  // namespace swapcoord::app
