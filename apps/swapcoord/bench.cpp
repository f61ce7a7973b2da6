// swapcoord bench: raw swap-file throughput of the I/O engine, swept over backend x
// block size x queue depth x threads, in the nccl-tests report style.
//
// For each configuration and iteration, on one preallocated file of --size bytes:
//   write       overwrite of the whole file from a pinned buffer (engine submit .. wait)
//   write+sync  the same followed by fdatasync, timed together
//   read        the whole file into a second pinned buffer, then every byte is checked
//               against what the last write wrote (#wrong counts differing bytes)
// Each iteration writes a different pattern, so stale data cannot pass the check.
// GB/s = bytes / seconds / 1e9; the table shows the median over --iters iterations.
//
// A backend name with `+reg` (io_uring+reg) is that backend with registered I/O: its
// engine registers the two host buffers and the file (IoEngine::register_buffers,
// register_files) before its timed runs. `--backend all` adds it for every backend that
// has registered I/O.
//
// --device cuda adds, on the same file, engine and iteration, the GPU path of the session:
//   dev>file+sync  the file's bytes from GPU memory through --buffer-count pinned staging
//                  buffers (a copy on a CUDA stream, then the buffer's write, overlapping
//                  the next copy), then fdatasync: compare with write+sync
//   file>dev       the file into GPU memory through the staging buffers (each copy to the
//                  GPU overlapping the next reads), then checked on the host: compare with read
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/device/device.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/swap/async_tensor_swapper.hpp"
#include "swapcoord/io/private_fs.hpp"
#include "swapcoord/io/swap_file.hpp"

namespace swapcoord::app {
namespace {

using Clock = std::chrono::steady_clock;

void fill(std::byte* data, std::size_t bytes, std::uint64_t seed) {
  auto* words = reinterpret_cast<std::uint64_t*>(data);
  for (std::size_t i = 0; i < bytes / 8; ++i) words[i] = mix64(seed + i);
}

// Bytes of `data` that differ from fill(seed).
std::uint64_t count_wrong(const std::byte* data, std::size_t bytes, std::uint64_t seed) {
  const auto* words = reinterpret_cast<const std::uint64_t*>(data);
  std::uint64_t wrong = 0;
  for (std::size_t i = 0; i < bytes / 8; ++i) {
    const std::uint64_t diff = words[i] ^ mix64(seed + i);
    if (diff == 0) continue;
    for (int b = 0; b < 8; ++b) wrong += ((diff >> (8 * b)) & 0xff) != 0;
  }
  return wrong;
}

struct Sample {
  std::vector<double> gbps;
  double median() const {
    auto sorted = gbps;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t n = sorted.size();
    return n == 0 ? 0.0 : n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  }
  nlohmann::json to_json() const {
    return {{"median", median()},
            {"min", gbps.empty() ? 0.0 : *std::min_element(gbps.begin(), gbps.end())},
            {"max", gbps.empty() ? 0.0 : *std::max_element(gbps.begin(), gbps.end())},
            {"samples", gbps}};
  }
};

// One entry of --backend: a registry backend, with registered I/O or not.
struct Variant {
  std::string name;     // as given and shown: io_uring+reg
  std::string backend;  // the registry name: io_uring
  bool registered = false;
};

constexpr std::string_view kRegisteredSuffix = "+reg";

Variant parse_variant(const std::string& name) {
  if (name.size() > kRegisteredSuffix.size() && name.ends_with(kRegisteredSuffix))
    return {name, name.substr(0, name.size() - kRegisteredSuffix.size()), true};
  return {name, name, false};
}

// Whether `backend`'s engine has registered I/O here (the kernel may refuse it).
bool has_registered_io(const std::string& backend) {
  try {
    AioConfig probe;
    probe.queue_depth = 1;
    auto engine = make_engine(backend, probe);
    PinnedAllocation page(4096);
    return engine->register_buffers(std::vector{std::span<std::byte>(page.data(), 4096)});
  } catch (const Error&) {
    return false;
  }
}

// Registers the bench's buffers and file with a `+reg` variant's engine.
void register_io(IoEngine& engine, const Variant& variant, std::span<const std::span<std::byte>> buffers,
                 const SwapFile& file) {
  if (!variant.registered) return;
  try {
    if (!engine.register_buffers(buffers) || !engine.register_files(std::vector<SwapFileRef>{file}))
      throw ConfigError(fmt::format("--backend {}: the {} backend has no registered I/O (io_uring has)",
                                    variant.name, variant.backend));
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    throw Error(fmt::format("--backend {}: {}", variant.name, e.what()));
  }
}

struct Point {
  std::string backend;      // the registry name
  bool registered = false;  // a +reg variant
  std::string shown() const { return backend + (registered ? std::string(kRegisteredSuffix) : ""); }
  std::uint64_t block_size;
  std::size_t queue_depth;
  std::size_t threads;
  Sample write, write_sync, read;
  Sample device_write_sync, device_read;  // --device cuda
  std::uint64_t wrong = 0;
};

double gbps(std::uint64_t bytes, Clock::duration elapsed) {
  return static_cast<double>(bytes) / std::chrono::duration<double>(elapsed).count() / 1e9;
}

}  // namespace

namespace {

// The options `bench` and `tune` share: the file and the sweep.
void add_sweep_options(CLI::App* cmd, BenchOptions& o) {
  cmd->add_option("--dir", o.dir, "Directory for the test file (on the device to measure)")
      ->capture_default_str();
  cmd->add_option("--size", o.size, "File size (e.g. 256M, 1G)")->capture_default_str();
  cmd->add_option("--backend", o.backends, "I/O backends: libaio, io_uring, posix, io_uring+reg (registered "
                                           "buffers and file), or all")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--block-size", o.block_sizes, "Bytes per kernel request (list)")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("--queue-depth", o.queue_depths, "Requests in flight per thread (list)")
      ->delimiter(',')->transform(decimal_integer(false))->capture_default_str();
  cmd->add_option("--threads", o.threads, "I/O threads, aio intra_op_parallelism (list)")
      ->delimiter(',')->transform(decimal_integer(false))->capture_default_str();
  cmd->add_option("--direct", o.direct, "O_DIRECT: auto|on|off")->capture_default_str();
  cmd->add_flag("--single-submit", o.single_submit, "One request per submit call");
  cmd->add_flag("--no-overlap-events", o.no_overlap_events,
                "Wait for all requests in flight before submitting more");
  cmd->add_option("--iters", o.iterations, "Iterations per configuration (median reported)")
      ->capture_default_str();
  cmd->add_option("--json", o.json, "Also write all figures (and argv) to this JSON file");
  cmd->add_flag("--keep", o.keep, "Keep the test file");
}

}  // namespace

void add_bench_command(CLI::App& app, BenchOptions& o) {
  auto* cmd = app.add_subcommand("bench", "Measure swap-file write, write+fdatasync and read "
                                          "throughput over a sweep of I/O settings");
  add_sweep_options(cmd, o);
  cmd->add_option("--device", o.device, "cpu, or cuda: also measure GPU memory to file and back through "
                                        "pinned staging buffers (the session's path)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--buffer-count", o.buffer_count, "--device cuda: pinned staging buffers")
      ->transform(decimal_integer(false))->capture_default_str();
  cmd->add_option("--buffer-size", o.buffer_size, "--device cuda: bytes per staging buffer")->capture_default_str();
}

void add_tune_command(CLI::App& app, BenchOptions& o) {
  // A wider sweep than bench's by default: DeepSpeed's ds_nvme_tune's questions.
  o.tune = true;
  o.size = "256M";
  o.backends = {"all"};
  o.block_sizes = {"256k", "1M", "4M"};
  o.queue_depths = {8, 32, 128};
  o.threads = {1, 2};
  o.iterations = 2;
  auto* cmd = app.add_subcommand("tune", "Find the fastest I/O settings for a directory's device: sweep backend x "
                                         "block size x queue depth x threads, print the table and the best as an "
                                         "aio config section (swapcoord's ds_nvme_tune)");
  add_sweep_options(cmd, o);
  cmd->add_option("--write-config", o.write_config,
                  "Also write the best settings as a config file ({\"aio\": {...}}) for swapcoord run --config "
                  "or SessionOptions");
}

int run_bench(const BenchOptions& o, const std::vector<std::string>& argv) {
  const std::uint64_t size = parse_size(o.size, "--size");
  const auto block_sizes = parse_sizes(o.block_sizes, "--block-size");
  const DirectMode direct = parse_direct_mode(o.direct);
  if (size == 0 || size % 8 != 0) throw ConfigError(fmt::format("--size: {} is not a positive multiple of 8 bytes", size));
  if (o.iterations < 1) throw ConfigError(fmt::format("--iters: {} is not at least 1", o.iterations));
  std::vector<Variant> backends;
  if (o.backends.size() == 1 && o.backends[0] == "all") {
    for (const auto& info : engine_infos()) {
      if (!info.available) continue;
      backends.push_back({info.name, info.name, false});
      if (has_registered_io(info.name))
        backends.push_back({info.name + std::string(kRegisteredSuffix), info.name, true});
    }
  } else {
    for (const auto& name : o.backends) backends.push_back(parse_variant(name));
  }
  const bool gpu = o.device == "cuda";
  const std::uint64_t staging_size = parse_size(o.buffer_size, "--buffer-size");
  if (gpu) {
    if (size % 4096 != 0) throw ConfigError(fmt::format("--size: {} is not a multiple of 4096 (--device cuda)", size));
    if (o.buffer_count < 2) throw ConfigError(fmt::format("--buffer-count: {} is not at least 2", o.buffer_count));
    if (staging_size == 0 || staging_size % 4096 != 0)
      throw ConfigError(fmt::format("--buffer-size: {} is not a positive multiple of 4096", staging_size));
    device::require_device("bench --device cuda");
  }
  if (!std::filesystem::is_directory(o.dir))
    throw ConfigError(fmt::format("--dir: '{}' is not a directory", o.dir));

  // Check every configuration before the long part starts.
  std::vector<AioConfig> configs;
  for (const auto& backend : backends) {
    for (auto bs : block_sizes)
      for (auto qd : o.queue_depths)
        for (auto t : o.threads) {
          AioConfig c;
          c.block_size = bs;
          c.queue_depth = qd;
          c.intra_op_parallelism = t;
          c.single_submit = o.single_submit;
          c.overlap_events = !o.no_overlap_events;
          c.direct = direct;
          c.validate();
          make_engine(backend.backend, c);  // unknown or unavailable backends fail here
          configs.push_back(c);
        }
  }
  const std::size_t per_backend = configs.size() / backends.size();

  const std::string path = fmt::format("{}/swapcoord-bench-{}.swp", o.dir, ::getpid());
  struct Remove {
    std::string path;
    bool keep;
    ~Remove() {
      std::error_code ignored;
      if (!keep) std::filesystem::remove(path, ignored);
    }
  } remove{path, o.keep};
  SwapFile file = SwapFile::create(path, size, direct);
  PinnedAllocation source(size), target(size);  // the host path's memory, as without --device
  const int gpu_index = gpu ? device::device_for_local_rank(0, "bench --device cuda") : -1;
  if (gpu) device::use_cuda_host_memory(gpu_index);  // the GPU path's staging: cudaHostAlloc'ed
  PinnedAllocation staging(gpu ? o.buffer_count * staging_size : 0);
  std::vector<TensorView> staging_views;
  for (std::size_t i = 0; gpu && i < o.buffer_count; ++i)
    staging_views.push_back({staging.data() + i * staging_size, staging_size, DType::u8, Device::cpu()});
  device::DeviceMemory gpu_memory = gpu ? device::DeviceMemory(gpu_index, size) : device::DeviceMemory();
  std::optional<device::DeviceStager> stager;
  if (gpu) stager.emplace(gpu_index);
  const std::vector<std::span<std::byte>> host_buffers{{source.data(), static_cast<std::size_t>(size)},
                                                       {target.data(), static_cast<std::size_t>(size)}};
  // A registered variant that the backend or the kernel refuses fails here, not midway.
  for (const auto& backend : backends)
    if (backend.registered) register_io(*make_engine(backend.backend, configs.front()), backend, host_buffers, file);

  const std::string host = host_name();
  std::printf("# swapcoord %s %s\n", o.tune ? "tune" : "bench", SWAPCOORD_VERSION);
  std::printf("# command: %s\n", join(argv, " ").c_str());
  std::printf("# host: %s  pid: %d\n", host.c_str(), static_cast<int>(::getpid()));
  std::printf("# file: %s  size: %llu B (%s)  direct: %s", path.c_str(),
              static_cast<unsigned long long>(size), format_size(size).c_str(),
              file.direct() ? "on" : "off");
  if (file.direct()) std::printf(" (alignment: memory %zu B, offset %zu B)", file.memory_alignment(), file.offset_alignment());
  std::printf("\n# buffers: 2 x %s %s memory, %s, %s\n", format_size(size).c_str(),
              std::string(to_string(source.kind())).c_str(), source.locked() ? "locked" : "not locked",
              source.huge_pages() ? "huge pages" : "no huge pages");
  if (gpu)
    std::printf("# device: %s (%s); staging: %zu x %s %s memory\n", device::describe_device(gpu_index).c_str(),
                device::build_description().c_str(), o.buffer_count, format_size(staging_size).c_str(),
                std::string(to_string(staging.kind())).c_str());
  std::printf("# iterations: %d per configuration; figures are medians; GB/s = 1e9 bytes/s\n",
              o.iterations);
  if (std::any_of(backends.begin(), backends.end(), [](const Variant& v) { return v.registered; }))
    std::printf("# +reg: registered I/O, the 2 host buffers and the file registered with each I/O thread's ring\n");
  std::printf("#\n# %12s %12s %12s %8s %10s %12s %10s", "backend", "block_size",
              "queue_depth", "threads", "write", "write+sync", "read");
  if (gpu) std::printf(" %15s %10s", "dev>file+sync", "file>dev");
  std::printf(" %8s\n# %12s %12s %12s %8s %10s %12s %10s", "#wrong", "", "(B)", "", "", "(GB/s)", "(GB/s)", "(GB/s)");
  if (gpu) std::printf(" %15s %10s", "(GB/s)", "(GB/s)");
  std::printf(" %8s\n", "");
  std::fflush(stdout);

  // Fill the preallocated file once so that timed writes are overwrites (a first write
  // to fallocated space also converts unwritten extents, which is not what swap does).
  {
    auto engine = make_engine(backends.front().backend, configs.front());
    fill(source.data(), size, 0);
    engine->run(std::vector<IoRequest>{{IoOp::write, &file, source.data(), 0, size}});
    file.sync();
  }

  std::vector<Point> points;
  std::uint64_t total_wrong = 0;
  const auto started = Clock::now();
  auto last_progress = started;
  for (std::size_t k = 0; k < configs.size(); ++k) {
    const AioConfig& c = configs[k];
    const Variant& backend = backends[k / per_backend];
    auto engine = make_engine(backend.backend, c);
    register_io(*engine, backend, host_buffers, file);
    Point point{backend.backend, backend.registered, c.block_size, c.queue_depth, c.intra_op_parallelism,
                {}, {}, {}, {}, {}, 0};
    const std::vector<IoRequest> write{{IoOp::write, &file, source.data(), 0, size}};
    const std::vector<IoRequest> read{{IoOp::read, &file, target.data(), 0, size}};
    for (int it = 0; it < o.iterations; ++it) {
      const std::uint64_t seed = (k + 1) * 1000003ULL + static_cast<std::uint64_t>(it) * 7919ULL;
      fill(source.data(), size, seed);
      auto t0 = Clock::now();
      engine->run(write);
      point.write.gbps.push_back(gbps(size, Clock::now() - t0));
      t0 = Clock::now();
      engine->run(write);
      file.sync();
      point.write_sync.gbps.push_back(gbps(size, Clock::now() - t0));
      std::memset(target.data(), 0, size);
      t0 = Clock::now();
      engine->run(read);
      point.read.gbps.push_back(gbps(size, Clock::now() - t0));
      point.wrong += count_wrong(target.data(), size, seed);
      if (!gpu) continue;
      // The GPU path: the same bytes from GPU memory to the file and back (as the session).
      AsyncTensorSwapper swapper(*engine, staging_views, file.offset_alignment() > 1 ? file.offset_alignment() : 4096);
      const SwapLocation whole{&file, 0, size};
      // Another pattern than the host path's, so that the file must change.
      const std::uint64_t gpu_seed = seed ^ 0x9e3779b97f4a7c15ULL;
      fill(source.data(), size, gpu_seed);
      gpu_memory.copy_from_host(0, {source.data(), static_cast<std::size_t>(size)});
      t0 = Clock::now();
      swapper.write_stream({&whole, 1}, [&](std::size_t, std::uint64_t offset, std::span<std::byte> out) {
        stager->to_host(out, gpu_memory.data() + offset);
      });
      file.sync();
      point.device_write_sync.gbps.push_back(gbps(size, Clock::now() - t0));
      gpu_memory.zero();
      t0 = Clock::now();
      swapper.read_stream({&whole, 1}, [&](std::size_t, std::uint64_t offset, std::span<const std::byte> in) {
        stager->to_device(gpu_memory.data() + offset, in);
      });
      point.device_read.gbps.push_back(gbps(size, Clock::now() - t0));
      std::memset(target.data(), 0, size);
      gpu_memory.copy_to_host(0, {target.data(), static_cast<std::size_t>(size)});
      point.wrong += count_wrong(target.data(), size, gpu_seed);
    }
    total_wrong += point.wrong;
    std::printf("  %12s %12llu %12zu %8zu %10.2f %12.2f %10.2f", backend.name.c_str(),
                static_cast<unsigned long long>(c.block_size), c.queue_depth,
                c.intra_op_parallelism, point.write.median(), point.write_sync.median(),
                point.read.median());
    if (gpu) std::printf(" %15.2f %10.2f", point.device_write_sync.median(), point.device_read.median());
    std::printf(" %8llu\n", static_cast<unsigned long long>(point.wrong));
    std::fflush(stdout);
    points.push_back(std::move(point));
    const auto now = Clock::now();
    if (now - started > std::chrono::seconds(3) && now - last_progress > std::chrono::seconds(2)) {
      const double elapsed = std::chrono::duration<double>(now - started).count();
      std::fprintf(stderr, "swapcoord %s: %zu/%zu configurations, %.0f s elapsed, ~%.0f s left\n", o.tune ? "tune" : "bench",
                   k + 1, configs.size(), elapsed, elapsed / static_cast<double>(k + 1) * static_cast<double>(configs.size() - k - 1));
      last_progress = now;
    }
  }

  double write_sum = 0, read_sum = 0;
  for (const auto& p : points) {
    write_sum += p.write.median();
    read_sum += p.read.median();
  }
  const double n = static_cast<double>(points.size());
  std::printf("#\n# Wrong bytes: %llu %s\n", static_cast<unsigned long long>(total_wrong),
              total_wrong == 0 ? "OK" : "ERROR");
  std::printf("# Avg write bandwidth: %.2f GB/s  Avg read bandwidth: %.2f GB/s\n",
              write_sum / n, read_sum / n);
  if (gpu) {
    double out_ratio = 0, in_ratio = 0;
    for (const auto& p : points) {
      out_ratio += p.device_write_sync.median() / p.write_sync.median();
      in_ratio += p.device_read.median() / p.read.median();
    }
    std::printf("# GPU path against host memory: dev>file+sync %.3f x write+sync, file>dev %.3f x read "
                "(mean over configurations of the ratio of medians)\n", out_ratio / n, in_ratio / n);
  }
  std::printf("#\n");

  // tune: the settings with the least time for a swap-out (write+fdatasync) and a swap-in
  // (read) of the same bytes, as a ready aio section.
  nlohmann::json best_aio;
  if (o.tune && total_wrong == 0) {
    auto seconds = [&](const Point& p) { return 1 / p.write_sync.median() + 1 / p.read.median(); };
    const auto best = std::min_element(points.begin(), points.end(),
                                       [&](const Point& a, const Point& b) { return seconds(a) < seconds(b); });
    const auto best_write = std::max_element(points.begin(), points.end(), [](const Point& a, const Point& b) {
      return a.write_sync.median() < b.write_sync.median();
    });
    const auto best_read = std::max_element(points.begin(), points.end(), [](const Point& a, const Point& b) {
      return a.read.median() < b.read.median();
    });
    auto describe = [](const Point& p) {
      return fmt::format("{}, block_size {}, queue_depth {}, threads {}: write+sync {:.2f} GB/s, read {:.2f} GB/s",
                         p.shown(), format_size(p.block_size), p.queue_depth, p.threads, p.write_sync.median(),
                         p.read.median());
    };
    best_aio = {{"backend", best->backend},
                {"block_size", best->block_size},
                {"queue_depth", best->queue_depth},
                {"intra_op_parallelism", best->threads},
                {"single_submit", o.single_submit},
                {"overlap_events", !o.no_overlap_events}};
    if (direct != DirectMode::automatic) best_aio["direct"] = std::string(to_string(direct));
    if (best->registered) best_aio["register"] = true;
    std::printf("# Best for a swap-out (write+fdatasync) then a swap-in (read), by their total time:\n#   %s\n",
                describe(*best).c_str());
    std::printf("# Best write+sync: %s\n# Best read:       %s\n", describe(*best_write).c_str(),
                describe(*best_read).c_str());
    std::printf("# As a config section (swapcoord run --config, apply_config; DeepSpeed's ds_config.json takes "
                "the same keys but backend):\n");
    const std::string section = nlohmann::json{{"aio", best_aio}}.dump(2) + "\n";
    std::printf("%s", section.c_str());
    if (!o.write_config.empty()) {
      try {
        write_private_file(o.write_config, section);
      } catch (const Error& e) {
        throw Error(fmt::format("--write-config: {}", e.what()));
      }
      std::printf("# written to %s\n", o.write_config.c_str());
    }
  }

  if (!o.json.empty()) {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& p : points)
      results.push_back({{"backend", p.backend}, {"register", p.registered}, {"block_size", p.block_size},
                         {"queue_depth", p.queue_depth}, {"threads", p.threads},
                         {"write_gbps", p.write.to_json()}, {"write_sync_gbps", p.write_sync.to_json()},
                         {"read_gbps", p.read.to_json()}, {"wrong_bytes", p.wrong}});
    if (gpu)
      for (std::size_t i = 0; i < points.size(); ++i) {
        results[i]["device_write_sync_gbps"] = points[i].device_write_sync.to_json();
        results[i]["device_read_gbps"] = points[i].device_read.to_json();
      }
    nlohmann::json doc{{"tool", o.tune ? "swapcoord tune" : "swapcoord bench"}, {"version", SWAPCOORD_VERSION},
                             {"argv", argv}, {"host", host}, {"file", path},
                             {"size_bytes", size}, {"direct", file.direct()},
                             {"iterations", o.iterations}, {"single_submit", o.single_submit},
                             {"overlap_events", !o.no_overlap_events},
                             {"results", results}, {"wrong_bytes", total_wrong},
                             {"device", gpu ? device::describe_device(gpu_index) : std::string("cpu")}};
    if (!best_aio.is_null()) doc["best"] = {{"aio", best_aio}};
    try {
      write_private_file(o.json, doc.dump(2) + "\n");
    } catch (const Error& e) {
      throw Error(fmt::format("--json: {}", e.what()));
    }
  }
  return total_wrong == 0 ? kExitOk : kExitWrongData;
}

}  // namespace swapcoord::app
