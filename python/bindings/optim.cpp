// Binds the fused optimizer updates (fastlstm/optim.hpp) as _core.adam_update, sgd_update,
// rmsprop_update, adagrad_update: one call per step updates a model's whole flat parameter
// buffer. Checks every buffer (a 1-D C-contiguous writable array of one float dtype, all of one
// size, the parameters not sharing memory with another buffer) and releases the GIL.
// _core.all_finite(x): the gradients' check before a step.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

#include "fastlstm/optim.hpp"

namespace py = pybind11;

namespace {

// The buffers of one update: their dtype (float32 or float64) and size, checked.
struct Buffers {
  bool f64 = false;
  py::ssize_t n = 0;
  std::vector<std::pair<const char*, py::array>> arrays;  // name, array (None skipped)

  void add(const char* name, const py::object& obj, bool writable) {
    if (obj.is_none()) return;
    if (!py::isinstance<py::array>(obj))
      throw py::type_error(std::string(name) + " must be a numpy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    const bool is32 = py::isinstance<py::array_t<float>>(a) && a.dtype().kind() == 'f' &&
                      a.itemsize() == 4;
    const bool is64 = py::isinstance<py::array_t<double>>(a) && a.dtype().kind() == 'f' &&
                      a.itemsize() == 8;
    if (!is32 && !is64)
      throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " +
                           std::string(py::str(a.dtype())));
    if (a.ndim() != 1)
      throw py::value_error(std::string(name) + " must be 1-D, got " +
                            std::to_string(a.ndim()) + " dimensions");
    if (!(a.flags() & py::array::c_style))
      throw py::value_error(std::string(name) + " must be C-contiguous");
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
    if (arrays.empty()) {
      f64 = is64;
      n = a.shape(0);
    } else {
      if (is64 != f64)
        throw py::type_error(std::string(name) + " must have the dtype of params (" +
                             (f64 ? "float64" : "float32") + ")");
      if (a.shape(0) != n)
        throw py::value_error(std::string(name) + " must have " + std::to_string(n) +
                              " elements like params, got " + std::to_string(a.shape(0)));
    }
    // the update writes every buffer it is given element by element: overlapping buffers would
    // read values already written
    const char* lo = static_cast<const char*>(a.data());
    const char* hi = lo + a.nbytes();
    for (const auto& [other, b] : arrays) {
      const char* blo = static_cast<const char*>(b.data());
      if (n > 0 && lo < blo + b.nbytes() && blo < hi)
        throw py::value_error(std::string(name) + " shares memory with " + other);
    }
    arrays.emplace_back(name, a);
  }
  template <typename T>
  T* ptr(const py::object& obj) const {
    return obj.is_none() ? nullptr
                         : static_cast<T*>(py::reinterpret_borrow<py::array>(obj).mutable_data());
  }
};

template <typename F>
void dispatch(const Buffers& b, F&& f) {
  py::gil_scoped_release release;
  if (b.f64)
    f(double{});
  else
    f(float{});
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "adam_update",
      [](py::object p, py::object g, py::object mm, py::object v, py::object vhat, double c1,
         double c2, double eps, double alpha, double corr, bool after) {
        Buffers b;
        b.add("params", p, true);
        b.add("grads", g, false);
        b.add("m", mm, true);
        b.add("v", v, true);
        b.add("vhat", vhat, true);
        const fastlstm::AdamStep s{c1, c2, eps, alpha, corr, after};
        dispatch(b, [&](auto t) {
          using T = decltype(t);
          fastlstm::adam_update<T>(b.ptr<T>(p), b.ptr<T>(g), b.ptr<T>(mm), b.ptr<T>(v),
                                   b.ptr<T>(vhat), size_t(b.n), s);
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("m"), py::arg("v"), py::arg("vhat"),
      py::arg("one_minus_b1"), py::arg("one_minus_b2"), py::arg("epsilon"), py::arg("alpha"),
      py::arg("corr"), py::arg("after_correction"));
  m.def(
      "sgd_update",
      [](py::object p, py::object g, py::object mm, double lr, double momentum, bool nesterov) {
        Buffers b;
        b.add("params", p, true);
        b.add("grads", g, false);
        b.add("momentum_slot", mm, true);
        dispatch(b, [&](auto t) {
          using T = decltype(t);
          fastlstm::sgd_update<T>(b.ptr<T>(p), b.ptr<T>(g), b.ptr<T>(mm), size_t(b.n), lr,
                                  momentum, nesterov);
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("m"), py::arg("lr"), py::arg("momentum"),
      py::arg("nesterov"));
  m.def(
      "rmsprop_update",
      [](py::object p, py::object g, py::object v, py::object avg, py::object mom, double rho,
         double one_minus_rho, double eps, double lr, double momentum) {
        Buffers b;
        b.add("params", p, true);
        b.add("grads", g, false);
        b.add("v", v, true);
        b.add("average_gradient", avg, true);
        b.add("momentum_slot", mom, true);
        const fastlstm::RMSpropStep s{rho, one_minus_rho, eps, lr, momentum};
        dispatch(b, [&](auto t) {
          using T = decltype(t);
          fastlstm::rmsprop_update<T>(b.ptr<T>(p), b.ptr<T>(g), b.ptr<T>(v), b.ptr<T>(avg),
                                      b.ptr<T>(mom), size_t(b.n), s);
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("v"), py::arg("avg"), py::arg("mom"),
      py::arg("rho"), py::arg("one_minus_rho"), py::arg("epsilon"), py::arg("lr"),
      py::arg("momentum"));
  m.def(
      "adagrad_update",
      [](py::object p, py::object g, py::object acc, double lr, double eps) {
        Buffers b;
        b.add("params", p, true);
        b.add("grads", g, false);
        b.add("accumulator", acc, true);
        dispatch(b, [&](auto t) {
          using T = decltype(t);
          fastlstm::adagrad_update<T>(b.ptr<T>(p), b.ptr<T>(g), b.ptr<T>(acc), size_t(b.n), lr,
                                      eps);
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("accumulator"), py::arg("lr"),
      py::arg("epsilon"));
  m.def(
      "all_finite",
      [](py::object x) {
        Buffers b;
        b.add("x", x, false);
        bool ok = true;
        dispatch(b, [&](auto t) {
          using T = decltype(t);
          ok = fastlstm::all_finite<T>(b.ptr<T>(x), size_t(b.n));
        });
        return ok;
      },
      py::arg("x"));
}
