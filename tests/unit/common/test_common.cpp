// Unit tests of the common layer: dtypes, alignment helpers, TensorView, Device, errors,
// log level parsing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "swapcoord/common/align.hpp"
#include "swapcoord/common/dtype.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/common/tensor_view.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;

constexpr DType kAllDTypes[] = {DType::u8,  DType::i8,   DType::i16, DType::i32, DType::i64,
                                DType::f16, DType::bf16, DType::f32, DType::f64};

// ---- dtype -----------------------------------------------------------------------------

TEST(DType, SizesMatchTheElementTypes) {
  EXPECT_EQ(dtype_size(DType::u8), 1u);
  EXPECT_EQ(dtype_size(DType::i8), 1u);
  EXPECT_EQ(dtype_size(DType::i16), 2u);
  EXPECT_EQ(dtype_size(DType::i32), 4u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_EQ(dtype_size(DType::f16), 2u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
}

TEST(DType, NamesAreTheShortSpellings) {
  EXPECT_EQ(dtype_name(DType::u8), "u8");
  EXPECT_EQ(dtype_name(DType::i8), "i8");
  EXPECT_EQ(dtype_name(DType::i16), "i16");
  EXPECT_EQ(dtype_name(DType::i32), "i32");
  EXPECT_EQ(dtype_name(DType::i64), "i64");
  EXPECT_EQ(dtype_name(DType::f16), "f16");
  EXPECT_EQ(dtype_name(DType::bf16), "bf16");
  EXPECT_EQ(dtype_name(DType::f32), "f32");
  EXPECT_EQ(dtype_name(DType::f64), "f64");
}

TEST(DType, ParseRoundTripsEveryName) {
  for (DType dtype : kAllDTypes) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    EXPECT_EQ(parse_dtype(dtype_name(dtype)), dtype);
  }
}

TEST(DType, ParseAcceptsTorchSpellings) {
  EXPECT_EQ(parse_dtype("uint8"), DType::u8);
  EXPECT_EQ(parse_dtype("int8"), DType::i8);
  EXPECT_EQ(parse_dtype("int16"), DType::i16);
  EXPECT_EQ(parse_dtype("int32"), DType::i32);
  EXPECT_EQ(parse_dtype("int64"), DType::i64);
  EXPECT_EQ(parse_dtype("float16"), DType::f16);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
  EXPECT_EQ(parse_dtype("float32"), DType::f32);
  EXPECT_EQ(parse_dtype("float64"), DType::f64);
  // torch.half / torch.float / torch.double
  EXPECT_EQ(parse_dtype("half"), DType::f16);
  EXPECT_EQ(parse_dtype("float"), DType::f32);
  EXPECT_EQ(parse_dtype("double"), DType::f64);
}

TEST(DType, ParseRejectsUnknownNamesWithConfigErrorNamingTheValue) {
  for (const char* bad : {"float8", "f128", "complex64", "int"}) {
    SCOPED_TRACE(bad);
    try {
      parse_dtype(bad);
      FAIL() << "no exception for '" << bad << "'";
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr(bad));
    }
  }
  EXPECT_THROW(parse_dtype(""), ConfigError);
  EXPECT_THROW(parse_dtype("float32 "), ConfigError);
}

TEST(DType, ConfigErrorIsAnError) {
  static_assert(std::is_base_of_v<Error, ConfigError>);
  static_assert(std::is_base_of_v<Error, SystemError>);
  static_assert(std::is_base_of_v<std::runtime_error, Error>);
  EXPECT_THROW(parse_dtype("nope"), Error);
}

// ---- alignment -------------------------------------------------------------------------

static_assert(align_up(0, 4096) == 0);
static_assert(align_up(1, 4096) == 4096);
static_assert(align_up(4096, 4096) == 4096);
static_assert(align_up(4097, 4096) == 8192);
static_assert(align_up(7, 1) == 7);
static_assert(align_up(7, 0) == 7);
static_assert(is_aligned(std::uint64_t{0}, 4096));
static_assert(is_aligned(std::uint64_t{8192}, 4096));
static_assert(!is_aligned(std::uint64_t{4095}, 4096));
static_assert(is_aligned(std::uint64_t{3}, 1));
static_assert(kDefaultAlignmentBytes == 4096);

TEST(Align, AlignUp) {
  EXPECT_EQ(align_up(0, 512), 0u);
  EXPECT_EQ(align_up(1, 512), 512u);
  EXPECT_EQ(align_up(511, 512), 512u);
  EXPECT_EQ(align_up(512, 512), 512u);
  EXPECT_EQ(align_up(513, 512), 1024u);
  EXPECT_EQ(align_up((std::uint64_t{1} << 20) + 1, 4096), (std::uint64_t{1} << 20) + 4096);
  EXPECT_EQ(align_up(10, 3), 12u);  // not only powers of two
  EXPECT_EQ(align_up(std::uint64_t{5} << 40, 4096), std::uint64_t{5} << 40);
}

TEST(Align, IsAlignedValuesAndPointers) {
  EXPECT_TRUE(is_aligned(std::uint64_t{4096 * 3}, 4096));
  EXPECT_FALSE(is_aligned(std::uint64_t{4096 * 3 + 512}, 4096));
  EXPECT_TRUE(is_aligned(std::uint64_t{4096 * 3 + 512}, 512));
  EXPECT_TRUE(is_aligned(std::uint64_t{12}, 3));

  alignas(4096) static unsigned char page[8192];
  EXPECT_TRUE(is_aligned(static_cast<const void*>(page), 4096));
  EXPECT_TRUE(is_aligned(static_cast<const void*>(page + 4096), 4096));
  EXPECT_FALSE(is_aligned(static_cast<const void*>(page + 1), 4096));
  EXPECT_FALSE(is_aligned(static_cast<const void*>(page + 512), 4096));
  EXPECT_TRUE(is_aligned(static_cast<const void*>(page + 512), 512));
  EXPECT_TRUE(is_aligned(static_cast<const void*>(page + 1), 1));
}

// ---- TensorView / Device ---------------------------------------------------------------

TEST(TensorView, DefaultIsEmptyCpuU8) {
  TensorView view;
  EXPECT_EQ(view.data, nullptr);
  EXPECT_EQ(view.numel, 0u);
  EXPECT_EQ(view.dtype, DType::u8);
  EXPECT_TRUE(view.device.is_cpu());
  EXPECT_EQ(view.size_bytes(), 0u);
  EXPECT_TRUE(view.byte_span().empty());
}

TEST(TensorView, SizesAndSpans) {
  std::vector<float> values(10);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) + 0.5f;
  TensorView view{values.data(), values.size(), DType::f32, Device::cpu()};
  EXPECT_EQ(view.element_size(), 4u);
  EXPECT_EQ(view.size_bytes(), 40u);
  EXPECT_EQ(view.bytes(), reinterpret_cast<std::byte*>(values.data()));
  EXPECT_EQ(view.byte_span().size(), 40u);
  EXPECT_EQ(view.byte_span().data(), view.bytes());

  auto floats = view.as<float>();
  ASSERT_EQ(floats.size(), 10u);
  EXPECT_EQ(floats.data(), values.data());
  EXPECT_EQ(floats[3], 3.5f);
  floats[3] = 42.0f;  // writes through
  EXPECT_EQ(values[3], 42.0f);

  auto words = view.as<std::uint16_t>();  // reinterpretation counts bytes / sizeof(T)
  EXPECT_EQ(words.size(), 20u);
  auto doubles = view.as<double>();
  EXPECT_EQ(doubles.size(), 5u);
}

TEST(TensorView, SizeBytesUsesTheDtype) {
  std::vector<std::byte> storage(64);
  for (DType dtype : kAllDTypes) {
    TensorView view{storage.data(), 7, dtype};
    EXPECT_EQ(view.size_bytes(), 7 * dtype_size(dtype)) << dtype_name(dtype);
  }
}

TEST(TensorView, FirstKeepsPointerDtypeAndDevice) {
  std::vector<std::int64_t> values(8, 1);
  TensorView view{values.data(), values.size(), DType::i64, Device::cuda(2)};
  TensorView head = view.first(3);
  EXPECT_EQ(head.data, view.data);
  EXPECT_EQ(head.numel, 3u);
  EXPECT_EQ(head.dtype, DType::i64);
  EXPECT_EQ(head.device, Device::cuda(2));
  EXPECT_EQ(head.size_bytes(), 24u);
  EXPECT_EQ(view.first(0).size_bytes(), 0u);
}

TEST(Device, ToStringAndEquality) {
  EXPECT_EQ(to_string(Device::cpu()), "cpu");
  EXPECT_EQ(to_string(Device{}), "cpu");
  EXPECT_EQ(to_string(Device::cuda(0)), "cuda:0");
  EXPECT_EQ(to_string(Device::cuda(3)), "cuda:3");
  EXPECT_TRUE(Device::cpu().is_cpu());
  EXPECT_FALSE(Device::cuda(0).is_cpu());
  EXPECT_EQ(Device::cuda(1), Device::cuda(1));
  EXPECT_NE(Device::cuda(1), Device::cuda(2));
  EXPECT_NE(Device::cpu(), Device::cuda(0));
}

// ---- errors ----------------------------------------------------------------------------

TEST(Errors, SystemErrorKeepsErrnoAndEndsWithItsText) {
  SystemError error("cannot open '/x/y.swp'", ENOENT);
  EXPECT_EQ(error.code(), ENOENT);
  EXPECT_THAT(error.what(), HasSubstr("cannot open '/x/y.swp'"));
  EXPECT_THAT(error.what(), HasSubstr("No such file or directory"));
  EXPECT_THAT(error.what(), HasSubstr("errno " + std::to_string(ENOENT)));
}

TEST(Errors, ErrnoMessageFormat) {
  const std::string text = errno_message("write of 4096 bytes", EIO);
  EXPECT_THAT(text, HasSubstr("write of 4096 bytes: "));
  EXPECT_THAT(text, HasSubstr("(errno " + std::to_string(EIO) + ")"));
}

TEST(Errors, CatchableAsBase) {
  try {
    throw ConfigError("aio.queue_depth: 0");
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "aio.queue_depth: 0");
  }
}

// ---- log -------------------------------------------------------------------------------

TEST(Log, ParseLevel) {
  EXPECT_EQ(log::parse_level("debug"), log::Level::debug);
  EXPECT_EQ(log::parse_level("info"), log::Level::info);
  EXPECT_EQ(log::parse_level("warn"), log::Level::warn);
  EXPECT_EQ(log::parse_level("error"), log::Level::error);
  EXPECT_EQ(log::parse_level("off"), log::Level::off);
  try {
    log::parse_level("loud");
    FAIL() << "no exception";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("loud"));
  }
}

TEST(Log, SetLevelAndWarnOnce) {
  const auto saved = log::level();
  log::set_level(log::Level::off);
  EXPECT_EQ(log::level(), log::Level::off);
  EXPECT_TRUE(log::warn_once("unit-common-key", "first"));
  EXPECT_FALSE(log::warn_once("unit-common-key", "second"));
  EXPECT_TRUE(log::warn_once("unit-common-other-key", "first"));
  log::set_level(saved);
}

}  // namespace
}  // namespace swapcoord
