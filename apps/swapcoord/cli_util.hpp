#pragma once
// Small helpers shared by the swapcoord subcommands: sizes, lists, host name, and the
// nccl-tests style report (header lines start with '#').
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "swapcoord/common/host.hpp"
#include "swapcoord/session/options.hpp"

namespace CLI {
class Validator;
}

namespace swapcoord::app {

// For integer options (`->transform(decimal_integer(false))`): the value must be written
// in decimal ("010" is ten), and without `allow_negative` carry no sign. CLI11 alone reads
// "010" as octal and "0x10" as hex, and wraps "-1" of an unsigned option to 2^64-1 (so that
// "--threads -18446744073709551615" was 1).
const CLI::Validator& decimal_integer(bool allow_negative);

// "4096", "4k", "1M", "1MiB", "2G" (binary multiples); throws ConfigError naming `what`.
// The library's parser (swapcoord/session/options.hpp), so that bench, run and the config
// files read sizes the same way.
using swapcoord::parse_size;
// Each item through parse_size.
std::vector<std::uint64_t> parse_sizes(const std::vector<std::string>& items, std::string_view what);
std::string format_size(std::uint64_t bytes);  // "1 GiB", "4 KiB", "4097 B"
using swapcoord::host_name;  // swapcoord/common/host.hpp
std::string join(const std::vector<std::string>& items, std::string_view separator);

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitWrongData = 1;   // the run finished but data did not verify
inline constexpr int kExitError = 2;       // bad input or a failed operation

}  // namespace swapcoord::app
