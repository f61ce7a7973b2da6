#pragma once
// describe(obj): a readable dump of an object's fields, one per line, for debugging (the
// seed's print_object). Fields named in `exclude` are left out.
#include <initializer_list>
#include <string>
#include <string_view>

namespace swapcoord {

struct TensorView;
struct SwapLocation;
struct AioConfig;
class PinnedAllocation;
class SwapBuffer;
class SwapBufferPool;
class SwapBufferManager;

using Exclude = std::initializer_list<std::string_view>;

std::string describe(const TensorView& view, Exclude exclude = {});
std::string describe(const SwapLocation& location, Exclude exclude = {});
std::string describe(const AioConfig& config, Exclude exclude = {});
std::string describe(const PinnedAllocation& memory, Exclude exclude = {});
std::string describe(const SwapBuffer& buffer, Exclude exclude = {});
std::string describe(const SwapBufferPool& pool, Exclude exclude = {});
std::string describe(const SwapBufferManager& manager, Exclude exclude = {});

}  // namespace swapcoord
