// libFuzzer target: the C API's entry points that take JSON text (swapcoord.h:
// swapcoord_session_create / _resume and their _ex forms, which share one parser), on
// MPI_COMM_SELF with a fixed model of three tensors.
//
// Input: one mode byte, then the options_json text (the target adds the NUL). The mode
// byte picks
//   even  swapcoord_session_create, then destroy;
//   odd   swapcoord_session_create_ex, swap out every tensor, commit, destroy, then
//         swapcoord_session_resume with the same text and swap in: the data must come
//         back as written.
// The contract checked (swapcoord.h, "Conventions"): a return code is 0 or one of the
// documented SWAPCOORD_ERR_* codes (SWAPCOORD_ERR_NO_MEMORY is a finding: the inputs run
// are small), a failure leaves *out untouched and sets a non-empty swapcoord_last_error().
//
// The sessions work in a sandbox: a directory made with mkdtemp in $TMPDIR (or /tmp),
// which is the working directory during each call and is emptied after each input. Inputs
// whose options (read first with apply_config, as the C API reads them) name an absolute
// root or catalog_dir or a path with "..", or ask for more than 256 MiB of staging memory,
// more than 1024 queued requests or more than 8 I/O threads, are not run: they would
// reach outside the sandbox or measure the machine rather than the parser.
#include <signal.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "swapcoord/session/options.hpp"
#include "swapcoord/swapcoord.h"

namespace {

namespace fs = std::filesystem;

constexpr const char* kTarget = "fuzz_c_api";
constexpr std::uint64_t kMaxStagingBytes = 256ULL << 20;

fs::path g_sandbox;   // absolute
fs::path g_home;      // the working directory the fuzzer was started in

bool inside_sandbox(const std::string& path) {
  const fs::path p(path);
  if (p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

// Whether to run `text` through the C API (see the file comment). Text the library
// refuses is run: refusing it costs nothing.
bool worth_running(const char* text) {
  if (*text == '\0') return true;  // the defaults: root "swapcoord-swap", in the sandbox
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded()) return true;
  swapcoord::SessionOptions o;
  try {
    (void)swapcoord::apply_config(o, doc, "options_json", {}, false);
  } catch (const swapcoord::Error&) {
    return true;
  } catch (const std::exception& e) {
    swapcoord::fuzz::finding(kTarget, std::string("apply_config threw a non-swapcoord exception: ") + e.what());
  }
  for (const auto& root : o.roots)
    if (!inside_sandbox(root)) return false;
  if (!o.catalog_dir.empty() && !inside_sandbox(o.catalog_dir)) return false;
  const std::uint64_t staging = o.buffer_count > kMaxStagingBytes ? kMaxStagingBytes + 1
                                                                  : o.buffer_count * std::min(o.buffer_size, kMaxStagingBytes + 1);
  return staging <= kMaxStagingBytes && o.prefetch_bytes <= kMaxStagingBytes && o.aio.queue_depth <= 1024 &&
         o.aio.intra_op_parallelism <= 8;
}

// A return code that keeps the C API's contract: 0, or a documented SWAPCOORD_ERR_* code
// (not SWAPCOORD_ERR_NO_MEMORY) with a message that is not the C API's catch-all.
void check_code(int rc, const char* call) {
  switch (rc) {
    case SWAPCOORD_OK:
      return;
    case SWAPCOORD_ERR_INVALID: case SWAPCOORD_ERR_IO: case SWAPCOORD_ERR_CONFIG: case SWAPCOORD_ERR_MPI:
    case SWAPCOORD_ERR_WRONG_DATA: case SWAPCOORD_ERR_PHASE: case SWAPCOORD_ERR_CATALOG: case SWAPCOORD_ERR_OTHER:
      if (swapcoord_last_error()[0] == '\0')
        swapcoord::fuzz::finding(kTarget, std::string(call) + " failed with an empty swapcoord_last_error()");
      if (std::strcmp(swapcoord_last_error(), "unknown exception") == 0)  // the C API's catch (...)
        swapcoord::fuzz::finding(kTarget, std::string(call) + ": " + swapcoord_last_error());
      return;
    default:
      swapcoord::fuzz::finding(kTarget, std::string(call) + " returned " + std::to_string(rc) + " (" +
                                            swapcoord_error_name(rc) + "): " + swapcoord_last_error());
  }
}

swapcoord_session* const kUntouched = reinterpret_cast<swapcoord_session*>(std::uintptr_t{0x5ca1ab1e});

// The model: three tensors, one of them empty.
const std::uint64_t kShapeW[] = {1000};
const std::uint64_t kShapeB[] = {3, 5};
const std::uint64_t kShapeE[] = {0, 4};
const swapcoord_tensor_spec kTensors[] = {
    {"w", SWAPCOORD_DTYPE_F32, 1, kShapeW},
    {"b", SWAPCOORD_DTYPE_F16, 2, kShapeB},
    {"e", SWAPCOORD_DTYPE_U8, 2, kShapeE},
};
constexpr std::size_t kCount = sizeof kTensors / sizeof kTensors[0];

swapcoord_session* open_session(const char* text, bool resume, bool ex) {
  swapcoord_session* session = kUntouched;
  const MPI_Fint comm = MPI_Comm_c2f(MPI_COMM_SELF);
  const int rc = resume ? swapcoord_session_resume(&session, comm, text, kTensors, kCount)
                 : ex   ? swapcoord_session_create_ex(&session, comm, text, kTensors, kCount, nullptr, nullptr)
                        : swapcoord_session_create(&session, comm, text, kTensors, kCount);
  const char* call = resume ? "swapcoord_session_resume" : "swapcoord_session_create";
  check_code(rc, call);
  if (rc != SWAPCOORD_OK) {
    if (session != kUntouched) swapcoord::fuzz::finding(kTarget, std::string(call) + " failed but wrote *out");
    return nullptr;
  }
  if (session == nullptr || session == kUntouched)
    swapcoord::fuzz::finding(kTarget, std::string(call) + " returned 0 without a session");
  return session;
}

// Buffers of the three tensors (bytes enough for each; world size 1 owns everything).
struct Data {
  std::vector<std::vector<unsigned char>> bytes;
  explicit Data(unsigned char seed) {
    const std::size_t sizes[kCount] = {1000 * 4, 15 * 2, 0};
    for (std::size_t i = 0; i < kCount; ++i) {
      bytes.emplace_back(sizes[i]);
      for (std::size_t j = 0; j < sizes[i]; ++j) bytes.back()[j] = static_cast<unsigned char>(seed + 7 * j + i);
    }
  }
  std::vector<void*> pointers() {
    std::vector<void*> out;
    for (auto& b : bytes) out.push_back(b.empty() ? nullptr : b.data());
    return out;
  }
};

void run(const char* text, bool full) {
  swapcoord_session* session = open_session(text, false, full);
  if (session == nullptr || !full) {
    swapcoord_session_destroy(session);
    return;
  }
  const std::uint32_t ids[kCount] = {0, 1, 2};
  Data written(42);
  auto out_pointers = written.pointers();
  int rc = swapcoord_session_swap_out(session, ids, kCount, out_pointers.data(), nullptr);
  check_code(rc, "swapcoord_session_swap_out");
  if (rc == SWAPCOORD_OK) {
    rc = swapcoord_session_commit(session, nullptr);
    check_code(rc, "swapcoord_session_commit");
  }
  swapcoord_session_destroy(session);
  if (rc != SWAPCOORD_OK) return;
  session = open_session(text, true, false);
  if (session == nullptr) return;
  Data read(0);
  auto in_pointers = read.pointers();
  rc = swapcoord_session_swap_in(session, ids, kCount, in_pointers.data(), nullptr);
  check_code(rc, "swapcoord_session_swap_in");
  if (rc == SWAPCOORD_OK && read.bytes != written.bytes)
    swapcoord::fuzz::finding(kTarget, "resume + swap_in returned 0 but the data differs from what was committed");
  swapcoord_session_destroy(session);
}

void empty_sandbox() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(g_sandbox, ec)) fs::remove_all(entry.path(), ec);
}

// libFuzzer resolves its artifact paths (crash-*, timeout-*) against the working
// directory when it writes them, which can be during a call (in the sandbox): make the
// prefix absolute, relative to where the fuzzer was started.
void absolute_artifact_prefix(int* argc, char*** argv) {
  static std::vector<std::string> storage;
  static std::vector<char*> args;
  bool have_prefix = false;
  for (int i = 0; i < *argc; ++i) {
    std::string arg = (*argv)[i];
    for (const char* flag : {"-artifact_prefix=", "-exact_artifact_path="}) {
      const std::size_t n = std::strlen(flag);
      if (arg.compare(0, n, flag) == 0) {
        if (flag[1] == 'a') have_prefix = true;
        const std::string value = arg.substr(n);
        if (!value.empty() && value[0] != '/') arg = flag + (g_home / value).string();
      }
    }
    storage.push_back(arg);
  }
  if (!have_prefix) storage.push_back("-artifact_prefix=" + g_home.string() + "/");
  for (auto& s : storage) args.push_back(s.data());
  args.push_back(nullptr);
  *argc = static_cast<int>(storage.size());
  *argv = args.data();
}

}  // namespace

// LeakSanitizer: libFuzzer checks for leaks after each input that allocated more than it
// freed, and that stays on. The check at exit is off: Open MPI's teardown leaves blocks of
// components it has unloaded, which no suppression can name (<unknown module>).
extern "C" const char* __lsan_default_options() { return "leak_check_at_exit=0"; }

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  swapcoord::fuzz::quiet_log();
  g_home = fs::current_path();
  absolute_artifact_prefix(argc, argv);
  std::string pattern = swapcoord::fuzz::temp_dir() + "/swapcoord-fuzz-c-api-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  g_sandbox = fs::absolute(pattern);
  // Open MPI installs handlers for SIGABRT, SIGBUS, SIGFPE and SIGSEGV that print their own
  // backtrace; with them in place libFuzzer leaves those signals alone and saves no input.
  // Keep the handlers from before MPI_Init (ASan's for SIGSEGV, the defaults otherwise),
  // so that libFuzzer, which installs its own after this function, sees them.
  constexpr int kSignals[] = {SIGABRT, SIGBUS, SIGFPE, SIGSEGV};
  struct sigaction before[4] = {};
  for (int i = 0; i < 4; ++i) ::sigaction(kSignals[i], nullptr, &before[i]);
  MPI_Init(nullptr, nullptr);
  for (int i = 0; i < 4; ++i) ::sigaction(kSignals[i], &before[i], nullptr);
  // No MPI_Finalize: it unloads Open MPI's components, and LeakSanitizer's check at exit
  // could then no longer tell their allocations (suppressed) from ours.
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_sandbox, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool full = (data[0] & 1) != 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (!worth_running(text.c_str())) return 0;
  fs::current_path(g_sandbox);
  run(text.c_str(), full);
  fs::current_path(g_home);
  empty_sandbox();
  return 0;
}
