#pragma once
// The checksum of swapped bytes: what a catalog records for each piece, and what swap-in
// and `swapcoord verify` compare with. A catalog names its algorithm (its `checksum`
// attribute, README "Schema"); a job keeps the algorithm of its first catalog.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

namespace swapcoord {

enum class ChecksumKind : std::uint8_t {
  xxh64,  // XXH64, seed 0: catalogs of format version 1 and 2
  xxh3,   // XXH3 64-bit, seed 0, with the widest vector unit the CPU has (AVX-512, AVX2, SSE2)
};

// What new jobs use: XXH3 hashes memory at about twice XXH64's speed (bench_swap_path's
// BM_Checksum; README, "Against fio").
inline constexpr ChecksumKind kDefaultChecksum = ChecksumKind::xxh3;

// "xxh64" and "xxh3_64", the names the catalog's `checksum` attribute holds.
std::string_view checksum_name(ChecksumKind kind) noexcept;
// The kind of one of those names; nullopt for anything else.
std::optional<ChecksumKind> parse_checksum(std::string_view name) noexcept;

// The checksum of `bytes` bytes at `data` in one call.
std::uint64_t checksum(ChecksumKind kind, const void* data, std::size_t bytes) noexcept;

// A checksum over bytes given in pieces: reset(), update() any number of times, digest().
// The same value as checksum() over the pieces joined.
class Checksum {
 public:
  explicit Checksum(ChecksumKind kind = kDefaultChecksum);
  ~Checksum();
  Checksum(Checksum&&) noexcept;
  Checksum& operator=(Checksum&&) noexcept;

  ChecksumKind kind() const noexcept { return _kind; }
  void reset() noexcept;
  void update(const void* data, std::size_t bytes) noexcept;
  std::uint64_t digest() const noexcept;

 private:
  struct State;
  ChecksumKind _kind;
  std::unique_ptr<State> _state;
};

}  // namespace swapcoord
