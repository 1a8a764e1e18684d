// Functional models in C++ (Model::run): hand-made graph files whose outputs are computed here
// by hand, names and shapes, predict on a one-input graph, concurrent runs, and the refusals of
// the graph reader (masks, unknown layers, cycles, dangling references, nesting, limits).
// Layer-by-layer parity with Python's layers: tests/test_cpp_graph.py.
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "fastlstm/model.hpp"
#include "model_testing.hpp"

using fastlstm::Model;
using fastlstm::Tensor;

namespace {

std::vector<float> values(const mt::Tensor& t) {
  std::vector<float> v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

std::string file_of(const std::string& model, const std::vector<mt::Tensor>& ts) {
  return mt::make_file(ts, {{"fastlstm", "{\"format_version\":2,\"model\":" + model + "}"}});
}

// inputs a [B, 3], b [B, 3]; a Dense(2) "d" shared by both; outputs
//   sum = Add(d(a), d(b)) [B, 2], cat = Concatenate(axis=1)(RepeatVector(2)(d(a)),
//   RepeatVector(2)(d(b))) [B, 4, 2]
const char* kTwoInputs =
    "{\"class\":\"Model\",\"dtype\":\"float32\","
    "\"inputs\":[{\"shape\":[3],\"dtype\":\"float32\",\"name\":\"a\"},"
    "{\"shape\":[3],\"dtype\":\"float32\",\"name\":\"b\"}],"
    "\"layers\":["
    "{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3,\"activation\":\"linear\","
    "\"use_bias\":true},\"name\":\"d\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]},"
    "{\"inputs\":[[\"__input__\",1,0]]}]},"
    "{\"class\":\"Add\",\"config\":{},\"name\":\"add\",\"calls\":[{\"inputs\":[[\"d\",0,0],"
    "[\"d\",1,0]]}]},"
    "{\"class\":\"RepeatVector\",\"config\":{\"n\":2},\"name\":\"rep\",\"calls\":["
    "{\"inputs\":[[\"d\",0,0]]},{\"inputs\":[[\"d\",1,0]]}]},"
    "{\"class\":\"Concatenate\",\"config\":{\"axis\":1},\"name\":\"cat\",\"calls\":["
    "{\"inputs\":[[\"rep\",0,0],[\"rep\",1,0]]}]}],"
    "\"outputs\":[[\"add\",0,0],[\"cat\",0,0]],\"output_names\":[\"sum\",\"cat\"]}";

std::vector<mt::Tensor> dense_weights(const std::string& prefix = "layers.0.") {
  return {mt::f32(prefix + "kernel", {3, 2}), mt::f32(prefix + "bias", {2}, 0.2f)};
}

// x [3] @ kernel [3, 2] + bias, by hand
std::vector<float> dense_by_hand(const float* x) {
  const auto k = values(mt::f32("k", {3, 2})), b = values(mt::f32("b", {2}, 0.2f));
  std::vector<float> y(2);
  for (int u = 0; u < 2; ++u) y[u] = b[u] + x[0] * k[u] + x[1] * k[2 + u] + x[2] * k[4 + u];
  return y;
}

Tensor floats(std::vector<int64_t> shape, std::vector<float> v) {
  Tensor t;
  t.shape = std::move(shape);
  t.values = std::move(v);
  return t;
}

void test_two_inputs_by_hand() {
  const Model m = mt::load_string(file_of(kTwoInputs, dense_weights()));
  MT_CHECK(m.class_name() == "Model");
  MT_CHECK(m.num_inputs() == 2 && m.num_outputs() == 2);
  MT_CHECK((m.input_names() == std::vector<std::string>{"a", "b"}));
  MT_CHECK((m.output_names() == std::vector<std::string>{"sum", "cat"}));
  MT_CHECK((m.input_shape(1) == std::vector<int64_t>{3}));
  MT_CHECK((m.output_shape(1) == std::vector<int64_t>{4, 2}));
  MT_CHECK(!m.input_takes_tokens(0) && !m.can_stream());
  const std::vector<float> a = {1.0f, -2.0f, 0.5f, 0.25f, 3.0f, -1.0f};  // B = 2
  const std::vector<float> b = {0.0f, 1.5f, -0.5f, 2.0f, 2.0f, 2.0f};
  const std::vector<Tensor> out = m.run({floats({2, 3}, a), floats({2, 3}, b)});
  MT_CHECK(out.size() == 2);
  MT_CHECK((out[0].shape == std::vector<int64_t>{2, 2}));
  MT_CHECK((out[1].shape == std::vector<int64_t>{2, 4, 2}));
  for (int r = 0; r < 2; ++r) {
    const auto da = dense_by_hand(a.data() + 3 * r), db = dense_by_hand(b.data() + 3 * r);
    for (int u = 0; u < 2; ++u) {
      MT_CHECK(mt::close(out[0].values[2 * r + u], da[u] + db[u], 1e-6));
      for (int t = 0; t < 4; ++t)  // steps 0, 1: d(a); 2, 3: d(b)
        MT_CHECK(mt::close(out[1].values[(r * 4 + t) * 2 + u], t < 2 ? da[u] : db[u], 1e-6));
    }
  }
  // by name: the same values
  const std::map<std::string, Tensor> named =
      m.run_by_name(std::map<std::string, Tensor>{{"b", floats({2, 3}, b)}, {"a", floats({2, 3}, a)}});
  MT_CHECK(named.size() == 2 && named.at("sum").values == out[0].values &&
           named.at("cat").values == out[1].values);
  // bad inputs: named errors, nothing run
  MT_CHECK_THROWS(fastlstm::ShapeError, m.run({floats({2, 3}, a)}), "takes 2 input(s)");
  MT_CHECK_THROWS(fastlstm::ShapeError, m.run({floats({2, 3}, a), floats({1, 3}, {1, 2, 3})}),
                  "input 1 (\"b\")", "batch size 1");
  MT_CHECK_THROWS(fastlstm::ShapeError, m.run({floats({2, 4}, a), floats({2, 3}, b)}),
                  "input 0 (\"a\") must have shape [B, 3)");
  MT_CHECK_THROWS(fastlstm::ShapeError, m.run({floats({2, 3}, {1.0f}), floats({2, 3}, b)}),
                  "holds 1 floats");
  MT_CHECK_THROWS(fastlstm::ShapeError,
                  m.run_by_name(std::map<std::string, Tensor>{{"a", floats({2, 3}, a)}}),
                  "input \"b\" is missing");
  std::vector<float> y;
  MT_CHECK_THROWS(fastlstm::Error, m.predict(a.data(), 2, 1, 3, nullptr, y), "use Model::run");
  MT_CHECK_THROWS(fastlstm::Error, Model::Stream(m), "functional model");
  MT_CHECK(m.summary().find("layer \"d\" (Dense)") != std::string::npos);
}

// x [T, 3] -> Dense(2) per step -> Activation(softmax): predict == run, rows sum to 1
void test_one_input_predict() {
  const std::string g =
      "{\"class\":\"Model\",\"dtype\":\"float32\",\"inputs\":[{\"shape\":[null,3],"
      "\"dtype\":\"float32\",\"name\":\"x\"}],\"layers\":[{\"class\":\"Dense\",\"config\":"
      "{\"units\":2,\"input_dim\":3},\"name\":\"d\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]},"
      "{\"class\":\"Activation\",\"config\":{\"activation\":\"softmax\"},\"name\":\"s\","
      "\"calls\":[{\"inputs\":[[\"d\",0,0]]}]}],\"outputs\":[[\"s\",0,0]]}";
  const Model m = mt::load_string(file_of(g, dense_weights()));
  MT_CHECK(m.input_size() == 3 && m.output_size() == 2 && m.returns_sequences());
  const std::vector<float> x = {1, 2, 3, -1, 0, 1, 0.5f, 0.5f, -2};  // B = 1, T = 3
  std::vector<float> y;
  const auto shape = m.predict(x.data(), 1, 3, 3, nullptr, y);
  MT_CHECK((shape == std::vector<int64_t>{1, 3, 2}));
  const std::vector<Tensor> r = m.run({floats({1, 3, 3}, x)});
  MT_CHECK(r[0].values == y);
  for (int t = 0; t < 3; ++t) {
    const auto z = dense_by_hand(x.data() + 3 * t);
    const float e0 = 1.0f / (1.0f + std::exp(z[1] - z[0]));
    MT_CHECK(mt::close(y[2 * t], e0, 1e-6) && mt::close(y[2 * t] + y[2 * t + 1], 1.0f, 1e-6));
  }
  const int64_t lengths[1] = {2};
  MT_CHECK_THROWS(fastlstm::Error, m.predict(x.data(), 1, 3, 3, lengths, y), "lengths");
  // several threads on one const model
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      bool same = true;
      for (int rep = 0; rep < 50; ++rep) same = same && m.run({floats({1, 3, 3}, x)})[0].values == y;
      ok[k] = same;
    });
  for (auto& t : threads) t.join();
  MT_CHECK((ok == std::vector<int>{1, 1, 1, 1}));
}

// The graph of test_one_input_predict with one piece replaced: `layers` and `outputs` JSON.
std::string graph(const std::string& layers, const std::string& outputs = "[[\"d\",0,0]]",
                  const std::string& inputs = "[{\"shape\":[null,3],\"name\":\"x\"}]") {
  return "{\"class\":\"Model\",\"dtype\":\"float32\",\"inputs\":" + inputs + ",\"layers\":" +
         layers + ",\"outputs\":" + outputs + "}";
}
const std::string kDense =
    "{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3},\"name\":\"d\","
    "\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}";

void refuses(const std::string& model, const std::vector<mt::Tensor>& ts,
             const std::vector<std::string>& words) {
  try {
    mt::load_string(file_of(model, ts));
    std::fprintf(stderr, "  not refused: %s\n", model.substr(0, 300).c_str());
    ++mt::failures();
  } catch (const fastlstm::ModelFileError& e) {
    for (const auto& w : words)
      if (std::string(e.what()).find(w) == std::string::npos) {
        std::fprintf(stderr, "  message lacks '%s': %s\n", w.c_str(), e.what());
        ++mt::failures();
      }
  } catch (const fastlstm::ShapeError& e) {
    for (const auto& w : words)
      if (std::string(e.what()).find(w) == std::string::npos) {
        std::fprintf(stderr, "  message lacks '%s': %s\n", w.c_str(), e.what());
        ++mt::failures();
      }
  }
}

void test_refusals() {
  const auto w = dense_weights();
  // the intact graph loads
  MT_CHECK(mt::load_string(file_of(graph("[" + kDense + "]"), w)).num_outputs() == 1);
  // masks are refused, never ignored
  const std::string tok_in = "[{\"shape\":[null],\"dtype\":\"int64\",\"name\":\"t\"}]";
  refuses(graph("[{\"class\":\"Embedding\",\"config\":{\"input_dim\":5,\"output_dim\":3,"
                "\"mask_zero\":true},\"name\":\"e\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}]",
                "[[\"e\",0,0]]", tok_in),
          {mt::f32("layers.0.embeddings", {5, 3})},
          {"layer \"e\" (Embedding)", "mask_zero=true", "not supported by the C++ runner"});
  refuses(graph("[{\"class\":\"Masking\",\"config\":{\"mask_value\":0.0},\"name\":\"m\","
                "\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}]", "[[\"m\",0,0]]"),
          {}, {"layer \"m\" (Masking)", "not supported by the C++ runner"});
  refuses(graph("[{\"class\":\"Conv1D\",\"config\":{},\"name\":\"c\",\"calls\":[{\"inputs\":"
                "[[\"__input__\",0,0]]}]}]", "[[\"c\",0,0]]"),
          {}, {"(Conv1D)", "not supported by the C++ runner"});
  // tokens only into an Embedding
  refuses(graph("[" + kDense + "]", "[[\"d\",0,0]]",
                "[{\"shape\":[null,3],\"dtype\":\"int64\"}]"),
          w, {"token (int) model input"});
  // references, cycles, names
  refuses(graph("[" + kDense + "]", "[[\"e\",0,0]]"), w, {"model.outputs[0]", "\"e\""});
  refuses(graph("[" + kDense + "]", "[[\"d\",1,0]]"), w, {"called 1 time"});
  refuses(graph("[" + kDense + "]", "[[\"d\",0,1]]"), w, {"output 1"});
  refuses(graph("[" + kDense + "]", "[[\"__input__\",1,0]]"), w, {"model input 1"});
  std::string cyc = kDense;
  cyc.replace(cyc.find("[\"__input__\",0,0]"), 17, "[\"d\",0,0]");
  refuses(graph("[" + cyc + "]"), w, {"cycle"});
  refuses(graph("[" + kDense + "," + kDense + "]"), w, {"names two layers"});
  // sizes and keys
  refuses(graph("[" + kDense + "]", "[[\"d\",0,0]]", "[{\"shape\":[null,16777217]}]"), w,
          {"model.inputs[0].shape[1]"});
  refuses(graph("[" + kDense + "]", "[[\"d\",0,0]]", "[{\"shape\":[null,3],\"size\":3}]"), w,
          {"unknown key \"size\""});
  refuses(graph("[" + kDense + "]", "[[\"d\",0,0]]", "[{\"shape\":[null,4]}]"), w,
          {"layer \"d\" (Dense)", "(None, None, 4)"});
  std::string no_dim = kDense;
  no_dim.replace(no_dim.find(",\"input_dim\":3"), 14, "");
  refuses(graph("[" + no_dim + "]"), w, {"input_dim"});
  refuses(graph("[" + kDense + "]"), {mt::f32("layers.0.kernel", {3, 2})}, {"layers.0.bias"});
  refuses(graph("[" + kDense + "]"), {w[0], w[1], mt::f32("layers.1.kernel", {1})},
          {"layers.1.kernel", "not used"});
  std::string many = "[";
  for (int k = 0; k < 1025; ++k) many += (k ? "," : "") + kDense;
  refuses(graph(many + "]"), w, {"model.layers", "1 to 1024"});
  // 17 levels of nesting
  std::string nested = graph("[" + kDense + "]");
  std::vector<mt::Tensor> nw = w;
  for (int level = 0; level < 17; ++level) {
    nested = nested.substr(0, nested.size() - 1) +
             ",\"name\":\"n\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}";
    nested = graph("[" + nested + "]", "[[\"n\",0,0]]");
    for (auto& t : nw) t.name = "layers.0." + t.name;
  }
  refuses(nested, nw, {"nests models more than 16 deep"});
  // a stateful recurrent layer and an unknown call option
  const std::string lstm =
      "{\"class\":\"LSTM\",\"config\":{\"units\":2,\"input_size\":3,\"stateful\":true},"
      "\"name\":\"l\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}";
  refuses(graph("[" + lstm + "]", "[[\"l\",0,0]]"), {}, {"stateful", "not supported"});
  std::string opt = kDense;
  opt.replace(opt.find("]]}]"), 4, "]],\"kwargs\":{\"training\":true}}]");
  refuses(graph("[" + opt + "]"), w, {"takes no call options"});
}

// A nested functional model called twice and a nested Sequential: the weights of each leaf
// once (layers.{i}.layers.{j}.NAME), the outputs as computed by hand.
void test_nested_models() {
  const std::string inner =
      "{\"class\":\"Model\",\"dtype\":\"float32\",\"inputs\":[{\"shape\":[3]}],\"layers\":[" +
      std::string("{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3},\"name\":\"d\","
                  "\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}]") +
      ",\"outputs\":[[\"d\",0,0]],\"name\":\"inner\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]},"
      "{\"inputs\":[[\"__input__\",1,0]]}]}";
  const std::string seq =
      "{\"class\":\"Sequential\",\"dtype\":\"float32\",\"layers\":[{\"class\":\"Dropout\","
      "\"config\":{\"rate\":0.5}},{\"class\":\"Activation\",\"config\":{\"activation\":\"relu\"}}],"
      "\"name\":\"block\",\"calls\":[{\"inputs\":[[\"inner\",1,0]]}]}";
  const std::string g = graph("[" + inner + "," + seq + "]", "[[\"inner\",0,0],[\"block\",0,0]]",
                              "[{\"shape\":[3]},{\"shape\":[3]}]");
  const Model m = mt::load_string(file_of(g, dense_weights("layers.0.layers.0.")));
  const std::vector<float> a = {1, 2, 3}, b = {-3, 0.5f, 1};
  const auto out = m.run({floats({1, 3}, a), floats({1, 3}, b)});
  const auto da = dense_by_hand(a.data()), db = dense_by_hand(b.data());
  MT_CHECK((m.output_names() == std::vector<std::string>{"inner", "block"}));
  for (int u = 0; u < 2; ++u) {
    MT_CHECK(mt::close(out[0].values[u], da[u], 1e-6));
    MT_CHECK(mt::close(out[1].values[u], db[u] > 0 ? db[u] : 0.0f, 1e-6));
  }
}

}  // namespace

int main() {
  const mt::TestCase tests[] = {{"two_inputs_by_hand", test_two_inputs_by_hand},
                                {"one_input_predict", test_one_input_predict},
                                {"refusals", test_refusals},
                                {"nested_models", test_nested_models}};
  return mt::run_tests(tests);
}
