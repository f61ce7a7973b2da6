// The coordinated path against the engine alone (issue 12, targets 1 and 5), side by side
// in one run under mpirun. Every rank holds --bytes of tensors (--tensor-size each) in
// caller memory (--memory: pinned by default, as the engine's buffer is), and per round,
// in alternating order:
//   engine   one pinned buffer of --bytes written to a preallocated file (IoEngine::run)
//            and fdatasync'ed ("write+sync"), then read back ("read"): `swapcoord bench`'s
//            figures at the same bytes; the rounds take turns on --engine-files files (by
//            default as many as the session's slots: the same bytes on the device). With
//            pinned tensors, that buffer is the tensors' memory itself: the same pages.
//   bound    the engine's write+sync again, while a second thread computes the session's
//            checksum of the same bytes ("w+s+hash"): what any swap-out that checksums every
//            byte costs at least, when the checksum reads memory beside the transfer (on a
//            disk whose "transfer" is the host copying the same memory, the two compete)
//   session  SwapSession::swap_out of every tensor then commit() (its fdatasync and catalog;
//            "swap-out+commit"), then swap_in of every tensor ("swap-in"), with the
//            session's checksums on (swap.verify) and two slots, as a training job runs it
// Each timed operation starts after a barrier and ends at the slowest rank (MPI_MAX of the
// rank's seconds; both waited for without spinning); GB/s = all ranks' bytes / that time /
// 1e9. The three sides take turns going first. Two session rounds run before the timed ones
// (one into each slot), reported apart. The ratios session / engine, bound / engine and
// session / bound are per round; their medians come with a distribution-free 95 % interval
// (order statistics), so a run says how far its own noise lets it judge.
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
#include <cmath>
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
#include "swapcoord/common/checksum.hpp"
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
  int engine_files = 0;  // 0: as many as slots
  bool verify = true;
  std::string checksum = "xxh3_64";
  std::string memory = "pinned";
  std::string prepare = "write";
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A distribution-free interval of at least 95 % for the median of `v` (any noise, no
// normal law assumed): the k-th smallest and k-th largest values, for the largest k with
// P(Binomial(n, 1/2) < k) <= 2.5 %. For 15 rounds, the 4th and the 12th; under 6 rounds,
// the extremes (the interval is then wider than 95 %).
std::pair<double, double> median_interval(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  if (n == 0) return {0, 0};
  std::size_t k = 1;
  double below = 0, term = std::pow(0.5, static_cast<double>(n));  // P(X = 0)
  for (std::size_t j = 0; j + 1 < n; ++j) {
    below += term;  // P(X <= j)
    if (below > 0.025) break;
    k = j + 1;  // P(X < j + 1) <= 2.5 %: the (j+1)-th smallest bounds it
    term *= static_cast<double>(n - j) / static_cast<double>(j + 1);
  }
  return {v[k - 1], v[n - k]};
}

// The share of [data, data + bytes) that the kernel backs with transparent huge pages
// (AnonHugePages of the mappings that hold it, in /proc/self/smaps). A buffer on 4 KiB pages
// costs the disk more segments per request and the checksum more TLB misses, so each side's
// share is printed: both sides should have the same.
double huge_share(const void* data, std::uint64_t bytes) {
  const auto begin = reinterpret_cast<std::uintptr_t>(data), end = begin + bytes;
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  std::uintptr_t lo = 0, hi = 0;
  double huge = 0;
  while (std::getline(smaps, line)) {
    unsigned long a = 0, b = 0, kb = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &a, &b) == 2) {
      lo = a;
      hi = b;
    } else if (std::sscanf(line.c_str(), "AnonHugePages: %lu kB", &kb) == 1 && lo < end && hi > begin) {
      huge += static_cast<double>(kb) * 1024;
    }
  }
  return bytes ? std::min(1.0, huge / static_cast<double>(bytes)) : 0;
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
  options.checksum = *parse_checksum(o.checksum);  // checked by the option
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
  // The engine's side: --engine-files files per rank (by default as many as the session's
  // slots, so that both sides keep the same bytes on the device), preallocated and written
  // once before timing; round r writes and reads file r % count, as the session's swap-out
  // in round r writes the slot that its swap-in then reads.
  AioConfig aio;
  auto engine = make_engine(o.backend, aio);
  const int engine_files = o.engine_files > 0 ? o.engine_files : o.slots;
  // With pinned tensors, the engine moves the tensors' own memory (written by the session
  // or the engine, it holds the same bytes): both sides then use the same pages, whose
  // backing (huge pages in the guest, and the host's backing of a virtual machine's memory)
  // changes the speed of I/O and of the checksum. Otherwise one pinned buffer of its own.
  const bool shared = o.memory == "pinned" && local_bytes == bytes;
  PinnedAllocation own(shared ? 0 : bytes);
  std::byte* const buffer = shared ? pinned_tensors.data() : own.data();
  if (!shared) {
    auto* words = reinterpret_cast<std::uint64_t*>(buffer);
    for (std::uint64_t i = 0; i < bytes / 8; ++i) words[i] = mix64(i + 17 * static_cast<std::uint64_t>(rank));
  }
  std::vector<SwapFile> raw;
  std::vector<IoRequest> raw_write, raw_read;
  for (int f = 0; f < engine_files; ++f)
    raw.push_back(SwapFile::create(root + "/engine-" + std::to_string(rank) + "-" + std::to_string(f) + ".swp", bytes,
                                   DirectMode::automatic));
  for (SwapFile& file : raw) {
    raw_write.push_back({IoOp::write, &file, buffer, 0, bytes});
    raw_read.push_back({IoOp::read, &file, buffer, 0, bytes});
    engine->run({&raw_write.back(), 1});
    file.sync();
  }

  std::uint64_t view_bytes = 0, session_bytes = 0;
  for (const auto& v : views) view_bytes += v.size_bytes();
  MPI_Allreduce(&view_bytes, &session_bytes, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  const double engine_bytes = static_cast<double>(bytes) * size;
  // The least huge-page share of any rank, per side.
  std::array<double, 2> huge{huge_share(buffer, bytes),
                             views.empty() ? 0 : huge_share(views.front().data, static_cast<std::uint64_t>(next - views.front().bytes()))};
  MPI_Allreduce(MPI_IN_PLACE, huge.data(), 2, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  std::vector<double> first;  // the first swap-out+commit into each slot (target 5)
  for (int warm = 0; warm < 2; ++warm)  // both slots' files made and written once
    first.push_back(static_cast<double>(session_bytes) / timed([&] {
      session.swap_out(ids, views);
      session.commit();
    }) / 1e9);

  // The bound's checksum: the session's algorithm over the same bytes, a digest per tensor,
  // in the session's 256 KiB steps.
  const ChecksumKind checksum_kind = options.checksum;
  std::vector<std::uint64_t> bound_digests(bytes / tensor_bytes);
  struct Round {
    double engine_write_sync, engine_read, session_out, session_in;
    double bound_write_sync;  // the engine's write+sync beside a checksum pass of its bytes
    // The two parts of each write side (slowest rank's seconds): the writes, then the
    // flush (the engine's fdatasync; the session's whole commit, its fdatasync included).
    double engine_write_s, engine_sync_s, session_write_s, session_commit_s;
    double session_sync_s;  // of the commit: its fdatasync of the files (CommitFigures)
  };
  std::vector<Round> rounds;
  if (rank == 0) {
    std::printf("# bench_session: %d ranks, %s per rank (%zu tensors of %s, balanced, %s), backend %s, staging %zu x %s, "
                "verify %s (%s), prepare %s, slots %d, engine files %d\n# the engine's buffer: %s; on huge pages (least of any rank): engine's buffer %.0f %%, "
                "tensors %.0f %%\n# dir %s\n#\n# %5s %12s %12s %12s %14s %12s %10s %10s %10s\n", size, o.bytes.c_str(), count,
                o.tensor_size.c_str(), (o.memory + (o.memory == "unaligned" ? " memory: staged" : " memory: in place")).c_str(), o.backend.c_str(),
                o.buffer_count, o.buffer_size.c_str(), o.verify ? "on" : "off", o.checksum.c_str(), o.prepare.c_str(), o.slots, engine_files, shared ? "the tensors' memory" : "its own, pinned", 100 * huge[0], 100 * huge[1], root.c_str(), "round", "write+sync", "w+s+hash", "read", "swap-out+cmt", "swap-in", "out/write", "out/bound", "in/read");
    std::printf("# %5s %12s %12s %12s %14s %12s %10s %10s %10s\n", "", "(GB/s)", "(GB/s)", "(GB/s)", "(GB/s)", "(GB/s)", "", "", "");
  }
  for (int r = 0; r < o.rounds; ++r) {
    Round x{};
    const auto f = static_cast<std::size_t>(r % engine_files);
    auto engine_side = [&] {
      x.engine_write_sync = engine_bytes / timed([&] {
        const auto start = Clock::now();
        engine->run({&raw_write[f], 1});
        const auto written = Clock::now();
        raw[f].sync();
        x.engine_write_s = std::chrono::duration<double>(written - start).count();
        x.engine_sync_s = std::chrono::duration<double>(Clock::now() - written).count();
      }) / 1e9;
      x.engine_read = engine_bytes / timed([&] { engine->run({&raw_read[f], 1}); }) / 1e9;
    };
    // The same write+sync while a second thread hashes the buffer once, as swap-out must.
    auto bound_side = [&] {
      x.bound_write_sync = engine_bytes / timed([&] {
        std::thread hasher([&] {
          Checksum h(checksum_kind);
          for (std::size_t t = 0; t < bound_digests.size(); ++t) {
            h.reset();
            for (std::uint64_t at = 0; at < tensor_bytes; at += 256 << 10)
              h.update(buffer + t * tensor_bytes + at, static_cast<std::size_t>(std::min<std::uint64_t>(256 << 10, tensor_bytes - at)));
            bound_digests[t] = h.digest();
          }
        });
        engine->run({&raw_write[f], 1});
        raw[f].sync();
        hasher.join();
      }) / 1e9;
    };
    auto session_side = [&] {
      x.session_out = static_cast<double>(session_bytes) / timed([&] {
        const auto start = Clock::now();
        session.swap_out(ids, views);
        const auto written = Clock::now();
        session.commit();
        x.session_write_s = std::chrono::duration<double>(written - start).count();
        x.session_commit_s = std::chrono::duration<double>(Clock::now() - written).count();
        x.session_sync_s = session.last_commit().sync_seconds;
      }) / 1e9;
      x.session_in = static_cast<double>(session_bytes) / timed([&] { session.swap_in(ids, views); }) / 1e9;
    };
    switch (r % 3) {  // each side goes first in turn
      case 0: engine_side(), bound_side(), session_side(); break;
      case 1: bound_side(), session_side(), engine_side(); break;
      default: session_side(), engine_side(), bound_side(); break;
    }
    std::array<double, 5> parts{x.engine_write_s, x.engine_sync_s, x.session_write_s, x.session_commit_s, x.session_sync_s};
    MPI_Allreduce(MPI_IN_PLACE, parts.data(), 5, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);  // the slowest rank's
    std::tie(x.engine_write_s, x.engine_sync_s, x.session_write_s, x.session_commit_s, x.session_sync_s) =
        std::tuple(parts[0], parts[1], parts[2], parts[3], parts[4]);
    rounds.push_back(x);
    if (rank == 0)
      std::printf("  %5d %12.2f %12.2f %12.2f %14.2f %12.2f %10.3f %10.3f %10.3f\n", r, x.engine_write_sync,
                  x.bound_write_sync, x.engine_read, x.session_out, x.session_in, x.session_out / x.engine_write_sync,
                  x.session_out / x.bound_write_sync, x.session_in / x.engine_read);
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
  std::vector<double> out_ratio, in_ratio, write_ratio, bound_ratio, out_bound_ratio;
  for (const auto& x : rounds) {
    write_ratio.push_back(x.engine_write_s / x.session_write_s);  // > 1: the session's writes took less time
    out_ratio.push_back(x.session_out / x.engine_write_sync);
    in_ratio.push_back(x.session_in / x.engine_read);
    bound_ratio.push_back(x.bound_write_sync / x.engine_write_sync);
    out_bound_ratio.push_back(x.session_out / x.bound_write_sync);
  }
  if (rank == 0) {
    std::printf("#\n# first swap-out+commit into slot 0 and slot 1 (not in the rounds): %.2f, %.2f GB/s; "
                "median of the rounds' swap-out+commit: %.2f GB/s\n", first[0], first[1],
                median(column(&Round::session_out)));
    std::printf("# medians: write+sync %.2f, w+s+hash %.2f, read %.2f, swap-out+commit %.2f, swap-in %.2f GB/s\n",
                median(column(&Round::engine_write_sync)), median(column(&Round::bound_write_sync)),
                median(column(&Round::engine_read)), median(column(&Round::session_out)),
                median(column(&Round::session_in)));
    const auto [out_lo, out_hi] = median_interval(out_ratio);
    const auto [in_lo, in_hi] = median_interval(in_ratio);
    std::printf("# session / engine (median of the per-round ratios [95 %% interval of that median]): swap-out+commit "
                "%.3f [%.3f, %.3f] x write+sync, swap-in %.3f [%.3f, %.3f] x read\n", median(out_ratio), out_lo, out_hi,
                median(in_ratio), in_lo, in_hi);
    const auto [bound_lo, bound_hi] = median_interval(bound_ratio);
    const auto [ob_lo, ob_hi] = median_interval(out_bound_ratio);
    std::printf("# the checksum's pass over memory beside the writes: w+s+hash / write+sync %.3f [%.3f, %.3f]; "
                "swap-out+commit / w+s+hash %.3f [%.3f, %.3f]\n", median(bound_ratio), bound_lo, bound_hi,
                median(out_bound_ratio), ob_lo, ob_hi);
    std::printf("# the write sides in two parts (medians, slowest rank): engine writes %.3f s + fdatasync %.3f s; "
                "session swap-out %.3f s + commit %.3f s (its fdatasync %.3f s); the writes' speed session / engine %.3f\n",
                median(column(&Round::engine_write_s)), median(column(&Round::engine_sync_s)),
                median(column(&Round::session_write_s)), median(column(&Round::session_commit_s)),
                median(column(&Round::session_sync_s)), median(write_ratio));
    if (o.fresh > 0)
      std::printf("# first write into a slot / overwrite (median of %d fresh sessions, swap.prepare %s): %.3f "
                  "(%.2f against %.2f GB/s)\n", o.fresh, o.prepare.c_str(), median(fresh_ratio), median(fresh_first),
                  median(fresh_over));
    if (!o.json.empty()) {
      nlohmann::json doc{{"tool", "bench_session"}, {"ranks", size}, {"bytes_per_rank", bytes},
                         {"tensor_bytes", tensor_bytes}, {"backend", o.backend}, {"buffer_count", o.buffer_count},
                         {"buffer_size", options.buffer_size}, {"verify", o.verify}, {"checksum", o.checksum}, {"memory", o.memory}, {"prepare", o.prepare}, {"slots", o.slots}, {"engine_files", engine_files}, {"engine_uses_tensor_memory", shared},
                         {"engine_huge_page_share", huge[0]}, {"tensors_huge_page_share", huge[1]},
                         {"engine_write_sync_gbps", column(&Round::engine_write_sync)},
                         {"engine_write_sync_hash_gbps", column(&Round::bound_write_sync)},
                         {"engine_read_gbps", column(&Round::engine_read)},
                         {"session_swap_out_commit_gbps", column(&Round::session_out)},
                         {"session_swap_in_gbps", column(&Round::session_in)},
                         {"engine_write_seconds", column(&Round::engine_write_s)},
                         {"engine_fdatasync_seconds", column(&Round::engine_sync_s)},
                         {"session_swap_out_seconds", column(&Round::session_write_s)},
                         {"session_commit_seconds", column(&Round::session_commit_s)},
                         {"session_commit_fdatasync_seconds", column(&Round::session_sync_s)},
                         {"out_ratios", out_ratio}, {"in_ratios", in_ratio},
                         {"out_ratio_median", median(out_ratio)}, {"in_ratio_median", median(in_ratio)},
                         {"out_ratio_interval", {out_lo, out_hi}}, {"in_ratio_interval", {in_lo, in_hi}},
                         {"bound_ratios", bound_ratio}, {"bound_ratio_median", median(bound_ratio)},
                         {"bound_ratio_interval", {bound_lo, bound_hi}}, {"out_bound_ratios", out_bound_ratio},
                         {"out_bound_ratio_median", median(out_bound_ratio)},
                         {"out_bound_ratio_interval", {ob_lo, ob_hi}},
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
  app.add_option("--checksum", o.checksum, "The session's swap.checksum: xxh3_64 or xxh64")
      ->check(CLI::IsMember({"xxh3_64", "xxh64"}))
      ->capture_default_str();
  app.add_option("--memory", o.memory, "The tensors' memory: pinned, pageable (both in place) or unaligned (staged)")
      ->check(CLI::IsMember({"pinned", "pageable", "unaligned"}))
      ->capture_default_str();
  app.add_option("--slots", o.slots, "The session's swap.slots: 2 (A/B) or 1 (in place)")
      ->check(CLI::IsMember({1, 2}))
      ->capture_default_str();
  app.add_option("--engine-files", o.engine_files,
                 "Files per rank the engine's side takes turns on (0: as many as --slots)")
      ->check(CLI::Range(0, 8))
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
