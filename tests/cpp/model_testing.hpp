// Small helpers shared by the model tests: checks that count failures, file bytes, a minimal
// safetensors writer for hand-made (and deliberately broken) model files.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastlstm/model.hpp"

namespace mt {

inline int& failures() {
  static int n = 0;
  return n;
}

#define MT_CHECK(cond)                                                           \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++mt::failures();                                                          \
    }                                                                            \
  } while (0)

// expr must throw E (or a subclass) whose what() contains each of the given substrings.
#define MT_CHECK_THROWS(E, expr, ...)                                                         \
  do {                                                                                        \
    bool thrown_ = false;                                                                     \
    try {                                                                                     \
      (void)(expr);                                                                           \
    } catch (const E& e_) {                                                                   \
      thrown_ = true;                                                                         \
      for (const char* s_ : {"", __VA_ARGS__})                                                \
        if (!std::strstr(e_.what(), s_)) {                                                    \
          std::fprintf(stderr, "%s:%d: message of %s lacks \"%s\": %s\n", __FILE__, __LINE__, \
                       #E, s_, e_.what());                                                    \
          ++mt::failures();                                                                   \
        }                                                                                     \
    } catch (const std::exception& e_) {                                                      \
      thrown_ = true;                                                                         \
      std::fprintf(stderr, "%s:%d: %s threw the wrong exception type: %s\n", __FILE__,        \
                   __LINE__, #expr, e_.what());                                               \
      ++mt::failures();                                                                       \
    }                                                                                         \
    if (!thrown_) {                                                                           \
      std::fprintf(stderr, "%s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #E);    \
      ++mt::failures();                                                                       \
    }                                                                                         \
  } while (0)

inline std::string data_path(const std::string& name) {
  return std::string(FASTLSTM_TEST_DATA_DIR) + "/cpp/" + name + ".safetensors";
}

inline std::vector<char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("test: cannot open " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline bool close(float a, float e, double rel) {
  const double d = std::abs(double(a) - double(e));
  return d <= rel * (1.0 + std::abs(double(e)));
}

// A JSON string literal of s.
inline std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

struct Tensor {
  std::string name;
  std::string dtype;           // "F32", "F64", "I64"
  std::vector<int64_t> shape;
  std::string bytes;           // little-endian data
};

inline Tensor f32(const std::string& name, std::vector<int64_t> shape, float start = 0.1f) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) v[k] = start * float((k * 7) % 11 - 5);
  Tensor t{name, "F32", std::move(shape), std::string(v.size() * 4, '\0')};
  if (n) std::memcpy(&t.bytes[0], v.data(), t.bytes.size());
  return t;
}

// The whole file: tensors back to back in the given order. header_extra is spliced into the
// header object as is (e.g. broken entries); offsets may be overridden by a hook on the JSON.
inline std::string make_file(const std::vector<Tensor>& ts,
                             const std::vector<std::pair<std::string, std::string>>& meta,
                             const std::string& header_extra = "") {
  std::string header = "{", data;
  for (const Tensor& t : ts) {
    std::string shape = "[";
    for (size_t k = 0; k < t.shape.size(); ++k)
      shape += (k ? "," : "") + std::to_string(t.shape[k]);
    shape += "]";
    header += quote(t.name) + ":{\"dtype\":" + quote(t.dtype) + ",\"shape\":" + shape +
              ",\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + t.bytes.size()) + "]},";
    data += t.bytes;
  }
  header += header_extra;
  header += "\"__metadata__\":{";
  for (size_t k = 0; k < meta.size(); ++k)
    header += (k ? "," : "") + quote(meta[k].first) + ":" + quote(meta[k].second);
  header += "}}";
  while (header.size() % 8) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out[k] = char((n >> (8 * k)) & 0xff);
  return out + header + data;
}

inline fastlstm::Model load_string(const std::string& bytes, bool verify = false) {
  return fastlstm::Model::load_from_memory(bytes.data(), bytes.size(), verify, "test.safetensors");
}

struct TestCase {
  const char* name;
  void (*fn)();
};

// Runs each test, counting it failed when it fails a check or throws; prints one line per test
// and the "N passed, N failed" summary; the exit code for main().
template <size_t N>
int run_tests(const TestCase (&tests)[N]) {
  int failed = 0;
  for (const auto& t : tests) {
    const int before = failures();
    try {
      t.fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: unexpected exception: %s\n", t.name, e.what());
      ++failures();
    }
    const bool ok = failures() == before;
    failed += !ok;
    std::printf("[%s] %s\n", ok ? "  OK  " : "FAILED", t.name);
  }
  std::printf("%d passed, %d failed\n", int(N) - failed, failed);
  return failed ? 1 : 0;
}

}  // namespace mt
