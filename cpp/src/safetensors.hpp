// A strict safetensors reader (https://huggingface.co/docs/safetensors):
//
//   [u64 little-endian N][N bytes of JSON header, space padded][data: tensors back to back]
//
// Checked before any tensor is read: N is sane and within the file; the header is a JSON object
// of entries {"dtype", "shape", "data_offsets": [begin, end]} plus an optional "__metadata__"
// object of strings; every dtype is known; end - begin == product(shape) * itemsize (no
// overflow); offsets lie in the data section; tensors neither overlap nor leave holes, and the
// last one ends where the file ends (the rules of the reference implementation).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fastlstm::detail {

struct TensorEntry {
  std::string name;
  std::string dtype;           // "F32", "F64", "I64", ... (as in the file)
  size_t itemsize = 0;         // bytes per element
  std::vector<int64_t> shape;  // C order
  uint64_t begin = 0;          // byte offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

class SafeTensors {
 public:
  // Takes the whole file. where: how errors name the source (e.g. the path in quotes).
  // Throws TruncatedFileError or HeaderError.
  static SafeTensors parse(std::vector<char> bytes, const std::string& where);

  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* find(const std::string& name) const;
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  const std::string* metadata_value(const std::string& key) const;  // nullptr if absent

  // Element values converted to float / int64; F32, F64 and BF16 (exact: a bf16 is the upper
  // half of a float32) / I64 (and I32) only, else HeaderError naming the tensor.
  std::vector<float> read_float(const TensorEntry& t) const;
  // The values of an I8 tensor, else HeaderError naming the tensor.
  std::vector<int8_t> read_int8(const TensorEntry& t) const;
  std::vector<int64_t> read_int64(const TensorEntry& t) const;
  // The tensor's bytes as stored (little-endian), end - begin of them.
  const char* raw(const TensorEntry& t) const { return data(t); }

 private:
  const char* data(const TensorEntry& t) const { return bytes_.data() + data_start_ + t.begin; }
  std::vector<char> bytes_;
  size_t data_start_ = 0;
  std::string where_;
  std::vector<TensorEntry> tensors_;  // in header order
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace fastlstm::detail
