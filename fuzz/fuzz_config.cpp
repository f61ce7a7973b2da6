// libFuzzer target: the config parser (swapcoord/session/options.hpp and `swapcoord run`'s
// RunConfig), in both forms it accepts: swapcoord's {"aio", "swap", "run"} and a DeepSpeed
// ds_config.json.
//
// Input: the text of a config document. Each input goes
//  1. through nlohmann::json::parse (text that is not JSON stops here), apply_config and
//     SessionOptions::validate; options that validate must survive the round trip
//     to_json -> apply_config -> to_json unchanged (and validate again);
//  2. into a temporary file read by RunConfig::load_file (read_config_file, apply_config
//     with the run section, the DeepSpeed offload rules) and RunConfig::validate; a config
//     that validates must give a RunConfig::to_json() that is a JSON object.
// Clean outcomes: success or swapcoord::Error (fuzz_support.hpp).
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "run_config.hpp"
#include "swapcoord/session/options.hpp"

namespace {

constexpr const char* kTarget = "fuzz_config";

void round_trip(const nlohmann::json& doc) {
  swapcoord::SessionOptions options;
  (void)swapcoord::apply_config(options, doc, "fuzz", {}, false);
  options.validate();
  const nlohmann::json first = options.to_json();
  swapcoord::SessionOptions again;
  try {
    (void)swapcoord::apply_config(again, first, "round trip", {}, false);
    again.validate();
  } catch (const swapcoord::Error& e) {
    swapcoord::fuzz::finding(kTarget, std::string("valid options do not read back: ") + e.what() +
                                          "\nto_json: " + first.dump());
  }
  const nlohmann::json second = again.to_json();
  if (first != second)
    swapcoord::fuzz::finding(kTarget, "to_json -> apply_config -> to_json changed the options:\n first: " +
                                          first.dump() + "\nsecond: " + second.dump());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  swapcoord::fuzz::quiet_log();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_discarded()) swapcoord::fuzz::expect_clean(kTarget, [&] { round_trip(doc); });

  const swapcoord::fuzz::TempFile file(data, size);
  swapcoord::fuzz::expect_clean(kTarget, [&] {
    swapcoord::app::RunConfig config;
    config.load_file(file.path(), false);
    config.validate();
    if (!config.to_json().is_object()) swapcoord::fuzz::finding(kTarget, "RunConfig::to_json is not an object");
  });
  return 0;
}
