#include "swapcoord/common/log.hpp"

#include <atomic>
#include <mutex>
#include <set>
#include <string>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "swapcoord/common/error.hpp"

namespace swapcoord::log {
namespace {

std::atomic<Level> g_level{Level::info};

spdlog::logger& logger() {
  static auto instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto created = std::make_shared<spdlog::logger>("swapcoord", sink);
    created->set_pattern("swapcoord %l: %v");
    created->set_level(spdlog::level::trace);  // filtering happens in emit()
    return created;
  }();
  return *instance;
}

void emit(Level at, std::string_view message) {
  if (at < g_level.load(std::memory_order_relaxed)) return;
  static const spdlog::level::level_enum map[] = {spdlog::level::debug, spdlog::level::info,
                                                  spdlog::level::warn, spdlog::level::err,
                                                  spdlog::level::off};
  logger().log(map[static_cast<int>(at)], "{}", message);
}

}  // namespace

void set_level(Level value) { g_level.store(value); }
Level level() { return g_level.load(); }

Level parse_level(std::string_view name) {
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn" || name == "warning") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "off") return Level::off;
  throw ConfigError("log level '" + std::string(name) + "' is not one of debug, info, warn, error, off");
}

void debug(std::string_view message) { emit(Level::debug, message); }
void info(std::string_view message) { emit(Level::info, message); }
void warn(std::string_view message) { emit(Level::warn, message); }
void error(std::string_view message) { emit(Level::error, message); }

bool warn_once(std::string_view key, std::string_view message) {
  static std::mutex mutex;
  static std::set<std::string, std::less<>> seen;
  {
    std::lock_guard lock(mutex);
    if (!seen.emplace(key).second) return false;
  }
  warn(message);
  return true;
}

}  // namespace swapcoord::log
