#include "swapcoord/common/checksum.hpp"

#define XXH_STATIC_LINKING_ONLY  // the states' layout, to hold them by value
#include <xxhash.h>
// Debian's libxxhash exports XXH3's entry points with runtime dispatch (xxh_x86dispatch.c):
// AVX-512 or AVX2 where the CPU has them. The plain XXH3 functions are built for SSE2 only,
// at about 60 % of the AVX2 speed on the same memory.
#if defined(__x86_64__) || defined(_M_X64)
#include <xxh_x86dispatch.h>
#define SWAPCOORD_XXH3_UPDATE XXH3_64bits_update_dispatch
#define SWAPCOORD_XXH3_ONESHOT XXH3_64bits_dispatch
#else
#define SWAPCOORD_XXH3_UPDATE XXH3_64bits_update
#define SWAPCOORD_XXH3_ONESHOT XXH3_64bits
#endif

namespace swapcoord {

std::string_view checksum_name(ChecksumKind kind) noexcept {
  return kind == ChecksumKind::xxh3 ? "xxh3_64" : "xxh64";
}

std::optional<ChecksumKind> parse_checksum(std::string_view name) noexcept {
  if (name == "xxh64") return ChecksumKind::xxh64;
  if (name == "xxh3_64") return ChecksumKind::xxh3;
  return std::nullopt;
}

std::uint64_t checksum(ChecksumKind kind, const void* data, std::size_t bytes) noexcept {
  return kind == ChecksumKind::xxh3 ? SWAPCOORD_XXH3_ONESHOT(data, bytes) : XXH64(data, bytes, 0);
}

// XXH3_state_t is 64-byte aligned; `new` honours that (C++17 aligned new).
struct Checksum::State {
  XXH3_state_t xxh3;
  XXH64_state_t xxh64;
};

Checksum::Checksum(ChecksumKind kind) : _kind(kind), _state(std::make_unique<State>()) { reset(); }
Checksum::~Checksum() = default;
Checksum::Checksum(Checksum&&) noexcept = default;
Checksum& Checksum::operator=(Checksum&&) noexcept = default;

void Checksum::reset() noexcept {
  if (_kind == ChecksumKind::xxh3)
    XXH3_64bits_reset(&_state->xxh3);
  else
    XXH64_reset(&_state->xxh64, 0);
}

void Checksum::update(const void* data, std::size_t bytes) noexcept {
  if (_kind == ChecksumKind::xxh3)
    SWAPCOORD_XXH3_UPDATE(&_state->xxh3, data, bytes);
  else
    XXH64_update(&_state->xxh64, data, bytes);
}

std::uint64_t Checksum::digest() const noexcept {
  return _kind == ChecksumKind::xxh3 ? XXH3_64bits_digest(&_state->xxh3) : XXH64_digest(&_state->xxh64);
}

}  // namespace swapcoord
