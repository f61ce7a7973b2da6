#pragma once
// Minimal logging front end. The back end (spdlog, to stderr) stays inside the library
// so that no third-party header reaches the public API.
#include <string>
#include <string_view>

namespace swapcoord::log {

enum class Level { debug, info, warn, error, off };

void set_level(Level level);
Level level();
// Parses "debug|info|warn|error|off"; throws ConfigError naming the value otherwise.
Level parse_level(std::string_view name);

void debug(std::string_view message);
void info(std::string_view message);
void warn(std::string_view message);
void error(std::string_view message);

// Logs `message` as a warning the first time `key` is seen in this process; returns
// whether it was logged. For warnings that would otherwise repeat once per file.
bool warn_once(std::string_view key, std::string_view message);

}  // namespace swapcoord::log
