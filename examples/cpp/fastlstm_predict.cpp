// fastlstm_predict: load a model file saved by Python (fastlstm.io.save / save_model) and print
// its predictions, with no Python involved.
//
//   fastlstm_predict model.safetensors [input.txt] [--verify] [--summary] [--repeat N]
//
// Input (a file, or stdin when none is given): one sequence per line, whitespace-separated
// numbers, T*F of them for a model on features (step after step, F per step) or T token ids for
// a model that starts with an Embedding. Lines may differ in length (shorter sequences are
// padded and passed with their lengths); empty lines and lines starting with '#' are skipped.
//
// Output: one line per sequence: its outputs at each of its T steps (T*U numbers) for a model
// that returns sequences, else its U outputs. With --repeat N, the whole batch is predicted N
// more times and the median time per call goes to stderr.
//
// A quantized file (a bf16 / int8 module or model saved from Python) runs at its own precision;
// --precision bf16|int8 quantizes a float file's recurrent layers on load (a quantized file
// accepts only its own precision there).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "fastlstm/model.hpp"

namespace {

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "fastlstm_predict: %s\nusage: fastlstm_predict MODEL.safetensors [INPUT.txt] "
               "[--verify] [--summary] [--repeat N] [--precision float32|bf16|int8]\n",
               msg);
  std::exit(2);
}

// Each non-empty, non-comment line as a list of numbers (read as double: exact for token ids).
std::vector<std::vector<double>> read_lines(std::istream& in) {
  std::vector<std::vector<double>> rows;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream is(line);
    std::vector<double> row;
    std::string tok;
    while (is >> tok) {
      char* end = nullptr;
      const double v = std::strtod(tok.c_str(), &end);
      if (end == tok.c_str() || *end != '\0') {
        std::fprintf(stderr, "fastlstm_predict: line %d: '%s' is not a number\n", line_no,
                     tok.c_str());
        std::exit(1);
      }
      row.push_back(v);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, input_path;
  bool verify = false, summary = false;
  int repeat = 0;
  std::string precision = "float32";
  for (int k = 1; k < argc; ++k) {
    const std::string a = argv[k];
    if (a == "--verify") verify = true;
    else if (a == "--summary") summary = true;
    else if (a == "--precision") {  // quantize a float file's recurrent layers on load
      if (++k >= argc) usage("--precision needs float32, bf16 or int8");
      precision = argv[k];
    }
    else if (a == "--repeat") {
      if (++k >= argc) usage("--repeat needs a count");
      repeat = std::atoi(argv[k]);
      if (repeat < 1) usage("--repeat needs a count >= 1");
    } else if (a == "-h" || a == "--help") usage("help");
    else if (!a.empty() && a[0] == '-' && a != "-") usage(("unknown option " + a).c_str());
    else if (model_path.empty()) model_path = a;
    else if (input_path.empty()) input_path = a;
    else usage("too many arguments");
  }
  if (model_path.empty()) usage("no model file given");

  try {
    fastlstm::LoadOptions options;
    options.verify = verify;
    options.precision = fastlstm::parse_precision(precision);
    const fastlstm::Model model = fastlstm::Model::load(model_path, options);
    if (summary) std::fputs(model.summary().c_str(), stderr);

    std::vector<std::vector<double>> rows;
    if (input_path.empty() || input_path == "-") {
      rows = read_lines(std::cin);
    } else {
      std::ifstream f(input_path);
      if (!f) {
        std::fprintf(stderr, "fastlstm_predict: cannot open input file '%s'\n",
                     input_path.c_str());
        return 1;
      }
      rows = read_lines(f);
    }
    if (rows.empty()) {
      std::fprintf(stderr, "fastlstm_predict: no input sequences\n");
      return 1;
    }

    // per step: F numbers (features) or 1 token id
    const int64_t per_step = model.takes_tokens() ? 1 : model.input_size();
    const int64_t B = static_cast<int64_t>(rows.size());
    std::vector<int64_t> lengths(B);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = static_cast<int64_t>(rows[b].size());
      if (n == 0 || n % per_step) {
        std::fprintf(stderr,
                     "fastlstm_predict: sequence %lld has %lld numbers, not a positive multiple "
                     "of the model's %lld features per step\n",
                     (long long)b + 1, (long long)n, (long long)per_step);
        return 1;
      }
      lengths[b] = n / per_step;
    }
    const int64_t T = *std::max_element(lengths.begin(), lengths.end());
    const bool ragged = std::any_of(lengths.begin(), lengths.end(),
                                    [&](int64_t n) { return n != T; });
    const int64_t* len = ragged ? lengths.data() : nullptr;

    std::vector<float> x;
    std::vector<int64_t> tokens;
    if (model.takes_tokens()) tokens.assign(B * T, 0);
    else x.assign(B * T * per_step, 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (size_t k = 0; k < rows[b].size(); ++k) {
        if (model.takes_tokens()) tokens[b * T + k] = static_cast<int64_t>(rows[b][k]);
        else x[b * T * per_step + k] = static_cast<float>(rows[b][k]);
      }

    std::vector<float> y;
    auto run = [&]() {
      return model.takes_tokens() ? model.predict(tokens.data(), B, T, len, y)
                                  : model.predict(x.data(), B, T, per_step, len, y);
    };
    const std::vector<int64_t> shape = run();

    if (repeat > 0) {
      std::vector<double> ms;
      for (int r = 0; r < repeat; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        ms.push_back(std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      std::fprintf(stderr, "predict B=%lld T=%lld: median %.3f ms, min %.3f ms over %d runs\n",
                   (long long)B, (long long)T, ms[ms.size() / 2], ms[0], repeat);
    }

    const int64_t U = shape.back();
    std::string out;
    char buf[32];
    for (int64_t b = 0; b < B; ++b) {
      const int64_t steps = model.returns_sequences() ? lengths[b] : 1;
      const float* row = y.data() + (model.returns_sequences() ? b * T * U : b * U);
      for (int64_t k = 0; k < steps * U; ++k) {
        std::snprintf(buf, sizeof buf, k ? " %.9g" : "%.9g", row[k]);
        out += buf;
      }
      out += '\n';
    }
    std::fputs(out.c_str(), stdout);
  } catch (const fastlstm::Error& e) {
    std::fprintf(stderr, "fastlstm_predict: %s\n", e.what());
    return 1;
  }
  return 0;
}
