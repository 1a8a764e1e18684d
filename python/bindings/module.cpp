// fastlstm._core: registers the bound classes and functions; no logic of its own.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fastlstm/build_info.hpp"
#include "fastlstm/config.hpp"
#include "fastlstm/cpu.hpp"
#include "fastlstm/threads.hpp"

namespace py = pybind11;

void bind_rnn(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastlstm's C++ engine (private: use the fastlstm package)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastlstm::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("build_info", []() {
    auto b = fastlstm::build_info();
    py::dict d;
    d["version"] = b.version;
    d["compiler"] = b.compiler;
    d["flags"] = b.flags;
    d["simd"] = b.simd;
    d["eigen_version"] = b.eigen_version;
    d["build_type"] = b.build_type;
    return d;
  });
  m.def("cpu_info", []() {
    auto c = fastlstm::cpu_info();
    py::dict d;
    d["vendor"] = c.vendor;
    d["model"] = c.model;
    d["features"] = c.features;
    d["levels"] = c.levels;
    d["level"] = c.level;
    return d;
  });
  // the CPU is detected and FASTLSTM_CPU checked here, at import: a level this CPU lacks is an
  // ImportError naming it, never an illegal instruction later
  {
    try {
      fastlstm::cpu_info();
    } catch (const fastlstm::Error& e) {
      throw py::import_error(e.what());
    }
  }
  m.def("set_num_threads", &fastlstm::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fastlstm::get_num_threads);
  bind_rnn(m);
}
