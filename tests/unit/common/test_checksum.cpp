// Unit tests of the pieces' checksum (common/checksum.hpp): known values, pieces against
// one call at every awkward size, and XXH3 through the CPU dispatch against the portable
// build of the same function (a catalog written on one CPU is checked on another).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <xxhash.h>

#include "swapcoord/common/checksum.hpp"

namespace swapcoord {
namespace {

constexpr ChecksumKind kKinds[] = {ChecksumKind::xxh64, ChecksumKind::xxh3};

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  std::vector<unsigned char> bytes(n);
  std::mt19937_64 rng(seed);
  for (auto& b : bytes) b = static_cast<unsigned char>(rng());
  return bytes;
}

TEST(Checksum, NamesRoundTripAndOthersAreRefused) {
  for (const auto kind : kKinds) EXPECT_EQ(parse_checksum(checksum_name(kind)), kind);
  EXPECT_EQ(checksum_name(ChecksumKind::xxh3), "xxh3_64");
  EXPECT_EQ(checksum_name(ChecksumKind::xxh64), "xxh64");
  for (const char* other : {"", "xxh3", "XXH64", "crc32c", "xxh128", "xxh64 "})
    EXPECT_FALSE(parse_checksum(other).has_value()) << "'" << other << "'";
  EXPECT_EQ(kDefaultChecksum, ChecksumKind::xxh3);
}

TEST(Checksum, KnownValuesOfTheEmptyInput) {
  // From the xxHash specification's test vectors (seed 0).
  EXPECT_EQ(checksum(ChecksumKind::xxh64, "", 0), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(checksum(ChecksumKind::xxh3, "", 0), 0x2D06800538D394C2ULL);
  for (const auto kind : kKinds) {
    Checksum c(kind);
    EXPECT_EQ(c.digest(), checksum(kind, "", 0));
  }
}

TEST(Checksum, PiecesGiveTheSameValueAsOneCallAtEverySize) {
  // Sizes around XXH3's internal boundaries (16, 128, 240 bytes, its 1 KiB stripes block
  // and 256-byte buffer) and the session's 256 KiB hashing step, split at random places.
  const auto data = random_bytes((1u << 20) + 4099, 42);
  std::vector<std::size_t> sizes{0, 1, 3, 16, 17, 128, 129, 240, 241, 255, 256, 257, 1023, 1024, 1025, 4096, 65536 + 7,
                                 256u << 10, (256u << 10) + 1, data.size()};
  std::mt19937_64 rng(7);
  for (const auto kind : kKinds) {
    Checksum c(kind);
    for (const std::size_t n : sizes) {
      const std::uint64_t whole = checksum(kind, data.data(), n);
      for (int trial = 0; trial < 3; ++trial) {
        c.reset();
        std::size_t done = 0;
        while (done < n) {
          const std::size_t piece = std::min<std::size_t>(n - done, 1 + rng() % (trial == 0 ? 64 : 300000));
          c.update(data.data() + done, piece);
          done += piece;
        }
        EXPECT_EQ(c.digest(), whole) << checksum_name(kind) << ", " << n << " bytes, trial " << trial;
      }
    }
  }
}

TEST(Checksum, TheKindsDifferAndOneByteChangesTheValue) {
  auto data = random_bytes(100000, 3);
  const std::uint64_t a = checksum(ChecksumKind::xxh3, data.data(), data.size());
  EXPECT_NE(a, checksum(ChecksumKind::xxh64, data.data(), data.size()));
  data[54321] ^= 1;
  EXPECT_NE(a, checksum(ChecksumKind::xxh3, data.data(), data.size()));
}

TEST(Checksum, DispatchedXxh3EqualsThePortableBuild) {
  // libxxhash's XXH3_64bits is built for the baseline vector unit; the checksum uses the
  // widest one this CPU has. Both must give the same value for every input.
  const auto data = random_bytes(3u << 20, 11);
  for (const std::size_t n : {std::size_t{0}, std::size_t{200}, std::size_t{5000}, data.size()}) {
    EXPECT_EQ(checksum(ChecksumKind::xxh3, data.data(), n), XXH3_64bits(data.data(), n)) << n;
    Checksum c(ChecksumKind::xxh3);
    c.update(data.data(), n);
    EXPECT_EQ(c.digest(), XXH3_64bits(data.data(), n)) << n;
  }
  EXPECT_EQ(checksum(ChecksumKind::xxh64, data.data(), data.size()), XXH64(data.data(), data.size(), 0));
}

TEST(Checksum, AMovedChecksumKeepsItsState) {
  const auto data = random_bytes(5000, 5);
  for (const auto kind : kKinds) {
    Checksum a(kind);
    a.update(data.data(), 2000);
    Checksum b(std::move(a));
    b.update(data.data() + 2000, 3000);
    EXPECT_EQ(b.kind(), kind);
    EXPECT_EQ(b.digest(), checksum(kind, data.data(), data.size()));
    Checksum c(kind == ChecksumKind::xxh3 ? ChecksumKind::xxh64 : ChecksumKind::xxh3);
    c = std::move(b);
    EXPECT_EQ(c.kind(), kind);
    EXPECT_EQ(c.digest(), checksum(kind, data.data(), data.size()));
  }
}

}  // namespace
}  // namespace swapcoord
