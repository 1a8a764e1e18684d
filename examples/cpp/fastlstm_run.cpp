// fastlstm_run: run any model file saved by Python on named inputs, e.g. a functional model
// of several inputs and outputs, with no Python involved.
//
//   fastlstm_run MODEL.safetensors [INPUT.txt] [--summary]
//
// Input (a file, or stdin): for each model input in order, two lines: its shape (batch axis
// first), then its values, row-major (token ids for an input that takes tokens). Output: for
// each model output in order, a line "# NAME d0 d1 ..." (its shape) and a line of its values
// (%.9g). With --summary, the model's inputs, outputs and layer calls go to stderr first.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "fastlstm/model.hpp"

namespace {

std::vector<double> numbers(std::istream& in, const std::string& what) {
  std::string line;
  if (!std::getline(in, line)) throw std::runtime_error("the input ends before " + what);
  std::istringstream is(line);
  std::vector<double> v;
  double d;
  while (is >> d) v.push_back(d);
  if (!is.eof()) throw std::runtime_error(what + " holds something that is not a number");
  return v;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (int64_t d : s) out += " " + (d < 0 ? std::string("None") : std::to_string(d));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, input;
  bool summary = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--summary") summary = true;
    else if (path.empty()) path = a;
    else input = a;
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: fastlstm_run MODEL.safetensors [INPUT.txt] [--summary]\n");
    return 2;
  }
  try {
    const fastlstm::Model model = fastlstm::Model::load(path);
    if (summary) {
      for (size_t k = 0; k < model.num_inputs(); ++k)
        std::fprintf(stderr, "input %s:%s%s\n", model.input_name(k).c_str(),
                     shape_str(model.input_shape(k)).c_str(),
                     model.input_takes_tokens(k) ? " (tokens)" : "");
      for (size_t k = 0; k < model.num_outputs(); ++k)
        std::fprintf(stderr, "output %s:%s\n", model.output_name(k).c_str(),
                     shape_str(model.output_shape(k)).c_str());
      std::fprintf(stderr, "%s", model.summary().c_str());
    }
    std::ifstream file;
    if (!input.empty()) {
      file.open(input);
      if (!file) throw std::runtime_error("cannot open " + input);
    }
    std::istream& in = input.empty() ? std::cin : file;
    std::vector<fastlstm::Tensor> xs(model.num_inputs());
    for (size_t k = 0; k < xs.size(); ++k) {
      for (double d : numbers(in, "the shape of input " + model.input_name(k)))
        xs[k].shape.push_back(static_cast<int64_t>(d));
      const std::vector<double> v = numbers(in, "the values of input " + model.input_name(k));
      if (model.input_takes_tokens(k))
        for (double d : v) xs[k].tokens.push_back(static_cast<int64_t>(d));
      else
        xs[k].values.assign(v.begin(), v.end());
    }
    const std::vector<fastlstm::Tensor> ys = model.run(xs);
    for (size_t k = 0; k < ys.size(); ++k) {
      std::printf("# %s%s\n", model.output_name(k).c_str(), shape_str(ys[k].shape).c_str());
      const bool tok = ys[k].values.empty() && !ys[k].tokens.empty();
      const size_t n = tok ? ys[k].tokens.size() : ys[k].values.size();
      for (size_t e = 0; e < n; ++e)
        std::printf(e ? " %.9g" : "%.9g", tok ? double(ys[k].tokens[e]) : double(ys[k].values[e]));
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fastlstm_run: %s\n", e.what());
    return 1;
  }
  return 0;
}
