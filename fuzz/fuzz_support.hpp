#pragma once
// Shared pieces of the libFuzzer targets in fuzz/ (README.md, "Fuzzing").
//
// Every target accepts two outcomes only: the call returns, or it throws swapcoord::Error
// (the library's one exception hierarchy, swapcoord/common/error.hpp). Anything else is a
// finding: another exception type is printed and the process aborts, so that libFuzzer
// saves the input; crashes, sanitizer reports, leaks and slow inputs (-timeout) are caught
// by libFuzzer and the sanitizers themselves.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <typeinfo>

#include "swapcoord/common/error.hpp"

namespace swapcoord::fuzz {

// $TMPDIR, or /tmp when it is unset or empty.
std::string temp_dir();

// A file holding one input in temp_dir(), made with mkstemp, removed on destruction.
class TempFile {
 public:
  TempFile(const void* data, std::size_t size);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const noexcept { return _path; }

 private:
  std::string _path;
};

// Prints "<target>: FINDING: <what>" to stderr and aborts (libFuzzer saves the input).
[[noreturn]] void finding(std::string_view target, std::string_view what);

// Runs `body`; a swapcoord::Error is a clean outcome, any other exception a finding.
template <class F>
void expect_clean(std::string_view target, F&& body) {
  try {
    body();
  } catch (const Error&) {
    // the documented way to refuse an input
  } catch (const std::exception& e) {
    finding(target, std::string("an exception not derived from swapcoord::Error: ") + typeid(e).name() + ": " +
                        e.what());
  } catch (...) {
    finding(target, "an exception not derived from std::exception");
  }
}

// Turns the library's log (spdlog) off for the life of the process.
void quiet_log();

}  // namespace swapcoord::fuzz
