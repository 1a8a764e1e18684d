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
  auto range = [&](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      fail(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
           "], got " + std::to_string(v));
  };
  range("input_size", input_size, 1, kMaxSize);
  range("hidden_size", hidden_size, 1, kMaxSize);
  range("num_layers", num_layers, 1, kMaxLayers);
  range("proj_size", proj_size, 0, kMaxSize);
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
  // With the bounds above every product below fits in int64 (a layer's weight_ih has at most
  // 4 * 2^24 * 2 * 2^24 = 2^51 elements); the total is summed with an overflow check anyway.
  const int64_t G = gate_size(), H = hidden_size, S = state_size(), D = num_directions();
  int64_t total = 0;
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t per = G * (layer_input_size(l) + S) + (bias ? 2 * G : 0) +
                        (proj_size > 0 ? proj_size * H : 0) + (peephole ? 3 * H : 0);
    if (per > kMaxParams || D * per > kMaxParams - total)
      fail("the network would have more than " + std::to_string(kMaxParams) +
           " parameters (input_size=" + std::to_string(input_size) + ", hidden_size=" +
           std::to_string(hidden_size) + ", num_layers=" + std::to_string(num_layers) + ")");
    total += D * per;
  }
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
