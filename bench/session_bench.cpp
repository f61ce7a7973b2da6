// The coordinated path against the engine alone (issue 12, targets 1 and 5), side by side
// in one run under mpirun. Every rank holds --bytes of tensors (--tensor-size each) in
// caller memory (--memory: pinned by default, as the engine's buffer is), and per round,
// in alternating order:
//   engine   one pinned buffer of --bytes written to a preallocated file (IoEngine::run)
//            and fdatasync'ed ("write+sync"), then read back ("read"): `swapcoord bench`'s
//            figures at the same bytes
//   session  SwapSession::swap_out of every tensor then commit() (its fdatasync and catalog;
//            "swap-out+commit"), then swap_in of every tensor ("swap-in"), with the
//            session's checksums on (swap.verify) and two slots, as a training job runs it
// Each timed operation starts after a barrier and ends at the slowest rank (MPI_MAX of the
// rank's seconds; both waited for without spinning); GB/s = all ranks' bytes / that time /
// 1e9. Two session rounds run before the timed ones (one into each slot), reported apart.
// Then --fresh sessions on new files each time their first swap-out+commit into each slot
// and the overwrites that follow (target 5). Prints every round, the medians and the
// ratios session / engine and first / overwrite.
//
//   mpirun -np 2 build/release/bench/bench_session --dir /nvme/tmp --bytes 1G --rounds 5
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/mix.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/session/session.hpp"

namespace {

using namespace swapcoord;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string dir = ".", bytes = "1G", tensor_size = "16M", buffer_size = "16M", backend = "libaio", json;
  std::size_t buffer_count = 4;
  int rounds = 5;
  int fresh = 3;
  int slots = 2;
  bool verify = true;
  std::string memory = "pinned";
  std::string prepare = "write";
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Waits for a non-blocking MPI call without spinning: a rank that is done must not take a
// core from a rank still copying and hashing (Open MPI busy-polls in blocking calls).
void wait_politely(MPI_Request& request) {
  for (int done = 0; MPI_Test(&request, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done;)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
}

// Runs `op` on every rank after a barrier; the slowest rank's seconds.
template <class F>
double timed(F&& op) {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  wait_politely(request);
  const auto start = Clock::now();
  op();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count(), slowest = 0;
  MPI_Iallreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &request);
  wait_politely(request);
  return slowest;
}

int run(const Options& o) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::uint64_t bytes = parse_size(o.bytes, "--bytes");
  const std::uint64_t tensor_bytes = parse_size(o.tensor_size, "--tensor-size");
  if (tensor_bytes == 0 || tensor_bytes % 4096 != 0 || bytes < tensor_bytes || bytes % tensor_bytes != 0)
    throw ConfigError("--bytes must be a positive multiple of --tensor-size, itself a multiple of 4096");
  const std::size_t count = static_cast<std::size_t>(bytes / tensor_bytes);
  const std::string work = (std::filesystem::absolute(o.dir) / ("session-bench-" + std::to_string(::getpid()))).string();
  std::string work_all = work;  // rank 0's name, for every rank
  work_all.resize(4096, '\0');
  MPI_Bcast(work_all.data(), 4096, MPI_CHAR, 0, MPI_COMM_WORLD);
  const std::string root = std::string(work_all.c_str());
  if (rank == 0) std::filesystem::create_directories(root);
  MPI_Barrier(MPI_COMM_WORLD);

  // The engine's side: one file per rank, preallocated and written once before timing.
  AioConfig aio;
  auto engine = make_engine(o.backend, aio);
  const std::string raw_path = root + "/engine-" + std::to_string(rank) + ".swp";
  SwapFile raw = SwapFile::create(raw_path, bytes, DirectMode::automatic);
  PinnedAllocation pinned(bytes);
  auto* words = reinterpret_cast<std::uint64_t*>(pinned.data());
  for (std::uint64_t i = 0; i < bytes / 8; ++i) words[i] = mix64(i + 17 * static_cast<std::uint64_t>(rank));
  const IoRequest raw_write{IoOp::write, &raw, pinned.data(), 0, bytes};
  const IoRequest raw_read{IoOp::read, &raw, pinned.data(), 0, bytes};
  engine->run({&raw_write, 1});
  raw.sync();

  // The session's side: `count` tensors per rank in caller memory (balanced: whole tensors).
  std::vector<TensorSpec> tensors;
  for (std::size_t i = 0; i < count * static_cast<std::size_t>(size); ++i)
    tensors.push_back({"t" + std::to_string(i), {tensor_bytes / 4}, DType::f32});
  SessionOptions options;
  options.roots = {root + "/roots"};
  options.catalog_dir = root + "/catalog";
  options.job = "bench";
  options.backend = o.backend;
  options.buffer_count = o.buffer_count;
  options.buffer_size = parse_size(o.buffer_size, "--buffer-size");
  options.verify = o.verify;
  options.prepare = o.prepare;
  options.slots = o.slots;
  options.overwrite = true;
  auto session = SwapSession::create(MPI_COMM_WORLD, tensors, options);
  // The tensors' memory (--memory): `pinned` is what the engine's side uses (PinnedAllocation:
  // locked, on huge pages), as DeepSpeed's pinned tensors are; `pageable` is page-aligned
  // ordinary memory; both move in place. `unaligned` is ordinary memory 64 bytes past a
  // page, as PyTorch's CPU allocator aligns it: it goes through staging.
  std::uint64_t local_bytes = 0;
  for (const PlanPiece& p : session.local_pieces()) local_bytes += align_up(p.bytes, 4096);
  const std::size_t skew = o.memory == "unaligned" ? 64 : 0;
  PinnedAllocation pinned_tensors(o.memory == "pinned" ? local_bytes : 0);
  std::unique_ptr<std::byte, decltype(&std::free)> plain(
      o.memory == "pinned" ? nullptr : static_cast<std::byte*>(std::aligned_alloc(4096, local_bytes + 4096)), &std::free);
  std::byte* next = o.memory == "pinned" ? pinned_tensors.data() : plain.get() + skew;
  if (next == nullptr) throw SystemError("cannot allocate the tensors' memory", ENOMEM);
  std::vector<std::uint32_t> ids;
  std::vector<TensorView> views;
  for (const PlanPiece& p : session.local_pieces()) {
    auto* w = reinterpret_cast<std::uint64_t*>(next);
    for (std::uint64_t i = 0; i < p.bytes / 8; ++i) w[i] = mix64(i ^ (std::uint64_t{p.tensor} << 40));
    ids.push_back(p.tensor);
    views.push_back({next, p.numel, DType::f32, Device::cpu()});
    next += align_up(p.bytes, 4096);
  }
  std::uint64_t view_bytes = 0, session_bytes = 0;
  for (const auto& v : views) view_bytes += v.size_bytes();
  MPI_Allreduce(&view_bytes, &session_bytes, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  const double engine_bytes = static_cast<double>(bytes) * size;
  std::vector<double> first;  // the first swap-out+commit into each slot (target 5)
  for (int warm = 0; warm < 2; ++warm)  // both slots' files made and written once
    first.push_back(static_cast<double>(session_bytes) / timed([&] {
      session.swap_out(ids, views);
      session.commit();
    }) / 1e9);

  struct Round {
    double engine_write_sync, engine_read, session_out, session_in;
    // The two parts of each write side (slowest rank's seconds): the writes, then the
    // flush (the engine's fdatasync; the session's whole commit, its fdatasync included).
    double engine_write_s, engine_sync_s, session_write_s, session_commit_s;
  };
  std::vector<Round> rounds;
  if (rank == 0) {
    std::printf("# bench_session: %d ranks, %s per rank (%zu tensors of %s, balanced, %s), backend %s, staging %zu x %s, "
                "verify %s, prepare %s, slots %d\n# dir %s\n#\n# %5s %12s %12s %14s %12s %10s %10s\n", size, o.bytes.c_str(), count,
                o.tensor_size.c_str(), (o.memory + (o.memory == "unaligned" ? " memory: staged" : " memory: in place")).c_str(), o.backend.c_str(),
                o.buffer_count, o.buffer_size.c_str(), o.verify ? "on" : "off", o.prepare.c_str(), o.slots, root.c_str(), "round", "write+sync", "read", "swap-out+cmt", "swap-in", "out/write", "in/read");
    std::printf("# %5s %12s %12s %14s %12s %10s %10s\n", "", "(GB/s)", "(GB/s)", "(GB/s)", "(GB/s)", "", "");
  }
  for (int r = 0; r < o.rounds; ++r) {
    Round x{};
    auto engine_side = [&] {
      x.engine_write_sync = engine_bytes / timed([&] {
        const auto start = Clock::now();
        engine->run({&raw_write, 1});
        const auto written = Clock::now();
        raw.sync();
        x.engine_write_s = std::chrono::duration<double>(written - start).count();
        x.engine_sync_s = std::chrono::duration<double>(Clock::now() - written).count();
      }) / 1e9;
      x.engine_read = engine_bytes / timed([&] { engine->run({&raw_read, 1}); }) / 1e9;
    };
    auto session_side = [&] {
      x.session_out = static_cast<double>(session_bytes) / timed([&] {
        const auto start = Clock::now();
        session.swap_out(ids, views);
        const auto written = Clock::now();
        session.commit();
        x.session_write_s = std::chrono::duration<double>(written - start).count();
        x.session_commit_s = std::chrono::duration<double>(Clock::now() - written).count();
      }) / 1e9;
      x.session_in = static_cast<double>(session_bytes) / timed([&] { session.swap_in(ids, views); }) / 1e9;
    };
    if (r % 2 == 0) {
      engine_side();
      session_side();
    } else {
      session_side();
      engine_side();
    }
    std::array<double, 4> parts{x.engine_write_s, x.engine_sync_s, x.session_write_s, x.session_commit_s};
    MPI_Allreduce(MPI_IN_PLACE, parts.data(), 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);  // the slowest rank's
    std::tie(x.engine_write_s, x.engine_sync_s, x.session_write_s, x.session_commit_s) =
        std::tuple(parts[0], parts[1], parts[2], parts[3]);
    rounds.push_back(x);
    if (rank == 0)
      std::printf("  %5d %12.2f %12.2f %14.2f %12.2f %10.3f %10.3f\n", r, x.engine_write_sync, x.engine_read,
                  x.session_out, x.session_in, x.session_out / x.engine_write_sync, x.session_in / x.engine_read);
  }
  // Target 5 side by side: --fresh times, a new session (new files, made and prepared at
  // set-up, untimed), then swap-out+commit into slot 0 and slot 1 (each slot's first
  // write), then into slot 0 and slot 1 again (overwrites). Ratio: first / overwrite.
  std::vector<double> fresh_first, fresh_over, fresh_ratio;
  for (int f = 0; f < o.fresh; ++f) {
    SessionOptions fresh_options = options;
    fresh_options.job = "bench-fresh-" + std::to_string(f);
    fresh_options.slots = 2;  // each slot's first write, then each slot's overwrite
    fresh_options.catalog_dir = root + "/catalog-fresh-" + std::to_string(f);
    auto s = SwapSession::create(MPI_COMM_WORLD, tensors, fresh_options);
    std::array<double, 4> gbps{};
    for (double& g : gbps)
      g = static_cast<double>(session_bytes) / timed([&] {
        s.swap_out(ids, views);
        s.commit();
      }) / 1e9;
    s.remove_files();
    const double first_pair = 2 / (1 / gbps[0] + 1 / gbps[1]), over_pair = 2 / (1 / gbps[2] + 1 / gbps[3]);
    fresh_first.push_back(first_pair);
    fresh_over.push_back(over_pair);
    fresh_ratio.push_back(first_pair / over_pair);
    if (rank == 0)
      std::printf("# fresh files %d: first swap-out+commit into slot 0, 1: %.2f, %.2f GB/s; overwrites: %.2f, %.2f GB/s; "
                  "first / overwrite %.3f\n", f, gbps[0], gbps[1], gbps[2], gbps[3], first_pair / over_pair);
  }
  auto column = [&](double Round::*field) {
    std::vector<double> v;
    for (const auto& x : rounds) v.push_back(x.*field);
    return v;
  };
  std::vector<double> out_ratio, in_ratio, write_ratio;
  for (const auto& x : rounds) {
    write_ratio.push_back(x.engine_write_s / x.session_write_s);  // > 1: the session's writes took less time
    out_ratio.push_back(x.session_out / x.engine_write_sync);
    in_ratio.push_back(x.session_in / x.engine_read);
  }
  if (rank == 0) {
    std::printf("#\n# first swap-out+commit into slot 0 and slot 1 (not in the rounds): %.2f, %.2f GB/s; "
                "median of the rounds' swap-out+commit: %.2f GB/s\n", first[0], first[1],
                median(column(&Round::session_out)));
    std::printf("# medians: write+sync %.2f, read %.2f, swap-out+commit %.2f, swap-in %.2f GB/s\n",
                median(column(&Round::engine_write_sync)), median(column(&Round::engine_read)),
                median(column(&Round::session_out)), median(column(&Round::session_in)));
    std::printf("# session / engine (median of the per-round ratios): swap-out+commit %.3f x write+sync, swap-in %.3f "
                "x read\n", median(out_ratio), median(in_ratio));
    std::printf("# the write sides in two parts (medians, slowest rank): engine writes %.3f s + fdatasync %.3f s; "
                "session swap-out %.3f s + commit %.3f s; the writes' speed session / engine %.3f\n",
                median(column(&Round::engine_write_s)), median(column(&Round::engine_sync_s)),
                median(column(&Round::session_write_s)), median(column(&Round::session_commit_s)),
                median(write_ratio));
    if (o.fresh > 0)
      std::printf("# first write into a slot / overwrite (median of %d fresh sessions, swap.prepare %s): %.3f "
                  "(%.2f against %.2f GB/s)\n", o.fresh, o.prepare.c_str(), median(fresh_ratio), median(fresh_first),
                  median(fresh_over));
    if (!o.json.empty()) {
      nlohmann::json doc{{"tool", "bench_session"}, {"ranks", size}, {"bytes_per_rank", bytes},
                         {"tensor_bytes", tensor_bytes}, {"backend", o.backend}, {"buffer_count", o.buffer_count},
                         {"buffer_size", options.buffer_size}, {"verify", o.verify}, {"memory", o.memory}, {"prepare", o.prepare}, {"slots", o.slots},
                         {"engine_write_sync_gbps", column(&Round::engine_write_sync)},
                         {"engine_read_gbps", column(&Round::engine_read)},
                         {"session_swap_out_commit_gbps", column(&Round::session_out)},
                         {"session_swap_in_gbps", column(&Round::session_in)},
                         {"engine_write_seconds", column(&Round::engine_write_s)},
                         {"engine_fdatasync_seconds", column(&Round::engine_sync_s)},
                         {"session_swap_out_seconds", column(&Round::session_write_s)},
                         {"session_commit_seconds", column(&Round::session_commit_s)},
                         {"out_ratio_median", median(out_ratio)}, {"in_ratio_median", median(in_ratio)},
                         {"first_swap_out_commit_gbps", first},
                         {"fresh_first_gbps", fresh_first}, {"fresh_overwrite_gbps", fresh_over},
                         {"fresh_ratio_median", median(fresh_ratio)}};
      std::ofstream(o.json) << doc.dump(2) << "\n";
    }
  }
  session.remove_files();
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) std::filesystem::remove_all(root);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  CLI::App app("bench_session: SwapSession against the engine alone, side by side");
  Options o;
  app.add_option("--dir", o.dir, "Directory on the device to measure")->capture_default_str();
  app.add_option("--bytes", o.bytes, "Bytes per rank")->capture_default_str();
  app.add_option("--tensor-size", o.tensor_size, "Bytes per tensor")->capture_default_str();
  app.add_option("--rounds", o.rounds, "Timed rounds (medians reported)")->capture_default_str();
  app.add_option("--fresh", o.fresh, "Sessions on new files: first write into a slot against an overwrite")
      ->capture_default_str();
  app.add_option("--backend", o.backend, "I/O backend of both sides")->capture_default_str();
  app.add_option("--buffer-count", o.buffer_count, "Session staging buffers")->capture_default_str();
  app.add_option("--buffer-size", o.buffer_size, "Session staging buffer size")->capture_default_str();
  app.add_flag("!--no-verify", o.verify, "Session checksums off");
  app.add_option("--memory", o.memory, "The tensors' memory: pinned, pageable (both in place) or unaligned (staged)")
      ->check(CLI::IsMember({"pinned", "pageable", "unaligned"}))
      ->capture_default_str();
  app.add_option("--slots", o.slots, "The session's swap.slots: 2 (A/B) or 1 (in place)")
      ->check(CLI::IsMember({1, 2}))
      ->capture_default_str();
  app.add_option("--prepare", o.prepare, "swap.prepare of the session's files: write or allocate")
      ->check(CLI::IsMember({"write", "allocate"}))
      ->capture_default_str();
  app.add_option("--json", o.json, "Write the figures (rank 0)");
  int rc = 0;
  try {
    app.parse(argc, argv);
    rc = run(o);
  } catch (const CLI::ParseError& e) {
    rc = app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_session: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  MPI_Finalize();
  return rc;
}
