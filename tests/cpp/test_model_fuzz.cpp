// Fuzz the model file reader: random corruptions and truncations of valid files must either
// load (and then run, or fail their self-check) or throw a fastlstm::Error; never crash, hang,
// or throw anything else (bad_alloc, length_error, out_of_range ...). Seeded, so a failure
// reproduces; FASTLSTM_FUZZ_ITERATIONS overrides the iteration count.
#include <cstdlib>
#include <random>

#include "fastlstm/model.hpp"
#include "model_testing.hpp"

namespace {

struct Outcome {
  long loaded = 0, verified = 0, rejected = 0, unexpected = 0;
};

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

void attempt(const std::vector<char>& b, Outcome& o, bool verify) {
  try {
    const fastlstm::Model m = fastlstm::Model::load_from_memory(b.data(), b.size(), false, "fuzz");
    ++o.loaded;
    if (verify && m.has_self_check()) {
      m.verify();  // runs the (possibly corrupted) self-check input through the model
      ++o.verified;
    }
  } catch (const fastlstm::Error&) {
    ++o.rejected;
  } catch (const std::exception& e) {
    ++o.unexpected;
    std::fprintf(stderr, "non-fastlstm exception: %s\n", e.what());
  }
}

}  // namespace

int main() {
  long iterations = 3000;
  if (const char* env = std::getenv("FASTLSTM_FUZZ_ITERATIONS")) iterations = std::atol(env);
  const char* names[] = {"seq_embedding", "seq_backwards", "lstm_stacked_bidir_proj",
                         "lstm_peephole_nobias_f64", "seq_merge_modes", "seq_gru_last"};
  std::mt19937_64 rng(20261123);
  Outcome total;
  for (const char* name : names) {
    const std::vector<char> good = mt::read_bytes(mt::data_path(name));
    Outcome o;
    attempt(good, o, true);  // the unmodified file loads and verifies
    if (o.verified != 1) {
      std::fprintf(stderr, "%s: the unmodified file does not load and verify\n", name);
      return 1;
    }
    for (long i = 0; i < iterations; ++i) attempt(mutate(good, rng), o, true);
    // every truncation point of the first 64 bytes and of the last 64
    for (size_t n = 0; n < std::min<size_t>(64, good.size()); ++n) {
      attempt(std::vector<char>(good.begin(), good.begin() + n), o, false);
      attempt(std::vector<char>(good.begin(), good.end() - 1 - n), o, false);
    }
    std::printf("%-26s loaded %5ld (verified %5ld), rejected %5ld, unexpected %ld\n", name,
                o.loaded, o.verified, o.rejected, o.unexpected);
    total.loaded += o.loaded;
    total.rejected += o.rejected;
    total.unexpected += o.unexpected;
  }
  // the mutations must reach past the first checks: some files still load
  if (total.unexpected || total.loaded < 50 || total.rejected < 1000) {
    std::fprintf(stderr, "FAILED: %ld unexpected exceptions; loaded %ld, rejected %ld\n",
                 total.unexpected, total.loaded, total.rejected);
    return 1;
  }
  std::printf("OK: no crash, no foreign exception\n");
  return 0;
}
