// describe(obj): every field by name, values readable, the exclude list honoured.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "swapcoord/buffer/describe.hpp"
#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/buffer/swap_buffer_pool.hpp"
#include "swapcoord/io/aio_config.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/io/swap_location.hpp"
#include "test_support.hpp"

namespace swapcoord {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A field is shown as a line that starts (after indentation) with its name.
bool has_field(const std::string& text, const std::string& name) {
  std::size_t at = 0;
  while ((at = text.find(name, at)) != std::string::npos) {
    const bool starts_line = at > 0 && (text[at - 1] == ' ' || text[at - 1] == '\t') &&
                             text.find_last_not_of(" \t", at - 1) != std::string::npos &&
                             text[text.find_last_not_of(" \t", at - 1)] == '\n';
    const std::size_t end = at + name.size();
    const bool whole = end < text.size() && (text[end] == ' ' || text[end] == ':' ||
                                             text[end] == '=' || text[end] == '.');
    if (starts_line && whole) return true;
    at = end;
  }
  return false;
}

void expect_fields(const std::string& text, const std::vector<std::string>& names) {
  for (const auto& name : names) EXPECT_TRUE(has_field(text, name)) << name << " in:\n" << text;
}

TEST(Describe, TensorView) {
  std::vector<float> values(10);
  const TensorView view{values.data(), values.size(), DType::f32, Device::cpu()};
  const std::string text = describe(view);
  expect_fields(text, {"data", "numel", "dtype", "device"});
  EXPECT_THAT(text, HasSubstr("10"));
  EXPECT_THAT(text, HasSubstr("f32"));
  EXPECT_THAT(text, HasSubstr("cpu"));

  const std::string without = describe(view, {"numel", "device"});
  EXPECT_FALSE(has_field(without, "numel")) << without;
  EXPECT_FALSE(has_field(without, "device")) << without;
  EXPECT_THAT(without, Not(HasSubstr("cpu")));
  expect_fields(without, {"data", "dtype"});
}

TEST(Describe, SwapLocation) {
  test::TempDir dir;
  SwapFile file = SwapFile::create(dir.file("where.swp"), 8192, DirectMode::off);
  const SwapLocation location{&file, 4096, 8192};
  const std::string text = describe(location);
  expect_fields(text, {"file", "offset", "bytes"});
  EXPECT_THAT(text, HasSubstr(file.path()));
  EXPECT_THAT(text, HasSubstr("4096"));
  EXPECT_THAT(text, HasSubstr("8192"));

  const std::string without = describe(location, {"file"});
  EXPECT_FALSE(has_field(without, "file"));
  EXPECT_THAT(without, Not(HasSubstr(file.path())));
  expect_fields(without, {"offset", "bytes"});

  // A location without a file is described, not dereferenced.
  EXPECT_NO_THROW(describe(SwapLocation{}));
}

TEST(Describe, AioConfig) {
  AioConfig config;
  config.queue_depth = 77;
  const std::string text = describe(config);
  expect_fields(text, {"block_size", "queue_depth", "intra_op_parallelism", "single_submit",
                       "overlap_events", "direct", "fsync"});
  EXPECT_THAT(text, HasSubstr("77"));
  EXPECT_THAT(text, HasSubstr("1048576"));

  const std::string without = describe(config, {"queue_depth", "fsync"});
  EXPECT_FALSE(has_field(without, "queue_depth"));
  EXPECT_FALSE(has_field(without, "fsync"));
  EXPECT_THAT(without, Not(HasSubstr("77")));
  expect_fields(without, {"block_size", "direct"});
}

TEST(Describe, PinnedAllocation) {
  PinnedAllocation memory(12345);
  const std::string text = describe(memory);
  expect_fields(text, {"data", "size_bytes", "kind", "locked"});
  EXPECT_THAT(text, HasSubstr("12345"));
  EXPECT_THAT(text, HasSubstr(std::string(to_string(memory.kind()))));
  const std::string without = describe(memory, {"size_bytes"});
  EXPECT_FALSE(has_field(without, "size_bytes"));
  EXPECT_THAT(without, Not(HasSubstr("12345")));
  EXPECT_NO_THROW(describe(PinnedAllocation{}));
}

TEST(Describe, SwapBufferPoolAndManager) {
  test::TempDir dir;
  SwapFile file = SwapFile::create(dir.file("d.swp"), 1 << 20, DirectMode::off);
  SwapBufferManager manager(8192, 3, DType::bf16);
  const auto views = manager.allocate(8192, 2);

  SwapBuffer buffer(views[0]);
  buffer.allocate_tensor({&file, 0, 4096}, 1000, 2048);
  const std::string text = describe(buffer);
  expect_fields(text, {"dtype", "capacity_numel", "used_numel", "count"});
  EXPECT_THAT(text, HasSubstr("bf16"));
  EXPECT_THAT(text, HasSubstr("8192"));
  EXPECT_THAT(text, HasSubstr("2048"));
  const std::string buffer_without = describe(buffer, {"capacity_numel"});
  EXPECT_FALSE(has_field(buffer_without, "capacity_numel"));
  expect_fields(buffer_without, {"used_numel"});

  SwapBufferPool pool(views);
  ASSERT_TRUE(pool.allocate_tensor({&file, 0, 4096}, 5, 2048));
  const std::string pool_text = describe(pool);
  expect_fields(pool_text, {"buffers", "current", "count"});
  const std::string pool_without = describe(pool, {"current"});
  EXPECT_FALSE(has_field(pool_without, "current"));
  expect_fields(pool_without, {"buffers", "count"});

  const std::string manager_text = describe(manager);
  expect_fields(manager_text, {"num_elems", "count", "dtype", "free_count", "used_count"});
  EXPECT_THAT(manager_text, HasSubstr("8192"));
  EXPECT_THAT(manager_text, HasSubstr("bf16"));
  const std::string manager_without = describe(manager, {"num_elems", "dtype", "free_count"});
  EXPECT_FALSE(has_field(manager_without, "num_elems"));
  EXPECT_FALSE(has_field(manager_without, "dtype"));
  EXPECT_FALSE(has_field(manager_without, "free_count"));
  EXPECT_THAT(manager_without, Not(HasSubstr("bf16")));
  expect_fields(manager_without, {"count", "used_count"});
}

TEST(Describe, UnknownExcludeNamesAreIgnored) {
  std::vector<float> values(3);
  const TensorView view{values.data(), values.size(), DType::f32};
  EXPECT_EQ(describe(view, {"no_such_field"}), describe(view));
}

}  // namespace
}  // namespace swapcoord
