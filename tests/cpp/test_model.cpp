// Model files in C++: the committed fixtures (made by tests/data/make_cpp_fixtures.py with a
// float64 NumPy oracle) load, predict what the oracle computed, stream consistently without
// allocating, run concurrently; broken files and bad inputs give clear errors.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <thread>

#if defined(__unix__)
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "fastlstm/model.hpp"
#include "fastlstm/threads.hpp"
#include "json.hpp"
#include "model_testing.hpp"
#include "safetensors.hpp"

using fastlstm::Model;

#include "rt_counters.hpp"

// ---------------------------------------------------------------- fixtures
static const char* kFixtures[] = {
    "lstm_stacked_bidir_proj", "lstm_peephole_nobias_f64", "gru_stacked_bidir",
    "lstm_stream",             "seq_embedding",            "seq_backwards",
    "seq_gru_last",            "seq_merge_modes",          "seq_stream",
    "seq_embedding_stream"};

struct Check {  // the self-check tensors of a fixture, read independently of Model
  std::vector<int64_t> in_shape, out_shape;
  std::vector<float> x, y;
  std::vector<int64_t> tokens, lengths;
};

static Check read_check(const std::string& name) {
  using fastlstm::detail::SafeTensors;
  const SafeTensors st = SafeTensors::parse(mt::read_bytes(mt::data_path(name)), name);
  Check c;
  const auto* x = st.find("selfcheck.input");
  const auto* y = st.find("selfcheck.output");
  const auto* l = st.find("selfcheck.lengths");
  c.in_shape = x->shape;
  c.out_shape = y->shape;
  if (x->dtype == "I64") c.tokens = st.read_int64(*x);
  else c.x = st.read_float(*x);
  c.y = st.read_float(*y);
  if (l) c.lengths = st.read_int64(*l);
  return c;
}

static std::vector<int64_t> predict(const Model& m, const Check& c, std::vector<float>& out) {
  const int64_t* len = c.lengths.empty() ? nullptr : c.lengths.data();
  if (!c.tokens.empty()) return m.predict(c.tokens.data(), c.in_shape[0], c.in_shape[1], len, out);
  return m.predict(c.x.data(), c.in_shape[0], c.in_shape[1], c.in_shape[2], len, out);
}

static void test_fixtures_predict() {
  for (const char* name : kFixtures) {
    const Model m = Model::load(mt::data_path(name), /*verify=*/true);
    MT_CHECK(m.has_self_check());
    const Check c = read_check(name);
    std::vector<float> out;
    const auto shape = predict(m, c, out);
    MT_CHECK(shape == c.out_shape);
    MT_CHECK(out.size() == c.y.size());
    MT_CHECK(m.output_size() == c.out_shape.back());
    MT_CHECK(m.returns_sequences() == (c.out_shape.size() == 3));
    MT_CHECK(m.takes_tokens() == !c.tokens.empty());
    if (!m.takes_tokens()) MT_CHECK(m.input_size() == c.in_shape[2]);
    double worst = 0;
    for (size_t k = 0; k < std::min(out.size(), c.y.size()); ++k)
      worst = std::max(worst, std::abs(double(out[k]) - c.y[k]) / (1.0 + std::abs(c.y[k])));
    if (!(worst <= 2e-5)) {
      std::fprintf(stderr, "%s: worst relative error %g\n", name, worst);
      ++mt::failures();
    }
    // the output is not trivially zero: the check could fail
    double norm = 0;
    for (float v : out) norm += std::abs(v);
    MT_CHECK(norm > 0.01);
  }
}

static void test_summary_and_accessors() {
  const Model m = Model::load(mt::data_path("seq_embedding"));
  MT_CHECK(m.class_name() == "Sequential");
  MT_CHECK(m.takes_tokens());
  MT_CHECK(m.input_size() == 11);
  MT_CHECK(m.output_size() == 3);
  MT_CHECK(!m.returns_sequences());
  MT_CHECK(m.can_stream() == false);  // bidirectional GRU
  const std::string s = m.summary();
  MT_CHECK(s.find("layers.3 (Bidirectional GRU)") != std::string::npos);
  MT_CHECK(s.find("layers.0 (Embedding)") != std::string::npos);
  const Model b = Model::load(mt::data_path("lstm_stacked_bidir_proj"));
  MT_CHECK(b.class_name() == "LSTM");
  MT_CHECK(b.input_size() == 7);
  MT_CHECK(b.output_size() == 10);  // 2 directions x proj 5
  MT_CHECK(b.returns_sequences());
}

// A wrong stored output makes verify fail (and verify is not a no-op).
static void test_verify_detects_mismatch() {
  using fastlstm::detail::SafeTensors;
  std::vector<char> bytes = mt::read_bytes(mt::data_path("seq_backwards"));
  const SafeTensors st = SafeTensors::parse(bytes, "x");
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) n |= uint64_t(uint8_t(bytes[k])) << (8 * k);
  const auto* y = st.find("selfcheck.output");
  float v;
  const size_t at = 8 + n + y->begin + 4 * 9;  // element 9
  std::memcpy(&v, &bytes[at], 4);
  v += 0.01f;
  std::memcpy(&bytes[at], &v, 4);
  const Model ok = Model::load_from_memory(bytes.data(), bytes.size(), false, "tampered");
  MT_CHECK_THROWS(fastlstm::SelfCheckError, ok.verify(), "tampered", "self-check failed",
                  "1 of 84", "[0, 2, 1]");
  MT_CHECK_THROWS(fastlstm::SelfCheckError,
                  Model::load_from_memory(bytes.data(), bytes.size(), true, "tampered"),
                  "self-check failed");
  MT_CHECK_THROWS(fastlstm::ModelFileError,
                  Model::load_from_memory(bytes.data(), bytes.size(), true, "tampered"));
}

static void test_load_from_memory_matches_load() {
  const std::vector<char> bytes = mt::read_bytes(mt::data_path("gru_stacked_bidir"));
  const Model a = Model::load(mt::data_path("gru_stacked_bidir"));
  const Model b = Model::load_from_memory(bytes.data(), bytes.size());
  const Check c = read_check("gru_stacked_bidir");
  std::vector<float> ya, yb;
  predict(a, c, ya);
  predict(b, c, yb);
  MT_CHECK(ya == yb);
  MT_CHECK(b.path() == "<memory>");
}

// ---------------------------------------------------------------- hand-made files
static std::string dense_model(const std::string& extra_layer_cfg = "", int version = 1) {
  return "{\"format_version\":" + std::to_string(version) +
         ",\"model\":{\"class\":\"Sequential\",\"dtype\":\"float32\",\"layers\":[{\"class\":"
         "\"Dense\",\"config\":{\"units\":2,\"input_dim\":3,\"activation\":\"linear\"," +
         extra_layer_cfg + "\"use_bias\":true}}]}}";
}
static std::vector<mt::Tensor> dense_tensors() {
  return {mt::f32("layers.0.kernel", {3, 2}), mt::f32("layers.0.bias", {2})};
}

static void test_hand_made_dense() {
  // y = x @ kernel + bias, computed here by hand
  const Model m = mt::load_string(mt::make_file(dense_tensors(), {{"fastlstm", dense_model()}}));
  const mt::Tensor k = mt::f32("layers.0.kernel", {3, 2}), b = mt::f32("layers.0.bias", {2});
  float kv[6], bv[2];
  std::memcpy(kv, k.bytes.data(), 24);
  std::memcpy(bv, b.bytes.data(), 8);
  const float x[2 * 3] = {1.0f, -2.0f, 0.5f, 3.0f, 0.25f, -1.0f};  // B=1, T=2
  std::vector<float> y;
  const auto shape = m.predict(x, 1, 2, 3, nullptr, y);
  MT_CHECK((shape == std::vector<int64_t>{1, 2, 2}));
  for (int t = 0; t < 2; ++t)
    for (int u = 0; u < 2; ++u) {
      float e = bv[u];
      for (int i = 0; i < 3; ++i) e += x[t * 3 + i] * kv[i * 2 + u];
      MT_CHECK(mt::close(y[t * 2 + u], e, 1e-6));
    }
}

static void test_file_errors() {
  using namespace fastlstm;
  MT_CHECK_THROWS(FileOpenError, Model::load("/nonexistent/dir/model.safetensors"),
                  "/nonexistent/dir/model.safetensors", "No such file");
  MT_CHECK_THROWS(FileOpenError, Model::load("/tmp"), "'/tmp'", "directory");

  const std::vector<char> good = mt::read_bytes(mt::data_path("seq_embedding"));
  MT_CHECK_THROWS(TruncatedFileError, Model::load_from_memory(good.data(), 5, false, "t5"),
                  "t5", "truncated", "5 bytes");
  MT_CHECK_THROWS(TruncatedFileError, Model::load_from_memory(good.data(), 100, false, "t100"),
                  "truncated", "header length field says");
  MT_CHECK_THROWS(TruncatedFileError,
                  Model::load_from_memory(good.data(), good.size() - 3, false, "tm3"),
                  "truncated", "ends at byte");
  MT_CHECK_THROWS(TruncatedFileError, Model::load_from_memory(good.data(), 0, false, "empty"),
                  "empty");

  // a real file, truncated on disk
  const std::string path = "/tmp/fastlstm_test_truncated.safetensors";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(good.data(), static_cast<std::streamsize>(good.size() / 2));
  }
  MT_CHECK_THROWS(TruncatedFileError, Model::load(path), path.c_str(), "truncated");
  std::remove(path.c_str());

  const auto T = dense_tensors();
  MT_CHECK_THROWS(FormatVersionError,
                  mt::load_string(mt::make_file(T, {{"fastlstm", dense_model("", 3)}})),
                  "format_version 3", "reads format_version 1 to 2", "newer");
  MT_CHECK_THROWS(FormatVersionError,
                  mt::load_string(mt::make_file(T, {{"fastlstm", dense_model("", 0)}})),
                  "format_version 0", "reads format_version 1 to 2");
  // version 2 (quantized files) reads float models too
  MT_CHECK(mt::load_string(mt::make_file(T, {{"fastlstm", dense_model("", 2)}})).output_size() ==
           2);
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(T, {})),
                  "not a fastlstm model file");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, {{"fastlstm", "{\"format_version\":1,"}})),
                  "__metadata__[\"fastlstm\"] is not valid JSON", "at byte");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, {{"fastlstm", "{\"format_version\":1}"}})),
                  "has no \"model\"");

  // shapes
  MT_CHECK_THROWS(ShapeError,
                  mt::load_string(mt::make_file({mt::f32("layers.0.kernel", {2, 3}),
                                                 mt::f32("layers.0.bias", {2})},
                                                {{"fastlstm", dense_model()}})),
                  "test.safetensors", "\"layers.0.kernel\"", "[2, 3]", "expected [3, 2]");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file({mt::f32("layers.0.kernel", {3, 2})},
                                                {{"fastlstm", dense_model()}})),
                  "\"layers.0.bias\"", "missing");
  auto extra = T;
  extra.push_back(mt::f32("layers.0.stray", {4}));
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(extra, {{"fastlstm", dense_model()}})),
                  "\"layers.0.stray\"", "not used");
  // the recurrent layer after Dense does not take Dense's 2 features
  const std::string chain =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3}},"
      "{\"class\":\"GRU\",\"config\":{\"units\":4,\"input_size\":5}}]}}";
  auto gru = T;
  gru.push_back(mt::f32("layers.1.weight_ih_l0", {12, 5}));
  gru.push_back(mt::f32("layers.1.weight_hh_l0", {12, 4}));
  gru.push_back(mt::f32("layers.1.bias_ih_l0", {12}));
  gru.push_back(mt::f32("layers.1.bias_hh_l0", {12}));
  MT_CHECK_THROWS(ShapeError, mt::load_string(mt::make_file(gru, {{"fastlstm", chain}})),
                  "layers.1 (GRU) has input_size=5", "layers.0 (Dense) gives 2");
  // a recurrent layer's weight of the wrong shape names the tensor and the config
  gru[2] = mt::f32("layers.1.weight_ih_l0", {15, 2});
  const std::string chain2 =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3}},"
      "{\"class\":\"GRU\",\"config\":{\"units\":5,\"input_size\":2}}]}}";
  MT_CHECK_THROWS(ShapeError, mt::load_string(mt::make_file(gru, {{"fastlstm", chain2}})),
                  "\"layers.1.weight_hh_l0\"", "expected [15, 5]", "hidden_size=5");

  // architecture fields
  const std::string unknown =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Conv1D\",\"config\":{}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", unknown}})),
                  "\"Conv1D\"", "model.layers[0].class");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(
                      mt::make_file(T, {{"fastlstm", dense_model("\"units\":\"2\",")}})),
                  "duplicate key \"units\"");
  const std::string act =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3,\"activation\":\"gelu\"}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(T, {{"fastlstm", act}})),
                  "activation", "\"gelu\"");
  const std::string neg =
      "{\"format_version\":1,\"model\":{\"class\":\"LSTM\",\"config\":{\"input_size\":-3,"
      "\"hidden_size\":4}}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", neg}})),
                  "model.config.input_size", "-3");
  const std::string huge =
      "{\"format_version\":1,\"model\":{\"class\":\"LSTM\",\"config\":{\"input_size\":3,"
      "\"hidden_size\":4,\"num_layers\":1000000000}}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(T, {{"fastlstm", huge}})),
                  "model.config.num_layers", "[1, 1024]", "1000000000");

  // one reader, strict: unknown or misspelled keys, wrong JSON types, invalid UTF-8, dtypes
  // that differ from the model's, sizes above the documented limits
  auto dense_file = [&](const std::string& cfg) {
    return mt::make_file(T, {{"fastlstm", dense_model(cfg)}});
  };
  MT_CHECK_THROWS(HeaderError, mt::load_string(dense_file("\"activaton\":\"relu\",")),
                  "model.layers[0].config", "unknown key \"activaton\"");
  MT_CHECK_THROWS(HeaderError, mt::load_string(dense_file("\"name\":\"d\",")),
                  "unknown key \"name\"");
  const std::string misspelled =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"LSTM\",\"config\":{\"units\":2,\"input_size\":3,"
      "\"return_sequnces\":true}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", misspelled}})),
                  "model.layers[0].config", "\"return_sequnces\"");
  const std::string extra_top = "{\"format_version\":1,\"model\":{\"class\":\"LSTM\"," 
                                "\"config\":{\"input_size\":3,\"hidden_size\":4}},\"x\":1}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", extra_top}})),
                  "__metadata__[\"fastlstm\"]", "unknown key \"x\"");
  MT_CHECK_THROWS(HeaderError, mt::load_string(dense_file("\"use_bias\":\"false\",")),
                  "duplicate key");  // use_bias is also in dense_model: refused either way
  const std::string str_bool =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Embedding\",\"config\":{\"input_dim\":5,\"output_dim\":2,"
      "\"mask_zero\":\"false\"}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", str_bool}})),
                  "model.layers[0].config.mask_zero", "true or false", "a string");
  const std::string big_units =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Dense\",\"config\":{\"units\":16777217,\"input_dim\":3}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", big_units}})),
                  "model.layers[0].config.units", "16777216", "16777217");
  const std::string bad_utf8 =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"layers\":["
      "{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3,"
      "\"activation\":\"lin\xff\"}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(T, {{"fastlstm", bad_utf8}})),
                  "invalid UTF-8");
  const std::string f64_model =
      "{\"format_version\":1,\"model\":{\"class\":\"Sequential\",\"dtype\":\"float64\","
      "\"layers\":[{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3}}]}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(T, {{"fastlstm", f64_model}})),
                  "\"layers.0.kernel\"", "dtype F32, expected F64");
  const std::string gru_peep =
      "{\"format_version\":1,\"model\":{\"class\":\"GRU\",\"config\":{\"input_size\":3,"
      "\"hidden_size\":4,\"peephole\":true}}}";
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file({}, {{"fastlstm", gru_peep}})),
                  "GRU has no proj_size or peephole");

  // safetensors structure
  const auto meta = std::vector<std::pair<std::string, std::string>>{{"fastlstm", dense_model()}};
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, meta, "\"x\":{\"dtype\":\"F32\",\"shape\":"
                                                         "[2],\"data_offsets\":[0,8]},")),
                  "overlap");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, meta, "\"x\":{\"dtype\":\"F32\",\"shape\":"
                                                         "[3],\"data_offsets\":[0,8]},")),
                  "\"x\"", "12 bytes", "span 8 bytes");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, meta, "\"x\":{\"dtype\":\"Q7\",\"shape\":"
                                                         "[2],\"data_offsets\":[0,8]},")),
                  "unknown dtype \"Q7\"");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, meta, "\"x\":{\"dtype\":\"F32\",\"shape\":"
                                                         "[-2],\"data_offsets\":[0,8]},")),
                  "non-negative");
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, meta, "\"x\":{\"dtype\":\"F32\",\"shape\":"
                                                         "[1099511627776,1099511627776],"
                                                         "\"data_offsets\":[0,8]},")),
                  "larger than");
  MT_CHECK_THROWS(HeaderError, mt::load_string(mt::make_file(T, meta, "\"x\":[1,2,},")),
                  "not valid JSON", "at byte");
  std::string gap = mt::make_file(T, meta);
  gap += "pad!";  // bytes after the last tensor
  MT_CHECK_THROWS(HeaderError, mt::load_string(gap), "4 bytes after the last tensor");
  std::string big = mt::make_file(T, meta);
  big[5] = 0x7f;  // header length ~ 2^47
  MT_CHECK_THROWS(HeaderError, mt::load_string(big), "header length field", "limit");
}

static void test_self_check_errors() {
  using namespace fastlstm;
  // no self-check: verify=true refuses
  const auto T = dense_tensors();
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, {{"fastlstm", dense_model()}}), true),
                  "has no self-check");
  // a self-check naming a missing tensor
  MT_CHECK_THROWS(HeaderError,
                  mt::load_string(mt::make_file(T, {{"fastlstm", dense_model()},
                                                    {"fastlstm_selfcheck",
                                                     "{\"input\":\"in\",\"output\":\"out\"}"}})),
                  "\"in\"", "self-check input", "missing");
  // an output of the wrong shape
  auto t2 = T;
  t2.push_back(mt::f32("in", {1, 4, 3}));
  t2.push_back(mt::f32("out", {1, 4, 3}));
  MT_CHECK_THROWS(ShapeError,
                  mt::load_string(mt::make_file(t2, {{"fastlstm", dense_model()},
                                                     {"fastlstm_selfcheck",
                                                      "{\"input\":\"in\",\"output\":\"out\","
                                                      "\"lengths\":null}"}})),
                  "\"out\"", "expected [1, 4, 2]");
}

static void test_predict_errors() {
  using namespace fastlstm;
  const Model m = Model::load(mt::data_path("seq_backwards"));
  std::vector<float> x(2 * 4 * 3, 0.5f), y;
  MT_CHECK_THROWS(ShapeError, m.predict(x.data(), 2, 6, 2, nullptr, y), "F=2", "expects 3");
  const int64_t bad_len[2] = {4, 5};
  MT_CHECK_THROWS(ShapeError, m.predict(x.data(), 2, 4, 3, bad_len, y), "lengths[1] = 5",
                  "[0, T=4]");
  const Model bare = Model::load(mt::data_path("gru_stacked_bidir"));
  std::vector<float> xb(2 * 4 * 4, 0.5f);
  const int64_t zero_len[2] = {4, 0};
  MT_CHECK_THROWS(ShapeError, bare.predict(xb.data(), 2, 4, 4, zero_len, y), "lengths[1] = 0",
                  "[1, T=4]");
  MT_CHECK_THROWS(ShapeError, m.predict(x.data(), 0, 4, 3, nullptr, y), "B must be >= 1");
  const int64_t tok[4] = {1, 2, 3, 4};
  MT_CHECK_THROWS(Error, m.predict(tok, 1, 4, nullptr, y), "not tokens");

  const Model e = Model::load(mt::data_path("seq_embedding"));
  MT_CHECK_THROWS(Error, e.predict(x.data(), 1, 4, 3, nullptr, y), "Embedding", "int64 tokens");
  const int64_t oor[4] = {1, 2, 11, 4};
  MT_CHECK_THROWS(Error, e.predict(oor, 2, 2, nullptr, y), "tokens[1, 0] = 11", "[0, 11)");
  const int64_t pad[8] = {1, 2, 0, 0, 0, 0, 0, 0};
  const int64_t lens[2] = {2, 1};
  MT_CHECK(e.predict(pad, 2, 4, lens, y) == (std::vector<int64_t>{2, 3}));
  const int64_t too_long[2] = {2, 5};
  MT_CHECK_THROWS(ShapeError, e.predict(pad, 2, 4, too_long, y), "lengths[1] = 5");

  // the model still works after the errors (workspaces came back to the pool)
  std::vector<float> y1, y2;
  m.predict(x.data(), 2, 4, 3, nullptr, y1);
  m.release_workspaces();
  m.predict(x.data(), 2, 4, 3, nullptr, y2);
  MT_CHECK(y1 == y2);
}

// mask_zero: trailing zeros are padding; the result equals the unpadded rows run separately;
// explicit lengths shorten further; an all-padding row is an empty sequence, whose output does
// not depend on its tokens
static void test_mask_zero_padding() {
  const Model e = Model::load(mt::data_path("seq_embedding"));
  const int64_t padded[2 * 6] = {3, 1, 4, 0, 0, 0, 9, 0, 2, 6, 5, 3};
  std::vector<float> y, y0, y1, y2;
  e.predict(padded, 2, 6, nullptr, y);
  e.predict(padded, 1, 3, nullptr, y0);
  e.predict(padded + 6, 1, 6, nullptr, y1);
  for (int u = 0; u < 3; ++u) {
    MT_CHECK(mt::close(y[u], y0[u], 1e-6));
    MT_CHECK(mt::close(y[3 + u], y1[u], 1e-6));
  }
  const int64_t shorter[2] = {6, 4};  // row 0 stays 3 (min with its padding), row 1 cut to 4
  e.predict(padded, 2, 6, shorter, y);
  e.predict(padded + 6, 1, 4, nullptr, y2);
  for (int u = 0; u < 3; ++u) {
    MT_CHECK(mt::close(y[u], y0[u], 1e-6));
    MT_CHECK(mt::close(y[3 + u], y2[u], 1e-6));
  }
  const int64_t empty_row[2 * 4] = {0, 0, 0, 0, 5, 6, 7, 8};
  const int64_t len0[2] = {4, 0};
  std::vector<float> ya, yb;
  e.predict(empty_row, 2, 4, nullptr, ya);  // row 0 is all padding
  e.predict(empty_row + 4, 1, 4, len0 + 1, yb);  // a real row cut to length 0
  for (int u = 0; u < 3; ++u) MT_CHECK(mt::close(ya[u], yb[u], 1e-6));
  float sum = 0;
  for (int u = 0; u < 3; ++u) sum += ya[u];
  MT_CHECK(mt::close(sum, 1.0f, 1e-5));  // softmax
  MT_CHECK(!mt::close(ya[0], ya[3], 1e-3));  // the other row is not empty
}

// lengths: a padded sequence gives what it gives alone (go_backwards and bidirectional too)
static void test_lengths_match_unpadded() {
  for (const char* name : {"seq_backwards", "seq_merge_modes", "lstm_stacked_bidir_proj"}) {
    const Model m = Model::load(mt::data_path(name));
    const int64_t F = m.input_size(), U = m.output_size(), B = 3, T = 6;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> d(-1, 1);
    std::vector<float> x(B * T * F);
    for (auto& v : x) v = d(rng);
    const int64_t lens[3] = {6, 2, 4};
    std::vector<float> y, ys;
    m.predict(x.data(), B, T, F, lens, y);
    for (int64_t b = 0; b < B; ++b) {
      m.predict(x.data() + b * T * F, 1, lens[b], F, nullptr, ys);
      const int64_t steps = m.returns_sequences() ? lens[b] : 1;
      for (int64_t s = 0; s < steps; ++s)
        for (int64_t u = 0; u < U; ++u) {
          const int64_t at = m.returns_sequences() ? (b * T + s) * U + u : b * U + u;
          MT_CHECK(mt::close(y[at], ys[s * U + u], 1e-5));
        }
    }
  }
}

// ---------------------------------------------------------------- streams
static void test_stream_matches_predict() {
  for (const char* name : {"lstm_stream", "seq_stream", "seq_embedding_stream"}) {
    const Model m = Model::load(mt::data_path(name));
    MT_CHECK(m.can_stream());
    const Check c = read_check(name);
    const int64_t B = c.in_shape[0], T = c.in_shape[1], U = m.output_size();
    const int64_t F = m.takes_tokens() ? 1 : c.in_shape[2];
    Model::Stream s(m, B);
    MT_CHECK(s.batch() == B && s.output_size() == U);
    for (int pass = 0; pass < 2; ++pass) {  // the second pass after reset()
      for (int64_t t = 0; t < T; ++t) {
        std::vector<float> y_t(B * U), x_t(B * F);
        std::vector<int64_t> tok_t(B);
        for (int64_t b = 0; b < B; ++b) {
          if (m.takes_tokens()) tok_t[b] = c.tokens[b * T + t];
          else std::copy_n(c.x.data() + (b * T + t) * F, F, x_t.data() + b * F);
        }
        if (m.takes_tokens()) s.step(tok_t.data(), y_t.data());
        else s.step(x_t.data(), y_t.data());
        // what predict gives at step t: the full output's row t, or the prefix's final output
        std::vector<float> want;
        if (m.returns_sequences()) {
          for (int64_t b = 0; b < B; ++b)
            want.insert(want.end(), c.y.begin() + (b * T + t) * U,
                        c.y.begin() + (b * T + t + 1) * U);
        } else {
          std::vector<float> prefix(B * (t + 1) * F);
          for (int64_t b = 0; b < B; ++b)
            std::copy_n(c.x.data() + b * T * F, (t + 1) * F, prefix.data() + b * (t + 1) * F);
          m.predict(prefix.data(), B, t + 1, F, nullptr, want);
        }
        for (int64_t k = 0; k < B * U; ++k) MT_CHECK(mt::close(y_t[k], want[k], 2e-5));
      }
      s.reset();
    }
  }
  const Model tm = Model::load(mt::data_path("seq_embedding_stream"));
  Model::Stream ts(tm, 2);
  const int64_t bad_tok[2] = {3, 99};
  const float fx[8] = {};
  float ty[4];
  MT_CHECK_THROWS(fastlstm::Error, ts.step(bad_tok, ty), "tokens_t[1] = 99", "[0, 13)");
  MT_CHECK_THROWS(fastlstm::Error, ts.step(fx, ty), "int64 tokens");
  const Model bi = Model::load(mt::data_path("seq_backwards"));
  MT_CHECK(!bi.can_stream());
  MT_CHECK_THROWS(fastlstm::Error, Model::Stream(bi, 1), "go_backwards", "use predict");
}

static void test_stream_allocates_nothing() {
  if (!kCountsAllocations) {
    std::printf("  (allocation counting is off in sanitizer builds)\n");
    return;
  }
  for (const char* name : {"lstm_stream", "seq_stream", "seq_embedding_stream"}) {
    const Model m = Model::load(mt::data_path(name));
    for (int64_t B : {1, 3}) {
      Model::Stream s(m, B);
      std::vector<float> x(B * m.input_size(), 0.25f), y(B * m.output_size());
      std::vector<int64_t> tok(B, 5);
      g_allocs = 0;
      g_counting = true;
      for (int k = 0; k < 50; ++k) {
        if (m.takes_tokens()) s.step(tok.data(), y.data());
        else s.step(x.data(), y.data());
      }
      s.reset();
      g_counting = false;
      if (g_allocs != 0) {
        std::fprintf(stderr, "%s B=%lld: %ld allocations in 50 steps\n", name, (long long)B,
                     g_allocs.load());
        ++mt::failures();
      }
    }
  }
  // the counter does count: a predict call allocates (its output vector at least)
  const Model m = Model::load(mt::data_path("seq_stream"));
  std::vector<float> x(2 * 5 * 4, 0.1f), y;
  g_allocs = 0;
  g_counting = true;
  m.predict(x.data(), 2, 5, 4, nullptr, y);
  g_counting = false;
  MT_CHECK(g_allocs > 0);
}

// ---------------------------------------------------------------- low precision
// Load-time quantization: predict stays close to the float model but is not the same, the
// summary and precision() say so, and a stream of the quantized model gives what its predict
// gives, step by step, without allocating.
static void test_load_time_quantization() {
  using fastlstm::Precision;
  for (const char* name : {"lstm_stream", "seq_stream", "lstm_stacked_bidir_proj"}) {
    const Model f = Model::load(mt::data_path(name));
    const Check c = read_check(name);
    std::vector<float> yf;
    predict(f, c, yf);
    for (Precision p : {Precision::BF16, Precision::Int8}) {
      fastlstm::LoadOptions o;
      o.verify = true;  // the file's self-check, at the file's precision
      o.precision = p;
      const Model q = Model::load(mt::data_path(name), o);
      MT_CHECK(q.precision() == p);
      MT_CHECK(f.precision() == Precision::Float32);
      MT_CHECK(q.summary().find(fastlstm::precision_name(p)) != std::string::npos);
      std::vector<float> yq;
      MT_CHECK(predict(q, c, yq) == c.out_shape);
      double worst = 0;
      for (size_t k = 0; k < yq.size(); ++k) worst = std::max(worst, double(std::abs(yq[k] - yf[k])));
      if (!(worst > 1e-6 && worst < 0.05)) {
        std::fprintf(stderr, "%s %s: max |quantized - float| = %g\n", name,
                     fastlstm::precision_name(p), worst);
        ++mt::failures();
      }
      if (!q.can_stream() || q.takes_tokens() || !c.lengths.empty()) continue;
      const int64_t B = c.in_shape[0], T = c.in_shape[1], F = c.in_shape[2];
      const int64_t U = q.output_size();
      Model::Stream s(q, B);
      std::vector<float> xt(B * F), yt(B * U);
      g_allocs = 0;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = 0; b < B; ++b)
          std::copy_n(c.x.data() + (b * T + t) * F, F, xt.data() + b * F);
        g_counting = kCountsAllocations;
        s.step(xt.data(), yt.data());
        g_counting = false;
        if (q.returns_sequences())
          for (int64_t b = 0; b < B; ++b)
            for (int64_t u = 0; u < U; ++u)
              MT_CHECK(std::abs(yt[b * U + u] - yq[(b * T + t) * U + u]) < 1e-4f);
      }
      MT_CHECK(g_allocs == 0);
    }
  }
}

// Quantized files (made by make_cpp_fixtures.py, which quantizes the float fixture's weights
// from the format's description): loading one gives bitwise what quantizing the float file on
// load gives (the stored codes and scales are what the kernels pack), predict and streams; a
// quantized file refuses another load precision.
static void test_quantized_files() {
  using fastlstm::Precision;
  for (const char* name : {"lstm_stacked_bidir_proj", "seq_stream"}) {
    const Check c = read_check(name);
    for (Precision p : {Precision::BF16, Precision::Int8}) {
      const std::string qname = std::string(name) + "_" + fastlstm::precision_name(p);
      fastlstm::LoadOptions o;
      o.precision = p;
      const Model onload = Model::load(mt::data_path(name), o);
      const Model file = Model::load(mt::data_path(qname));
      MT_CHECK(file.precision() == p);
      MT_CHECK(file.summary().find(fastlstm::precision_name(p)) != std::string::npos);
      MT_CHECK(Model::load(mt::data_path(qname), o).precision() == p);  // its own precision
      std::vector<float> ya, yb, yf;
      MT_CHECK(predict(onload, c, ya) == c.out_shape);
      MT_CHECK(predict(file, c, yb) == c.out_shape);
      MT_CHECK(ya.size() == yb.size() &&
               std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)) == 0);
      predict(Model::load(mt::data_path(name)), c, yf);  // the float model: not the same
      double worst = 0;
      for (size_t k = 0; k < yb.size(); ++k) worst = std::max(worst, double(std::abs(yb[k] - yf[k])));
      MT_CHECK(worst > 1e-6 && worst < 0.05);
      const Precision other = p == Precision::BF16 ? Precision::Int8 : Precision::BF16;
      fastlstm::LoadOptions bad;
      bad.precision = other;
      const std::string is_q = std::string("is quantized to ") + fastlstm::precision_name(p);
      const std::string cannot =
          std::string("cannot be loaded at precision ") + fastlstm::precision_name(other);
      MT_CHECK_THROWS(fastlstm::ModelFileError, Model::load(mt::data_path(qname), bad),
                      qname.c_str(), is_q.c_str(), cannot.c_str());
      if (!file.can_stream() || !c.lengths.empty()) continue;
      // a stream of the quantized file gives its predict's outputs step by step
      const int64_t B = c.in_shape[0], T = c.in_shape[1], F = c.in_shape[2];
      const int64_t U = file.output_size();
      Model::Stream s(file, B);
      std::vector<float> xt(B * F), yt(B * U);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = 0; b < B; ++b)
          std::copy_n(c.x.data() + (b * T + t) * F, F, xt.data() + b * F);
        s.step(xt.data(), yt.data());
      }
      if (!file.returns_sequences())  // the last step's output is predict's
        for (int64_t k = 0; k < B * U; ++k) MT_CHECK(std::abs(yt[k] - yb[k]) < 1e-5f);
    }
  }
}

// ---------------------------------------------------------------- threads
static void test_concurrent_predict() {
  for (const char* name : {"seq_backwards", "lstm_stacked_bidir_proj", "seq_embedding"}) {
    const Model m = Model::load(mt::data_path(name));
    const int kInputs = 12;
    struct In {
      int64_t B, T;
      std::vector<float> x;
      std::vector<int64_t> tok, len;
    };
    std::vector<In> ins;
    std::mt19937 rng(11);
    for (int k = 0; k < kInputs; ++k) {
      In in;
      in.B = 1 + k % 4;
      in.T = 3 + (k * 5) % 9;
      std::uniform_real_distribution<float> d(-1, 1);
      std::uniform_int_distribution<int64_t> tk(1, m.takes_tokens() ? m.input_size() - 1 : 1);
      std::uniform_int_distribution<int64_t> ln(1, in.T);
      for (int64_t i = 0; i < in.B * in.T * m.input_size() && !m.takes_tokens(); ++i)
        in.x.push_back(d(rng));
      for (int64_t i = 0; i < in.B * in.T && m.takes_tokens(); ++i) in.tok.push_back(tk(rng));
      if (k % 2)
        for (int64_t b = 0; b < in.B; ++b) in.len.push_back(ln(rng));
      ins.push_back(std::move(in));
    }
    auto run = [&](const In& in, std::vector<float>& y) {
      const int64_t* len = in.len.empty() ? nullptr : in.len.data();
      if (m.takes_tokens()) m.predict(in.tok.data(), in.B, in.T, len, y);
      else m.predict(in.x.data(), in.B, in.T, m.input_size(), len, y);
    };
    std::vector<std::vector<float>> serial(kInputs);
    for (int k = 0; k < kInputs; ++k) run(ins[k], serial[k]);
    const int kThreads = 8, kRounds = 10;
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t]() {
        std::vector<float> y;
        for (int r = 0; r < kRounds; ++r)
          for (int k = 0; k < kInputs; ++k) {
            const int j = (k + t * 5 + r) % kInputs;  // threads work on different inputs
            run(ins[j], y);
            if (y != serial[j]) ++mismatches;
          }
      });
    for (auto& th : threads) th.join();
    if (mismatches) {
      std::fprintf(stderr, "%s: %d concurrent results differ from serial\n", name,
                   mismatches.load());
      ++mt::failures();
    }
  }
}

// The pool's limits, and a fork() of a process whose workers are running: the child makes its
// own (the parent's do not exist there) and gets the parent's answer instead of hanging.
static void test_pool_limits_and_fork() {
  const int before = fastlstm::get_num_threads(), cpus = fastlstm::available_cpus();
  MT_CHECK(cpus >= 1);
  MT_CHECK_THROWS(fastlstm::Error, fastlstm::set_num_threads(0), "between 1 and");
  MT_CHECK_THROWS(fastlstm::Error, fastlstm::set_num_threads(4 * cpus + 1), "got");
  fastlstm::set_num_threads(2);
  MT_CHECK(fastlstm::get_num_threads() == 2);
#if defined(__unix__)
  const Model m = Model::load(mt::data_path("lstm_stacked_bidir_proj"));
  std::vector<float> x(9 * 13 * m.input_size(), 0.25f), y, y_child;
  m.predict(x.data(), 9, 13, m.input_size(), nullptr, y);  // the workers exist now
  const pid_t pid = fork();
  if (pid == 0) {
    alarm(60);  // a hang ends the child with SIGALRM: the test fails instead of blocking
    m.predict(x.data(), 9, 13, m.input_size(), nullptr, y_child);
    _exit(y_child == y ? 0 : 3);
  }
  MT_CHECK(pid > 0);
  int status = -1;
  MT_CHECK(waitpid(pid, &status, 0) == pid);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    std::fprintf(stderr, "the forked child %s %d\n",
                 WIFSIGNALED(status) ? "died of signal" : "exited with", WIFSIGNALED(status)
                 ? WTERMSIG(status) : WEXITSTATUS(status));
    ++mt::failures();
  }
  m.predict(x.data(), 9, 13, m.input_size(), nullptr, y_child);  // the parent's pool still works
  MT_CHECK(y_child == y);
#endif
  fastlstm::set_num_threads(before);
}

// ---------------------------------------------------------------- the JSON reader
// A functional model (Python's Model) runs (tests/cpp/test_model_graph.cpp has the rest); a
// compile state (optimizer slots) is Python's business: its tensors are checked and ignored.
static void test_functional_and_compile_state() {
  using namespace fastlstm;
  const std::string graph =
      "{\"format_version\":2,\"model\":{\"class\":\"Model\",\"dtype\":\"float32\","
      "\"inputs\":[{\"shape\":[null,3],\"dtype\":\"float32\",\"name\":\"x\"}],"
      "\"layers\":[{\"class\":\"Dense\",\"config\":{\"units\":2,\"input_dim\":3},"
      "\"name\":\"d\",\"calls\":[{\"inputs\":[[\"__input__\",0,0]]}]}],"
      "\"outputs\":[[\"d\",0,0]]}}";
  const Model fn = mt::load_string(mt::make_file(dense_tensors(), {{"fastlstm", graph}}));
  MT_CHECK(fn.class_name() == "Model" && fn.input_names() == std::vector<std::string>{"x"});
  // Sequential + compile state: the dense model loads and predicts as without it
  const std::string cstate = "{\"loss\":\"mse\",\"loss_weights\":null,\"metrics\":null,"
                             "\"optimizer\":null}";
  const std::string v1 = dense_model("", 1), v2 = dense_model("", 2);
  std::vector<mt::Tensor> ts = dense_tensors();
  ts.push_back(mt::f32("optimizer.m.layers.0.kernel", {3, 2}));
  ts.push_back(mt::f32("optimizer.m.layers.0.bias", {2}));
  const Model plain = mt::load_string(mt::make_file(dense_tensors(), {{"fastlstm", v1}}));
  const Model with = mt::load_string(mt::make_file(ts, {{"fastlstm", v2},
                                                        {"fastlstm_compile", cstate}}));
  const float x[3] = {1.0f, -2.0f, 0.5f};
  std::vector<float> ya, yb;
  plain.predict(x, 1, 1, 3, nullptr, ya);
  with.predict(x, 1, 1, 3, nullptr, yb);
  MT_CHECK(ya.size() == 2 && ya == yb);
  fastlstm::Tensor xt;
  xt.shape = {1, 1, 3};
  xt.values.assign(x, x + 3);
  MT_CHECK(fn.run({xt})[0].values == ya);
  // slots without a compile state, in a version-1 file, of the wrong shape, for no weight
  const std::string no_state = mt::make_file(ts, {{"fastlstm", v2}});
  MT_CHECK_THROWS(HeaderError, mt::load_string(no_state), "optimizer.m.layers.0.kernel",
                  "not used");
  const std::string old = mt::make_file(ts, {{"fastlstm", v1}, {"fastlstm_compile", cstate}});
  MT_CHECK_THROWS(HeaderError, mt::load_string(old), "fastlstm_compile", "format_version 2");
  std::vector<mt::Tensor> bad = dense_tensors();
  bad.push_back(mt::f32("optimizer.m.layers.0.kernel", {2, 3}));
  const std::string shape = mt::make_file(bad, {{"fastlstm", v2}, {"fastlstm_compile", cstate}});
  MT_CHECK_THROWS(ShapeError, mt::load_string(shape), "optimizer.m.layers.0.kernel", "[2, 3]",
                  "[3, 2]");
  bad.back() = mt::f32("optimizer.m.layers.9.kernel", {3, 2});
  const std::string none = mt::make_file(bad, {{"fastlstm", v2}, {"fastlstm_compile", cstate}});
  MT_CHECK_THROWS(HeaderError, mt::load_string(none), "optimizer.m.layers.9.kernel",
                  "names no weight");
  const std::string json = mt::make_file(ts, {{"fastlstm", v2}, {"fastlstm_compile", "[1,"}});
  MT_CHECK_THROWS(HeaderError, mt::load_string(json), "fastlstm_compile", "not valid JSON");
}

static void test_json() {
  using fastlstm::detail::Json;
  using fastlstm::detail::JsonError;
  const Json j = Json::parse(
      " {\"a\": [1, -2.5e3, true, false, null], \"s\": \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9"
      "\\ud83d\\ude00\", \"big\": 12345678901234, \"e\": {}} ");
  MT_CHECK(j.is_object() && j.members().size() == 4);
  MT_CHECK(j.find("a")->items()[0].is_integer() && j.find("a")->items()[0].as_int() == 1);
  MT_CHECK(!j.find("a")->items()[1].is_integer() && j.find("a")->items()[1].as_double() == -2500);
  MT_CHECK(j.find("a")->items()[2].as_bool() && j.find("a")->items()[4].is_null());
  MT_CHECK(j.find("s")->as_string() == "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
  MT_CHECK(j.find("big")->as_int() == 12345678901234LL);
  MT_CHECK(j.find("e")->is_object() && j.find("zz") == nullptr);
  MT_CHECK_THROWS(JsonError, Json::parse("{\"a\":1,}"), "at byte 7");
  MT_CHECK_THROWS(JsonError, Json::parse("[01]"), "leading zero", "at byte 1");
  MT_CHECK_THROWS(JsonError, Json::parse("{\"a\":1,\"a\":2}"), "duplicate key \"a\"");
  MT_CHECK_THROWS(JsonError, Json::parse("\"abc"), "unterminated");
  MT_CHECK_THROWS(JsonError, Json::parse("[1] x"), "after the JSON value", "at byte 4");
  MT_CHECK_THROWS(JsonError, Json::parse("\"\\ud800\""), "surrogate");
  MT_CHECK_THROWS(JsonError, Json::parse("1e999"), "out of range");
  MT_CHECK_THROWS(JsonError, Json::parse("tru"), "invalid literal");
  MT_CHECK_THROWS(JsonError, Json::parse(std::string(100, '[') + std::string(100, ']')),
                  "nested deeper");
  MT_CHECK_THROWS(JsonError, Json::parse(std::string("\"a\tb\"")), "control character");
  // strings must be valid UTF-8 (RFC 3629)
  MT_CHECK(Json::parse("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"").as_string() ==
           "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  MT_CHECK_THROWS(JsonError, Json::parse("\"a\xff\""), "invalid UTF-8", "at byte 2");
  MT_CHECK_THROWS(JsonError, Json::parse("\"\xc3\""), "invalid UTF-8", "continuation");
  MT_CHECK_THROWS(JsonError, Json::parse("\"\xc0\x80\""), "invalid UTF-8");  // overlong
  MT_CHECK_THROWS(JsonError, Json::parse("\"\xe0\x80\xaf\""), "overlong");
  MT_CHECK_THROWS(JsonError, Json::parse("\"\xed\xa0\x80\""), "surrogate");
  MT_CHECK_THROWS(JsonError, Json::parse("\"\xf4\x90\x80\x80\""), "above U+10FFFF");
  MT_CHECK_THROWS(JsonError, Json::parse("\"\xe2\x82"), "truncated");
  MT_CHECK_THROWS(JsonError, Json::parse("{\"k\xff\":1}"), "invalid UTF-8");
  MT_CHECK_THROWS(JsonError, Json::parse("[\xc3\xa9]"), "unexpected character");
}

int main() {
  const mt::TestCase tests[] = {{"fixtures_predict", test_fixtures_predict},
               {"summary_and_accessors", test_summary_and_accessors},
               {"verify_detects_mismatch", test_verify_detects_mismatch},
               {"load_from_memory_matches_load", test_load_from_memory_matches_load},
               {"hand_made_dense", test_hand_made_dense},
               {"file_errors", test_file_errors},
               {"self_check_errors", test_self_check_errors},
               {"predict_errors", test_predict_errors},
               {"mask_zero_padding", test_mask_zero_padding},
               {"lengths_match_unpadded", test_lengths_match_unpadded},
               {"stream_matches_predict", test_stream_matches_predict},
               {"stream_allocates_nothing", test_stream_allocates_nothing},
               {"concurrent_predict", test_concurrent_predict},
               {"pool_limits_and_fork", test_pool_limits_and_fork},
               {"load_time_quantization", test_load_time_quantization},
               {"quantized_files", test_quantized_files},
               {"functional_and_compile_state", test_functional_and_compile_state},
               {"json", test_json}};
  return mt::run_tests(tests);
}
