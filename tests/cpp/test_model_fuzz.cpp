// Fuzz the model file reader: random corruptions and truncations of valid files must either
// load (and then run, or fail their self-check) or throw a fastlstm::Error; never crash, hang,
// or throw anything else (bad_alloc, length_error, out_of_range ...). Seeded, so a failure
// reproduces: FASTLSTM_FUZZ_SEED=<n> (default 20261123) or =time (a seed from the clock, printed
// first); FASTLSTM_FUZZ_ITERATIONS mutations per seed file (default 3000). It also replays the
// corpus tests/data/fuzz/*.safetensors (files that once crashed, hung or were misread: each must
// be refused, or load and verify) and reports the slowest file; a file taking more than 5 s
// counts as a hang.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fastlstm/model.hpp"
#include "json.hpp"
#include "model_testing.hpp"

namespace {

struct Outcome {
  // rejected: refused by the reader; check_failed: loaded, but its self-check (or the run of
  // the corrupted self-check input) failed with a fastlstm::Error
  long loaded = 0, verified = 0, rejected = 0, check_failed = 0, unexpected = 0, hangs = 0;
};

double g_slowest = 0.0;  // seconds
std::string g_slowest_what;
constexpr double kHangSeconds = 5.0;

uint64_t header_len(const std::vector<char>& b) {
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k) n |= uint64_t(uint8_t(b[k])) << (8 * k);
  return n;
}

std::vector<char> mutate(const std::vector<char>& good, std::mt19937_64& rng) {
  std::vector<char> b = good;
  const size_t hdr_end = 8 + header_len(good);
  auto pick = [&](size_t lo, size_t hi) {  // [lo, hi)
    return lo + size_t(rng() % std::max<size_t>(1, hi - lo));
  };
  // characters that keep JSON almost valid, so mutations reach the deeper checks
  static const char kJson[] = "{}[]\",:0123456789-+.eE tfnul\\";
  const int kind = int(rng() % 9);
  const int count = 1 + int(rng() % 4);
  switch (kind) {
    case 0:  // flip bits in the header
      for (int k = 0; k < count; ++k) b[pick(0, hdr_end)] ^= char(1u << (rng() % 8));
      break;
    case 1:  // JSON-ish characters in the header
      for (int k = 0; k < count; ++k) b[pick(8, hdr_end)] = kJson[rng() % (sizeof(kJson) - 1)];
      break;
    case 2:  // digits: sizes, offsets, version numbers
      for (int k = 0; k < count; ++k) {
        const size_t at = pick(8, hdr_end);
        if (b[at] >= '0' && b[at] <= '9') b[at] = char('0' + rng() % 10);
        else b[pick(8, hdr_end)] = char('0' + rng() % 10);
      }
      break;
    case 3:  // truncate anywhere
      b.resize(pick(0, good.size()));
      break;
    case 4: {  // a new header length
      const uint64_t choices[] = {0, 1, 7, hdr_end - 8 - 1, hdr_end - 8 + 1, good.size(),
                                  uint64_t(1) << 40, ~uint64_t(0), rng()};
      const uint64_t n = choices[rng() % 9];
      for (int k = 0; k < 8; ++k) b[k] = char((n >> (8 * k)) & 0xff);
      break;
    }
    case 5: {  // delete a range of the header (the length field now disagrees, or not)
      const size_t at = pick(8, hdr_end), len = 1 + rng() % 16;
      b.erase(b.begin() + at, b.begin() + std::min(hdr_end, at + len));
      if (rng() % 2) {  // keep the length field consistent
        const uint64_t n = header_len(good) - std::min(hdr_end, at + len) + at;
        for (int k = 0; k < 8; ++k) b[k] = char((n >> (8 * k)) & 0xff);
      }
      break;
    }
    case 6: {  // duplicate a range of the header into another place
      const size_t from = pick(8, hdr_end), len = 1 + rng() % 24;
      const std::vector<char> piece(b.begin() + from, b.begin() + std::min(hdr_end, from + len));
      b.insert(b.begin() + pick(8, hdr_end), piece.begin(), piece.end());
      if (rng() % 2) {
        const uint64_t n = header_len(good) + piece.size();
        for (int k = 0; k < 8; ++k) b[k] = char((n >> (8 * k)) & 0xff);
      }
      break;
    }
    case 7:  // random bytes in the data (weights, self-check tensors, lengths, tokens)
      if (good.size() > hdr_end)
        for (int k = 0; k < count; ++k) b[pick(hdr_end, good.size())] = char(rng());
      break;
    default:  // anything anywhere
      for (int k = 0; k < count; ++k) b[pick(0, b.size())] = char(rng());
      break;
  }
  return b;
}

void attempt(const std::vector<char>& b, Outcome& o, bool verify, const std::string& what) {
  const auto t0 = std::chrono::steady_clock::now();
  struct Timer {  // however the attempt ends
    Outcome& o;
    const std::string& what;
    std::chrono::steady_clock::time_point t0;
    ~Timer() {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s > g_slowest) g_slowest = s, g_slowest_what = what;
      if (s > kHangSeconds) {
        ++o.hangs;
        std::fprintf(stderr, "HANG: %s took %.1f s\n", what.c_str(), s);
      }
    }
  } timer{o, what, t0};
  bool loaded = false;
  try {
    const fastlstm::Model m = fastlstm::Model::load_from_memory(b.data(), b.size(), false, "fuzz");
    loaded = true;
    ++o.loaded;
    if (verify && m.has_self_check()) {
      m.verify();  // runs the (possibly corrupted) self-check input through the model
      ++o.verified;
    } else if (verify && m.class_name() == "Model") {  // a graph: run it on small inputs
      std::vector<fastlstm::Tensor> xs(m.num_inputs());
      for (size_t k = 0; k < xs.size(); ++k) {
        xs[k].shape = {2};
        for (int64_t d : m.input_shape(k)) xs[k].shape.push_back(d < 0 ? 3 : d);
        size_t n = 1;
        for (int64_t d : xs[k].shape) n *= size_t(d);
        if (n > (size_t(1) << 24)) throw fastlstm::Error("input too large to try");
        if (m.input_takes_tokens(k)) xs[k].tokens.assign(n, 0);
        else xs[k].values.assign(n, 0.5f);
      }
      m.run(xs);
    } else if (verify) {  // no self-check (the quantized seeds): run it on a small input
      std::vector<float> y;
      if (m.takes_tokens()) {
        const std::vector<int64_t> tok(2 * 3, 0);
        m.predict(tok.data(), 2, 3, nullptr, y);
      } else {
        const std::vector<float> x(size_t(2 * 3 * m.input_size()), 0.5f);
        m.predict(x.data(), 2, 3, m.input_size(), nullptr, y);
      }
    }
  } catch (const fastlstm::Error&) {
    ++(loaded ? o.check_failed : o.rejected);
  } catch (const std::exception& e) {
    ++o.unexpected;
    std::fprintf(stderr, "non-fastlstm exception (%s): %s\n", what.c_str(), e.what());
  }
}

}  // namespace

int main() {
  long iterations = 3000;
  if (const char* env = std::getenv("FASTLSTM_FUZZ_ITERATIONS")) iterations = std::atol(env);
  uint64_t seed = 20261123;
  if (const char* env = std::getenv("FASTLSTM_FUZZ_SEED")) {
    if (std::string(env) == "time")
      seed = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
    else
      seed = std::strtoull(env, nullptr, 10);
  }
  std::printf("fuzz seed %llu (reproduce: FASTLSTM_FUZZ_SEED=%llu), %ld mutations per file\n",
              (unsigned long long)seed, (unsigned long long)seed, iterations);
  // the quantized seeds (format_version 2) carry no self-check: they load, nothing to verify
  const char* names[] = {"seq_embedding", "seq_backwards", "lstm_stacked_bidir_proj",
                         "lstm_peephole_nobias_f64", "seq_merge_modes", "seq_gru_last",
                         "lstm_stacked_bidir_proj_int8", "seq_stream_bf16"};
  std::mt19937_64 rng(seed);
  Outcome total;
  long tried = 0;
  std::vector<std::string> seeds(std::begin(names), std::end(names));
  // functional models (run on small inputs): states, shared layers; attention, nesting
  seeds.push_back("../fuzz/seed_functional");
  seeds.push_back("../fuzz/seed_functional_attention");
  for (const std::string& name_s : seeds) {
    const char* name = name_s.c_str();
    const std::vector<char> good = mt::read_bytes(mt::data_path(name));
    Outcome unmodified, o;
    attempt(good, unmodified, true, name);  // the unmodified file loads and verifies
    const bool has_check =
        fastlstm::Model::load_from_memory(good.data(), good.size(), false, name).has_self_check();
    if (unmodified.loaded != 1 || unmodified.verified != (has_check ? 1 : 0)) {
      std::fprintf(stderr, "%s: the unmodified file does not load and verify\n", name);
      return 1;
    }
    for (long i = 0; i < iterations; ++i) {
      // the mutation's own seed, so one failing file can be rebuilt alone
      const uint64_t file_seed = rng();
      std::mt19937_64 frng(file_seed);
      attempt(mutate(good, frng), o, true,
              std::string(name) + " mutation seed " + std::to_string(file_seed));
    }
    tried += iterations;
    // every truncation point of the first 64 bytes and of the last 64
    for (size_t n = 0; n < std::min<size_t>(64, good.size()); ++n) {
      attempt(std::vector<char>(good.begin(), good.begin() + n), o, false,
              std::string(name) + " first " + std::to_string(n) + " bytes");
      attempt(std::vector<char>(good.begin(), good.end() - 1 - n), o, false,
              std::string(name) + " without its last " + std::to_string(n + 1) + " bytes");
      tried += 2;
    }
    std::printf("%-26s rejected %5ld, loaded %5ld (verified %5ld, self-check failed %5ld), "
                "unexpected %ld, hangs %ld\n", name, o.rejected, o.loaded, o.verified,
                o.check_failed, o.unexpected, o.hangs);
    total.loaded += o.loaded;
    total.verified += o.verified;
    total.rejected += o.rejected;
    total.check_failed += o.check_failed;
    total.unexpected += o.unexpected;
    total.hangs += o.hangs;
  }
  // the corpus: files that once crashed, hung or were misread, each with its expected outcome
  // (tests/data/fuzz/expected.json, made with the files by tests/data/make_fuzz_corpus.py)
  Outcome corpus;
  long corpus_files = 0, corpus_wrong = 0;
  const std::string dir = std::string(FASTLSTM_TEST_DATA_DIR) + "/fuzz/";
  const std::vector<char> manifest = mt::read_bytes(dir + "expected.json");
  const fastlstm::detail::Json expected =
      fastlstm::detail::Json::parse(std::string(manifest.begin(), manifest.end()));
  for (const auto& [name, want] : expected.members()) {
    const std::vector<char> b = mt::read_bytes(dir + name + ".safetensors");
    ++corpus_files;
    const bool should_load = want.find("outcome")->as_string() == "loads";
    std::string error;
    const long before = corpus.verified;
    bool has_check = false;
    try {
      attempt(b, corpus, true, name);
      has_check = fastlstm::Model::load_from_memory(b.data(), b.size(), false, name)
                      .has_self_check();
    } catch (const fastlstm::Error& e) {
      error = e.what();
    }
    // a file that loads verifies its self-check, if it carries one
    bool ok = should_load ? error.empty() && corpus.verified == before + (has_check ? 1 : 0)
                          : !error.empty();
    if (!should_load)
      for (const auto& w : want.find("words")->items())
        ok = ok && error.find(w.as_string()) != std::string::npos;
    if (!ok) {
      ++corpus_wrong;
      std::fprintf(stderr, "corpus file %s: expected %s, got %s\n", name.c_str(),
                   should_load ? "it to load and verify" : "a refusal naming the field",
                   error.empty() ? "no error" : error.c_str());
    }
  }
  std::printf("corpus tests/data/fuzz: %ld files, loaded %ld (verified %ld), rejected %ld, "
              "not as expected %ld, unexpected %ld, hangs %ld\n", corpus_files, corpus.loaded,
              corpus.verified, corpus.rejected, corpus_wrong, corpus.unexpected, corpus.hangs);
  std::printf("total: %ld mutated files tried, rejected %ld, loaded %ld (verified %ld, "
              "self-check failed %ld), crashes 0 (we are still running), unexpected exceptions "
              "%ld, hangs %ld; slowest %.3f s (%s)\n", tried, total.rejected, total.loaded,
              total.verified, total.check_failed, total.unexpected, total.hangs, g_slowest,
              g_slowest_what.c_str());
  // the mutations must reach past the first checks: some files still load
  if (total.unexpected || total.hangs || corpus.unexpected || corpus.hangs || corpus_wrong ||
      total.loaded < 50 || total.rejected < 1000 || corpus_files == 0) {
    std::fprintf(stderr, "FAILED: %ld unexpected exceptions, %ld hangs; loaded %ld, rejected "
                 "%ld; corpus %ld files\n", total.unexpected + corpus.unexpected,
                 total.hangs + corpus.hangs, total.loaded, total.rejected, corpus_files);
    return 1;
  }
  std::printf("OK: no crash, no hang, no foreign exception\n");
  return 0;
}
