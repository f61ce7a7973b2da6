// SessionOptions: validate(), to_json(), apply_config() in swapcoord's form and as a
// DeepSpeed ds_config.json, read_config_file() and parse_size().
#include "swapcoord/session/options.hpp"

#include <cmath>
#include <fstream>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "swapcoord/common/error.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using nlohmann::json;

// The message of the ConfigError that `f` throws ("" when it throws nothing).
template <class F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string apply_error(const json& doc, const std::string& source = "config 'c.json'") {
  SessionOptions o;
  return config_error([&] { apply_config(o, doc, source, {"run"}); });
}

std::string validate_error(void (*change)(SessionOptions&)) {
  SessionOptions o;
  change(o);
  return config_error([&] { o.validate(); });
}

// A ds_config.json shaped like DeepSpeed's docs (config-json page, ZeRO-Infinity
// tutorial): ZeRO-3, parameters and optimizer state on NVMe, aio, fp16, an optimizer,
// a scheduler and the batch sizes.
const char* kDeepSpeedConfig = R"({
  "train_batch_size": 32,
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 1,
  "gradient_clipping": 1.0,
  "steps_per_print": 10,
  "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8}},
  "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 1000}},
  "fp16": {"enabled": true, "loss_scale": 0, "initial_scale_power": 16},
  "zero_optimization": {
    "stage": 3,
    "contiguous_gradients": true,
    "overlap_comm": true,
    "reduce_scatter": true,
    "reduce_bucket_size": 5e8,
    "sub_group_size": 1e9,
    "stage3_max_live_parameters": 1e9,
    "stage3_max_reuse_distance": 1e9,
    "stage3_prefetch_bucket_size": 5e8,
    "stage3_param_persistence_threshold": 1e6,
    "offload_param": {"device": "nvme", "nvme_path": "/local_nvme", "pin_memory": true,
                      "buffer_count": 5, "buffer_size": 1e8, "max_in_cpu": 1e9},
    "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme2", "pin_memory": false,
                          "buffer_count": 4, "fast_init": false, "pipeline_read": false,
                          "pipeline_write": false, "ratio": 1.0}
  },
  "aio": {"block_size": 262144, "queue_depth": 32, "thread_count": 2,
          "single_submit": false, "overlap_events": true, "use_gds": false}
})";

// ---------------------------------------------------------------- validate()

TEST(SessionOptions, DefaultsAreValid) {
  SessionOptions o;
  EXPECT_NO_THROW(o.validate());
  EXPECT_TRUE(o.catalog_dir.empty());  // allowed: <rank 0's first root>/<job>
}

TEST(SessionOptions, ValidateNamesTheKey) {
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.slots = 3; }), "swap.slots: 3 is not 1 or 2");
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.prepare = "zero"; }),
            "swap.prepare: 'zero' is not one of write, allocate");
  EXPECT_EQ(SessionOptions{}.prepare, "write");
  EXPECT_NE(validate_error([](SessionOptions& o) { o.slots = 0; }).find("swap.slots: 0"), std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.buffer_count = 1; }).find("swap.buffer_count: 1"),
            std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.buffer_size = 0; }).find("swap.buffer_size: 0"),
            std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.buffer_size = 1000; }).find("multiple of 4096"),
            std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.roots.clear(); }).find("swap.roots"), std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.roots = {"a", ""}; }).find("swap.roots: an empty"),
            std::string::npos);
  for (auto change : {+[](SessionOptions& o) { o.job = std::string(); }, +[](SessionOptions& o) { o.job = std::string("."); },
                      +[](SessionOptions& o) { o.job = ".."; }, +[](SessionOptions& o) { o.job = "a/b"; },
                      +[](SessionOptions& o) { o.job = std::string("a\0b", 3); }})
    EXPECT_NE(validate_error(change).find("swap.job"), std::string::npos);
  for (auto change : {+[](SessionOptions& o) { o.phase_timeout_s = 0; },
                      +[](SessionOptions& o) { o.phase_timeout_s = -1; },
                      +[](SessionOptions& o) { o.phase_timeout_s = 1e17; },
                      +[](SessionOptions& o) { o.phase_timeout_s = std::nan(""); },
                      +[](SessionOptions& o) { o.phase_timeout_s = std::numeric_limits<double>::infinity(); }})
    EXPECT_NE(validate_error(change).find("swap.phase_timeout_s"), std::string::npos);
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.phase_timeout_s = 1e6; }), "");
  EXPECT_NE(validate_error([](SessionOptions& o) { o.node_key = "bogus"; }).find("swap.node_key"),
            std::string::npos);
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.node_key = "env:MY_NODE"; }), "");
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.node_key = "slurm"; }), "");
  EXPECT_NE(validate_error([](SessionOptions& o) { o.plan.alignment_bytes = 3000; }).find("swap.alignment: 3000"),
            std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.plan.alignment_bytes = 0; }).find("swap.alignment"),
            std::string::npos);
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.plan.alignment_bytes = 512; }), "");
  EXPECT_NE(validate_error([](SessionOptions& o) { o.prefetch_bytes = 100; }).find("swap.prefetch_bytes: 100"),
            std::string::npos);
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.prefetch_bytes = 8192; }), "");
  // aio.validate() is part of it.
  EXPECT_NE(validate_error([](SessionOptions& o) { o.aio.queue_depth = 0; }).find("aio.queue_depth"),
            std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.aio.block_size = 1000; }).find("aio.block_size"),
            std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.backend.clear(); }).find("aio.backend"), std::string::npos);
  EXPECT_NE(validate_error([](SessionOptions& o) { o.register_io = true; }).find("aio.register: needs aio.backend io_uring, not 'libaio'"),
            std::string::npos);
  EXPECT_EQ(validate_error([](SessionOptions& o) { o.register_io = true, o.backend = "io_uring"; }), "");
}

// ---------------------------------------------------------------- swapcoord's form

TEST(ApplyConfig, EveryKeyOfSwapcoordsForm) {
  const auto doc = json::parse(R"({
    "aio": {"block_size": "2M", "queue_depth": 64, "intra_op_parallelism": 4, "single_submit": true,
            "overlap_events": false, "use_gds": false, "direct": "off", "fsync": false,
            "backend": "io_uring", "register": true},
    "swap": {"roots": ["/nvme0", "/nvme1"], "catalog_dir": "/shared/cat", "create_roots": false,
             "overwrite": true, "job": "j1", "layout": "file-per-tensor", "slots": 1, "policy": "round-robin",
             "shard_threshold": "1M", "alignment": 8192, "buffer_count": 6, "buffer_size": "1MiB", "prefetch_bytes": "64M",
             "pin_memory": false, "verify": false, "checksum": "xxh64", "prepare": "allocate", "phase_timeout_s": 12.5,
             "node_key": "env:NODE"},
    "run": {"anything": "the caller's"}
  })");
  SessionOptions o;
  const auto info = apply_config(o, doc, "config 'c.json'", {"run"});
  EXPECT_FALSE(info.detected);
  EXPECT_TRUE(info.ignored_keys.empty());
  EXPECT_EQ(o.aio.block_size, 2u << 20);
  EXPECT_EQ(o.aio.queue_depth, 64u);
  EXPECT_EQ(o.aio.intra_op_parallelism, 4u);
  EXPECT_TRUE(o.aio.single_submit);
  EXPECT_FALSE(o.aio.overlap_events);
  EXPECT_EQ(o.aio.direct, DirectMode::off);
  EXPECT_FALSE(o.aio.fsync);
  EXPECT_EQ(o.backend, "io_uring");
  EXPECT_TRUE(o.register_io);
  EXPECT_EQ(o.to_json()["aio"]["register"], true);
  EXPECT_EQ(o.roots, (std::vector<std::string>{"/nvme0", "/nvme1"}));
  EXPECT_EQ(o.catalog_dir, "/shared/cat");
  EXPECT_FALSE(o.create_roots);
  EXPECT_TRUE(o.overwrite);
  EXPECT_EQ(o.job, "j1");
  EXPECT_EQ(o.plan.layout, Layout::file_per_tensor);
  EXPECT_EQ(o.slots, 1);
  EXPECT_EQ(o.plan.policy, Policy::round_robin);
  EXPECT_EQ(o.plan.alignment_bytes, 8192u);
  EXPECT_EQ(o.plan.shard_threshold_bytes, 1u << 20);
  EXPECT_EQ(o.to_json()["swap"]["shard_threshold"], 1u << 20);
  EXPECT_EQ(o.buffer_count, 6u);
  EXPECT_EQ(o.buffer_size, 1u << 20);
  EXPECT_EQ(o.prefetch_bytes, 64u << 20);
  EXPECT_EQ(o.prepare, "allocate");
  EXPECT_EQ(o.to_json()["swap"]["prepare"], "allocate");
  EXPECT_FALSE(o.pin_memory);
  EXPECT_FALSE(o.verify);
  EXPECT_EQ(o.checksum, ChecksumKind::xxh64);
  EXPECT_EQ(o.to_json()["swap"]["checksum"], "xxh64");
  EXPECT_EQ(SessionOptions{}.to_json()["swap"]["checksum"], "xxh3_64");
  EXPECT_DOUBLE_EQ(o.phase_timeout_s, 12.5);
  EXPECT_EQ(o.node_key, "env:NODE");
  EXPECT_NO_THROW(o.validate());
}

TEST(ApplyConfig, OldAndSingleForms) {
  SessionOptions o;
  apply_config(o, json::parse(R"({"aio": {"thread_count": 3}, "swap": {"roots": "/one",
                                  "buffer_size": 8192, "policy": "sharded"}})"), "c");
  EXPECT_EQ(o.aio.intra_op_parallelism, 3u);  // DeepSpeed's older name
  EXPECT_EQ(o.roots, std::vector<std::string>{"/one"});
  EXPECT_EQ(o.buffer_size, 8192u);
  EXPECT_EQ(o.plan.policy, Policy::sharded);
  // An empty document changes nothing.
  SessionOptions p;
  apply_config(p, json::object(), "c");
  EXPECT_EQ(p.to_json(), SessionOptions{}.to_json());
}

TEST(ApplyConfig, UnknownKeysAreNamed) {
  EXPECT_EQ(apply_error(json::parse(R"({"foo": 1})"), "config 'x.json'"),
            "config 'x.json': unknown key 'foo' (known: aio, swap, run; or a DeepSpeed config)");
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"polcy": "balanced"}})")).find("unknown key 'swap.polcy'"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"blocksize": 4096}})")).find("unknown key 'aio.blocksize'"),
            std::string::npos);
  // Without "run" among the extra sections it is unknown too.
  SessionOptions o;
  EXPECT_NE(config_error([&] { apply_config(o, json::parse(R"({"run": {}})"), "c"); }).find("unknown key 'run'"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse("[1, 2]")).find("must be a JSON object"), std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": 3})")).find("swap: 3 is not an object"), std::string::npos);
}

TEST(ApplyConfig, WrongTypesNameKeyAndExpectedType) {
  EXPECT_EQ(apply_error(json::parse(R"({"swap": {"slots": "2"}})")),
            "config 'c.json': swap.slots: \"2\" is not 1 or 2");
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"verify": 1}})")).find("swap.verify: 1 is not true or false"),
            std::string::npos);
  EXPECT_EQ(apply_error(json::parse(R"({"swap": {"checksum": "crc32c"}})")),
            "config 'c.json': swap.checksum: 'crc32c' is not one of xxh3_64, xxh64");
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"checksum": 3}})")).find("swap.checksum: 3 is not xxh3_64 or xxh64"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"roots": 5}})")).find("swap.roots: 5 is not a directory"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"roots": ["/a", 1]}})")).find("swap.roots"), std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"phase_timeout_s": "5"}})")).find("swap.phase_timeout_s"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"policy": "fastest"}})")).find("swap.policy: 'fastest'"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"layout": 1}})")).find("swap.layout"), std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"direct": "maybe"}})")).find("aio.direct: 'maybe'"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"use_gds": true}})")).find("aio.use_gds: GPUDirect Storage"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"queue_depth": 1.5}})")).find("aio.queue_depth: 1.5"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"queue_depth": null}})")).find("aio.queue_depth: null"),
            std::string::npos);
}

TEST(ApplyConfig, IntegersAreRangeCheckedNotNarrowed) {
  // int-sized field: 2^32 + 2 would narrow to 2.
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"slots": 4294967298}})")).find("swap.slots: 4294967298 is out of range"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"swap": {"buffer_count": -2}})")).find("swap.buffer_count: -2 is negative"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"block_size": -4096}})")).find("aio.block_size: -4096 is negative"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"aio": {"queue_depth": 1e30}})")).find("aio.queue_depth"),
            std::string::npos);
  // size_t field: kept whole, and validate() names it.
  SessionOptions o;
  apply_config(o, json::parse(R"({"aio": {"queue_depth": 4294967297}})"), "c");
  EXPECT_EQ(o.aio.queue_depth, 4294967297u);
  EXPECT_NE(config_error([&] { o.validate(); }).find("aio.queue_depth: 4294967297"), std::string::npos);
  // Integral numbers written as floats (Python's json.dump of 1e8) are integers.
  SessionOptions p;
  apply_config(p, json::parse(R"({"swap": {"buffer_size": 1.6777216e7, "buffer_count": 8.0}})"), "c");
  EXPECT_EQ(p.buffer_size, 16u << 20);
  EXPECT_EQ(p.buffer_count, 8u);
}

TEST(ApplyConfig, SizesAsStrings) {
  SessionOptions o;
  apply_config(o, json::parse(R"({"aio": {"block_size": "64k"}, "swap": {"buffer_size": "16M",
                                  "prefetch_bytes": "1GiB", "alignment": "4K"}})"), "c");
  EXPECT_EQ(o.aio.block_size, 64u << 10);
  EXPECT_EQ(o.buffer_size, 16u << 20);
  EXPECT_EQ(o.prefetch_bytes, 1ULL << 30);
  EXPECT_EQ(o.plan.alignment_bytes, 4096u);
  EXPECT_EQ(apply_error(json::parse(R"({"swap": {"buffer_size": "16Q"}})")),
            "config 'c.json': swap.buffer_size: '16Q' is not a size (examples: 4096, 4k, 1M, 1GiB)");
}

TEST(ApplyConfig, AnErrorLeavesTheOptionsUnchanged) {
  SessionOptions o;
  EXPECT_THROW(apply_config(o, json::parse(R"({"swap": {"slots": 1, "job": "x", "bogus": 1}})"), "c"),
               ConfigError);
  EXPECT_EQ(o.to_json(), SessionOptions{}.to_json());
}

TEST(ApplyConfig, RoundTripThroughToJson) {
  SessionOptions a;
  a.roots = {"/r0", "/r1"};
  a.catalog_dir = "/shared";
  a.create_roots = false;
  a.job = "round";
  a.plan = {Policy::sharded, Layout::file_per_tensor, 8192};
  a.slots = 1;
  a.buffer_count = 3;
  a.buffer_size = 3 << 20;
  a.prefetch_bytes = 1 << 20;
  a.pin_memory = false;
  a.verify = false;
  a.checksum = ChecksumKind::xxh64;
  a.prepare = "allocate";
  a.backend = "io_uring";
  a.aio.block_size = 256 << 10;
  a.aio.queue_depth = 7;
  a.aio.intra_op_parallelism = 2;
  a.aio.single_submit = true;
  a.aio.overlap_events = false;
  a.aio.direct = DirectMode::on;
  a.aio.fsync = false;
  a.phase_timeout_s = 42.25;
  a.node_key = "slurm";
  const json j = a.to_json();
  EXPECT_EQ(j["swap"]["buffer_size"], 3 << 20);  // sizes are integers
  EXPECT_TRUE(j["swap"]["buffer_size"].is_number_unsigned());
  SessionOptions b;
  const auto info = apply_config(b, json::parse(j.dump()), "round trip");
  EXPECT_FALSE(info.detected);
  EXPECT_EQ(b.to_json(), j);
  EXPECT_EQ(b.roots, a.roots);
  EXPECT_EQ(b.plan, a.plan);
  EXPECT_EQ(b.aio.direct, DirectMode::on);
  EXPECT_DOUBLE_EQ(b.phase_timeout_s, 42.25);
}

// ---------------------------------------------------------------- DeepSpeed's form

TEST(ApplyDeepSpeed, ZeroInfinityConfigAsDocumented) {
  SessionOptions o;
  testing::internal::CaptureStderr();
  const auto info = apply_config(o, json::parse(kDeepSpeedConfig), "config 'ds.json'");
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(info.detected);
  EXPECT_EQ(info.zero_stage, 3);
  EXPECT_TRUE(info.offload_param);
  EXPECT_TRUE(info.offload_optimizer);
  EXPECT_EQ(info.param_dtype, DType::f16);
  EXPECT_EQ(info.ignored_keys,
            (std::vector<std::string>{"gradient_accumulation_steps", "gradient_clipping", "optimizer", "scheduler",
                                      "steps_per_print", "train_batch_size", "train_micro_batch_size_per_gpu"}));
  EXPECT_EQ(o.plan.policy, Policy::sharded);
  EXPECT_EQ(o.roots, (std::vector<std::string>{"/local_nvme", "/local_nvme2"}));
  EXPECT_EQ(o.buffer_count, 5u);               // the larger of 5 and 4
  EXPECT_EQ(o.buffer_size, 200003584u);  // 1e8 fp16 elements = 2e8 bytes, up to 48829 pages
  EXPECT_EQ(o.buffer_size % 4096, 0u);
  EXPECT_TRUE(o.pin_memory);                    // either section pins
  EXPECT_EQ(o.aio.block_size, 262144u);
  EXPECT_EQ(o.aio.queue_depth, 32u);
  EXPECT_EQ(o.aio.intra_op_parallelism, 2u);
  EXPECT_NO_THROW(o.validate());
  // One line, once.
  const std::string line = "config 'ds.json': ignoring DeepSpeed keys swapcoord does not use: "
                           "gradient_accumulation_steps, gradient_clipping, optimizer, scheduler, "
                           "steps_per_print, train_batch_size, train_micro_batch_size_per_gpu";
  EXPECT_NE(log.find(line), std::string::npos) << log;
  EXPECT_EQ(log.find("ignoring DeepSpeed keys"), log.rfind("ignoring DeepSpeed keys")) << log;
}

TEST(ApplyDeepSpeed, SampleFileForTheRunTests) {
  SessionOptions o;
  const auto info = apply_config(o, read_config_file(SWAPCOORD_DS_CONFIG), "config 'ds_config.json'");
  EXPECT_TRUE(info.detected && info.offload_param && info.offload_optimizer);
  EXPECT_EQ(info.param_dtype, DType::f16);
  EXPECT_EQ(o.plan.policy, Policy::sharded);
  EXPECT_EQ(o.roots, (std::vector<std::string>{"nvme-params", "nvme-optimizer"}));
  EXPECT_EQ(o.buffer_size, 2002944u);  // 1e6 fp16 elements = 2000000 bytes, up to 489 pages
  EXPECT_EQ(o.buffer_count, 5u);
  EXPECT_NO_THROW(o.validate());
}

TEST(ApplyDeepSpeed, ElementsToBytesByDtype) {
  struct Case {
    const char* precision;
    const char* section;
    std::uint64_t elements, bytes;
    DType dtype;
  } cases[] = {
      {R"("fp16": {"enabled": true})", "offload_param", 4096, 8192, DType::f16},
      {R"("bf16": {"enabled": true})", "offload_param", 4096, 8192, DType::bf16},
      {R"("bfloat16": {"enabled": true})", "offload_param", 1000, 4096, DType::bf16},
      {R"("fp16": {"enabled": false})", "offload_param", 4096, 16384, DType::f32},
      {R"("fp16": {"enabled": "auto"})", "offload_param", 1025, 8192, DType::f32},
      // offload_optimizer counts fp32 elements whatever the parameter dtype.
      {R"("fp16": {"enabled": true})", "offload_optimizer", 4096, 16384, DType::f16},
  };
  for (const auto& c : cases) {
    const auto doc = json::parse(std::string("{") + c.precision + R"(, "zero_optimization": {"stage": 3, ")" +
                                 c.section + R"(": {"device": "nvme", "nvme_path": "/n", "buffer_size": )" +
                                 std::to_string(c.elements) + "}}}");
    SessionOptions o;
    testing::internal::CaptureStderr();
    const auto info = apply_config(o, doc, "ds");
    testing::internal::GetCapturedStderr();
    EXPECT_EQ(o.buffer_size, c.bytes) << doc.dump();
    EXPECT_EQ(info.param_dtype, c.dtype) << doc.dump();
    EXPECT_EQ(o.roots, std::vector<std::string>{"/n"});
  }
}

TEST(ApplyDeepSpeed, OffloadDevicesDecideWhatIsSwapped) {
  SessionOptions o;
  auto info = apply_config(o, json::parse(R"({"zero_optimization": {"stage": 2,
      "offload_optimizer": {"device": "nvme", "nvme_path": "/opt"},
      "offload_param": {"device": "cpu", "pin_memory": false}}})"), "ds");
  EXPECT_TRUE(info.detected);
  EXPECT_FALSE(info.offload_param);
  EXPECT_TRUE(info.offload_optimizer);
  EXPECT_EQ(info.zero_stage, 2);
  EXPECT_EQ(o.plan.policy, Policy::balanced);  // stages below 3 keep balanced
  EXPECT_EQ(o.roots, std::vector<std::string>{"/opt"});
  EXPECT_TRUE(o.pin_memory);                    // a cpu section's pin_memory does not count

  // The same path twice is one root.
  SessionOptions p;
  info = apply_config(p, json::parse(R"({"zero_optimization": {"stage": 3,
      "offload_param": {"device": "nvme", "nvme_path": "/n", "buffer_count": 2, "pin_memory": false},
      "offload_optimizer": {"device": "nvme", "nvme_path": "/n", "buffer_count": 7, "pin_memory": false}}})"),
                      "ds");
  EXPECT_EQ(p.roots, std::vector<std::string>{"/n"});
  EXPECT_EQ(p.buffer_count, 7u);
  EXPECT_FALSE(p.pin_memory);

  // Nothing on NVMe: detected, nothing offloaded, roots and sizes as they were.
  SessionOptions q;
  info = apply_config(q, json::parse(R"({"train_batch_size": 8, "zero_optimization": {"stage": 1,
      "offload_optimizer": {"device": "none", "nvme_path": null}}})"), "ds");
  EXPECT_TRUE(info.detected);
  EXPECT_FALSE(info.offload_param || info.offload_optimizer);
  EXPECT_EQ(q.roots, SessionOptions{}.roots);
  EXPECT_EQ(info.param_dtype, DType::f32);

  // offload sections given as null (DeepSpeed: Optional = None).
  SessionOptions r;
  info = apply_config(r, json::parse(R"({"zero_optimization": {"offload_param": null}})"), "ds");
  EXPECT_FALSE(info.offload_param);
}

TEST(ApplyDeepSpeed, DocumentedKeysThatSwapcoordDoesNotUseAreAccepted) {
  SessionOptions o;
  testing::internal::CaptureStderr();
  EXPECT_NO_THROW(apply_config(o, json::parse(R"({"zero_optimization": {"stage": 3,
      "allgather_partitions": true, "allgather_bucket_size": 5e8, "round_robin_gradients": false,
      "stage3_gather_16bit_weights_on_model_save": true, "ignore_unused_parameters": true,
      "offload_param": {"device": "nvme", "nvme_path": "/n", "max_in_cpu": 1e9},
      "offload_optimizer": {"device": "nvme", "nvme_path": "/n", "pipeline_read": true,
                            "pipeline_write": true, "fast_init": true, "ratio": 0.5}},
      "bf16": {"enabled": true}, "amp": {"enabled": false}, "wall_clock_breakdown": false})"),
                               "ds"));
  const auto log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.find("does not document"), std::string::npos) << log;
}

TEST(ApplyDeepSpeed, UnknownKeysInSectionsSwapcoordReads) {
  const auto ds = [](const char* zero, const char* aio = "{}") {
    return json::parse(std::string(R"({"train_batch_size": 1, "aio": )") + aio + R"(, "zero_optimization": )" +
                       zero + "}");
  };
  EXPECT_EQ(apply_error(ds(R"({"offload_param": {"device": "nvme", "nvme_pth": "/x"}})"), "config 'ds.json'"),
            "config 'ds.json': unknown key 'zero_optimization.offload_param.nvme_pth' (known: "
            "zero_optimization.offload_param.device, nvme_path, buffer_count, buffer_size, pin_memory, "
            "max_in_cpu)");
  EXPECT_NE(apply_error(ds(R"({"offload_optimizer": {"device": "nvme", "nvme_path": "/x", "max_in_cpu": 1}})"))
                .find("unknown key 'zero_optimization.offload_optimizer.max_in_cpu'"),
            std::string::npos);
  EXPECT_NE(apply_error(ds("{}", R"({"thread_cnt": 2})")).find("unknown key 'aio.thread_cnt'"), std::string::npos);
  EXPECT_NE(apply_error(ds(R"({"offload_param": {"device": "disk"}})")).find("zero_optimization.offload_param.device: 'disk'"),
            std::string::npos);
  EXPECT_NE(apply_error(ds(R"({"offload_param": {"device": "nvme"}})")).find("zero_optimization.offload_param.nvme_path: missing"),
            std::string::npos);
  EXPECT_NE(apply_error(ds(R"({"stage": 4})")).find("zero_optimization.stage: 4 is out of range"), std::string::npos);
  EXPECT_NE(apply_error(ds(R"({"offload_param": {"device": "nvme", "nvme_path": "/x", "buffer_size": "16M"}})"))
                .find("zero_optimization.offload_param.buffer_size: \"16M\" is not a number of elements"),
            std::string::npos);
  EXPECT_NE(apply_error(ds(R"({"offload_param": {"device": "nvme", "nvme_path": "/x", "buffer_count": 4294967297}})"))
                .find("zero_optimization.offload_param.buffer_count: 4294967297 is out of range"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"fp16": {"enabled": true}, "bf16": {"enabled": true}})")).find("both enabled"),
            std::string::npos);
  EXPECT_NE(apply_error(json::parse(R"({"fp16": {"enabled": 1}})")).find("fp16.enabled: 1"), std::string::npos);
  // An unknown zero_optimization key is not an error, but it is reported.
  SessionOptions o;
  testing::internal::CaptureStderr();
  apply_config(o, ds(R"({"stage": 3, "overlap_com": true})"), "ds");
  EXPECT_NE(testing::internal::GetCapturedStderr().find("zero_optimization.overlap_com"), std::string::npos);
}

TEST(ApplyDeepSpeed, SwapSectionOverridesAndExtraSectionsAreSkipped) {
  SessionOptions o;
  const auto info = apply_config(o, json::parse(R"({"train_batch_size": 4,
      "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "/n"}},
      "swap": {"policy": "balanced", "roots": ["/mine"]}, "run": {"steps": 1}})"), "ds", {"run"});
  EXPECT_EQ(o.plan.policy, Policy::balanced);
  EXPECT_EQ(o.roots, std::vector<std::string>{"/mine"});
  EXPECT_EQ(info.ignored_keys, std::vector<std::string>{"train_batch_size"});
}

// ---------------------------------------------------------------- read_config_file()

TEST(ReadConfigFile, ErrorsNameThePath) {
  test::TempDir dir;
  EXPECT_NE(config_error([&] { read_config_file(dir.file("missing.json")); })
                .find("--config: cannot open '" + dir.file("missing.json") + "'"),
            std::string::npos);
  EXPECT_EQ(config_error([&] { read_config_file(dir.path()); }), "--config: '" + dir.path() + "' is a directory");
  {
    std::ofstream(dir.file("bad.json")) << "{\"aio\": ";
  }
  EXPECT_NE(config_error([&] { read_config_file(dir.file("bad.json")); })
                .find("--config: '" + dir.file("bad.json") + "' is not valid JSON: "),
            std::string::npos);
  {
    std::ofstream(dir.file("good.json")) << R"({"swap": {"slots": 1}})";
  }
  EXPECT_EQ(read_config_file(dir.file("good.json"))["swap"]["slots"], 1);
}

// ---------------------------------------------------------------- parse_size()

TEST(ParseSize, BinaryMultiplesCaseInsensitive) {
  EXPECT_EQ(parse_size("4096", "x"), 4096u);
  EXPECT_EQ(parse_size("0", "x"), 0u);
  EXPECT_EQ(parse_size("64k", "x"), 64u << 10);
  EXPECT_EQ(parse_size("64K", "x"), 64u << 10);
  EXPECT_EQ(parse_size("64kb", "x"), 64u << 10);
  EXPECT_EQ(parse_size("64KiB", "x"), 64u << 10);
  EXPECT_EQ(parse_size("16M", "x"), 16u << 20);
  EXPECT_EQ(parse_size("16m", "x"), 16u << 20);
  EXPECT_EQ(parse_size("1G", "x"), 1ULL << 30);
  EXPECT_EQ(parse_size("1GiB", "x"), 1ULL << 30);
  EXPECT_EQ(parse_size("1gib", "x"), 1ULL << 30);
  EXPECT_EQ(parse_size("2T", "x"), 2ULL << 40);
  EXPECT_EQ(parse_size("512b", "x"), 512u);
  EXPECT_EQ(parse_size("010", "x"), 10u);  // decimal, not octal
  EXPECT_EQ(parse_size("18446744073709551615", "x"), std::numeric_limits<std::uint64_t>::max());
}

TEST(ParseSize, ErrorsNameWhatAndText) {
  EXPECT_EQ(config_error([] { parse_size("x", "--buffer-size"); }),
            "--buffer-size: 'x' is not a size (examples: 4096, 4k, 1M, 1GiB)");
  for (const char* bad : {"", "k", "M", "-1", "1.5M", "0x10", " 4k", "4k ", "4 k", "16Q", "1e3", "4kk", "+4"})
    EXPECT_NE(config_error([&] { parse_size(bad, "--block-size"); })
                  .find("--block-size: '" + std::string(bad) + "' is not a size"),
              std::string::npos)
        << "'" << bad << "'";
  EXPECT_NE(config_error([] { parse_size("18446744073709551616", "s"); }).find("too large"), std::string::npos);
  EXPECT_NE(config_error([] { parse_size("20000000T", "s"); }).find("too large"), std::string::npos);
}

}  // namespace
}  // namespace swapcoord
