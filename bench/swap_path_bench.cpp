// CPU cost of the swap path, without the disk: the engine's per-batch and per-block
// overhead (on tmpfs, buffered, so the kernel copy is the only I/O cost), the bump
// allocator, and the pieces' checksums over memory that is not in the cache.
// Run: build/bench/bench_swap_path [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <string>
#include <vector>

#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/common/checksum.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"

namespace {

using namespace swapcoord;

std::string scratch_path() { return "/dev/shm/swapcoord-bench-" + std::to_string(::getpid()); }

// One batch of `requests` requests of 64 KiB each, submitted and waited for.
void BM_EngineBatch(benchmark::State& state, const char* backend) {
  const auto requests = static_cast<std::size_t>(state.range(0));
  const std::size_t bytes = 64 * 1024;
  const std::string path = scratch_path();
  SwapFile file = SwapFile::create(path, requests * bytes, DirectMode::off);
  SwapBufferManager memory(requests * bytes, 1, DType::u8);
  auto buffer = memory.allocate(requests * bytes, 1).front();
  AioConfig config;
  config.block_size = bytes;
  auto engine = make_engine(backend, config);
  std::vector<IoRequest> batch;
  for (std::size_t i = 0; i < requests; ++i)
    batch.push_back({IoOp::write, &file, buffer.bytes() + i * bytes, i * bytes, bytes});
  for (auto _ : state) engine->run(batch);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * requests));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * requests * bytes));
  ::unlink(path.c_str());
}
BENCHMARK_CAPTURE(BM_EngineBatch, posix, "posix")->Arg(1)->Arg(64);
BENCHMARK_CAPTURE(BM_EngineBatch, libaio, "libaio")->Arg(1)->Arg(64);
BENCHMARK_CAPTURE(BM_EngineBatch, io_uring, "io_uring")->Arg(1)->Arg(64);

void BM_SwapBufferAllocate(benchmark::State& state) {
  SwapBufferManager memory(64 << 20, 1, DType::f32);
  SwapBuffer buffer(memory.allocate(64 << 20, 1).front());
  const std::size_t numel = aligned_numel(1000, DType::f32);
  for (auto _ : state) {
    buffer.reset();
    while (buffer.has_space(numel)) benchmark::DoNotOptimize(buffer.allocate_tensor({}, 1000, numel));
  }
}
BENCHMARK(BM_SwapBufferAllocate);

// The checksum of 1 GiB of pinned memory (far larger than any cache) in the session's
// 256 KiB steps, as swap-out computes it while the writes are in flight.
void BM_Checksum(benchmark::State& state, ChecksumKind kind) {
  constexpr std::size_t kBytes = std::size_t{1} << 30, kStep = 256 << 10;
  SwapBufferManager memory(kBytes, 1, DType::u8);
  auto buffer = memory.allocate(kBytes, 1).front();
  for (std::size_t i = 0; i < kBytes; i += 8) buffer.bytes()[i] = static_cast<std::byte>(i >> 3);
  Checksum hash(kind);
  for (auto _ : state) {
    hash.reset();
    for (std::size_t at = 0; at < kBytes; at += kStep) hash.update(buffer.bytes() + at, kStep);
    benchmark::DoNotOptimize(hash.digest());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kBytes));
}
BENCHMARK_CAPTURE(BM_Checksum, xxh64, ChecksumKind::xxh64)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Checksum, xxh3_64, ChecksumKind::xxh3)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
