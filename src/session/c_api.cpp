// The C API (include/swapcoord/swapcoord.h): the aio engine handle and the swap session
// behind opaque handles. Every entry point catches everything (guarded()); the error's
// text goes to a thread-local string and its class to a return code.
#include "swapcoord/swapcoord.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/common/align.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/common/dtype.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/config.hpp"
#include "swapcoord/coord/mpi.hpp"
#include "swapcoord/coord/phase_sync.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"
#include "swapcoord/session/options.hpp"
#include "swapcoord/session/session.hpp"

namespace sc = swapcoord;

static_assert(SWAPCOORD_DTYPE_U8 == static_cast<int>(sc::DType::u8));
static_assert(SWAPCOORD_DTYPE_I8 == static_cast<int>(sc::DType::i8));
static_assert(SWAPCOORD_DTYPE_I16 == static_cast<int>(sc::DType::i16));
static_assert(SWAPCOORD_DTYPE_I32 == static_cast<int>(sc::DType::i32));
static_assert(SWAPCOORD_DTYPE_I64 == static_cast<int>(sc::DType::i64));
static_assert(SWAPCOORD_DTYPE_F16 == static_cast<int>(sc::DType::f16));
static_assert(SWAPCOORD_DTYPE_BF16 == static_cast<int>(sc::DType::bf16));
static_assert(SWAPCOORD_DTYPE_F32 == static_cast<int>(sc::DType::f32));
static_assert(SWAPCOORD_DTYPE_F64 == static_cast<int>(sc::DType::f64));

namespace {

thread_local std::string t_last_error;

// A bad argument to a C entry point (SWAPCOORD_ERR_INVALID).
class InvalidArgument : public sc::Error {
 public:
  explicit InvalidArgument(const std::string& message) : sc::Error(message) {}
};

// Data read back differs from what was written (SWAPCOORD_ERR_WRONG_DATA).
class WrongData : public sc::Error {
 public:
  explicit WrongData(const std::string& message) : sc::Error(message) {}
};

int set_error(int code, std::string message) {
  t_last_error = std::move(message);
  return code;
}

// Maps the exception in flight to a return code and keeps its text.
int current_exception_code() noexcept {
  try {
    throw;
  } catch (const InvalidArgument& e) {
    return set_error(SWAPCOORD_ERR_INVALID, e.what());
  } catch (const WrongData& e) {
    return set_error(SWAPCOORD_ERR_WRONG_DATA, e.what());
  } catch (const sc::ConfigError& e) {
    return set_error(SWAPCOORD_ERR_CONFIG, e.what());
  } catch (const sc::SystemError& e) {  // IoError included
    return set_error(SWAPCOORD_ERR_IO, e.what());
  } catch (const sc::MpiError& e) {
    return set_error(SWAPCOORD_ERR_MPI, e.what());
  } catch (const sc::PhaseError& e) {
    return set_error(SWAPCOORD_ERR_PHASE, e.what());
  } catch (const sc::PhaseTimeout& e) {
    return set_error(SWAPCOORD_ERR_PHASE, e.what());
  } catch (const sc::HdfError& e) {
    return set_error(SWAPCOORD_ERR_CATALOG, e.what());
  } catch (const nlohmann::json::exception& e) {
    return set_error(SWAPCOORD_ERR_CONFIG, fmt::format("options_json: {}", e.what()));
  } catch (const sc::Error& e) {
    // The session reports a checksum mismatch on swap-in as a plain Error; its message
    // says "checksum" (see SessionOptions::verify).
    const std::string text = e.what();
    if (text.find("checksum") != std::string::npos)
      return set_error(SWAPCOORD_ERR_WRONG_DATA, text);
    return set_error(SWAPCOORD_ERR_OTHER, text);
  } catch (const std::bad_alloc&) {
    return set_error(SWAPCOORD_ERR_NO_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return set_error(SWAPCOORD_ERR_OTHER, e.what());
  } catch (...) {
    return set_error(SWAPCOORD_ERR_OTHER, "unknown exception");
  }
}

// Runs `body` (returning int) with every exception turned into a return code.
template <class F>
int guarded(F&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return current_exception_code();
  }
}

template <class T>
void require(const T* pointer, const char* function, const char* what) {
  if (pointer == nullptr) throw InvalidArgument(fmt::format("{}: {} is NULL", function, what));
}

// ---- pinned memory ------------------------------------------------------------------

struct PinnedRegistry {
  std::mutex mutex;
  std::map<void*, sc::PinnedAllocation> allocations;
};

PinnedRegistry& pinned_registry() {
  static auto* registry = new PinnedRegistry;  // never destroyed: usable from atexit code
  return *registry;
}

// ---- aio --------------------------------------------------------------------------

// Transfers of at most this size with an unaligned buffer (but aligned offset and length)
// go through a pinned bounce buffer; larger ones use buffered I/O rather than allocating.
constexpr std::size_t kMaxBounceBytes = std::size_t{64} << 20;

struct AioOp {
  sc::IoOp op = sc::IoOp::read;
  std::unique_ptr<sc::SwapFile> file;
  void* user = nullptr;            // the caller's buffer
  std::size_t bytes = 0;
  sc::PinnedAllocation bounce;     // when the caller's buffer is not aligned for O_DIRECT
  sc::IoTicket ticket;
  bool submitted = false;
};

}  // namespace

struct swapcoord_aio_handle {
  std::unique_ptr<sc::IoEngine> engine;
  sc::AioConfig config;
  std::string backend;
  std::vector<std::unique_ptr<AioOp>> pending;  // queued by async_pread / async_pwrite
};

namespace {

bool file_exists(const std::string& path) {
  struct stat info{};
  return ::lstat(path.c_str(), &info) == 0;
}

// Opens the file, chooses the path (direct, bounce, buffered), checks a read against the
// file's size and submits. Throws on any error before the request is queued.
std::unique_ptr<AioOp> start_op(swapcoord_aio_handle& h, sc::IoOp op, void* buffer,
                                std::size_t bytes, const char* path_c, std::uint64_t offset,
                                const char* function) {
  require(buffer, function, "buffer");
  require(path_c, function, "path");
  const std::string path(path_c);
  if (path.empty()) throw InvalidArgument(fmt::format("{}: path is empty", function));
  if (bytes == 0)
    throw InvalidArgument(fmt::format("{}: zero bytes requested for '{}'", function, path));
  if (offset > UINT64_MAX - bytes)
    throw InvalidArgument(
        fmt::format("{}: offset {} + {} bytes overflows for '{}'", function, offset, bytes, path));

  auto result = std::make_unique<AioOp>();
  result->op = op;
  result->user = buffer;
  result->bytes = bytes;
  const bool writing = op == sc::IoOp::write;
  auto open = [&](sc::DirectMode mode) {
    if (writing && !file_exists(path))  // like DeepSpeed: created (0600) when missing
      return std::make_unique<sc::SwapFile>(sc::SwapFile::create(path, 0, mode));
    return std::make_unique<sc::SwapFile>(sc::SwapFile::open(path, mode, writing));
  };
  result->file = open(h.config.direct);

  if (!writing) {
    const auto size = result->file->size_bytes();
    if (offset + bytes > size)
      throw sc::IoError(fmt::format("cannot read {} bytes at offset {} of '{}': the file has {} "
                                    "bytes (reading past its end)",
                                    bytes, offset, path, size),
                        0, {});
  }

  void* io_buffer = buffer;
  if (result->file->direct()) {
    const auto mem = result->file->memory_alignment(), off = result->file->offset_alignment();
    const bool range_aligned = sc::is_aligned(offset, off) && sc::is_aligned(bytes, off);
    if (!range_aligned || (!sc::is_aligned(buffer, mem) && bytes > kMaxBounceBytes)) {
      // O_DIRECT cannot do this transfer as asked: buffered I/O on the same file.
      result->file = open(sc::DirectMode::off);
    } else if (!sc::is_aligned(buffer, mem)) {
      result->bounce = sc::PinnedAllocation(sc::align_up(bytes, sc::kDefaultAlignmentBytes));
      if (!sc::is_aligned(result->bounce.data(), mem)) {
        result->bounce = sc::PinnedAllocation();
        result->file = open(sc::DirectMode::off);
      } else {
        io_buffer = result->bounce.data();
        if (writing) std::memcpy(io_buffer, buffer, bytes);
      }
    }
  }
  const sc::IoRequest request{op, result->file.get(), io_buffer, offset, bytes};
  result->ticket = h.engine->submit(std::span<const sc::IoRequest>(&request, 1));
  result->submitted = true;
  return result;
}

void finish_op(swapcoord_aio_handle& h, AioOp& op) {
  if (!op.submitted) return;
  op.submitted = false;
  h.engine->wait(std::move(op.ticket));
  if (op.op == sc::IoOp::read && !op.bounce.empty())
    std::memcpy(op.user, op.bounce.data(), op.bytes);
}

// Waits for every pending op; returns how many succeeded and rethrows the first error.
int wait_all_ops(swapcoord_aio_handle& h) {
  auto ops = std::move(h.pending);
  h.pending.clear();
  int completed = 0;
  std::exception_ptr first;
  for (auto& op : ops) {
    try {
      finish_op(h, *op);
      ++completed;
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
  return completed;
}

}  // namespace

extern "C" {

const char* swapcoord_last_error(void) { return t_last_error.c_str(); }

const char* swapcoord_error_name(int code) {
  switch (code) {
    case SWAPCOORD_OK: return "SWAPCOORD_OK";
    case SWAPCOORD_ERR_INVALID: return "SWAPCOORD_ERR_INVALID";
    case SWAPCOORD_ERR_IO: return "SWAPCOORD_ERR_IO";
    case SWAPCOORD_ERR_CONFIG: return "SWAPCOORD_ERR_CONFIG";
    case SWAPCOORD_ERR_MPI: return "SWAPCOORD_ERR_MPI";
    case SWAPCOORD_ERR_WRONG_DATA: return "SWAPCOORD_ERR_WRONG_DATA";
    case SWAPCOORD_ERR_PHASE: return "SWAPCOORD_ERR_PHASE";
    case SWAPCOORD_ERR_CATALOG: return "SWAPCOORD_ERR_CATALOG";
    case SWAPCOORD_ERR_NO_MEMORY: return "SWAPCOORD_ERR_NO_MEMORY";
    case SWAPCOORD_ERR_OTHER: return "SWAPCOORD_ERR_OTHER";
    default: return code > 0 ? "(a count, not an error)" : "(unknown swapcoord error code)";
  }
}

const char* swapcoord_version(void) { return SWAPCOORD_VERSION; }

size_t swapcoord_dtype_size(int dtype) {
  if (dtype < SWAPCOORD_DTYPE_U8 || dtype > SWAPCOORD_DTYPE_F64) return 0;
  return sc::dtype_size(static_cast<sc::DType>(dtype));
}

// ---- aio handle -------------------------------------------------------------------

void swapcoord_aio_options_init(swapcoord_aio_options* options) {
  if (options == nullptr) return;
  const sc::AioConfig defaults;
  options->block_size = defaults.block_size;
  options->queue_depth = defaults.queue_depth;
  options->single_submit = defaults.single_submit ? 1 : 0;
  options->overlap_events = defaults.overlap_events ? 1 : 0;
  options->intra_op_parallelism = static_cast<int>(defaults.intra_op_parallelism);
  options->backend = nullptr;
  options->direct = SWAPCOORD_DIRECT_AUTO;
}

int swapcoord_aio_handle_create_with_options(swapcoord_aio_handle** out,
                                             const swapcoord_aio_options* options) {
  return guarded([&] {
    require(out, "swapcoord_aio_handle_create", "out");
    swapcoord_aio_options o;
    swapcoord_aio_options_init(&o);
    if (options != nullptr) o = *options;
    if (o.intra_op_parallelism <= 0)
      throw sc::ConfigError(fmt::format(
          "aio.intra_op_parallelism: {} is not between 1 and 256", o.intra_op_parallelism));
    auto h = std::make_unique<swapcoord_aio_handle>();
    h->config.block_size = o.block_size;
    h->config.queue_depth = o.queue_depth;
    h->config.single_submit = o.single_submit != 0;
    h->config.overlap_events = o.overlap_events != 0;
    h->config.intra_op_parallelism = static_cast<std::size_t>(o.intra_op_parallelism);
    switch (o.direct) {
      case SWAPCOORD_DIRECT_AUTO: h->config.direct = sc::DirectMode::automatic; break;
      case SWAPCOORD_DIRECT_ON: h->config.direct = sc::DirectMode::on; break;
      case SWAPCOORD_DIRECT_OFF: h->config.direct = sc::DirectMode::off; break;
      default:
        throw sc::ConfigError(fmt::format("aio.direct: {} is not one of SWAPCOORD_DIRECT_AUTO (0), "
                                          "_ON (1), _OFF (2)", o.direct));
    }
    h->config.validate();
    h->backend = o.backend != nullptr ? o.backend : sc::default_engine_name();
    h->engine = sc::make_engine(h->backend, h->config);
    *out = h.release();
    return SWAPCOORD_OK;
  });
}

int swapcoord_aio_handle_create(swapcoord_aio_handle** out, size_t block_size, size_t queue_depth,
                                int single_submit, int overlap_events, int intra_op_parallelism) {
  swapcoord_aio_options o;
  swapcoord_aio_options_init(&o);
  o.block_size = block_size;
  o.queue_depth = queue_depth;
  o.single_submit = single_submit;
  o.overlap_events = overlap_events;
  o.intra_op_parallelism = intra_op_parallelism;
  return swapcoord_aio_handle_create_with_options(out, &o);
}

void swapcoord_aio_handle_destroy(swapcoord_aio_handle* handle) {
  if (handle == nullptr) return;
  try {
    const int rc = guarded([&] { return wait_all_ops(*handle); });
    if (rc < 0)
      sc::log::warn(fmt::format("swapcoord_aio_handle_destroy: a queued operation failed: {}",
                                t_last_error));
  } catch (...) {
  }
  delete handle;
}

size_t swapcoord_aio_get_block_size(const swapcoord_aio_handle* h) {
  return h ? h->config.block_size : 0;
}
size_t swapcoord_aio_get_queue_depth(const swapcoord_aio_handle* h) {
  return h ? h->config.queue_depth : 0;
}
int swapcoord_aio_get_single_submit(const swapcoord_aio_handle* h) {
  return h && h->config.single_submit ? 1 : 0;
}
int swapcoord_aio_get_overlap_events(const swapcoord_aio_handle* h) {
  return h && h->config.overlap_events ? 1 : 0;
}
int swapcoord_aio_get_intra_op_parallelism(const swapcoord_aio_handle* h) {
  return h ? static_cast<int>(h->config.intra_op_parallelism) : 0;
}
const char* swapcoord_aio_get_backend(const swapcoord_aio_handle* h) {
  return h ? h->backend.c_str() : "";
}

int swapcoord_aio_pread(swapcoord_aio_handle* h, void* buffer, size_t bytes, const char* path,
                        uint64_t file_offset) {
  return guarded([&] {
    require(h, "swapcoord_aio_pread", "handle");
    auto op = start_op(*h, sc::IoOp::read, buffer, bytes, path, file_offset, "swapcoord_aio_pread");
    finish_op(*h, *op);
    return SWAPCOORD_OK;
  });
}

int swapcoord_aio_pwrite(swapcoord_aio_handle* h, const void* buffer, size_t bytes,
                         const char* path, uint64_t file_offset) {
  return guarded([&] {
    require(h, "swapcoord_aio_pwrite", "handle");
    auto op = start_op(*h, sc::IoOp::write, const_cast<void*>(buffer), bytes, path, file_offset,
                       "swapcoord_aio_pwrite");
    finish_op(*h, *op);
    return SWAPCOORD_OK;
  });
}

int swapcoord_aio_async_pread(swapcoord_aio_handle* h, void* buffer, size_t bytes,
                              const char* path, uint64_t file_offset) {
  return guarded([&] {
    require(h, "swapcoord_aio_async_pread", "handle");
    h->pending.reserve(h->pending.size() + 1);  // no throw after the submit
    h->pending.push_back(start_op(*h, sc::IoOp::read, buffer, bytes, path, file_offset,
                                  "swapcoord_aio_async_pread"));
    return SWAPCOORD_OK;
  });
}

int swapcoord_aio_async_pwrite(swapcoord_aio_handle* h, const void* buffer, size_t bytes,
                               const char* path, uint64_t file_offset) {
  return guarded([&] {
    require(h, "swapcoord_aio_async_pwrite", "handle");
    h->pending.reserve(h->pending.size() + 1);
    h->pending.push_back(start_op(*h, sc::IoOp::write, const_cast<void*>(buffer), bytes, path,
                                  file_offset, "swapcoord_aio_async_pwrite"));
    return SWAPCOORD_OK;
  });
}

int swapcoord_aio_wait(swapcoord_aio_handle* h) {
  return guarded([&] {
    require(h, "swapcoord_aio_wait", "handle");
    return wait_all_ops(*h);
  });
}

size_t swapcoord_aio_pending(const swapcoord_aio_handle* h) { return h ? h->pending.size() : 0; }

void* swapcoord_pinned_alloc(size_t bytes) {
  void* result = nullptr;
  guarded([&] {
    if (bytes == 0) throw InvalidArgument("swapcoord_pinned_alloc: zero bytes requested");
    sc::PinnedAllocation allocation(bytes);
    void* data = allocation.data();
    auto& registry = pinned_registry();
    std::lock_guard lock(registry.mutex);
    registry.allocations.emplace(data, std::move(allocation));
    result = data;
    return SWAPCOORD_OK;
  });
  return result;
}

int swapcoord_pinned_free(void* pointer) {
  if (pointer == nullptr) return SWAPCOORD_OK;
  return guarded([&] {
    sc::PinnedAllocation allocation;
    {
      auto& registry = pinned_registry();
      std::lock_guard lock(registry.mutex);
      auto it = registry.allocations.find(pointer);
      if (it == registry.allocations.end())
        throw InvalidArgument(fmt::format(
            "swapcoord_pinned_free: {} was not returned by swapcoord_pinned_alloc (or was "
            "freed already)", pointer));
      allocation = std::move(it->second);
      registry.allocations.erase(it);
    }
    return SWAPCOORD_OK;  // `allocation` is released here, outside the lock
  });
}

}  // extern "C"

// ---- session ------------------------------------------------------------------------

namespace {

// The stall callback, shared with the closure in SessionOptions::on_stall so that it can
// be replaced after the session is made.
struct StallHook {
  std::mutex mutex;
  swapcoord_stall_callback callback = nullptr;
  void* user = nullptr;

  void call(const std::string& message) {
    swapcoord_stall_callback fn;
    void* user_data;
    {
      std::lock_guard lock(mutex);
      fn = callback;
      user_data = user;
    }
    if (fn != nullptr)
      fn(message.c_str(), user_data);
    else
      sc::log::error(message);
  }
};

}  // namespace

struct swapcoord_session {
  std::shared_ptr<StallHook> hook;
  std::unique_ptr<sc::SwapSession> session;
  std::string catalog_path;
  std::vector<sc::SwapHandle> detached;  // prefetches whose handle the caller did not take
};

struct swapcoord_swap_handle {
  // Declared before `handle` so that they outlive it (members are destroyed in reverse).
  std::vector<std::uint32_t> ids;
  std::vector<sc::TensorView> views;
  sc::SwapHandle handle;
};

namespace {

std::vector<sc::TensorSpec> to_specs(const swapcoord_tensor_spec* tensors, std::size_t count,
                                     const char* function) {
  if (count > 0) require(tensors, function, "tensors");
  std::vector<sc::TensorSpec> specs;
  specs.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto& t = tensors[i];
    if (t.name == nullptr) throw InvalidArgument(fmt::format("{}: tensors[{}].name is NULL", function, i));
    if (t.dtype < SWAPCOORD_DTYPE_U8 || t.dtype > SWAPCOORD_DTYPE_F64)
      throw InvalidArgument(fmt::format("{}: tensors[{}] ('{}'): dtype {} is not a SWAPCOORD_DTYPE_*",
                                        function, i, t.name, t.dtype));
    if (t.ndim < 0 || (t.ndim > 0 && t.shape == nullptr))
      throw InvalidArgument(fmt::format("{}: tensors[{}] ('{}'): ndim {} with {} shape", function, i,
                                        t.name, t.ndim, t.shape ? "a" : "a NULL"));
    sc::TensorSpec spec;
    spec.name = t.name;
    spec.dtype = static_cast<sc::DType>(t.dtype);
    spec.shape.assign(t.shape, t.shape + t.ndim);
    specs.push_back(std::move(spec));
  }
  return specs;
}

int make_session(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                 const swapcoord_tensor_spec* tensors, std::size_t count,
                 swapcoord_stall_callback on_stall, void* user, bool resume) {
  const char* function = resume ? "swapcoord_session_resume" : "swapcoord_session_create";
  return guarded([&] {
    const MPI_Comm c_comm = MPI_Comm_f2c(comm);
    if (c_comm == MPI_COMM_NULL)
      throw InvalidArgument(fmt::format("{}: comm {} is MPI_COMM_NULL", function, comm));
    int rank = 0;
    sc::mpi_check(MPI_Comm_rank(c_comm, &rank), "MPI_Comm_rank");
    // The arguments are checked on every rank, and a problem on any rank is reported by
    // every rank (the same code and text), before the collective create.
    std::vector<sc::TensorSpec> specs;
    sc::SessionOptions options;
    std::string problem;  // kind ('I'nvalid, 'C'onfig), then the message
    try {
      require(out, function, "out");
      specs = to_specs(tensors, count, function);
      if (options_json != nullptr && options_json[0] != '\0') {
        nlohmann::json doc;
        try {
          doc = nlohmann::json::parse(options_json);
        } catch (const nlohmann::json::parse_error& e) {
          throw sc::ConfigError(fmt::format("options_json: not valid JSON: {}", e.what()));
        }
        sc::apply_config(options, doc, "options_json", {}, rank == 0);
      }
    } catch (const InvalidArgument& e) {
      problem = std::string("I") + e.what();
    } catch (const std::exception& e) {
      problem = std::string("C") + e.what();
    }
    if (const auto [bad, message] = sc::first_message(c_comm, problem); bad >= 0) {
      if (message.front() == 'I') throw InvalidArgument(fmt::format("rank {}: {}", bad, message.substr(1)));
      throw sc::ConfigError(fmt::format("rank {}: {}", bad, message.substr(1)));
    }
    auto result = std::make_unique<swapcoord_session>();
    result->hook = std::make_shared<StallHook>();
    result->hook->callback = on_stall;
    result->hook->user = user;
    options.on_stall = [hook = result->hook](const std::string& message) { hook->call(message); };
    result->session = std::make_unique<sc::SwapSession>(
        resume ? sc::SwapSession::resume(c_comm, std::move(specs), std::move(options))
               : sc::SwapSession::create(c_comm, std::move(specs), std::move(options)));
    result->catalog_path = result->session->catalog_path();
    *out = result.release();
    return SWAPCOORD_OK;
  });
}

sc::SwapSession& session_of(swapcoord_session* s, const char* function) {
  require(s, function, "session");
  if (!s->session) throw InvalidArgument(fmt::format("{}: the session is not open", function));
  // Forget prefetches that are done (their errors, if any, stay with the session).
  std::erase_if(s->detached, [](const sc::SwapHandle& h) { return h.ready(); });
  return *s->session;
}

const sc::SwapSession& session_of(const swapcoord_session* s, const char* function) {
  require(s, function, "session");
  if (!s->session) throw InvalidArgument(fmt::format("{}: the session is not open", function));
  return *s->session;
}

void check_id(const sc::SwapSession& session, std::uint32_t id, const char* function) {
  if (id >= session.tensors().size())
    throw InvalidArgument(fmt::format("{}: tensor id {} is out of range (the session has {} tensors)",
                                      function, id, session.tensors().size()));
}

// The ids this rank owns a piece of, with views of the caller's buffers.
void local_views(const sc::SwapSession& session, const std::uint32_t* ids, std::size_t count,
                 const void* const* buffers, const char* function,
                 std::vector<std::uint32_t>& out_ids, std::vector<sc::TensorView>& out_views) {
  if (count > 0) {
    require(ids, function, "ids");
    require(buffers, function, "buffers");
  }
  out_ids.clear();
  out_views.clear();
  for (std::size_t i = 0; i < count; ++i) {
    check_id(session, ids[i], function);
    const sc::PlanPiece* piece = session.local_piece(ids[i]);
    if (piece == nullptr || piece->numel == 0) continue;
    if (buffers[i] == nullptr)
      throw InvalidArgument(fmt::format("{}: buffers[{}] is NULL, but this rank owns {} elements of "
                                        "tensor {} ('{}')", function, i, piece->numel, ids[i],
                                        session.tensors()[ids[i]].name));
    out_ids.push_back(ids[i]);
    out_views.push_back(sc::TensorView{const_cast<void*>(buffers[i]), piece->numel,
                                       session.tensors()[ids[i]].dtype, sc::Device::cpu()});
  }
}

void put_figures(const sc::SwapFigures& f, swapcoord_swap_figures* out) {
  if (out == nullptr) return;
  out->pieces = f.pieces;
  out->bytes = f.bytes;
  out->seconds = f.seconds;
  out->prefetched_bytes = f.prefetched_bytes;
}

swapcoord_stats_kind to_kind(const sc::SessionStats::Kind& k) {
  return swapcoord_stats_kind{k.calls, k.bytes, k.seconds};
}

}  // namespace

extern "C" {

int swapcoord_session_create(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                             const swapcoord_tensor_spec* tensors, size_t count) {
  return make_session(out, comm, options_json, tensors, count, nullptr, nullptr, false);
}

int swapcoord_session_resume(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                             const swapcoord_tensor_spec* tensors, size_t count) {
  return make_session(out, comm, options_json, tensors, count, nullptr, nullptr, true);
}

int swapcoord_session_create_ex(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                                const swapcoord_tensor_spec* tensors, size_t count,
                                swapcoord_stall_callback on_stall, void* user) {
  return make_session(out, comm, options_json, tensors, count, on_stall, user, false);
}

int swapcoord_session_resume_ex(swapcoord_session** out, MPI_Fint comm, const char* options_json,
                                const swapcoord_tensor_spec* tensors, size_t count,
                                swapcoord_stall_callback on_stall, void* user) {
  return make_session(out, comm, options_json, tensors, count, on_stall, user, true);
}

int swapcoord_session_set_stall_callback(swapcoord_session* s, swapcoord_stall_callback on_stall,
                                         void* user) {
  return guarded([&] {
    require(s, "swapcoord_session_set_stall_callback", "session");
    std::lock_guard lock(s->hook->mutex);
    s->hook->callback = on_stall;
    s->hook->user = user;
    return SWAPCOORD_OK;
  });
}

void swapcoord_session_destroy(swapcoord_session* s) {
  if (s == nullptr) return;
  try {
    s->detached.clear();
    s->session.reset();
  } catch (...) {  // the destructors do not throw; a bad_alloc while logging might
  }
  delete s;
}

int swapcoord_session_local_piece(const swapcoord_session* s, uint32_t tensor_id,
                                  uint64_t* element_offset, uint64_t* numel) {
  return guarded([&] {
    const auto& session = session_of(s, "swapcoord_session_local_piece");
    check_id(session, tensor_id, "swapcoord_session_local_piece");
    const sc::PlanPiece* piece = session.local_piece(tensor_id);
    if (piece == nullptr) return 0;
    if (element_offset) *element_offset = piece->element_offset;
    if (numel) *numel = piece->numel;
    return 1;
  });
}

int swapcoord_session_swap_out(swapcoord_session* s, const uint32_t* ids, size_t count,
                               const void* const* buffers, swapcoord_swap_figures* figures) {
  return guarded([&] {
    auto& session = session_of(s, "swapcoord_session_swap_out");
    std::vector<std::uint32_t> local_ids;
    std::vector<sc::TensorView> views;
    local_views(session, ids, count, buffers, "swapcoord_session_swap_out", local_ids, views);
    put_figures(session.swap_out(local_ids, views), figures);
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_swap_in(swapcoord_session* s, const uint32_t* ids, size_t count,
                              void* const* buffers, swapcoord_swap_figures* figures) {
  return guarded([&] {
    auto& session = session_of(s, "swapcoord_session_swap_in");
    std::vector<std::uint32_t> local_ids;
    std::vector<sc::TensorView> views;
    local_views(session, ids, count, buffers, "swapcoord_session_swap_in", local_ids, views);
    put_figures(session.swap_in(local_ids, views), figures);
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_swap_out_async(swapcoord_session* s, const uint32_t* ids, size_t count,
                                     const void* const* buffers, swapcoord_swap_handle** handle) {
  return guarded([&] {
    const char* function = "swapcoord_session_swap_out_async";
    auto& session = session_of(s, function);
    require(handle, function, "handle");
    auto h = std::make_unique<swapcoord_swap_handle>();
    local_views(session, ids, count, buffers, function, h->ids, h->views);
    h->handle = session.swap_out_async(h->ids, h->views);
    *handle = h.release();
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_swap_in_async(swapcoord_session* s, const uint32_t* ids, size_t count,
                                    void* const* buffers, swapcoord_swap_handle** handle) {
  return guarded([&] {
    const char* function = "swapcoord_session_swap_in_async";
    auto& session = session_of(s, function);
    require(handle, function, "handle");
    auto h = std::make_unique<swapcoord_swap_handle>();
    local_views(session, ids, count, buffers, function, h->ids, h->views);
    h->handle = session.swap_in_async(h->ids, h->views);
    *handle = h.release();
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_prefetch(swapcoord_session* s, const uint32_t* ids, size_t count,
                               swapcoord_swap_handle** handle) {
  return guarded([&] {
    const char* function = "swapcoord_session_prefetch";
    auto& session = session_of(s, function);
    if (count > 0) require(ids, function, "ids");
    auto h = std::make_unique<swapcoord_swap_handle>();
    for (std::size_t i = 0; i < count; ++i) {
      check_id(session, ids[i], function);
      const sc::PlanPiece* piece = session.local_piece(ids[i]);
      if (piece != nullptr && piece->numel > 0) h->ids.push_back(ids[i]);
    }
    h->handle = session.prefetch(h->ids);
    if (handle != nullptr) {
      *handle = h.release();
    } else {
      s->detached.reserve(s->detached.size() + 1);
      s->detached.push_back(std::move(h->handle));
    }
    return SWAPCOORD_OK;
  });
}

int swapcoord_swap_wait(swapcoord_swap_handle* handle, swapcoord_swap_figures* figures) {
  if (handle == nullptr)
    return set_error(SWAPCOORD_ERR_INVALID, "swapcoord_swap_wait: handle is NULL");
  std::unique_ptr<swapcoord_swap_handle> owned(handle);  // freed however wait ends
  return guarded([&] {
    if (!owned->handle.valid())
      throw InvalidArgument("swapcoord_swap_wait: the handle holds no operation");
    put_figures(owned->handle.wait(), figures);
    return SWAPCOORD_OK;
  });
}

int swapcoord_swap_ready(const swapcoord_swap_handle* handle) {
  return guarded([&] {
    require(handle, "swapcoord_swap_ready", "handle");
    return !handle->handle.valid() || handle->handle.ready() ? 1 : 0;
  });
}

void swapcoord_swap_handle_free(swapcoord_swap_handle* handle) {
  try {
    delete handle;  // SwapHandle's destructor waits; the session keeps a failure
  } catch (...) {
  }
}

int swapcoord_session_wait_all(swapcoord_session* s) {
  return guarded([&] {
    auto& session = session_of(s, "swapcoord_session_wait_all");
    s->detached.clear();
    session.wait_all();
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_commit(swapcoord_session* s, int* epoch) {
  return guarded([&] {
    auto& session = session_of(s, "swapcoord_session_commit");
    const int e = session.commit();
    if (epoch) *epoch = e;
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_verify(swapcoord_session* s, swapcoord_check* check) {
  return guarded([&] {
    auto& session = session_of(s, "swapcoord_session_verify");
    const sc::SessionCheck result = session.verify();
    if (check) *check = swapcoord_check{result.pieces, result.bytes, result.mismatches};
    if (result.mismatches > 0) {
      std::string text = fmt::format("verify: {} of {} pieces differ from the catalog's checksums",
                                      result.mismatches, result.pieces);
      for (const auto& note : result.notes) text += "\n  " + note;
      throw WrongData(text);
    }
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_statistics(const swapcoord_session* s, swapcoord_session_stats* stats) {
  return guarded([&] {
    const auto& session = session_of(s, "swapcoord_session_statistics");
    require(stats, "swapcoord_session_statistics", "stats");
    const sc::SessionStats st = session.statistics();
    *stats = swapcoord_session_stats{to_kind(st.swap_out), to_kind(st.swap_in),
                                     to_kind(st.prefetch), to_kind(st.commit)};
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_committed_epoch(const swapcoord_session* s, int* epoch) {
  return guarded([&] {
    const auto& session = session_of(s, "swapcoord_session_committed_epoch");
    require(epoch, "swapcoord_session_committed_epoch", "epoch");
    *epoch = session.committed_epoch();
    return SWAPCOORD_OK;
  });
}

int swapcoord_session_get_info(const swapcoord_session* s, swapcoord_session_info* info) {
  return guarded([&] {
    const auto& session = session_of(s, "swapcoord_session_get_info");
    require(info, "swapcoord_session_get_info", "info");
    const auto& topo = session.topology();
    swapcoord_session_info r{};
    r.rank = topo.rank();
    r.world_size = topo.world_size();
    r.node = topo.node();
    r.node_count = topo.node_count();
    r.local_rank = topo.local_rank();
    r.local_size = topo.local_size();
    r.committed_epoch = session.committed_epoch();
    r.resumed = session.resumed_from() != nullptr ? 1 : 0;
    r.repartitioned = session.repartitioned() ? 1 : 0;
    r.tensor_count = session.tensors().size();
    r.local_piece_count = session.local_pieces().size();
    *info = r;
    return SWAPCOORD_OK;
  });
}

const char* swapcoord_session_catalog_path(const swapcoord_session* s) {
  const char* result = nullptr;
  guarded([&] {
    session_of(s, "swapcoord_session_catalog_path");
    result = s->catalog_path.c_str();
    return SWAPCOORD_OK;
  });
  return result;
}

int swapcoord_session_remove_files(swapcoord_session* s) {
  return guarded([&] {
    auto& session = session_of(s, "swapcoord_session_remove_files");
    session.remove_files();
    return SWAPCOORD_OK;
  });
}

}  // extern "C"
