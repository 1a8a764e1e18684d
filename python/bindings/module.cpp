// fastlstm._core: registers the bound classes and functions; no logic of its own.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fastlstm/build_info.hpp"
#include "fastlstm/config.hpp"
#include "fastlstm/threads.hpp"

namespace py = pybind11;

void bind_rnn(py::module_& m);
void bind_model_file(py::module_& m);

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
  m.def("set_num_threads", &fastlstm::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fastlstm::get_num_threads);
  bind_rnn(m);
  bind_model_file(m);
}
