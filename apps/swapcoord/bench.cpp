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
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "commands.hpp"
#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/io_engine.hpp"
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

struct Point {
  std::string backend;
  std::uint64_t block_size;
  std::size_t queue_depth;
  std::size_t threads;
  Sample write, write_sync, read;
  std::uint64_t wrong = 0;
};

double gbps(std::uint64_t bytes, Clock::duration elapsed) {
  return static_cast<double>(bytes) / std::chrono::duration<double>(elapsed).count() / 1e9;
}

}  // namespace

void add_bench_command(CLI::App& app, BenchOptions& o) {
  auto* cmd = app.add_subcommand("bench", "Measure swap-file write, write+fdatasync and read "
                                          "throughput over a sweep of I/O settings");
  cmd->add_option("--dir", o.dir, "Directory for the test file (on the device to measure)")
      ->capture_default_str();
  cmd->add_option("--size", o.size, "File size (e.g. 256M, 1G)")->capture_default_str();
  cmd->add_option("--backend", o.backends, "I/O backends: libaio, io_uring, posix, or all")
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

int run_bench(const BenchOptions& o, const std::vector<std::string>& argv) {
  const std::uint64_t size = parse_size(o.size, "--size");
  const auto block_sizes = parse_sizes(o.block_sizes, "--block-size");
  const DirectMode direct = parse_direct_mode(o.direct);
  if (size == 0 || size % 8 != 0) throw ConfigError(fmt::format("--size: {} is not a positive multiple of 8 bytes", size));
  if (o.iterations < 1) throw ConfigError(fmt::format("--iters: {} is not at least 1", o.iterations));
  std::vector<std::string> backends = o.backends;
  if (backends.size() == 1 && backends[0] == "all") {
    backends.clear();
    for (const auto& info : engine_infos())
      if (info.available) backends.push_back(info.name);
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
          make_engine(backend, c);  // unknown or unavailable backends fail here
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
  PinnedAllocation source(size), target(size);

  const std::string host = host_name();
  std::printf("# swapcoord bench %s\n", SWAPCOORD_VERSION);
  std::printf("# command: %s\n", join(argv, " ").c_str());
  std::printf("# host: %s  pid: %d\n", host.c_str(), static_cast<int>(::getpid()));
  std::printf("# file: %s  size: %llu B (%s)  direct: %s", path.c_str(),
              static_cast<unsigned long long>(size), format_size(size).c_str(),
              file.direct() ? "on" : "off");
  if (file.direct()) std::printf(" (alignment: memory %zu B, offset %zu B)", file.memory_alignment(), file.offset_alignment());
  std::printf("\n# buffers: 2 x %s %s memory, %s, %s\n", format_size(size).c_str(),
              std::string(to_string(source.kind())).c_str(), source.locked() ? "locked" : "not locked",
              source.huge_pages() ? "huge pages" : "no huge pages");
  std::printf("# iterations: %d per configuration; figures are medians; GB/s = 1e9 bytes/s\n",
              o.iterations);
  std::printf("#\n# %10s %12s %12s %8s %10s %12s %10s %8s\n", "backend", "block_size",
              "queue_depth", "threads", "write", "write+sync", "read", "#wrong");
  std::printf("# %10s %12s %12s %8s %10s %12s %10s %8s\n", "", "(B)", "", "", "(GB/s)", "(GB/s)",
              "(GB/s)", "");
  std::fflush(stdout);

  // Fill the preallocated file once so that timed writes are overwrites (a first write
  // to fallocated space also converts unwritten extents, which is not what swap does).
  {
    auto engine = make_engine(backends.front(), configs.front());
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
    const std::string& backend = backends[k / per_backend];
    auto engine = make_engine(backend, c);
    Point point{backend, c.block_size, c.queue_depth, c.intra_op_parallelism, {}, {}, {}, 0};
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
    }
    total_wrong += point.wrong;
    std::printf("  %10s %12llu %12zu %8zu %10.2f %12.2f %10.2f %8llu\n", backend.c_str(),
                static_cast<unsigned long long>(c.block_size), c.queue_depth,
                c.intra_op_parallelism, point.write.median(), point.write_sync.median(),
                point.read.median(), static_cast<unsigned long long>(point.wrong));
    std::fflush(stdout);
    points.push_back(std::move(point));
    const auto now = Clock::now();
    if (now - started > std::chrono::seconds(3) && now - last_progress > std::chrono::seconds(2)) {
      const double elapsed = std::chrono::duration<double>(now - started).count();
      std::fprintf(stderr, "swapcoord bench: %zu/%zu configurations, %.0f s elapsed, ~%.0f s left\n",
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
  std::printf("# Avg write bandwidth: %.2f GB/s  Avg read bandwidth: %.2f GB/s\n#\n",
              write_sum / n, read_sum / n);

  if (!o.json.empty()) {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& p : points)
      results.push_back({{"backend", p.backend}, {"block_size", p.block_size},
                         {"queue_depth", p.queue_depth}, {"threads", p.threads},
                         {"write_gbps", p.write.to_json()}, {"write_sync_gbps", p.write_sync.to_json()},
                         {"read_gbps", p.read.to_json()}, {"wrong_bytes", p.wrong}});
    const nlohmann::json doc{{"tool", "swapcoord bench"}, {"version", SWAPCOORD_VERSION},
                             {"argv", argv}, {"host", host}, {"file", path},
                             {"size_bytes", size}, {"direct", file.direct()},
                             {"iterations", o.iterations}, {"single_submit", o.single_submit},
                             {"overlap_events", !o.no_overlap_events},
                             {"results", results}, {"wrong_bytes", total_wrong}};
    try {
      write_private_file(o.json, doc.dump(2) + "\n");
    } catch (const Error& e) {
      throw Error(fmt::format("--json: {}", e.what()));
    }
  }
  return total_wrong == 0 ? kExitOk : kExitWrongData;
}

}  // namespace swapcoord::app
