// fastlstm: configuration of a recurrent network and the layout of its flat parameter buffer.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastlstm {

// Every error fastlstm throws derives from this.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class CellType { LSTM, GRU };

// Upper bounds of a configuration, far above any real network, so that every size product the
// engine and the parameter layout compute stays in int64_t range (validate() checks them before
// anything is computed): input_size, hidden_size and proj_size at most kMaxSize, num_layers at
// most kMaxLayers, and num_params at most kMaxParams (checked with overflow-safe arithmetic).
inline constexpr int64_t kMaxSize = int64_t(1) << 24;     // 16,777,216
inline constexpr int64_t kMaxLayers = 1024;
inline constexpr int64_t kMaxParams = int64_t(1) << 40;  // 4 TiB of float32

// The precision of the weights in the matrix products (inference only below float32):
//   Float32  the Scalar type of the network (float or double)
//   BF16     bf16 weights, activations rounded to bf16, float32 accumulation and cell state
//   Int8     int8 weights with one scale per row (per gate and unit), inputs and states
//            quantized per step and per row (dynamic), int32 accumulation
// Low precision runs in RNN<float> / Stream<float>: forward without train only.
enum class Precision { Float32, BF16, Int8 };
const char* precision_name(Precision p);  // "float32", "bf16", "int8"
Precision parse_precision(const std::string& name);  // throws fastlstm::Error on others

// The architecture of a (stacked, possibly bidirectional) recurrent network.
struct RNNConfig {
  CellType cell = CellType::LSTM;
  int64_t input_size = 0;   // I: features of the first layer's input
  int64_t hidden_size = 0;  // H: units per layer and direction
  int64_t num_layers = 1;   // L
  bool bidirectional = false;
  bool bias = true;
  int64_t proj_size = 0;    // P: LSTMP projection (0 = none); LSTM only, P < H
  bool peephole = false;    // diagonal peepholes (ONNX semantics); LSTM only
  double dropout = 0.0;     // between stacked layers, training only, in [0, 1)
  Precision precision = Precision::Float32;  // of the weights in the products (see above)

  int64_t num_directions() const { return bidirectional ? 2 : 1; }
  // S: size of the recurrent state h and of each direction's output.
  int64_t state_size() const { return proj_size > 0 ? proj_size : hidden_size; }
  // G: rows of weight_ih (4H for LSTM, 3H for GRU).
  int64_t gate_size() const { return (cell == CellType::LSTM ? 4 : 3) * hidden_size; }
  int64_t layer_input_size(int64_t layer) const {
    return layer == 0 ? input_size : num_directions() * state_size();
  }
  // Throws fastlstm::Error naming the offending field (ranges, the limits above, combinations).
  void validate() const;
};

// One parameter tensor inside the flat buffer, under PyTorch's name.
struct ParamInfo {
  std::string name;            // e.g. "weight_ih_l0", "bias_hh_l1_reverse", "weight_ci_l0"
  std::vector<int64_t> shape;  // e.g. {4H, I}
  int64_t offset = 0;          // in elements from the start of the flat buffer
  int64_t size = 0;            // product of shape
};

// The order is PyTorch's (per layer, per direction: weight_ih, weight_hh, bias_ih, bias_hh,
// weight_hr), followed by the peephole vectors weight_ci, weight_cf, weight_co.
std::vector<ParamInfo> param_layout(const RNNConfig& config);
int64_t num_params(const RNNConfig& config);

}  // namespace fastlstm
