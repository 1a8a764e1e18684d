#include "fastlstm/config.hpp"

#include <cmath>
#include <string>

namespace fastlstm {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::BF16: return "bf16";
    case Precision::Int8: return "int8";
    default: return "float32";
  }
}

Precision parse_precision(const std::string& name) {
  if (name == "float32") return Precision::Float32;
  if (name == "bf16") return Precision::BF16;
  if (name == "int8") return Precision::Int8;
  throw Error("precision must be one of 'float32', 'bf16', 'int8', got '" + name + "'");
}

void RNNConfig::validate() const {
  auto fail = [](const std::string& msg) { throw Error(msg); };
  if (input_size < 1) fail("input_size must be >= 1, got " + std::to_string(input_size));
  if (hidden_size < 1) fail("hidden_size must be >= 1, got " + std::to_string(hidden_size));
  if (num_layers < 1) fail("num_layers must be >= 1, got " + std::to_string(num_layers));
  if (proj_size < 0) fail("proj_size must be >= 0, got " + std::to_string(proj_size));
  if (proj_size > 0 && cell != CellType::LSTM) fail("proj_size is only supported for LSTM");
  if (proj_size >= hidden_size && proj_size > 0)
    fail("proj_size must be smaller than hidden_size (" + std::to_string(hidden_size) +
         "), got " + std::to_string(proj_size));
  if (peephole && cell != CellType::LSTM) fail("peephole is only supported for LSTM, not GRU");
  if (precision != Precision::Float32 && precision != Precision::BF16 &&
      precision != Precision::Int8)
    fail("precision must be Float32, BF16 or Int8");
  if (!(dropout >= 0.0 && dropout < 1.0))
    fail("dropout must be in [0, 1), got " + std::to_string(dropout));
}

std::vector<ParamInfo> param_layout(const RNNConfig& c) {
  c.validate();
  std::vector<ParamInfo> out;
  int64_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    int64_t size = 1;
    for (int64_t s : shape) size *= s;
    out.push_back(ParamInfo{std::move(name), std::move(shape), offset, size});
    offset += size;
  };
  const int64_t G = c.gate_size(), H = c.hidden_size, S = c.state_size();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int64_t d = 0; d < c.num_directions(); ++d) {
      const std::string sfx = "_l" + std::to_string(l) + (d ? "_reverse" : "");
      add("weight_ih" + sfx, {G, c.layer_input_size(l)});
      add("weight_hh" + sfx, {G, S});
      if (c.bias) {
        add("bias_ih" + sfx, {G});
        add("bias_hh" + sfx, {G});
      }
      if (c.proj_size > 0) add("weight_hr" + sfx, {c.proj_size, H});
      if (c.peephole) {
        add("weight_ci" + sfx, {H});
        add("weight_cf" + sfx, {H});
        add("weight_co" + sfx, {H});
      }
    }
  }
  return out;
}

int64_t num_params(const RNNConfig& c) {
  auto layout = param_layout(c);
  return layout.empty() ? 0 : layout.back().offset + layout.back().size;
}

}  // namespace fastlstm
