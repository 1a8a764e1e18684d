// Binds the model file reader (cpp/src/model_reader.cpp) as _core.read_model_file: the one
// reader and validator of the format, the code path a C++ application runs through
// fastlstm::Model::load. It returns the validated, normalized description and the tensors in
// the file's dtype; the Python package only builds its objects from that (fastlstm.io).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "model_spec.hpp"
#include "safetensors.hpp"

namespace py = pybind11;
using fastlstm::detail::Act;
using fastlstm::detail::Layer;
using fastlstm::detail::LayerKind;
using fastlstm::detail::Merge;

namespace {

const char* act_name(Act a) {
  switch (a) {
    case Act::Linear: return "linear";
    case Act::Relu: return "relu";
    case Act::Tanh: return "tanh";
    case Act::Sigmoid: return "sigmoid";
    case Act::Softmax: return "softmax";
  }
  return "linear";
}

const char* merge_name(Merge m) {
  switch (m) {
    case Merge::Concat: return "concat";
    case Merge::Sum: return "sum";
    case Merge::Mul: return "mul";
    case Merge::Ave: return "ave";
  }
  return "concat";
}

// A Sequential layer's description, every field present (defaults filled in by the reader).
py::dict layer_dict(const Layer& L) {
  py::dict cfg;
  py::dict out;
  switch (L.kind) {
    case LayerKind::Embedding:
      cfg["input_dim"] = L.vocab;
      cfg["output_dim"] = L.out_dim;
      cfg["mask_zero"] = L.mask_zero;
      out["class"] = "Embedding";
      break;
    case LayerKind::Recurrent: {
      const bool lstm = L.rnn.cell == fastlstm::CellType::LSTM;
      cfg["units"] = L.rnn.hidden_size;
      cfg["input_size"] = L.rnn.input_size;
      cfg["return_sequences"] = L.return_sequences;
      cfg["go_backwards"] = L.go_backwards;
      if (lstm) cfg["peephole"] = L.rnn.peephole;
      cfg["bias"] = L.rnn.bias;
      if (L.rate > 0) cfg["dropout"] = L.rate;
      if (L.recurrent_rate > 0) cfg["recurrent_dropout"] = L.recurrent_rate;
      if (L.stateful) cfg["stateful"] = true;
      if (L.rnn.bidirectional) {
        py::dict inner;
        inner["class"] = lstm ? "LSTM" : "GRU";
        inner["config"] = cfg;
        py::dict bcfg;
        bcfg["merge_mode"] = merge_name(L.merge);
        bcfg["layer"] = inner;
        out["class"] = "Bidirectional";
        out["config"] = bcfg;
        return out;
      }
      out["class"] = lstm ? "LSTM" : "GRU";
      break;
    }
    case LayerKind::Dense:
      cfg["units"] = L.out_dim;
      cfg["input_dim"] = L.in_dim;
      cfg["activation"] = act_name(L.act);
      cfg["use_bias"] = !L.bias.empty();
      out["class"] = "Dense";
      break;
    case LayerKind::Dropout:
      cfg["rate"] = L.rate;
      out["class"] = "Dropout";
      break;
  }
  out["config"] = cfg;
  return out;
}

py::array tensor_array(const fastlstm::detail::SafeTensors& st,
                       const fastlstm::detail::TensorEntry& t) {
  // the reader accepted only these (the model's float dtype, I64 for tokens and lengths; in a
  // quantized file BF16 matrices, as their bits (uint16), and I8 matrices)
  const char* fmt = t.dtype == "F32"    ? "<f4"
                    : t.dtype == "F64"  ? "<f8"
                    : t.dtype == "BF16" ? "<u2"
                    : t.dtype == "I8"   ? "i1"
                                        : "<i8";
  py::array a(py::dtype(fmt), std::vector<py::ssize_t>(t.shape.begin(), t.shape.end()));
  if (t.end > t.begin) std::memcpy(a.mutable_data(), st.raw(t), t.end - t.begin);
  return a;
}

// data: the whole file; name: how messages name it (the path). Raises ValueError (through the
// fastlstm::Error translator) with the reader's message for anything it refuses.
py::dict read_model_file(const py::bytes& data, const std::string& name) {
  std::string_view view = data;
  std::vector<char> bytes(view.begin(), view.end());
  fastlstm::detail::ModelSpec spec;
  std::unique_ptr<fastlstm::detail::SafeTensors> st;
  {
    py::gil_scoped_release nogil;
    spec = fastlstm::detail::load_spec(bytes, name, /*graph_for_python=*/true);
    st = std::make_unique<fastlstm::detail::SafeTensors>(fastlstm::detail::SafeTensors::parse(
        std::move(bytes), "model file '" + name + "'"));
  }
  py::dict out;
  out["class"] = spec.class_name;
  out["format_version"] = spec.format_version;
  out["dtype"] = spec.dtype;
  out["precision"] = fastlstm::precision_name(spec.precision);
  if (spec.class_name == "Model") {
    out["graph"] = spec.graph_json;  // checked and built by fastlstm.io.files
  } else if (spec.class_name == "Sequential") {
    py::list layers;
    for (const Layer& L : spec.layers) layers.append(layer_dict(L));
    out["layers"] = layers;
  } else {
    const fastlstm::RNNConfig& c = spec.layers.at(0).rnn;
    py::dict cfg;
    cfg["input_size"] = c.input_size;
    cfg["hidden_size"] = c.hidden_size;
    cfg["num_layers"] = c.num_layers;
    cfg["bias"] = c.bias;
    cfg["batch_first"] = spec.batch_first;
    cfg["bidirectional"] = c.bidirectional;
    cfg["proj_size"] = c.proj_size;
    cfg["peephole"] = c.peephole;
    out["config"] = cfg;
  }
  py::dict weights;
  py::object check = py::none();
  if (spec.has_check) {
    py::dict d;
    d["input"] = tensor_array(*st, *st->find(spec.check_x_name));
    d["output"] = tensor_array(*st, *st->find(spec.check_y_name));
    d["lengths"] = spec.check_len_name.empty()
                       ? py::object(py::none())
                       : py::object(tensor_array(*st, *st->find(spec.check_len_name)));
    check = d;
  }
  for (const auto& t : st->tensors()) {
    if (spec.has_check && (t.name == spec.check_x_name || t.name == spec.check_y_name ||
                           t.name == spec.check_len_name))
      continue;
    weights[py::str(t.name)] = tensor_array(*st, t);
  }
  out["weights"] = weights;
  out["selfcheck"] = check;
  out["compile"] = spec.compile_json.empty() ? py::object(py::none())
                                             : py::object(py::str(spec.compile_json));
  return out;
}

}  // namespace

void bind_model_file(py::module_& m) {
  m.def("read_model_file", &read_model_file, py::arg("data"), py::arg("name"),
        "Reads and validates a model file's bytes (the C++ reader): a dict with class, dtype, "
        "config (LSTM/GRU), layers (Sequential) or graph (Model: the metadata JSON text), "
        "precision, format_version, weights (as stored: bf16 matrices as uint16 bits, int8 ones "
        "as int8 with float32 '.scale' rows; optimizer slots included), selfcheck and compile "
        "(JSON text or None).");
}
