// fastlstm_seq2seq: greedy decoding with an encoder and a decoder saved by Python (Keras's
// seq2seq recipe: examples/python/seq2seq.py builds the two inference models), with no Python
// involved.
//
//   fastlstm_seq2seq ENCODER.safetensors DECODER.safetensors --start S --end E
//                    [--max-len N] [--probs] [INPUT.txt]
//
// The encoder maps a source sequence to the recurrent states ([h, c] of an LSTM): inputs
// [source], outputs [states...]. The decoder takes one step and the states and returns the
// next-token probabilities and the new states: inputs [step, states...], outputs
// [probabilities, states...], the states in the encoder's order. The step is a token id
// [1, 1] when the decoder's first input takes tokens (it starts with an Embedding), else a
// one-hot vector [1, 1, V]. The encoder runs once per sequence; the decoder runs step by step
// from the start token S, each step fed the argmax of the last, until it emits the end token E
// (kept in the output) or after N steps (default 50).
//
// Input (a file, or stdin): one source sequence per line, token ids (an encoder on tokens) or
// T*F numbers (an encoder on features). Output: one line per sequence with the decoded token
// ids; with --probs a second line with every step's probabilities (V per step, %.9g).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "fastlstm/model.hpp"

namespace {

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "fastlstm_seq2seq: %s\n", msg.c_str());
  std::exit(1);
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "fastlstm_seq2seq: %s\nusage: fastlstm_seq2seq ENCODER.safetensors "
               "DECODER.safetensors --start S --end E [--max-len N] [--probs] [INPUT.txt]\n",
               msg);
  std::exit(2);
}

int64_t to_int(const char* s, const char* what) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || v < 0) usage((std::string(what) + " needs an integer >= 0").c_str());
  return v;
}

// the number of features of a shape's last axis, or fail
int64_t last_axis(const std::vector<int64_t>& s, const std::string& what) {
  if (s.empty() || s.back() < 1) fail(what + " has no fixed last axis");
  return s.back();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  int64_t start = -1, end = -1, max_len = 50;
  bool probs = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--start" && i + 1 < argc) start = to_int(argv[++i], "--start");
    else if (a == "--end" && i + 1 < argc) end = to_int(argv[++i], "--end");
    else if (a == "--max-len" && i + 1 < argc) max_len = to_int(argv[++i], "--max-len");
    else if (a == "--probs") probs = true;
    else if (a.rfind("--", 0) == 0) usage(("unknown option " + a).c_str());
    else files.push_back(a);
  }
  if (files.size() < 2 || files.size() > 3) usage("needs an encoder and a decoder file");
  if (start < 0 || end < 0) usage("needs --start and --end");
  try {
    const fastlstm::Model enc = fastlstm::Model::load(files[0]);
    const fastlstm::Model dec = fastlstm::Model::load(files[1]);
    const size_t n_states = enc.num_outputs();
    if (dec.num_inputs() != n_states + 1 || dec.num_outputs() != n_states + 1)
      fail("the decoder must take [step, " + std::to_string(n_states) + " states] and return "
           "[probabilities, " + std::to_string(n_states) + " states] (the encoder returns " +
           std::to_string(n_states) + " states); it takes " + std::to_string(dec.num_inputs()) +
           " inputs and returns " + std::to_string(dec.num_outputs()));
    if (enc.num_inputs() != 1) fail("the encoder must take one input");
    const bool enc_tokens = enc.input_takes_tokens(0);
    const bool dec_tokens = dec.input_takes_tokens(0);
    const int64_t enc_f = enc_tokens ? 1 : last_axis(enc.input_shape(0), "the encoder's input");
    const int64_t V = last_axis(dec.output_shape(0), "the decoder's probabilities");
    const int64_t dec_f = dec_tokens ? 1 : last_axis(dec.input_shape(0), "the decoder's step");
    std::ifstream file;
    if (files.size() == 3) {
      file.open(files[2]);
      if (!file) fail("cannot open " + files[2]);
    }
    std::istream& in = files.size() == 3 ? file : std::cin;
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream is(line);
      std::vector<double> row;
      double v;
      while (is >> v) row.push_back(v);
      if (row.empty()) continue;
      if (row.size() % size_t(enc_f)) fail("a source line needs a multiple of " + std::to_string(enc_f) + " numbers");
      // the encoder, once
      fastlstm::Tensor src;
      src.shape = {1, int64_t(row.size()) / enc_f};
      if (enc_tokens) {
        for (double d : row) src.tokens.push_back(static_cast<int64_t>(d));
      } else {
        src.shape.push_back(enc_f);
        src.values.assign(row.begin(), row.end());
      }
      std::vector<fastlstm::Tensor> states = enc.run({src});
      // the decoder, step by step: [step, states...] -> [probabilities, states...]
      std::vector<int64_t> out;
      std::vector<float> all_probs;
      int64_t tok = start;
      for (int64_t t = 0; t < max_len; ++t) {
        std::vector<fastlstm::Tensor> ins(1);
        ins[0].shape = {1, 1};
        if (dec_tokens) {
          ins[0].tokens = {tok};
        } else {
          if (tok >= dec_f) fail("token " + std::to_string(tok) + " has no one-hot input");
          ins[0].shape.push_back(dec_f);
          ins[0].values.assign(size_t(dec_f), 0.0f);
          ins[0].values[size_t(tok)] = 1.0f;
        }
        for (auto& s : states) ins.push_back(std::move(s));
        std::vector<fastlstm::Tensor> res = dec.run(ins);
        const std::vector<float>& p = res[0].values;  // [1, 1, V] or [1, V]: the last V
        const float* last = p.data() + p.size() - size_t(V);
        int64_t best = 0;
        for (int64_t k = 1; k < V; ++k)
          if (last[k] > last[best]) best = k;
        all_probs.insert(all_probs.end(), last, last + V);
        out.push_back(best);
        states.assign(std::make_move_iterator(res.begin() + 1), std::make_move_iterator(res.end()));
        tok = best;
        if (best == end) break;
      }
      for (size_t k = 0; k < out.size(); ++k) std::printf(k ? " %lld" : "%lld", static_cast<long long>(out[k]));
      std::printf("\n");
      if (probs) {
        for (size_t k = 0; k < all_probs.size(); ++k) std::printf(k ? " %.9g" : "%.9g", double(all_probs[k]));
        std::printf("\n");
      }
    }
  } catch (const std::exception& e) {
    fail(e.what());
  }
  return 0;
}
