// A program that uses the installed swapcoord package: one swap-out and swap-in.
#include <cstdio>
#include <cstring>
#include <string>

#include "swapcoord/buffer/swap_buffer.hpp"
#include "swapcoord/buffer/swap_buffer_manager.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/swap/swap_tensors.hpp"

int main(int argc, char** argv) {
  using namespace swapcoord;
  const std::string dir = argc > 1 ? argv[1] : ".";
  const std::size_t numel = aligned_numel(1000, DType::f32);
  SwapBufferManager memory(numel, 1, DType::f32);
  SwapFile file = SwapFile::create(dir + "/consumer.swp", numel * 4);
  TensorView view = memory.allocate(numel, 1).front();
  for (std::size_t i = 0; i < numel; ++i) view.as<float>()[i] = static_cast<float>(i);
  const SwapLocation location{&file, 0, view.size_bytes()};
  auto engine = make_engine(default_engine_name());
  swap_out_tensors(*engine, {&view, 1}, {&location, 1});
  std::memset(view.data, 0, view.size_bytes());
  swap_in_tensors(*engine, {&view, 1}, {&location, 1});
  for (std::size_t i = 0; i < numel; ++i)
    if (view.as<float>()[i] != static_cast<float>(i)) return 1;
  std::printf("consumer: round trip OK (swapcoord %s)\n", SWAPCOORD_VERSION);
  return 0;
}
