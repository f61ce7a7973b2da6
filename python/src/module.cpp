// _swapcoord: the extension under the Python package swapcoord (python/swapcoord). It
// speaks in raw memory (an address and a byte count): the pure-Python layer turns torch
// tensors into those and keeps them alive while I/O is in flight, so the extension does
// not link libtorch. Every call that waits for I/O releases the GIL.
//
// Exceptions: swapcoord's C++ hierarchy arrives as
//   Error (RuntimeError)            any swapcoord error; the C++ message as is
//   ConfigError (ValueError, Error) a bad option or argument
//   IoError (OSError, Error)        a failed or short transfer, an open, a full disk:
//                                   errno (None at the end of a file), .path, .offset,
//                                   .failures (op, path, offset, bytes, errno) of each
//   PhaseError (Error)              a collective call failed on some rank: .failed_rank
//   PhaseTimeout (Error)            a collective call passed its deadline
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "module.hpp"
#include "swapcoord/buffer/pinned_allocation.hpp"
#include "swapcoord/catalog/catalog.hpp"
#include "swapcoord/common/dtype.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/coord/phase_sync.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/io/aio_handle.hpp"
#include "swapcoord/io/io_engine.hpp"
#include "swapcoord/io/swap_file.hpp"

namespace py = pybind11;

namespace swapcoord::python {

namespace {

PyObject* g_error = nullptr;
PyObject* g_config_error = nullptr;
PyObject* g_io_error = nullptr;
PyObject* g_phase_error = nullptr;
PyObject* g_phase_timeout = nullptr;

PyObject* new_exception(py::module_& m, const char* name, std::initializer_list<PyObject*> bases, const char* doc) {
  py::tuple base_tuple(bases.size());
  std::size_t i = 0;
  for (PyObject* base : bases) base_tuple[i++] = py::reinterpret_borrow<py::object>(base);
  const std::string qualified = std::string("swapcoord.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, base_tuple.ptr(), nullptr);
  if (cls == nullptr) throw py::error_already_set();
  m.add_object(name, py::reinterpret_borrow<py::object>(cls));
  return cls;
}

// Raises `cls(errno, message)` (or `cls(message)` without an errno) with .path and .offset.
// OSError prints "[Errno N] message": the " (errno N)" the library's messages end with is
// dropped so that it is not said twice.
void raise_os_error(PyObject* cls, std::string message, int errno_value, const std::string& path,
                    std::optional<std::uint64_t> offset, py::list failures = py::list()) {
  const std::string suffix = fmt::format(" (errno {})", errno_value);
  if (errno_value != 0 && message.size() > suffix.size() &&
      message.compare(message.size() - suffix.size(), suffix.size(), suffix) == 0)
    message.resize(message.size() - suffix.size());
  py::object instance = errno_value != 0 ? py::reinterpret_borrow<py::object>(cls)(errno_value, message)
                                         : py::reinterpret_borrow<py::object>(cls)(message);
  instance.attr("failures") = failures;
  instance.attr("path") = path.empty() ? py::none() : py::object(py::str(path));
  instance.attr("offset") = offset ? py::object(py::int_(*offset)) : py::none();
  PyErr_SetObject(cls, instance.ptr());
}

void translate(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const IoError& e) {
    const IoFailure* first = e.failures().empty() ? nullptr : &e.failures().front();
    py::list failures;
    for (const IoFailure& f : e.failures())
      failures.append(py::make_tuple(f.op == IoOp::read ? "read" : "write", f.path, f.offset, f.size_bytes,
                                     f.errno_value));
    raise_os_error(g_io_error, e.what(), e.code(), first ? first->path : std::string(),
                   first ? std::optional<std::uint64_t>(first->offset) : std::nullopt, failures);
  } catch (const SystemError& e) {
    raise_os_error(g_io_error, e.what(), e.code(), {}, std::nullopt);
  } catch (const ConfigError& e) {
    PyErr_SetString(g_config_error, e.what());
  } catch (const PhaseError& e) {
    py::object instance = py::reinterpret_borrow<py::object>(g_phase_error)(e.what());
    instance.attr("failed_rank") = e.failed_rank();
    PyErr_SetObject(g_phase_error, instance.ptr());
  } catch (const PhaseTimeout& e) {
    PyErr_SetString(g_phase_timeout, e.what());
  } catch (const Error& e) {
    PyErr_SetString(g_error, e.what());
  }
}

AioConfig aio_config(std::size_t block_size, std::size_t queue_depth, bool single_submit, bool overlap_events,
                     std::size_t intra_op_parallelism) {
  AioConfig c;
  c.block_size = block_size;
  c.queue_depth = queue_depth;
  c.single_submit = single_submit;
  c.overlap_events = overlap_events;
  c.intra_op_parallelism = intra_op_parallelism;
  c.validate();
  return c;
}

std::span<std::byte> memory(std::uintptr_t address, std::size_t bytes) {
  return {reinterpret_cast<std::byte*>(address), bytes};
}

// The C++ side of the benchmark that compares AioHandle with the engine: one engine and
// one open file, kept; run() moves `bytes` at offset 0 to or from `address` with
// IoEngine::run and returns the time in seconds (timed here, without Python).
class EngineBench {
 public:
  EngineBench(const std::string& path, bool write, const AioConfig& config)
      : _engine(make_engine(default_engine_name(), config)), _file(SwapFile::open(path, DirectMode::automatic, write)),
        _op(write ? IoOp::write : IoOp::read) {}
  double run(std::uintptr_t address, std::size_t bytes) {
    const IoRequest request{_op, _file, reinterpret_cast<void*>(address), 0, bytes};
    const auto start = std::chrono::steady_clock::now();
    (void)_engine->run({&request, 1});
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

 private:
  std::unique_ptr<IoEngine> _engine;
  SwapFile _file;
  IoOp _op;
};

}  // namespace

}  // namespace swapcoord::python

PYBIND11_MODULE(_swapcoord, m) {
  using namespace swapcoord;
  using namespace swapcoord::python;
  m.doc() = "swapcoord's extension; use the package swapcoord";

  g_error = new_exception(m, "Error", {PyExc_RuntimeError}, "A swapcoord error; the message is the library's.");
  g_config_error = new_exception(m, "ConfigError", {PyExc_ValueError, g_error}, "A bad option or argument.");
  g_io_error = new_exception(m, "IoError", {PyExc_OSError, g_error},
                             "A failed or short transfer: errno, .path and .offset name it.");
  g_phase_error = new_exception(m, "PhaseError", {g_error}, "A collective call failed on some rank (.failed_rank).");
  g_phase_timeout = new_exception(m, "PhaseTimeout", {g_error}, "A collective call passed its deadline.");
  py::register_exception_translator(&translate);

  // Pinned host memory with the buffer protocol (torch.frombuffer views it; the tensor
  // keeps the object, and so the memory, alive).
  py::class_<PinnedAllocation>(m, "PinnedBuffer", py::buffer_protocol())
      .def(py::init<std::size_t>(), py::arg("size_bytes"))
      .def_property_readonly("size_bytes", &PinnedAllocation::size_bytes)
      .def_property_readonly("locked", &PinnedAllocation::locked)
      .def_buffer([](PinnedAllocation& a) {
        return py::buffer_info(a.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(a.size_bytes())}, {1});
      });

  // One operation at a time per handle: the calls release the GIL, and the C++ handle is
  // not thread-safe (a Python program may share a handle between threads).
  struct PyAioHandle {
    std::unique_ptr<AioHandle> handle;
    std::mutex mutex;
  };
  const auto locked = [](auto fn) {
    return [fn](PyAioHandle& h, std::uintptr_t address, std::size_t bytes, const std::string& path,
                std::uint64_t offset, bool validate) {
      py::gil_scoped_release unlocked;
      std::lock_guard lock(h.mutex);
      fn(*h.handle, memory(address, bytes), path, offset, validate);
    };
  };
  py::class_<PyAioHandle>(m, "AioHandle")
      .def(py::init([](std::size_t block_size, std::size_t queue_depth, bool single_submit, bool overlap_events,
                       std::size_t intra_op_parallelism, const std::string& backend) {
             auto h = std::make_unique<PyAioHandle>();
             h->handle = std::make_unique<AioHandle>(
                 aio_config(block_size, queue_depth, single_submit, overlap_events, intra_op_parallelism), backend);
             return h;
           }),
           py::arg("block_size"), py::arg("queue_depth"), py::arg("single_submit"), py::arg("overlap_events"),
           py::arg("intra_op_parallelism"), py::arg("backend") = std::string(default_engine_name()))
      .def_property_readonly("block_size", [](const PyAioHandle& h) { return h.handle->config().block_size; })
      .def_property_readonly("queue_depth", [](const PyAioHandle& h) { return h.handle->config().queue_depth; })
      .def_property_readonly("single_submit", [](const PyAioHandle& h) { return h.handle->config().single_submit; })
      .def_property_readonly("overlap_events", [](const PyAioHandle& h) { return h.handle->config().overlap_events; })
      .def_property_readonly("intra_op_parallelism",
                             [](const PyAioHandle& h) { return h.handle->config().intra_op_parallelism; })
      .def_property_readonly("backend", [](const PyAioHandle& h) { return std::string(h.handle->backend()); })
      .def("read", locked([](AioHandle& h, std::span<std::byte> b, const std::string& path, std::uint64_t offset,
                             bool validate) { h.read(b, path, offset, validate); }))
      .def("write", locked([](AioHandle& h, std::span<std::byte> b, const std::string& path, std::uint64_t offset,
                              bool validate) { h.write(b, path, offset, validate); }))
      .def("submit_read", locked([](AioHandle& h, std::span<std::byte> b, const std::string& path,
                                    std::uint64_t offset, bool validate) { h.submit_read(b, path, offset, validate); }))
      .def("submit_write", locked([](AioHandle& h, std::span<std::byte> b, const std::string& path,
                                     std::uint64_t offset, bool validate) { h.submit_write(b, path, offset, validate); }))
      .def("wait", [](PyAioHandle& h) {
             py::gil_scoped_release unlocked;
             std::lock_guard lock(h.mutex);
             return h.handle->wait();
           })
      .def("close_files", [](PyAioHandle& h) {
             py::gil_scoped_release unlocked;
             std::lock_guard lock(h.mutex);
             h.handle->close_files();
           })
      .def_property_readonly("pending", [](PyAioHandle& h) {
        std::lock_guard lock(h.mutex);
        return h.handle->pending();
      });

  py::class_<EngineBench>(m, "EngineBench")
      .def(py::init([](const std::string& path, bool write, std::size_t block_size, std::size_t queue_depth,
                       std::size_t threads) {
             return std::make_unique<EngineBench>(path, write, aio_config(block_size, queue_depth, false, true, threads));
           }),
           py::arg("path"), py::arg("write"), py::arg("block_size"), py::arg("queue_depth"), py::arg("threads"))
      .def("run", [](EngineBench& b, std::uintptr_t address, std::size_t bytes) {
        py::gil_scoped_release unlocked;
        return b.run(address, bytes);
      });

  // The partitioner, without MPI: what make_plan gives each rank for these tensors.
  m.def("plan_pieces", [](const std::vector<std::tuple<std::string, std::vector<std::uint64_t>, std::string>>& specs,
                          int world_size, const std::string& policy, std::size_t alignment_bytes,
                          std::uint64_t shard_threshold) {
          std::vector<TensorSpec> tensors;
          for (const auto& [name, shape, dtype] : specs) tensors.push_back({name, shape, parse_dtype(dtype)});
          PlanOptions options;
          options.policy = parse_policy(policy);
          options.alignment_bytes = alignment_bytes;
          options.shard_threshold_bytes = shard_threshold;
          const SwapPlan plan = make_plan(tensors, PlanTopology::uniform(1, world_size), options);
          std::vector<std::tuple<std::uint32_t, std::uint32_t, int, std::uint64_t, std::uint64_t>> out;
          for (const PlanPiece& p : plan.pieces) out.emplace_back(p.tensor, p.shard, p.owner, p.element_offset, p.numel);
          return out;
        },
        py::arg("tensors"), py::arg("world_size"), py::arg("policy"), py::arg("alignment_bytes") = kDefaultAlignmentBytes,
        py::arg("shard_threshold") = kDefaultShardThresholdBytes,
        "(tensor, shard, owner, element_offset, numel) of every piece make_plan gives a job of world_size ranks");
  // The sharded cut of one tensor (at or above the shard threshold): a pure function of its size.
  m.def("shard_ranges", [](std::uint64_t numel, std::size_t element_size, int world_size, std::size_t alignment_bytes) {
          return shard_ranges(numel, element_size, world_size, alignment_bytes);
        },
        py::arg("numel"), py::arg("element_size"), py::arg("world_size"), py::arg("alignment_bytes"),
        "(element_offset, numel) of each rank's shard of a sharded tensor, world_size entries");
  m.attr("default_shard_threshold") = kDefaultShardThresholdBytes;
  m.def("default_backend", [] { return std::string(default_engine_name()); });
  m.attr("default_alignment_bytes") = kDefaultAlignmentBytes;

  bind_session(m);
}
