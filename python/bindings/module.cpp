// fastlstm._core: registers the bound classes and functions; no logic of its own.
#include <algorithm>
#include <cstdint>
#include <string>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fastlstm/build_info.hpp"
#include "fastlstm/config.hpp"
#include "fastlstm/cpu.hpp"
#include "fastlstm/kernel_bench.hpp"
#include "fastlstm/threads.hpp"
#include "cpu/parallel.hpp"

namespace py = pybind11;

// The pool's controls as plain C symbols exported from this extension, for threadpoolctl's
// controller (fastlstm/_threadpool.py finds the library by them and calls them via ctypes).
// They never throw: set clamps to [1, 4 x available CPUs].
#define FASTLSTM_C_EXPORT extern "C" __attribute__((visibility("default")))
FASTLSTM_C_EXPORT int fastlstm_get_num_threads(void) { return fastlstm::get_num_threads(); }
FASTLSTM_C_EXPORT void fastlstm_set_num_threads(int n) {
  fastlstm::set_num_threads(std::max(1, std::min(n, 4 * fastlstm::available_cpus())));
}
FASTLSTM_C_EXPORT const char* fastlstm_version(void) {
  static const std::string v = fastlstm::build_info().version;
  return v.c_str();
}

void bind_rnn(py::module_& m);
void bind_model_file(py::module_& m);
void bind_optim(py::module_& m);

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
  // int64, saturated to int: values past int's range still reach the C++ range check (the
  // Python wrapper checks first, quoting the value as given)
  m.def("set_num_threads", [](int64_t n) {
    fastlstm::set_num_threads(int(std::clamp<int64_t>(n, INT32_MIN, INT32_MAX)));
  }, py::arg("n"));
  // the work thresholds of the thread split (cpu/parallel.hpp), for tests and calibration:
  // values < 0 restore the defaults
  m.def("_min_thread_work", [] {
    const auto w = fastlstm::detail::min_thread_work();
    return py::make_tuple(w.step, w.region, w.step_bytes);
  });
  // the weight bytes per thread from which an inference step of one or two rows is split
  m.def("_min_step_bytes_b1", [] { return fastlstm::detail::min_thread_work().step_bytes_b1; });
  m.def("_set_min_thread_work", [](int64_t step, int64_t region, int64_t step_bytes) {
    fastlstm::detail::set_min_thread_work({step, region, step_bytes});
  }, py::arg("step"), py::arg("region"), py::arg("step_bytes") = -1);
  m.def(
      "kernel_bench",
      [](double seconds_per_row, const std::vector<std::string>& cases) {
        fastlstm::KernelReport r;
        {
          py::gil_scoped_release release;
          r = fastlstm::kernel_bench(seconds_per_row, cases);
        }
        py::dict d;
        d["level"] = r.level;
        d["vector_floats"] = r.vector_floats;
        d["fma_peak_gflops"] = r.fma_peak_gflops;
        d["bf16_peak_gflops"] = r.bf16_peak_gflops;
        d["int8_peak_gops"] = r.int8_peak_gops;
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
  m.def("get_num_threads", &fastlstm::get_num_threads);
  m.def("available_cpus", &fastlstm::available_cpus);
  bind_rnn(m);
  bind_model_file(m);
  bind_optim(m);
}
