// Binds fastlstm::RNN<T> and fastlstm::Stream<T> as _core.RNN_float32 / RNN_float64 and
// _core.Stream_float32 / Stream_float64. Every array is checked here (dtype, rank, shape,
// C-contiguity, writability) and a ValueError/TypeError names the argument; the GIL is released
// around compute. Conversions that users expect (dtype, layout) happen in Python beforehand.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fastlstm/rnn.hpp"

namespace py = pybind11;
using fastlstm::RNNConfig;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// Checks dtype, C-contiguity and shape (-1 = any) and returns the data pointer.
template <typename T>
const T* check(const py::handle& obj, const char* name, const std::vector<int64_t>& shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array");
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a) || a.dtype().kind() != 'f' ||
      a.itemsize() != static_cast<py::ssize_t>(sizeof(T)))
    throw py::type_error(std::string(name) + " must have dtype " +
                         (sizeof(T) == 4 ? "float32" : "float64") + ", got " +
                         std::string(py::str(a.dtype())));
  auto got = shape_of(a);
  bool ok = got.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == got[i];
  if (!ok)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) +
                          ", got " + shape_str(got));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  return static_cast<const T*>(a.data());
}

template <typename T>
T* check_writable(const py::handle& obj, const char* name, const std::vector<int64_t>& shape) {
  const T* p = check<T>(obj, name, shape);
  if (!py::reinterpret_borrow<py::array>(obj).writeable())
    throw py::value_error(std::string(name) + " must be writable");
  return const_cast<T*>(p);
}

template <typename T>
py::array_t<T> empty(const std::vector<int64_t>& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

RNNConfig make_config(const std::string& cell, int64_t input_size, int64_t hidden_size,
                      int64_t num_layers, bool bidirectional, bool bias, int64_t proj_size,
                      bool peephole, double dropout, const std::string& precision) {
  RNNConfig c;
  c.precision = fastlstm::parse_precision(precision);
  if (cell == "lstm") c.cell = fastlstm::CellType::LSTM;
  else if (cell == "gru") c.cell = fastlstm::CellType::GRU;
  else throw py::value_error("cell must be 'lstm' or 'gru', got '" + cell + "'");
  c.input_size = input_size;
  c.hidden_size = hidden_size;
  c.num_layers = num_layers;
  c.bidirectional = bidirectional;
  c.bias = bias;
  c.proj_size = proj_size;
  c.peephole = peephole;
  c.dropout = dropout;
  c.validate();
  return c;
}

template <typename T>
class PyRNN {
 public:
  explicit PyRNN(const RNNConfig& c) : rnn_(c), n_params_(fastlstm::num_params(c)) {}

  py::tuple forward(const py::handle& params, const py::handle& x, const py::handle& lengths,
                    const py::handle& h0, const py::handle& c0, bool train, bool batch_first,
                    uint64_t seed, const py::handle& recurrent_mask) {
    const RNNConfig& c = rnn_.config();
    fastlstm::ForwardArgs<T> in;
    in.params = check<T>(params, "params", {n_params_});
    in.x = check<T>(x, "x", {-1, -1, c.input_size});
    auto xs = shape_of(py::reinterpret_borrow<py::array>(x));
    fastlstm::SeqShape shape{batch_first ? xs[1] : xs[0], batch_first ? xs[0] : xs[1],
                             batch_first};
    const int64_t B = shape.B, LD = c.num_layers * c.num_directions(), S = c.state_size();
    const bool lstm = c.cell == fastlstm::CellType::LSTM;
    if (!lengths.is_none()) {
      auto a = py::reinterpret_borrow<py::array>(lengths);
      if (!py::isinstance<py::array_t<int64_t>>(a) || a.dtype().kind() != 'i' ||
          a.itemsize() != 8)
        throw py::type_error("lengths must be an int64 array");
      if (a.ndim() != 1 || a.shape(0) != B)
        throw py::value_error("lengths must have shape (" + std::to_string(B) + ",), got " +
                              shape_str(shape_of(a)));
      if (!(a.flags() & py::array::c_style))
        throw py::value_error("lengths must be C-contiguous");
      in.lengths = static_cast<const int64_t*>(a.data());
    }
    if (!h0.is_none()) in.h0 = check<T>(h0, "h0", {LD, B, S});
    if (!c0.is_none()) {
      if (!lstm) throw py::value_error("c0 is only for LSTM");
      in.c0 = check<T>(c0, "c0", {LD, B, c.hidden_size});
    }
    if (!recurrent_mask.is_none()) {
      const int64_t ng = lstm ? 4 : 3;
      in.recurrent_mask = check<T>(recurrent_mask, "recurrent_mask", {LD, B, ng * S});
    }
    in.train = train;
    in.dropout_seed = seed;
    const int64_t DS = c.num_directions() * S;
    auto out = empty<T>({xs[0], xs[1], DS});
    auto hn = empty<T>({LD, B, S});
    py::object cn = py::none();
    fastlstm::ForwardOutputs<T> o;
    o.output = out.mutable_data();
    o.h_n = hn.mutable_data();
    if (lstm) {
      auto cna = empty<T>({LD, B, c.hidden_size});
      o.c_n = cna.mutable_data();
      cn = cna;
    }
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      // the saved training state (and the shapes backward checks against) is replaced by any
      // forward; it belongs to the thread that ran it
      last_forward_ = std::this_thread::get_id();
      rnn_.forward(shape, in, o);
      out_shape_ = {xs[0], xs[1], DS};
      x_shape_ = xs;
      batch_ = B;
    }
    return py::make_tuple(out, hn, cn);
  }

  py::tuple backward(const py::handle& params, const py::handle& d_output,
                     const py::handle& d_h_n, const py::handle& d_c_n,
                     const py::handle& d_params) {
    // The whole call holds the module's lock, so the saved training state and the shapes of
    // the forward that made it cannot change between the checks and the computation. The lock
    // is taken without the GIL (every holder of mu_ may need the GIL: no lock-order inversion).
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    {
      py::gil_scoped_release nogil;
      lock.lock();
    }
    const RNNConfig& c = rnn_.config();
    const bool lstm = c.cell == fastlstm::CellType::LSTM;
    if (last_forward_ != std::this_thread::get_id() && last_forward_ != std::thread::id())
      throw std::runtime_error(
          std::string(lstm ? "LSTM" : "GRU") +
          " is being trained by another thread: its last forward() ran in another thread, so "
          "this thread's forward(..., train=True) state is gone (train one module from one "
          "thread, or give each thread its own module)");
    if (!rnn_.has_activations())
      throw std::runtime_error("backward() needs a preceding forward(..., train=True)");
    const int64_t LD = c.num_layers * c.num_directions(), S = c.state_size();
    const int64_t B = batch_;
    const T* p = check<T>(params, "params", {n_params_});
    fastlstm::BackwardArgs<T> in;
    if (!d_output.is_none()) in.d_output = check<T>(d_output, "d_output", out_shape_);
    if (!d_h_n.is_none()) in.d_h_n = check<T>(d_h_n, "d_h_n", {LD, B, S});
    if (!d_c_n.is_none()) {
      if (!lstm) throw py::value_error("d_c_n is only for LSTM");
      in.d_c_n = check<T>(d_c_n, "d_c_n", {LD, B, c.hidden_size});
    }
    fastlstm::BackwardOutputs<T> o;
    o.d_params = check_writable<T>(d_params, "d_params", {n_params_});
    auto dx = empty<T>(x_shape_);
    auto dh0 = empty<T>({LD, B, S});
    py::object dc0 = py::none();
    o.d_x = dx.mutable_data();
    o.d_h0 = dh0.mutable_data();
    if (lstm) {
      auto a = empty<T>({LD, B, c.hidden_size});
      o.d_c0 = a.mutable_data();
      dc0 = a;
    }
    {
      py::gil_scoped_release nogil;
      rnn_.backward(p, in, o);
    }
    return py::make_tuple(dx, dh0, dc0);
  }

  int64_t num_params() const { return n_params_; }
  bool has_activations() {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    {
      py::gil_scoped_release nogil;
      lock.lock();
    }
    return rnn_.has_activations();
  }
  int last_threads() {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    {
      py::gil_scoped_release nogil;
      lock.lock();
    }
    return rnn_.last_threads();
  }

 private:
  fastlstm::RNN<T> rnn_;
  int64_t n_params_;
  std::mutex mu_;
  std::vector<int64_t> out_shape_, x_shape_;
  int64_t batch_ = 0;  // shapes of the last forward, for backward's checks
  std::thread::id last_forward_;  // the thread of the last forward (none yet: default id)
};

template <typename T>
class PyStream {
 public:
  PyStream(const RNNConfig& c, py::array params, int64_t batch)
      : params_(params),
        stream_(c, check<T>(params, "params", {fastlstm::num_params(c)}), batch),
        config_(c) {}

  py::array_t<T> step(const py::handle& x_t) {
    const T* x = check<T>(x_t, "x_t", {stream_.batch(), config_.input_size});
    auto y = empty<T>({stream_.batch(), config_.state_size()});
    T* yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      stream_.step(x, yp);
    }
    return y;
  }
  // every method takes the stream's mutex: step runs with the GIL released, so without it a
  // reset/state/set_state from another thread would race a running step (the GIL is released
  // while waiting, as in step)
  void reset() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    stream_.reset();
  }
  void reload_params() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    stream_.reload_params();
  }
  py::tuple state() {
    const int64_t L = config_.num_layers, B = stream_.batch();
    const bool lstm = config_.cell == fastlstm::CellType::LSTM;
    auto h = empty<T>({L, B, config_.state_size()});
    auto c = empty<T>({lstm ? L : 0, B, config_.hidden_size});
    T* hp = h.mutable_data();
    T* cp = c.mutable_data();
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      std::copy_n(stream_.h(), L * B * config_.state_size(), hp);
      if (lstm) std::copy_n(stream_.c(), L * B * config_.hidden_size, cp);
    }
    if (!lstm) return py::make_tuple(h, py::none());
    return py::make_tuple(h, c);
  }
  void set_state(const py::handle& h, const py::handle& c) {
    const int64_t L = config_.num_layers, B = stream_.batch();
    const T* hp = check<T>(h, "h", {L, B, config_.state_size()});
    const T* cp = nullptr;
    if (!c.is_none()) cp = check<T>(c, "c", {L, B, config_.hidden_size});
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    stream_.set_state(hp, cp);
  }
  int64_t batch() const { return stream_.batch(); }

 private:
  py::array params_;  // keeps the parameter buffer alive while the stream reads it
  fastlstm::Stream<T> stream_;
  RNNConfig config_;
  std::mutex mu_;
};

template <typename T>
void bind_dtype(py::module_& m, const std::string& suffix) {
  py::class_<PyRNN<T>>(m, ("RNN_" + suffix).c_str())
      .def(py::init([](const std::string& cell, int64_t input_size, int64_t hidden_size,
                       int64_t num_layers, bool bidirectional, bool bias, int64_t proj_size,
                       bool peephole, double dropout, const std::string& precision) {
             return new PyRNN<T>(make_config(cell, input_size, hidden_size, num_layers,
                                             bidirectional, bias, proj_size, peephole, dropout,
                                             precision));
           }),
           py::arg("cell"), py::arg("input_size"), py::arg("hidden_size"),
           py::arg("num_layers"), py::arg("bidirectional"), py::arg("bias"),
           py::arg("proj_size"), py::arg("peephole"), py::arg("dropout"),
           py::arg("precision") = "float32")
      .def("forward", &PyRNN<T>::forward, py::arg("params"), py::arg("x"),
           py::arg("lengths") = py::none(), py::arg("h0") = py::none(),
           py::arg("c0") = py::none(), py::arg("train") = false, py::arg("batch_first") = false,
           py::arg("seed") = 0, py::arg("recurrent_mask") = py::none())
      .def("backward", &PyRNN<T>::backward, py::arg("params"), py::arg("d_output"),
           py::arg("d_h_n"), py::arg("d_c_n"), py::arg("d_params"))
      .def_property_readonly("num_params", &PyRNN<T>::num_params)
      .def_property_readonly("has_activations", &PyRNN<T>::has_activations)
      .def_property_readonly("last_threads", &PyRNN<T>::last_threads);

  py::class_<PyStream<T>>(m, ("Stream_" + suffix).c_str())
      .def(py::init([](const std::string& cell, int64_t input_size, int64_t hidden_size,
                       int64_t num_layers, bool bias, int64_t proj_size, bool peephole,
                       py::array params, int64_t batch, const std::string& precision) {
             return new PyStream<T>(make_config(cell, input_size, hidden_size, num_layers,
                                                false, bias, proj_size, peephole, 0.0, precision),
                                    params, batch);
           }),
           py::arg("cell"), py::arg("input_size"), py::arg("hidden_size"),
           py::arg("num_layers"), py::arg("bias"), py::arg("proj_size"), py::arg("peephole"),
           py::arg("params"), py::arg("batch"), py::arg("precision") = "float32")
      .def("step", &PyStream<T>::step, py::arg("x_t"))
      .def("reset", &PyStream<T>::reset)
      .def("reload_params", &PyStream<T>::reload_params)
      .def("state", &PyStream<T>::state)
      .def("set_state", &PyStream<T>::set_state, py::arg("h"), py::arg("c") = py::none())
      .def_property_readonly("batch", &PyStream<T>::batch);
}

}  // namespace

void bind_rnn(py::module_& m) {
  // the parameter layout (names, shapes, offsets in the flat buffer) of every variant, from
  // the engine's one definition (cpp/src/config.cpp); Python's modules, model files and
  // importers all read it from here
  m.def(
      "param_layout",
      [](const std::string& cell, int64_t input_size, int64_t hidden_size, int64_t num_layers,
         bool bidirectional, bool bias, int64_t proj_size, bool peephole) {
        py::list out;
        for (const auto& e : fastlstm::param_layout(make_config(
                 cell, input_size, hidden_size, num_layers, bidirectional, bias, proj_size,
                 peephole, 0.0, "float32")))
          out.append(py::make_tuple(e.name, py::tuple(py::cast(e.shape)), e.offset));
        return out;
      },
      py::arg("cell"), py::arg("input_size"), py::arg("hidden_size"), py::arg("num_layers"),
      py::arg("bidirectional"), py::arg("bias"), py::arg("proj_size"), py::arg("peephole"));
  bind_dtype<float>(m, "float32");
  bind_dtype<double>(m, "float64");
}
