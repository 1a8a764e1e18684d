// fastlstm._core: registers the bound classes and functions; no logic of its own.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fastlstm/build_info.hpp"
#include "fastlstm/config.hpp"
#include "fastlstm/kernel_bench.hpp"
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
  m.def(
      "kernel_bench",
      [](double seconds_per_row, const std::vector<std::string>& cases) {
        fastlstm::KernelReport r;
        {
          py::gil_scoped_release release;
          r = fastlstm::kernel_bench(seconds_per_row, cases);
        }
        py::dict d;
        d["vector_floats"] = r.vector_floats;
        d["fma_peak_gflops"] = r.fma_peak_gflops;
        d["l2_gbytes"] = r.l2_gbytes;
        d["mem_gbytes"] = r.mem_gbytes;
        py::list rows;
        for (const auto& k : r.rows) {
          py::dict e;
          e["case"] = k.case_name;
          e["kernel"] = k.kernel;
          e["bound"] = k.bound;
          e["M"] = k.M;
          e["N"] = k.N;
          e["K"] = k.K;
          e["seconds"] = k.seconds;
          e["gflops"] = k.gflops;
          e["gbytes"] = k.gbytes;
          e["fraction"] = k.fraction;
          e["against"] = k.against;
          rows.append(e);
        }
        d["rows"] = rows;
        return d;
      },
      py::arg("seconds_per_row") = 0.2, py::arg("cases") = std::vector<std::string>{});
  m.def("set_num_threads", &fastlstm::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fastlstm::get_num_threads);
  bind_rnn(m);
}
