// The backend registry (engine_infos, default_engine_name, make_engine by name) and the
// validation of AioConfig, DeepSpeed's `aio` knobs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "io_test_helpers.hpp"
#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;
using namespace io_test;

const EngineInfo* find_info(const std::vector<EngineInfo>& infos, const std::string& name) {
  for (const auto& info : infos)
    if (info.name == name) return &info;
  return nullptr;
}

TEST(EngineRegistry, ListsEveryKnownBackendInRegistryOrder) {
  const auto infos = engine_infos();
  std::vector<std::string> names;
  for (const auto& info : infos) names.push_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"libaio", "io_uring", "posix"}));
  for (const auto& info : infos) {
    SCOPED_TRACE(info.name);
    if (!info.available) {
      EXPECT_FALSE(info.reason.empty()) << "an unavailable backend must say why";
    } else {
      EXPECT_TRUE(info.compiled);
      EXPECT_TRUE(info.reason.empty()) << info.reason;
    }
  }
}

TEST(EngineRegistry, PosixIsAlwaysAvailable) {
  const auto infos = engine_infos();
  const EngineInfo* posix = find_info(infos, "posix");
  ASSERT_NE(posix, nullptr);
  EXPECT_TRUE(posix->compiled);
  EXPECT_TRUE(posix->available) << posix->reason;
}

TEST(EngineRegistry, DefaultIsLibaio) {
  const auto infos = engine_infos();
  const EngineInfo* libaio = find_info(infos, "libaio");
  ASSERT_NE(libaio, nullptr);
  if (!libaio->compiled) {
    EXPECT_STREQ(default_engine_name(), "posix") << "without libaio the default is posix";
    GTEST_SKIP() << "libaio is not compiled into this build: " << libaio->reason;
  }
  EXPECT_STREQ(default_engine_name(), "libaio");
  EXPECT_TRUE(libaio->available) << libaio->reason;
}

TEST(EngineRegistry, MakeEngineByNameKeepsNameAndConfig) {
  AioConfig config;
  config.block_size = 64 * kKiB;
  config.queue_depth = 4;
  config.intra_op_parallelism = 2;
  config.single_submit = true;
  config.overlap_events = false;
  config.fsync = true;
  for (const auto& name : backend_names()) {
    SCOPED_TRACE(name);
    std::string why;
    auto engine = make_engine_or_null(name, config, why);
    if (!engine) {
      std::cout << "[ note     ] " << why << "\n";
      continue;
    }
    EXPECT_EQ(engine->name(), name);
    EXPECT_EQ(engine->config().block_size, config.block_size);
    EXPECT_EQ(engine->config().queue_depth, config.queue_depth);
    EXPECT_EQ(engine->config().intra_op_parallelism, config.intra_op_parallelism);
    EXPECT_EQ(engine->config().single_submit, config.single_submit);
    EXPECT_EQ(engine->config().overlap_events, config.overlap_events);
    EXPECT_EQ(engine->config().fsync, config.fsync);
  }
}

TEST(EngineRegistry, DefaultEngineCanBeMade) {
  auto engine = make_engine(default_engine_name());
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->name(), default_engine_name());
}

TEST(EngineRegistry, UnknownBackendIsAConfigErrorListingKnownNames) {
  for (const std::string name : {"spdk", "", "LIBAIO", "posix "}) {
    SCOPED_TRACE("backend '" + name + "'");
    const auto error = catch_as<ConfigError>([&] { (void)make_engine(name); });
    ASSERT_TRUE(error.has_value()) << "make_engine('" << name << "') did not throw ConfigError";
    EXPECT_THAT(error->what(), HasSubstr("aio.backend"));
    EXPECT_THAT(error->what(), HasSubstr("'" + name + "'"));
    EXPECT_THAT(error->what(), HasSubstr("libaio"));
    EXPECT_THAT(error->what(), HasSubstr("io_uring"));
    EXPECT_THAT(error->what(), HasSubstr("posix"));
  }
}

// ---- AioConfig ----------------------------------------------------------------------

TEST(AioConfigTest, DefaultsAreDeepSpeedsAndValid) {
  const AioConfig config;
  EXPECT_EQ(config.block_size, 1 * kMiB);
  EXPECT_EQ(config.queue_depth, 32u);
  EXPECT_EQ(config.intra_op_parallelism, 1u);
  EXPECT_FALSE(config.single_submit);
  EXPECT_TRUE(config.overlap_events);
  EXPECT_EQ(config.direct, DirectMode::automatic);
  EXPECT_FALSE(config.fsync);
  EXPECT_NO_THROW(config.validate());
}

TEST(AioConfigTest, BoundaryValuesAreValid) {
  AioConfig config;
  config.block_size = 4096;
  config.queue_depth = 1;
  config.intra_op_parallelism = 1;
  EXPECT_NO_THROW(config.validate());
  config.block_size = std::size_t{1} << 30;
  config.queue_depth = 65536;
  config.intra_op_parallelism = 256;
  EXPECT_NO_THROW(config.validate());
}

struct BadConfig {
  std::string label;
  std::function<void(AioConfig&)> change;
  std::string key;    // what the message must name
  std::string value;  // and the value it must quote
};

std::vector<BadConfig> bad_configs() {
  return {
      {"block_size 0", [](AioConfig& c) { c.block_size = 0; }, "aio.block_size", "0"},
      {"block_size 1000", [](AioConfig& c) { c.block_size = 1000; }, "aio.block_size", "1000"},
      {"block_size 4097", [](AioConfig& c) { c.block_size = 4097; }, "aio.block_size", "4097"},
      {"block_size 6144", [](AioConfig& c) { c.block_size = 6144; }, "aio.block_size", "6144"},
      {"block_size 2 GiB", [](AioConfig& c) { c.block_size = std::size_t{2} << 30; },
       "aio.block_size", "2147483648"},
      {"queue_depth 0", [](AioConfig& c) { c.queue_depth = 0; }, "aio.queue_depth", "0"},
      {"queue_depth 65537", [](AioConfig& c) { c.queue_depth = 65537; }, "aio.queue_depth",
       "65537"},
      {"intra_op_parallelism 0", [](AioConfig& c) { c.intra_op_parallelism = 0; },
       "aio.intra_op_parallelism", "0"},
      {"intra_op_parallelism 257", [](AioConfig& c) { c.intra_op_parallelism = 257; },
       "aio.intra_op_parallelism", "257"},
  };
}

TEST(AioConfigTest, ImpossibleValuesAreConfigErrorsNamingTheKey) {
  for (const auto& bad : bad_configs()) {
    SCOPED_TRACE(bad.label);
    AioConfig config;
    bad.change(config);
    const auto error = catch_as<ConfigError>([&] { config.validate(); });
    ASSERT_TRUE(error.has_value()) << "validate() accepted " << bad.label;
    EXPECT_THAT(error->what(), HasSubstr(bad.key));
    EXPECT_THAT(error->what(), HasSubstr(bad.value));
  }
}

TEST(AioConfigTest, MakeEngineRejectsImpossibleValuesForEveryBackend) {
  for (const auto& name : backend_names()) {
    if (!engine_unavailable_reason(name).empty()) continue;
    for (const auto& bad : bad_configs()) {
      SCOPED_TRACE(name + ", " + bad.label);
      AioConfig config;
      bad.change(config);
      const auto error = catch_as<ConfigError>([&] { (void)make_engine(name, config); });
      ASSERT_TRUE(error.has_value()) << "make_engine accepted " << bad.label;
      EXPECT_THAT(error->what(), HasSubstr(bad.key));
    }
  }
}

TEST(AioConfigTest, DirectModeParsesAndPrints) {
  EXPECT_EQ(parse_direct_mode("auto"), DirectMode::automatic);
  EXPECT_EQ(parse_direct_mode("on"), DirectMode::on);
  EXPECT_EQ(parse_direct_mode("off"), DirectMode::off);
  EXPECT_EQ(parse_direct_mode("true"), DirectMode::on);
  EXPECT_EQ(parse_direct_mode("false"), DirectMode::off);
  for (auto mode : {DirectMode::automatic, DirectMode::on, DirectMode::off})
    EXPECT_EQ(parse_direct_mode(to_string(mode)), mode);
  const auto error = catch_as<ConfigError>([] { (void)parse_direct_mode("sometimes"); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->what(), HasSubstr("aio.direct"));
  EXPECT_THAT(error->what(), HasSubstr("sometimes"));
}

}  // namespace
}  // namespace swapcoord
