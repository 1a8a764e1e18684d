// The public RNN and Stream classes: thin owners of a detail::Engine.
#include "fastlstm/rnn.hpp"

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "engine.hpp"
#include "lowp_step.hpp"
#include "stream.hpp"

namespace fastlstm {

template <typename T>
struct RNN<T>::Impl {
  explicit Impl(const RNNConfig& c) : engine(c) {}
  detail::Engine<T> engine;
};

template <typename T>
RNN<T>::RNN(const RNNConfig& config) {
  config.validate();
  impl_ = std::make_unique<Impl>(config);
}
template <typename T>
RNN<T>::~RNN() = default;
template <typename T>
RNN<T>::RNN(RNN&&) noexcept = default;
template <typename T>
RNN<T>& RNN<T>::operator=(RNN&&) noexcept = default;

template <typename T>
const RNNConfig& RNN<T>::config() const {
  return impl_->engine.config();
}

template <typename T>
void RNN<T>::forward(const SeqShape& shape, const ForwardArgs<T>& in,
                     const ForwardOutputs<T>& out) {
  if (shape.T < 0 || shape.B < 0) throw Error("T and B must be >= 0");
  if (!in.params || (!in.x && shape.T * shape.B > 0) || !out.h_n ||
      (!out.output && shape.T * shape.B > 0))
    throw Error("forward: params, x, output and h_n must not be null");
  impl_->engine.forward(shape, in, out);
}

template <typename T>
void RNN<T>::backward(const T* params, const BackwardArgs<T>& in,
                      const BackwardOutputs<T>& out) {
  if (!params || !out.d_params || !out.d_x)
    throw Error("backward: params, d_x and d_params must not be null");
  impl_->engine.backward(params, in, out);
}

template <typename T>
bool RNN<T>::has_activations() const {
  return impl_->engine.has_activations();
}

template <typename T>
int RNN<T>::last_threads() const {
  return impl_->engine.last_threads();
}

template <typename T>
struct Stream<T>::Impl {
  Impl(const RNNConfig& c, const T* p, int64_t b)
      : params(p), batch(b), h(c.num_layers * b * c.state_size(), T(0)),
        c_(c.cell == CellType::LSTM ? c.num_layers * b * c.hidden_size : 0, T(0)) {
    if (c.precision == Precision::Float32) {
      stepper = std::make_unique<detail::StreamStep<T>>(c, b);
    } else if constexpr (std::is_same_v<T, float>) {
      // bf16/int8: the low-precision step kernel, the one the engine runs at batch 1
      lowp = std::make_unique<detail::LowpStreamStep>(c, b);
    } else {
      detail::Engine<T> refuses(c);  // throws: a low-precision network runs in float32
    }
  }
  std::unique_ptr<detail::StreamStep<T>> stepper;  // float32/float64: the dedicated step
  std::unique_ptr<detail::LowpStreamStep> lowp;    // bf16/int8
  const T* params;
  int64_t batch;
  std::vector<T> h;   // [L, B, S]
  std::vector<T> c_;  // [L, B, H]
  T* c_ptr = c_.empty() ? nullptr : c_.data();  // c_ never reallocates
};

template <typename T>
Stream<T>::Stream(const RNNConfig& config, const T* params, int64_t batch) {
  config.validate();
  if (config.bidirectional)
    throw Error("a stream runs one step at a time; a bidirectional network needs the whole "
                "sequence (use forward)");
  if (batch < 1) throw Error("batch must be >= 1, got " + std::to_string(batch));
  if (!params) throw Error("params must not be null");
  impl_ = std::make_unique<Impl>(config, params, batch);
  if (impl_->stepper) impl_->stepper->pack(params);
  if constexpr (std::is_same_v<T, float>)
    if (impl_->lowp) impl_->lowp->pack(params);
  // Warm-up: one step (the thread pool started if the step uses it), so that the first step
  // after construction does what any later one does.
  std::vector<T> x(batch * config.input_size, T(0)), y(batch * config.state_size());
  step(x.data(), y.data());
  reset();
}
template <typename T>
Stream<T>::~Stream() = default;
template <typename T>
Stream<T>::Stream(Stream&&) noexcept = default;
template <typename T>
Stream<T>& Stream<T>::operator=(Stream&&) noexcept = default;

template <typename T>
void Stream<T>::step(const T* x_t, T* y_t) noexcept {
  auto& m = *impl_;
  if (m.stepper) return m.stepper->step(x_t, y_t, m.h.data(), m.c_ptr);
  if constexpr (std::is_same_v<T, float>) m.lowp->step(x_t, y_t, m.h.data(), m.c_ptr);
}

template <typename T>
void Stream<T>::reset() {
  std::fill(impl_->h.begin(), impl_->h.end(), T(0));
  std::fill(impl_->c_.begin(), impl_->c_.end(), T(0));
}

template <typename T>
void Stream<T>::reload_params() {
  if (impl_->stepper) impl_->stepper->pack(impl_->params);  // into the buffers sized at construction
  else if constexpr (std::is_same_v<T, float>) impl_->lowp->pack(impl_->params);
}

template <typename T>
int64_t Stream<T>::batch() const {
  return impl_->batch;
}
template <typename T>
const T* Stream<T>::h() const {
  return impl_->h.data();
}
template <typename T>
const T* Stream<T>::c() const {
  return impl_->c_.empty() ? nullptr : impl_->c_.data();
}
template <typename T>
void Stream<T>::set_state(const T* h, const T* c) {
  if (h) std::copy(h, h + impl_->h.size(), impl_->h.begin());
  if (c && !impl_->c_.empty()) std::copy(c, c + impl_->c_.size(), impl_->c_.begin());
}

template class RNN<float>;
template class RNN<double>;
template class Stream<float>;
template class Stream<double>;

}  // namespace fastlstm
