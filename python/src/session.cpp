// _swapcoord.Session: SwapSession over an mpi4py communicator. The Python class
// swapcoord.Session wraps it (tensors by name, torch tensors to memory views).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mpi.h>

#include <memory>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "module.hpp"
#include "swapcoord/common/error.hpp"
#include "swapcoord/common/log.hpp"
#include "swapcoord/coord/topology.hpp"
#include "swapcoord/session/options.hpp"
#include "swapcoord/session/session.hpp"

namespace py = pybind11;

namespace swapcoord::python {

namespace {

using Spec = std::tuple<std::string, std::vector<std::uint64_t>, std::string>;
// address, numel, dtype, device (-1: host memory, k: cuda:k)
using View = std::tuple<std::uintptr_t, std::size_t, std::string, int>;

// The session and what Python asked of it. `close()` ends the session (before
// MPI_Finalize: the Python layer calls it from atexit, ahead of mpi4py's).
class PySession {
 public:
  // `problem`: what already went wrong on this rank (the Python layer's checks). It and
  // any error in the configuration documents are agreed on by every rank before the
  // session is made, so a rank-local mistake is a ConfigError on every rank, naming the
  // rank, and no rank waits for one that gave up.
  PySession(std::uintptr_t comm_address, const std::vector<Spec>& specs,
            const std::vector<std::pair<std::string, std::string>>& configs, bool resume, std::string problem) {
    const MPI_Comm comm = *reinterpret_cast<const MPI_Comm*>(comm_address);
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    std::vector<TensorSpec> tensors;
    SessionOptions options;
    options.on_stall = [](const std::string& message) { log::error(message); };
    if (problem.empty()) {
      try {
        tensors.reserve(specs.size());
        for (const auto& [name, shape, dtype] : specs) tensors.push_back({name, shape, parse_dtype(dtype)});
        for (const auto& [text, source] : configs) {
          nlohmann::json doc;
          try {
            doc = nlohmann::json::parse(text);
          } catch (const nlohmann::json::exception& e) {
            throw ConfigError(fmt::format("{}: not JSON: {}", source, e.what()));
          }
          (void)apply_config(options, doc, source, {}, /*log_ignored=*/rank == 0);
        }
        options.validate();
      } catch (const std::exception& e) {
        problem = e.what();
      }
    }
    const char* what = resume ? "Session.resume" : "Session.create";
    {
      py::gil_scoped_release unlocked;
      const auto [bad, message] = first_message(comm, problem);
      if (bad >= 0) throw ConfigError(fmt::format("{}: rank {}: {}", what, bad, message));
      _session.emplace(resume ? SwapSession::resume(comm, std::move(tensors), std::move(options))
                              : SwapSession::create(comm, std::move(tensors), std::move(options)));
    }
  }

  SwapSession& session() {
    if (!_session) throw Error("swapcoord.Session: the session is closed");
    return *_session;
  }
  void close() {
    py::gil_scoped_release unlocked;
    _session.reset();
  }
  bool closed() const { return !_session; }

 private:
  std::optional<SwapSession> _session;
};

std::vector<TensorView> views_of(const std::vector<View>& views) {
  std::vector<TensorView> out;
  out.reserve(views.size());
  for (const auto& [address, numel, dtype, device] : views)
    out.push_back({reinterpret_cast<void*>(address), numel, parse_dtype(dtype),
                   device < 0 ? Device::cpu() : Device::cuda(device)});
  return out;
}

py::dict figures(const SwapFigures& f) {
  py::dict d;
  d["pieces"] = f.pieces;
  d["bytes"] = f.bytes;
  d["seconds"] = f.seconds;
  d["prefetched_bytes"] = f.prefetched_bytes;
  return d;
}

py::dict kind(const SessionStats::Kind& k) {
  py::dict d;
  d["calls"] = k.calls;
  d["bytes"] = k.bytes;
  d["seconds"] = k.seconds;
  return d;
}

// The swap calls, bound: ids and views in, the GIL released while the session works.
// `blocking` returns the figures (a dict); `in_flight` the SwapHandle.
using SwapCall = SwapFigures (SwapSession::*)(std::span<const std::uint32_t>, std::span<const TensorView>);
using AsyncCall = SwapHandle (SwapSession::*)(std::span<const std::uint32_t>, std::span<const TensorView>);

auto blocking(SwapCall call) {
  return [call](PySession& s, const std::vector<std::uint32_t>& ids, const std::vector<View>& views) {
    const auto v = views_of(views);
    SwapFigures f;
    {
      py::gil_scoped_release unlocked;
      f = (s.session().*call)(ids, v);
    }
    return figures(f);
  };
}

auto in_flight(AsyncCall call) {
  return [call](PySession& s, const std::vector<std::uint32_t>& ids, const std::vector<View>& views) {
    const auto v = views_of(views);
    py::gil_scoped_release unlocked;
    return (s.session().*call)(ids, v);
  };
}

py::tuple piece_tuple(const PlanPiece& p) {
  return py::make_tuple(p.tensor, p.shard, p.owner, p.element_offset, p.numel, p.node);
}

}  // namespace

void bind_session(py::module_& m) {
  py::class_<SwapHandle>(m, "SwapHandle")
      .def("wait", [](SwapHandle& h) {
             SwapFigures f;
             {
               py::gil_scoped_release unlocked;
               f = h.wait();
             }
             return figures(f);
           })
      .def("ready", &SwapHandle::ready);

  py::class_<PySession>(m, "Session")
      .def(py::init<std::uintptr_t, const std::vector<Spec>&, const std::vector<std::pair<std::string, std::string>>&,
                    bool, std::string>(),
           py::arg("comm_address"), py::arg("tensors"), py::arg("configs"), py::arg("resume"), py::arg("problem"))
      .def("close", &PySession::close)
      .def_property_readonly("closed", &PySession::closed)
      .def("swap_out", blocking(&SwapSession::swap_out))
      .def("swap_in", blocking(&SwapSession::swap_in))
      .def("swap_out_async", in_flight(&SwapSession::swap_out_async))
      .def("swap_in_async", in_flight(&SwapSession::swap_in_async))
      .def("prefetch", [](PySession& s, const std::vector<std::uint32_t>& ids) {
             py::gil_scoped_release unlocked;
             return s.session().prefetch(ids);
           })
      .def("wait_all", [](PySession& s) {
             py::gil_scoped_release unlocked;
             s.session().wait_all();
           })
      .def("commit", [](PySession& s, const std::string& metadata) {
             py::gil_scoped_release unlocked;
             return s.session().commit(metadata);
           })
      .def("verify", [](PySession& s) {
             SessionCheck c;
             {
               py::gil_scoped_release unlocked;
               c = s.session().verify();
             }
             py::dict d;
             d["pieces"] = c.pieces;
             d["bytes"] = c.bytes;
             d["mismatches"] = c.mismatches;
             d["notes"] = c.notes;
             return d;
           })
      .def("end_phase", [](PySession& s, const std::string& phase, int epoch, std::uint64_t bytes, double seconds,
                           std::uint64_t wrong, const std::string& failure) {
             PhaseReport report{bytes, seconds, wrong, !failure.empty(), failure};
             PhaseStats st;
             {
               py::gil_scoped_release unlocked;
               st = s.session().end_phase(phase, epoch, report);
             }
             py::dict d;
             d["phase"] = st.phase;
             d["epoch"] = st.epoch;
             d["bytes"] = st.bytes;
             d["seconds_min"] = st.seconds_min, d["seconds_mean"] = st.seconds_mean, d["seconds_max"] = st.seconds_max;
             d["gbps_min"] = st.gbps_min, d["gbps_mean"] = st.gbps_mean, d["gbps_max"] = st.gbps_max;
             d["aggregate_gbps"] = st.aggregate_gbps;
             d["imbalance"] = st.imbalance;
             d["wrong"] = st.wrong;
             return d;
           })
      .def("pieces", [](PySession& s) {
             py::list out;
             const SwapPlan& plan = s.session().plan();
             for (int r = 0; r < plan.world_size; ++r)
               for (const PlanPiece& p : plan.compute_pieces(r, s.session().tensors())) out.append(piece_tuple(p));
             return out;
           })
      .def("local_piece", [](PySession& s, std::uint32_t id) -> py::object {
             const PlanPiece* p = s.session().local_piece(id);
             return p ? py::object(piece_tuple(*p)) : py::object(py::none());
           })
      .def("where", [](PySession& s, std::uint32_t id) {
             PieceFile f;
             {
               py::gil_scoped_release unlocked;
               f = s.session().where(id);
             }
             return py::make_tuple(f.path, f.offset, f.bytes);
           })
      .def_property_readonly("rank", [](PySession& s) { return s.session().topology().rank(); })
      .def_property_readonly("world_size", [](PySession& s) { return s.session().topology().world_size(); })
      .def_property_readonly("node", [](PySession& s) { return s.session().topology().node(); })
      .def_property_readonly("node_count", [](PySession& s) { return s.session().topology().node_count(); })
      .def_property_readonly("host", [](PySession& s) { return s.session().topology().host(); })
      .def_property_readonly("committed_epoch", [](PySession& s) { return s.session().committed_epoch(); })
      .def_property_readonly("resumed_epoch", [](PySession& s) -> py::object {
             const Catalog* c = s.session().resumed_from();
             return c ? py::object(py::int_(c->epoch)) : py::object(py::none());
           })
      .def_property_readonly("resumed_metadata", [](PySession& s) -> py::object {
             const Catalog* c = s.session().resumed_from();
             return c ? py::object(py::str(c->metadata)) : py::object(py::none());
           })
      .def_property_readonly("repartitioned", [](PySession& s) { return s.session().repartitioned(); })
      .def_property_readonly("catalog_path", [](PySession& s) { return s.session().catalog_path(); })
      .def_property_readonly("options_json", [](PySession& s) { return s.session().options().to_json().dump(); })
      .def("statistics", [](PySession& s) {
             const SessionStats st = s.session().statistics();
             py::dict d;
             d["swap_out"] = kind(st.swap_out);
             d["swap_in"] = kind(st.swap_in);
             d["prefetch"] = kind(st.prefetch);
             d["commit"] = kind(st.commit);
             return d;
           })
      .def("local_files", [](PySession& s) { return s.session().local_files(); })
      .def("remove_files", [](PySession& s) {
        py::gil_scoped_release unlocked;
        s.session().remove_files();
      });
}

}  // namespace swapcoord::python
