// Bad input, counted (issue 9): one table of bad inputs to the swapcoord executable
// (command-line flags, config files, tensor lists, catalogs, swap files, resumes, ranks that
// disagree). Each case runs swapcoord as a user would, in its own directory, and passes only
// when the command exits with exactly the expected code (2: bad input or a failure, 1: data
// that does not verify), without a sanitizer report or a signal, and its output names the bad
// thing (each pattern is an ECMAScript regex; @W@ stands for the case's directory).
//
// Adding a case: one entry in kCases below. `setup` prepares what the case needs in @W@
// (helpers in driver.hpp: a config or tensor list, a committed job, a damaged file);
// `pending` marks a check not implemented yet (the case is skipped, saying what it waits for).
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "driver.hpp"

namespace swapcoord::bad_input {
namespace {
namespace fs = std::filesystem;

struct Case {
  const char* group;                      // flags, config, deepspeed, tensors, catalog, swapfile, ...
  const char* name;
  const char* pending = nullptr;          // not implemented yet: skipped with "pending: <this>"
  std::function<void(Work&)> setup = {};  // prepares @W@ (empty at the start)
  int ranks = 0;                          // 0: swapcoord alone (one rank); N: mpiexec -n N
  std::string wrapper = {};               // with ranks: each rank runs `wrapper swapcoord args...`
  std::vector<std::string> args = {};     // swapcoord's arguments; @W@ = the case's directory
  int exit = 2;                           // 2: bad input or failure; 1: data that does not verify
  std::vector<std::string> err = {};      // regexes that stderr must match (each one)
  std::vector<std::string> out = {};      // regexes that stdout must match
};

// ---- setup helpers ----------------------------------------------------------------------

// Writes `text` to @W@/<name>, with @W@ in it replaced by the directory.
std::function<void(Work&)> file(std::string name, std::string text) {
  return [name, text](Work& w) {
    std::string body = text;
    for (std::size_t at; (at = body.find("@W@")) != std::string::npos;) body.replace(at, 3, w.dir);
    write_file(w.path(name), body);
  };
}
auto config(std::string text) { return file("c.json", std::move(text)); }
auto tensors(std::string text) { return file("t.json", std::move(text)); }
// A committed job (driver.hpp: prepare_job), then `damage`.
std::function<void(Work&)> job(std::function<void(Work&)> damage = {}) {
  return [damage](Work& w) {
    prepare_job(w);
    if (!::testing::Test::HasFatalFailure() && damage) damage(w);
  };
}
// "run" and the prepared job's arguments with @W@ for its directory, then `more`.
std::vector<std::string> job_run(std::vector<std::string> more = {}) {
  std::vector<std::string> out{"run",         "--roots", "@W@/root", "--tensors", "@W@/model.json", "--swap",
                               "params",      "--steps", "1",        "--buffer-size", "64k", "--phase-timeout",
                               "60"};
  out.insert(out.end(), more.begin(), more.end());
  return out;
}
const std::string kCatalog = "@W@/root/swapcoord/catalog\\.h5";
const std::string kSlab = "@W@/root/swapcoord/rank-0/slot-0\\.swp";
const std::string kLong(300, 'n');
// What verify prints for rows whose file it cannot read (missing, short, not a regular file).
const std::vector<std::string> kUnreadableSlab = {
    "tensor 'layer0\\.w' shard 0: no rank can read 'swapcoord/rank-0/slot-0\\.swp'", "3 mismatches ERROR"};

// ---- the table --------------------------------------------------------------------------

const std::vector<Case> kCases = {
    // ---- command-line flags (run unless named)
    {.group = "flags", .name = "unknown_flag", .args = {"run", "--no-such-flag"}, .err = {"--no-such-flag"}},
    {.group = "flags", .name = "unknown_subcommand", .args = {"frobnicate"}, .err = {"unknown subcommand 'frobnicate'"}},
    {.group = "flags", .name = "no_subcommand", .args = {}, .err = {"subcommand"}},
    {.group = "flags", .name = "steps_not_a_number", .args = {"run", "--steps", "three"}, .err = {"--steps", "three"}},
    {.group = "flags", .name = "steps_over_int", .args = {"run", "--steps", "4294967297"},
     .err = {"--steps", "4294967297"}},
    {.group = "flags", .name = "steps_negative", .args = {"run", "--steps", "-1"}, .err = {"run\\.steps: -1 "}},
    {.group = "flags", .name = "steps_too_many", .args = {"run", "--steps", "1000001"},
     .err = {"run\\.steps: 1000001 is not between 0 and 1000000"}},
    {.group = "flags", .name = "phase_timeout_1e17", .args = {"run", "--phase-timeout", "1e17"},
     .err = {"swap\\.phase_timeout_s: 1e\\+17 is not a number of seconds"}},
    {.group = "flags", .name = "phase_timeout_zero", .args = {"run", "--phase-timeout", "0"},
     .err = {"swap\\.phase_timeout_s: 0 "}},
    {.group = "flags", .name = "phase_timeout_nan", .args = {"run", "--phase-timeout", "nan"},
     .err = {"phase_timeout.*nan"}},
    {.group = "flags", .name = "phase_timeout_text", .args = {"run", "--phase-timeout", "soon"},
     .err = {"--phase-timeout", "soon"}},
    {.group = "flags", .name = "buffer_size_not_a_size", .args = {"run", "--buffer-size", "12X"},
     .err = {"--buffer-size: '12X' is not a size"}},
    {.group = "flags", .name = "buffer_size_fraction", .args = {"run", "--buffer-size", "1.5M"},
     .err = {"--buffer-size: '1\\.5M' is not a size"}},
    {.group = "flags", .name = "buffer_size_negative", .args = {"run", "--buffer-size", "-1M"},
     .err = {"--buffer-size.*-1M"}},
    {.group = "flags", .name = "buffer_size_overflow", .args = {"run", "--buffer-size", "99999999999999999999"},
     .err = {"--buffer-size: '99999999999999999999' is not a size \\(too large\\)"}},
    {.group = "flags", .name = "buffer_size_unit_overflow", .args = {"run", "--buffer-size", "16777216T"},
     .err = {"--buffer-size: '16777216T' is not a size \\(too large\\)"}},
    {.group = "flags", .name = "buffer_size_unaligned", .args = {"run", "--buffer-size", "1000"},
     .err = {"swap\\.buffer_size: 1000 is not a positive multiple of 4096"}},
    {.group = "flags", .name = "buffer_size_zero", .args = {"run", "--buffer-size", "0"},
     .err = {"swap\\.buffer_size: 0 "}},
    {.group = "flags", .name = "buffer_size_over_1TiB", .args = {"run", "--buffer-size", "2T"},
     .err = {"swap\\.buffer_size: 2199023255552 "}},
    {.group = "flags", .name = "block_size_unaligned", .args = {"run", "--block-size", "1000"},
     .err = {"aio\\.block_size: 1000 is not a multiple"}},
    {.group = "flags", .name = "block_size_over_1GiB", .args = {"run", "--block-size", "2G"},
     .err = {"aio\\.block_size: 2147483648"}},
    {.group = "flags", .name = "queue_depth_zero", .args = {"run", "--queue-depth", "0"},
     .err = {"aio\\.queue_depth: 0 is not between 1 and 65536"}},
    {.group = "flags", .name = "queue_depth_over_size_t", .args = {"run", "--queue-depth", "18446744073709551617"},
     .err = {"aio\\.queue_depth: [0-9]+ is not between 1 and 65536"}},
    {.group = "flags", .name = "threads_too_many", .args = {"run", "--threads", "257"},
     .err = {"aio\\.intra_op_parallelism: 257 is not between 1 and 256"}},
    {.group = "flags", .name = "buffer_count_one", .args = {"run", "--buffer-count", "1"},
     .err = {"swap\\.buffer_count: 1 is not between 2 and 65536"}},
    {.group = "flags", .name = "buffer_count_negative", .args = {"run", "--buffer-count", "-1"},
     .err = {"--buffer-count: '-1' is not a non-negative decimal integer"}},
    {.group = "flags", .name = "threads_wrapping_to_one", .args = {"run", "--threads", "-18446744073709551615"},
     .err = {"--threads: '-18446744073709551615' is not a non-negative decimal integer"}},
    {.group = "flags", .name = "queue_depth_hex", .args = {"run", "--queue-depth", "0x10"},
     .err = {"--queue-depth: '0x10' is not a non-negative decimal integer"}},
    {.group = "flags", .name = "slots_three", .args = {"run", "--slots", "3"}, .err = {"swap\\.slots: 3 is not 1 or 2"}},
    {.group = "flags", .name = "slots_zero", .args = {"run", "--slots", "0"}, .err = {"swap\\.slots: 0 is not 1 or 2"}},
    {.group = "flags", .name = "slots_octal", .args = {"run", "--slots", "010"}, .err = {"swap\\.slots: 10 is not 1 or 2"}},
    {.group = "flags", .name = "slots_over_int", .args = {"run", "--slots", "4294967298"},
     .err = {"--slots", "4294967298"}},
    {.group = "flags", .name = "policy_unknown", .args = {"run", "--policy", "fastest"},
     .err = {"policy 'fastest' is not one of balanced, sharded, round-robin"}},
    {.group = "flags", .name = "layout_unknown", .args = {"run", "--layout", "striped"},
     .err = {"layout 'striped' is not one of slab, file-per-tensor"}},
    {.group = "flags", .name = "backend_unknown", .args = {"run", "--backend", "spdk"},
     .err = {"unknown I/O backend 'spdk'"}},
    {.group = "flags", .name = "direct_unknown", .args = {"run", "--direct", "maybe"},
     .err = {"'maybe' is not one of auto, on, off"}},
    {.group = "flags", .name = "swap_unknown", .args = {"run", "--swap", "gradients"},
     .err = {"run\\.swap: 'gradients' is not one of params, optimizer, both"}},
    {.group = "flags", .name = "preset_unknown", .args = {"run", "--preset", "gpt-5"},
     .err = {"run\\.preset: unknown preset 'gpt-5'"}},
    {.group = "flags", .name = "scale_zero", .args = {"run", "--scale", "0"}, .err = {"run\\.scale: 0 is not in \\(0, 4\\]"}},
    {.group = "flags", .name = "scale_over_4", .args = {"run", "--scale", "5"}, .err = {"run\\.scale: 5 is not in"}},
    {.group = "flags", .name = "node_key_unknown", .args = {"run", "--node-key", "mac"}, .err = {"swap\\.node_key: .*mac"}},
    {.group = "flags", .name = "node_key_empty_env", .args = {"run", "--node-key", "env:"}, .err = {"swap\\.node_key"}},
    {.group = "flags", .name = "job_with_slash", .args = {"run", "--job", "a/b"},
     .err = {"swap\\.job: 'a/b' is not a plain name"}},
    {.group = "flags", .name = "job_dotdot", .args = {"run", "--job", ".."}, .err = {"swap\\.job: '\\.\\.' is not a plain name"}},
    {.group = "flags", .name = "job_too_long", .args = {"run", "--job", std::string(200, 'j')},
     .err = {"swap\\.job: 'jjj.*' has 200 bytes"}},
    {.group = "flags", .name = "roots_empty_entry", .args = {"run", "--roots", "@W@/a,,@W@/b"},
     .err = {"swap\\.roots: an empty directory name"}},
    {.group = "flags", .name = "root_is_a_file", .setup = file("afile", "not a directory\n"),
     .args = {"run", "--roots", "@W@/afile"}, .err = {"@W@/afile"}},
    {.group = "flags", .name = "root_too_long", .args = {"run", "--roots", "@W@/" + std::string(1100, 'r')},
     .err = {"swap\\.roots: '.*' has [0-9]+ bytes as an absolute path"}},
    {.group = "flags", .name = "catalog_dir_longer_than_PATH_MAX", .setup = file("model.json", kModel),
     .args = job_run({"--catalog-dir", "@W@/" + [] {
                        std::string p;  // 20 components of 250 bytes: 5020 bytes, over PATH_MAX (4096)
                        for (int i = 0; i < 20; ++i) p += kLong.substr(0, 250) + "/";
                        return p;
                      }()}),
     .err = {"swap\\.catalog_dir: .*'@W@/nnn"}},
    {.group = "flags", .name = "root_component_over_NAME_MAX", .setup = file("model.json", kModel),
     .args = {"run", "--roots", "@W@/" + kLong, "--tensors", "@W@/model.json", "--buffer-size", "64k"}, .err = {"swap\\.roots: .*'@W@/nnn"}},
    {.group = "flags", .name = "catalog_dir_is_a_file", .setup = file("afile", "not a directory\n"),
     .args = {"run", "--catalog-dir", "@W@/afile"}, .err = {"@W@/afile"}},
    {.group = "flags", .name = "prefetch_bytes_unaligned", .args = {"run", "--prefetch-bytes", "1000"},
     .err = {"swap\\.prefetch_bytes: 1000 is not a multiple of 4096"}},
    {.group = "flags", .name = "crash_at_unknown", .args = {"run", "--crash-at", "nowhere"},
     .err = {"--crash-at", "nowhere"}},
    {.group = "flags", .name = "allgather_needs_sharded", .args = {"run", "--allgather"},
     .err = {"run\\.allgather: needs swap\\.policy sharded"}},
    {.group = "flags", .name = "log_level_unknown", .args = {"--log-level", "loud", "run"},
     .err = {"log level 'loud' is not one of"}},
    {.group = "flags", .name = "bench_size_not_a_size", .args = {"bench", "--dir", "@W@", "--size", "12X"},
     .err = {"--size: '12X' is not a size"}},
    {.group = "flags", .name = "bench_dir_missing", .args = {"bench", "--dir", "@W@/missing", "--size", "1M"},
     .err = {"--dir: '@W@/missing' is not a directory"}},
    {.group = "flags", .name = "bench_queue_depth_list", .args = {"bench", "--dir", "@W@", "--queue-depth", "8,x"},
     .err = {"--queue-depth", "x"}},
    {.group = "flags", .name = "bench_iterations_zero", .args = {"bench", "--dir", "@W@", "--size", "1M", "--iters", "0"},
     .err = {"--iters: 0 is not at least 1"}},
    {.group = "flags", .name = "bench_threads_negative",
     .args = {"bench", "--dir", "@W@", "--size", "1M", "--threads", "2,-18446744073709551615"},
     .err = {"--threads: '-18446744073709551615' is not a non-negative decimal integer"}},
    {.group = "flags", .name = "verify_no_catalog_argument", .args = {"verify"}, .err = {"catalog"}},
    {.group = "flags", .name = "verify_backend_unknown", .setup = job(),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5", "--backend", "nope"}, .err = {"unknown I/O backend 'nope'"}},
    {.group = "flags", .name = "verify_buffer_size_not_a_size", .setup = job(),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5", "--buffer-size", "12X"},
     .err = {"--buffer-size: '12X' is not a size"}},
    {.group = "flags", .name = "verify_direct_unknown", .setup = job(),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5", "--direct", "sometimes"},
     .err = {"'sometimes' is not one of auto, on, off"}},

    // ---- config files (--config)
    {.group = "config", .name = "unknown_key", .setup = config(R"({"swap": {"polcy": "balanced"}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"config '@W@/c\\.json': unknown key 'swap\\.polcy'"}},
    {.group = "config", .name = "unknown_section", .setup = config(R"({"swapp": {}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"unknown key 'swapp'"}},
    {.group = "config", .name = "unknown_aio_key", .setup = config(R"({"aio": {"queue_dpth": 8}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"unknown key 'aio\\.queue_dpth'"}},
    {.group = "config", .name = "unknown_run_key", .setup = config(R"({"run": {"stepz": 2}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"unknown key 'run\\.stepz'"}},
    {.group = "config", .name = "slots_as_string", .setup = config(R"({"swap": {"slots": "2"}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"swap\\.slots: \"2\" is not 1 or 2"}},
    {.group = "config", .name = "slots_over_int", .setup = config(R"({"swap": {"slots": 4294967298}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"swap\\.slots: 4294967298 is out of range"}},
    {.group = "config", .name = "queue_depth_negative", .setup = config(R"({"aio": {"queue_depth": -1}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"aio\\.queue_depth: -1 is negative"}},
    {.group = "config", .name = "block_size_fraction", .setup = config(R"({"aio": {"block_size": 1.5}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"aio\\.block_size: 1\\.5 is not"}},
    {.group = "config", .name = "buffer_size_bad_unit", .setup = config(R"({"swap": {"buffer_size": "16Q"}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"swap\\.buffer_size: '16Q' is not a size"}},
    {.group = "config", .name = "steps_over_int", .setup = config(R"({"run": {"steps": 4294967299}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"run\\.steps: 4294967299 is out of range"}},
    {.group = "config", .name = "phase_timeout_1e17", .setup = config(R"({"swap": {"phase_timeout_s": 1e17}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"swap\\.phase_timeout_s: 1e\\+17 is not a number of seconds"}},
    {.group = "config", .name = "fsync_not_a_bool", .setup = config(R"({"aio": {"fsync": "yes"}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"aio\\.fsync: \"yes\" is not true or false"}},
    {.group = "config", .name = "roots_a_number", .setup = config(R"({"swap": {"roots": 5}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"swap\\.roots: 5 is not a directory"}},
    {.group = "config", .name = "section_not_an_object", .setup = config(R"({"swap": 3})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"swap: 3 is not an object"}},
    {.group = "config", .name = "not_an_object", .setup = config("[1, 2]"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"config '@W@/c\\.json': the config must be a JSON object"}},
    {.group = "config", .name = "broken_json", .setup = config(R"({"swap": {"slots": 2,})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"--config: '@W@/c\\.json' is not valid JSON"}},
    {.group = "config", .name = "empty_file", .setup = config(""),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"--config: '@W@/c\\.json' is not valid JSON"}},
    {.group = "config", .name = "missing_file", .args = {"run", "--config", "@W@/missing.json"},
     .err = {"--config: cannot open '@W@/missing\\.json'"}},
    {.group = "config", .name = "a_directory", .setup = [](Work& w) { make_directory(w.path("confdir")); },
     .args = {"run", "--config", "@W@/confdir"}, .err = {"--config: '@W@/confdir' is a directory"}},
    {.group = "config", .name = "a_fifo", .setup = [](Work& w) { make_fifo(w.path("c.json")); },
     .args = {"run", "--config", "@W@/c.json"}, .err = {"--config: '@W@/c\\.json' is not a regular file"}},
    {.group = "config", .name = "use_gds", .setup = config(R"({"aio": {"use_gds": true}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"aio\\.use_gds: GPUDirect Storage is not supported"}},
    {.group = "config", .name = "scale_a_string", .setup = config(R"({"run": {"scale": "big"}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"run\\.scale: \"big\" is not a number"}},
    {.group = "config", .name = "tensor_list_missing", .setup = config(R"({"run": {"tensors": "@W@/nope.json"}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"run\\.tensors: cannot open '@W@/nope\\.json'"}},

    // ---- DeepSpeed configs (ds_config.json as is)
    {.group = "deepspeed", .name = "stage_4", .setup = config(R"({"zero_optimization": {"stage": 4}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"zero_optimization\\.stage: 4 is out of range"}},
    {.group = "deepspeed", .name = "device_unknown",
     .setup = config(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "disk", "nvme_path": "@W@/nvme"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"zero_optimization\\.offload_param\\.device: 'disk' is not one of"}},
    {.group = "deepspeed", .name = "nvme_without_path",
     .setup = config(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"zero_optimization\\.offload_param\\.nvme_path: missing"}},
    {.group = "deepspeed", .name = "buffer_size_as_size_string",
     .setup = config(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "@W@/nvme", "buffer_size": "16M"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"zero_optimization\\.offload_param\\.buffer_size: \"16M\" is not a number of elements"}},
    {.group = "deepspeed", .name = "buffer_count_too_large",
     .setup = config(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "@W@/nvme", "buffer_count": 70000}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"zero_optimization\\.offload_param\\.buffer_count: 70000 is out of range"}},
    {.group = "deepspeed", .name = "fp16_and_bf16",
     .setup = config(R"({"fp16": {"enabled": true}, "bf16": {"enabled": true}, "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "@W@/nvme"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"fp16\\.enabled: fp16 and bf16 are both enabled"}},
    {.group = "deepspeed", .name = "offloads_nothing",
     .setup = config(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"the DeepSpeed config offloads nothing to NVMe"}},
    {.group = "deepspeed", .name = "unknown_offload_key",
     .setup = config(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_pth": "@W@/nvme"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"unknown key 'zero_optimization\\.offload_param\\.nvme_pth'"}},
    {.group = "deepspeed", .name = "thread_count_zero",
     .setup = config(R"({"aio": {"thread_count": 0}, "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "@W@/nvme"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"aio\\.(thread_count|intra_op_parallelism): 0 "}},
    {.group = "deepspeed", .name = "precision_not_a_bool",
     .setup = config(R"({"fp16": {"enabled": 1}, "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "@W@/nvme"}}})"),
     .args = {"run", "--config", "@W@/c.json"}, .err = {"fp16\\.enabled: 1 is not true, false or \"auto\""}},

    // ---- tensor lists (--tensors)
    {.group = "tensors", .name = "dtype_unknown", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [4], "dtype": "f128"}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"@W@/t\\.json' entry 0", "dtype 'f128' is not one of"}},
    {.group = "tensors", .name = "dtype_not_a_string", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [4], "dtype": 4}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"@W@/t\\.json' entry 0", "dtype.*4"}},
    {.group = "tensors", .name = "shape_negative", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [-1, 4]}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"@W@/t\\.json' entry 0: 'shape' must be a list of non-negative integers"}},
    {.group = "tensors", .name = "shape_fraction", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [2.5]}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"entry 0: 'shape' must be a list of non-negative integers"}},
    {.group = "tensors", .name = "shape_not_a_list", .setup = tensors(R"({"tensors": [{"name": "w", "shape": 7}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"entry 0: 'shape' must be a list"}},
    {.group = "tensors", .name = "shape_overflows", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [4294967296, 4294967296, 16]}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"tensor 0 \\('w'\\): the element count of its shape overflows 64 bits"}},
    {.group = "tensors", .name = "duplicate_names",
     .setup = tensors(R"({"tensors": [{"name": "w", "shape": [4]}, {"name": "b", "shape": [4]}, {"name": "w", "shape": [8]}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"entry 2", "'w'", "entry 0"}},
    {.group = "tensors", .name = "name_too_long",
     .setup = tensors(R"({"tensors": [{"name": ")" + std::string(256, 'n') + R"(", "shape": [4]}]})"),
     .args = {"run", "--tensors", "@W@/t.json", "--roots", "@W@/root"}, .err = {"its name has 256 bytes"}},
    {.group = "tensors", .name = "name_empty", .setup = tensors(R"({"tensors": [{"name": "", "shape": [4]}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"entry 0: 'name' must be a non-empty string"}},
    {.group = "tensors", .name = "unknown_key", .setup = tensors(R"({"tensors": [{"name": "w", "shap": [4]}]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"entry 0: unknown key 'shap'"}},
    {.group = "tensors", .name = "entry_not_an_object", .setup = tensors(R"({"tensors": ["w"]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"entry 0 is not an object"}},
    {.group = "tensors", .name = "extra_top_level_key", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [4]}], "x": 1})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"'@W@/t\\.json' must hold \\{\"tensors\": \\[\\.\\.\\.\\]\\}"}},
    {.group = "tensors", .name = "empty_list", .setup = tensors(R"({"tensors": []})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"'@W@/t\\.json' has no tensor list"}},
    {.group = "tensors", .name = "broken_json", .setup = tensors(R"({"tensors": [{"name": "w", "shape": [4]})"),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"run\\.tensors: '@W@/t\\.json' is not valid JSON"}},
    {.group = "tensors", .name = "empty_file", .setup = tensors(""),
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"run\\.tensors: '@W@/t\\.json' is not valid JSON"}},
    {.group = "tensors", .name = "missing_file", .args = {"run", "--tensors", "@W@/missing.json"},
     .err = {"run\\.tensors: cannot open '@W@/missing\\.json'"}},
    {.group = "tensors", .name = "a_directory", .setup = [](Work& w) { make_directory(w.path("t.json")); },
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"run\\.tensors: '@W@/t\\.json' is a directory"}},
    {.group = "tensors", .name = "a_fifo", .setup = [](Work& w) { make_fifo(w.path("t.json")); },
     .args = {"run", "--tensors", "@W@/t.json"}, .err = {"run\\.tensors: '@W@/t\\.json' is not a regular file"}},

    // ---- catalogs (inspect, verify, run --resume)
    {.group = "catalog", .name = "inspect_missing", .args = {"inspect", "@W@/none.h5"},
     .err = {"catalog '@W@/none\\.h5': no such file"}},
    {.group = "catalog", .name = "inspect_truncated", .setup = job([](Work& w) { truncate_file(catalog_of(w), 3000); }),
     .args = {"inspect", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "': no checksum trailer"}},
    {.group = "catalog", .name = "inspect_bit_flipped", .setup = job([](Work& w) { flip_byte(catalog_of(w), 1000); }),
     .args = {"inspect", "@W@/root/swapcoord/catalog.h5"},
     .err = {"catalog '" + kCatalog + "': checksum [0-9a-f]+ does not match its trailer"}},
    {.group = "catalog", .name = "inspect_random_bytes", .setup = file("junk.h5", std::string(4096, '\x5a')),
     .args = {"inspect", "@W@/junk.h5"}, .err = {"catalog '@W@/junk\\.h5'"}},
    {.group = "catalog", .name = "inspect_empty_file", .setup = file("empty.h5", ""),
     .args = {"inspect", "@W@/empty.h5"}, .err = {"catalog '@W@/empty\\.h5'"}},
    {.group = "catalog", .name = "inspect_directory", .setup = [](Work& w) { make_directory(w.path("dir.h5")); },
     .args = {"inspect", "@W@/dir.h5"}, .err = {"catalog '@W@/dir\\.h5'"}},
    {.group = "catalog", .name = "inspect_fifo", .setup = [](Work& w) { make_fifo(w.path("fifo.h5")); },
     .args = {"inspect", "@W@/fifo.h5"}, .err = {"catalog '@W@/fifo\\.h5'"}},
    {.group = "catalog", .name = "verify_truncated", .setup = job([](Work& w) { truncate_file(catalog_of(w), 3000); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "': no checksum trailer"}},
    {.group = "catalog", .name = "verify_fifo", .setup = [](Work& w) { make_fifo(w.path("fifo.h5")); },
     .args = {"verify", "@W@/fifo.h5"}, .err = {"catalog '@W@/fifo\\.h5'"}},
    {.group = "catalog", .name = "resume_bit_flipped", .setup = job([](Work& w) { flip_byte(catalog_of(w), 1000); }),
     .args = job_run({"--resume"}), .err = {"catalog '" + kCatalog + "': checksum [0-9a-f]+ does not match its trailer"}},
    {.group = "catalog", .name = "resume_no_catalog", .setup = file("model.json", kModel), .args = job_run({"--resume"}),
     .err = {"catalog '" + kCatalog + "': no such file"}},
    {.group = "catalog", .name = "rows_overlap",
     .setup = job([](Work& w) { set_catalog_column(catalog_of(w), "tensors", 1, "offset", 0); }),
     .args = {"inspect", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "': rows overlap in file"}},
    {.group = "catalog", .name = "row_past_its_file",
     .setup = job([](Work& w) { set_catalog_column(catalog_of(w), "tensors", 2, "offset", 1 << 30); }),
     .args = {"inspect", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "'", "do not fit file"}},
    {.group = "catalog", .name = "row_of_a_later_epoch",
     .setup = job([](Work& w) { set_catalog_column(catalog_of(w), "tensors", 0, "epoch", 7); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "'", "epoch 7 is outside"}},
    {.group = "catalog", .name = "path_with_dotdot",
     .setup = job([](Work& w) { set_catalog_column(catalog_of(w), "files", 0, "path", "../../etc/passwd"); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "'", "contains '\\.\\.'"}},
    {.group = "catalog", .name = "path_absolute",
     .setup = job([](Work& w) { set_catalog_column(catalog_of(w), "files", 0, "path", "/etc/passwd"); }),
     .args = job_run({"--resume"}), .err = {"catalog '" + kCatalog + "'", "'/etc/passwd' is not a relative path"}},
    {.group = "catalog", .name = "newer_version",
     .setup = job([](Work& w) { set_catalog_attribute(catalog_of(w), "version", 4); }),
     .args = {"inspect", "@W@/root/swapcoord/catalog.h5"}, .err = {"catalog '" + kCatalog + "': format version 4"}},
    {.group = "catalog", .name = "edited_checksum",
     .setup = job([](Work& w) { set_catalog_column(catalog_of(w), "tensors", 1, "checksum", 12345); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1, .err = {},
     .out = {"# mismatch \\(rank 0\\): tensor 'layer0\\.b' shard 0 \\(6000 bytes at offset 4096 of '" + kSlab +
             "'\\): checksum [0-9a-f]+, catalog says 0*3039"}},
    {.group = "catalog", .name = "wrong_job",
     .setup = job([](Work& w) { set_catalog_attribute(catalog_of(w), "job", std::string("someone-else")); }),
     .args = job_run({"--resume"}), .err = {"swap\\.job: the catalog '@W@/root/swapcoord/catalog\\.h5' is job 'someone-else', this session's job is 'swapcoord'"}},

    // ---- swap files (verify: exit 1, naming the tensor, file and offset; resume: exit 2)
    {.group = "swapfile", .name = "verify_byte_flipped", .setup = job([](Work& w) { flip_byte(slab_of(w), 0); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1,
     .out = {"# mismatch \\(rank 0\\): tensor 'layer0\\.w' shard 0 \\(4000 bytes at offset 0 of '" + kSlab +
                 "'\\): checksum [0-9a-f]+, catalog says [0-9a-f]+",
             "1 mismatches ERROR"}},
    {.group = "swapfile", .name = "verify_byte_flipped_third_tensor",
     .setup = job([](Work& w) { flip_byte(slab_of(w), 12288 + 19999); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1,
     .out = {"tensor 'layer1\\.w' shard 0 \\(20000 bytes at offset 12288 of '" + kSlab + "'\\)", "1 mismatches ERROR"}},
    {.group = "swapfile", .name = "verify_truncated", .setup = job([](Work& w) { truncate_file(slab_of(w), 8192); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1, .out = kUnreadableSlab},
    {.group = "swapfile", .name = "verify_fifo", .setup = job([](Work& w) { make_fifo(slab_of(w)); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1, .out = kUnreadableSlab},
    {.group = "swapfile", .name = "verify_missing", .setup = job([](Work& w) { fs::remove(slab_of(w)); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1, .out = kUnreadableSlab},
    {.group = "swapfile", .name = "verify_directory", .setup = job([](Work& w) { make_directory(slab_of(w)); }),
     .args = {"verify", "@W@/root/swapcoord/catalog.h5"}, .exit = 1, .out = kUnreadableSlab},
    {.group = "swapfile", .name = "resume_byte_flipped", .setup = job([](Work& w) { flip_byte(slab_of(w), 4096 + 8); }),
     .args = job_run({"--resume"}), .exit = 1,
     .out = {"wrong values: rank 0@[^:]+: 'layer0\\.b' element 4 \\(1 wrong in '" + kSlab + "' at [0-9]+\\)",
             "# Wrong values: 1 ERROR"}},
    {.group = "swapfile", .name = "resume_truncated", .setup = job([](Work& w) { truncate_file(slab_of(w), 8192); }),
     .args = job_run({"--resume"}), .err = {kSlab + "': it has 8192 bytes, the catalog expects [0-9]+"}},
    {.group = "swapfile", .name = "resume_fifo", .setup = job([](Work& w) { make_fifo(slab_of(w)); }),
     .args = job_run({"--resume"}), .err = {kSlab + "': not a regular file"}},
    {.group = "swapfile", .name = "resume_missing", .setup = job([](Work& w) { fs::remove(slab_of(w)); }),
     .args = job_run({"--resume"}), .err = {kSlab + "': stat.*No such file"}},
    {.group = "swapfile", .name = "resume_directory", .setup = job([](Work& w) { make_directory(slab_of(w)); }),
     .args = job_run({"--resume"}), .err = {kSlab + "': not a regular file"}},

    // ---- resume against another model, or a fresh run over a committed catalog
    {.group = "resume", .name = "other_tensor_name",
     .setup = job(file("other.json", R"({"tensors": [{"name": "layer0.w", "shape": [1000], "dtype": "f32"},
       {"name": "layer0.bias", "shape": [3000], "dtype": "f16"}, {"name": "layer1.w", "shape": [50, 100], "dtype": "f32"}]})")),
     .args = {"run", "--resume", "--roots", "@W@/root", "--tensors", "@W@/other.json", "--swap", "params", "--steps", "1",
              "--buffer-size", "64k"},
     .err = {"catalog tensor 1 is 'layer0\\.b' \\(f16\\), but the model's is 'layer0\\.bias' \\(f16\\)"}},
    {.group = "resume", .name = "other_dtype",
     .setup = job(file("other.json", R"({"tensors": [{"name": "layer0.w", "shape": [1000], "dtype": "f32"},
       {"name": "layer0.b", "shape": [3000], "dtype": "bf16"}, {"name": "layer1.w", "shape": [50, 100], "dtype": "f32"}]})")),
     .args = {"run", "--resume", "--roots", "@W@/root", "--tensors", "@W@/other.json", "--swap", "params", "--steps", "1",
              "--buffer-size", "64k"},
     .err = {"catalog tensor 1 is 'layer0\\.b' \\(f16\\), but the model's is 'layer0\\.b' \\(bf16\\)"}},
    {.group = "resume", .name = "other_shape",
     .setup = job(file("other.json", R"({"tensors": [{"name": "layer0.w", "shape": [1000], "dtype": "f32"},
       {"name": "layer0.b", "shape": [3000], "dtype": "f16"}, {"name": "layer1.w", "shape": [50, 101], "dtype": "f32"}]})")),
     .args = {"run", "--resume", "--roots", "@W@/root", "--tensors", "@W@/other.json", "--swap", "params", "--steps", "1",
              "--buffer-size", "64k"},
     .err = {"tensor 'layer1\\.w' covers 5000 of its 5050 elements"}},
    {.group = "resume", .name = "more_tensors", .setup = job(),
     .args = {"run", "--resume", "--roots", "@W@/root", "--tensors", "@W@/model.json", "--swap", "both", "--steps", "1",
              "--buffer-size", "64k"},
     .err = {"layer0\\.w\\.master"}},
    {.group = "resume", .name = "fresh_run_over_committed_catalog", .setup = job(), .args = job_run(),
     .err = {kCatalog + "' holds the committed catalog of job 'swapcoord', epoch 0", "--resume", "--overwrite"}},
    {.group = "resume", .name = "fresh_run_over_committed_catalog_np2", .setup = job(), .ranks = 2, .args = job_run(),
     .err = {kCatalog + "' holds the committed catalog of job 'swapcoord', epoch 0"}},

    // ---- ranks that disagree (mpiexec -n 2, rank 1 given other flags by a wrapper)
    {.group = "ranks", .name = "other_steps", .setup = file("model.json", kModel), .ranks = 2, .wrapper = "mpi/run/rank1_other_steps.sh",
     .args = {"run", "--roots", "@W@/root", "--tensors", "@W@/model.json", "--steps", "1", "--buffer-size", "64k"},
     .err = {"ranks disagree on the configuration: rank 1 has run\\.steps = 5, rank 0 has 1"}},
    {.group = "ranks", .name = "other_policy", .setup = file("model.json", kModel), .ranks = 2,
     .wrapper = "bad_input/rank1_arg.sh --policy sharded",
     .args = {"run", "--roots", "@W@/root", "--tensors", "@W@/model.json", "--policy", "balanced", "--buffer-size", "64k"},
     .err = {"ranks disagree on the configuration: rank 1 has swap\\.policy = \"sharded\", rank 0 has \"balanced\""}},
    {.group = "ranks", .name = "other_tensor_list",
     .setup = [](Work& w) {
       write_file(w.path("model.json"), kModel);
       write_file(w.path("other.json"), R"({"tensors": [{"name": "x", "shape": [10]}]})");
     },
     .ranks = 2, .wrapper = "bad_input/rank1_arg.sh --tensors @W@/other.json",
     .args = {"run", "--roots", "@W@/root", "--tensors", "@W@/model.json", "--buffer-size", "64k"},
     .err = {"rank 1 has run\\.tensors = \"@W@/other\\.json\", rank 0 has \"@W@/model\\.json\""}},
    {.group = "ranks", .name = "one_rank_cannot_create_its_root",
     .setup = [](Work& w) {
       write_file(w.path("model.json"), kModel);
       write_file(w.path("afile"), "not a directory\n");
     },
     .ranks = 2, .wrapper = "bad_input/rank1_arg.sh --roots @W@/afile/root",
     .args = {"run", "--roots", "@W@/root", "--tensors", "@W@/model.json", "--buffer-size", "64k"},
     .err = {"rank 1@[^:]+: swap\\.roots: .*'@W@/afile"}},
    {.group = "ranks", .name = "one_rank_bad_tensor_list",
     .setup = [](Work& w) {
       write_file(w.path("model.json"), kModel);
       write_file(w.path("bad.json"), R"({"tensors": [{"name": "w", "shape": [-4]}]})");
     },
     .ranks = 2, .wrapper = "bad_input/rank1_arg.sh --tensors @W@/bad.json",
     .args = {"run", "--roots", "@W@/root", "--tensors", "@W@/model.json", "--buffer-size", "64k"},
     .err = {"@W@/bad\\.json' entry 0: 'shape'"}},

    // ---- safety: job locks, free space, catalog roots, root ownership and links (issue 9)
    {.group = "safety", .name = "job_lock",
     .setup =
         [](Work& w) {
           prepare_job(w);
           if (::testing::Test::HasFatalFailure()) return;
           // The holder: the same job resumed for a million steps, in the background.
           const pid_t pid = start_background(
               w, {app(), "run", "--resume", "--roots", w.path("root"), "--tensors", w.path("model.json"), "--swap",
                   "params", "--steps", "1000000", "--buffer-size", "64k"}, "holder");
           w.vars["PID"] = std::to_string(pid);
           for (int i = 0; i < 600; ++i, ::usleep(100000)) {  // until it swaps out (past its start-up)
             std::ifstream out(w.path("holder.out"));
             const std::string text((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
             if (text.find("swap-out") != std::string::npos) break;
           }
         },
     .args = job_run({"--overwrite"}), .err = {"@W@/root", "@HOST@", "@PID@"}},
    {.group = "safety", .name = "free_space",
     .setup = tensors(R"({"tensors": [{"name": "huge", "shape": [4398046511104], "dtype": "f32"}]})"),
     .args = {"run", "--roots", "@W@/root", "--tensors", "@W@/t.json", "--steps", "1", "--buffer-size", "64k"},
     .err = {"swap root '@W@/root'", "the job does not fit", "[0-9]+ bytes, 2 slots"}},
    {.group = "safety", .name = "catalog_root_outside_the_roots",
     .setup = job([](Work& w) {
       copy_tree(w.path("root/swapcoord"), w.path("elsewhere/swapcoord"));
       set_catalog_column(catalog_of(w), "roots", 0, "path", w.path("elsewhere"));
     }),
     .args = job_run({"--resume"}), .err = {"@W@/elsewhere", "not one of the swap roots"}},
    {.group = "safety", .name = "root_world_writable",
     .setup = [](Work& w) {
       write_file(w.path("model.json"), kModel);
       fs::create_directories(w.path("root"));
       fs::permissions(w.path("root"), fs::perms::all);
     },
     .args = job_run(), .err = {"@W@/root", "writable by every user"}},
    {.group = "safety", .name = "root_owned_by_another_user",
     .setup = [](Work& w) {
       write_file(w.path("model.json"), kModel);
       fs::create_directories(w.path("root"));
       if (::chown(w.path("root").c_str(), 65534, 65534) != 0) GTEST_SKIP() << "cannot chown (not root)";
     },
     .args = job_run(), .err = {"@W@/root", "owned by|owner"}},
    {.group = "safety", .name = "job_directory_a_symlink",
     .setup = [](Work& w) {
       write_file(w.path("model.json"), kModel);
       fs::create_directories(w.path("elsewhere"));
       fs::create_directories(w.path("root"));
       fs::create_directory_symlink(w.path("elsewhere"), w.path("root/swapcoord"));
     },
     .args = job_run(), .err = {"@W@/root/swapcoord", "symbolic link"}},
};

// ---- the driver -------------------------------------------------------------------------

std::string regex_escape(const std::string& text) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(text, special, R"(\$&)");
}

std::string substitute(std::string text, const Work& w, bool for_regex) {
  for (const auto& [name, value] : w.vars) {
    const std::string key = "@" + name + "@";
    const std::string with = for_regex ? regex_escape(value) : value;
    for (std::size_t at = 0; (at = text.find(key, at)) != std::string::npos; at += with.size())
      text.replace(at, key.size(), with);
  }
  return text;
}

// What no case may print, whatever its exit code: a sanitizer report, an uncaught
// exception, a crash reported by the launcher.
const char* const kCrashMarkers[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                                     "terminate called",        "Segmentation fault",   "exited on signal",
                                     "core dumped"};

class BadInput : public ::testing::Test {
 public:
  explicit BadInput(const Case& c) : _case(c) {}

  void TestBody() override {
    if (_case.pending) GTEST_SKIP() << "pending: " << _case.pending;
    _work.dir = fs::path(SWAPCOORD_BAD_INPUT_WORK) / (std::string(_case.group) + "." + _case.name);
    fs::remove_all(_work.dir);
    fs::create_directories(_work.dir);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    _work.vars = {{"W", _work.dir}, {"HOST", host}};
    if (_case.setup) {
      ASSERT_NO_FATAL_FAILURE(_case.setup(_work)) << "setup of " << _case.group << "." << _case.name;
      if (IsSkipped()) return;
    }

    std::vector<std::string> argv;
    if (_case.ranks > 0) {
      argv = mpiexec(_case.ranks);
      if (!_case.wrapper.empty()) {
        std::istringstream words(substitute(_case.wrapper, _work, false));
        bool first = true;
        for (std::string word; words >> word; first = false) argv.push_back(first ? tests_dir() + "/" + word : word);
      }
    }
    argv.push_back(app());
    for (const auto& a : _case.args) argv.push_back(substitute(a, _work, false));
    const Result r = run_command(argv, _work.dir);

    const std::string shown = "command: " + r.command + "\n--- stdout\n" + r.out + "\n--- stderr\n" + r.err;
    ASSERT_FALSE(r.timed_out) << "the command did not end within 60 s (a hang)\n" << shown;
    ASSERT_EQ(r.signal, 0) << "the command was killed by signal " << r.signal << "\n" << shown;
    for (const char* marker : kCrashMarkers) {
      EXPECT_EQ(r.err.find(marker), std::string::npos) << "stderr holds '" << marker << "'\n" << shown;
      EXPECT_EQ(r.out.find(marker), std::string::npos) << "stdout holds '" << marker << "'\n" << shown;
    }
    EXPECT_EQ(r.exit_code, _case.exit) << "exit code\n" << shown;
    for (const auto& pattern : _case.err) {
      const std::string p = substitute(pattern, _work, true);
      EXPECT_TRUE(std::regex_search(r.err, std::regex(p))) << "stderr does not match '" << p << "'\n" << shown;
    }
    for (const auto& pattern : _case.out) {
      const std::string p = substitute(pattern, _work, true);
      EXPECT_TRUE(std::regex_search(r.out, std::regex(p))) << "stdout does not match '" << p << "'\n" << shown;
    }
  }

  void TearDown() override {
    for (const pid_t pid : _work.background) ::kill(-pid, SIGKILL);
    for (const pid_t pid : _work.background) ::waitpid(pid, nullptr, 0);
    // Kept when the case failed, to look at; removed otherwise.
    if (!_work.dir.empty() && !HasFailure()) fs::remove_all(_work.dir);
    else if (!_work.dir.empty()) std::printf("kept %s\n", _work.dir.c_str());
  }

 private:
  const Case& _case;
  Work _work;
};

// One gtest test per case, named <group>.<name> (ctest: bad_input.<group>.<name>).
const bool kRegistered = [] {
  for (const Case& c : kCases)
    ::testing::RegisterTest(c.group, c.name, nullptr, nullptr, __FILE__, __LINE__,
                            [&c]() -> ::testing::Test* { return new BadInput(c); });
  return true;
}();

// The table itself: names unique, at least 60 cases that run now.
TEST(Table, CasesAreCountedAndNamedOnce) {
  std::set<std::string> names;
  int active = 0;
  for (const Case& c : kCases) {
    EXPECT_TRUE(names.insert(std::string(c.group) + "." + c.name).second) << c.group << "." << c.name << " twice";
    EXPECT_TRUE(c.exit == 1 || c.exit == 2) << c.name;
    EXPECT_FALSE(c.err.empty() && c.out.empty()) << c.name << " checks no message";
    active += c.pending == nullptr;
  }
  EXPECT_GE(active, 60);
}

}  // namespace
}  // namespace swapcoord::bad_input
