#pragma once
// The parts of the _swapcoord extension, each binding one area (module.cpp: errors,
// pinned memory, AioHandle, the partitioner; session.cpp: Session).
#include <pybind11/pybind11.h>

namespace swapcoord::python {

void bind_session(pybind11::module_& m);

}  // namespace swapcoord::python
