#include "safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "fastlstm/model.hpp"
#include "json.hpp"

namespace fastlstm::detail {

namespace {

// The reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeader = 100u * 1000u * 1000u;

size_t dtype_size(const std::string& d) {
  static const std::pair<const char*, size_t> known[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},    {"U32", 4},     {"F32", 4},
      {"F64", 8},  {"I64", 8}, {"U64", 8}};
  for (const auto& k : known)
    if (d == k.first) return k.second;
  return 0;
}

bool host_little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

// Little-endian bytes to a host value of the same size.
template <typename V>
V load_le(const char* p) {
  char tmp[sizeof(V)];
  std::memcpy(tmp, p, sizeof(V));
  if (!host_little_endian()) std::reverse(tmp, tmp + sizeof(V));
  V v;
  std::memcpy(&v, tmp, sizeof(V));
  return v;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t k = 0; k < s.size(); ++k) out += (k ? ", " : "") + std::to_string(s[k]);
  return out + "]";
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;  // bounded by the file size (checked in parse)
  return n;
}

SafeTensors SafeTensors::parse(std::vector<char> bytes, const std::string& where) {
  SafeTensors st;
  st.where_ = where;
  const uint64_t size = bytes.size();
  if (size < 8)
    throw TruncatedFileError(where + " is truncated: " + std::to_string(size) +
                             " bytes, too short for the 8-byte header length of a safetensors "
                             "file");
  const uint64_t n = load_le<uint64_t>(bytes.data());
  if (n > kMaxHeader)
    throw HeaderError(where + " is not a valid safetensors file: the header length field says " +
                      std::to_string(n) + " bytes (the limit is " + std::to_string(kMaxHeader) +
                      ")");
  if (n > size - 8)
    throw TruncatedFileError(where + " is truncated: the header length field says " +
                             std::to_string(n) + " bytes but only " + std::to_string(size - 8) +
                             " bytes follow it");
  if (n < 2)
    throw HeaderError(where + " is not a valid safetensors file: header length " +
                      std::to_string(n) + " is too short for a JSON object");
  const std::string text(bytes.data() + 8, bytes.data() + 8 + n);
  if (text[0] != '{')
    throw HeaderError(where + " is not a valid safetensors file: the header does not start "
                      "with '{'");
  Json header;
  try {
    header = Json::parse(text);
  } catch (const JsonError& e) {
    throw HeaderError(where + ": the safetensors header is not valid JSON: " + e.what() +
                      " of the header (file offset " + std::to_string(8 + e.offset()) + ")");
  }
  if (!header.is_object())
    throw HeaderError(where + ": the safetensors header must be a JSON object");

  const uint64_t data_size = size - 8 - n;
  auto bad = [&](const std::string& name, const std::string& msg) -> HeaderError {
    return HeaderError(where + ": safetensors header entry \"" + name + "\" " + msg);
  };
  for (const auto& [name, v] : header.members()) {
    if (name == "__metadata__") {
      if (!v.is_object())
        throw HeaderError(where + ": __metadata__ must be an object of strings, got " +
                          Json::kind_name(v.kind()));
      for (const auto& [k, s] : v.members()) {
        if (!s.is_string())
          throw HeaderError(where + ": __metadata__[\"" + k + "\"] must be a string, got " +
                            Json::kind_name(s.kind()));
        st.metadata_.emplace_back(k, s.as_string());
      }
      continue;
    }
    if (!v.is_object())
      throw bad(name, "must be an object, got " + std::string(Json::kind_name(v.kind())));
    const Json* dt = v.find("dtype");
    const Json* sh = v.find("shape");
    const Json* off = v.find("data_offsets");
    if (!dt || !sh || !off) throw bad(name, "needs \"dtype\", \"shape\" and \"data_offsets\"");
    if (v.members().size() != 3)
      throw bad(name, "has fields other than \"dtype\", \"shape\" and \"data_offsets\"");
    TensorEntry t;
    t.name = name;
    if (!dt->is_string()) throw bad(name, "has a dtype that is not a string");
    t.dtype = dt->as_string();
    t.itemsize = dtype_size(t.dtype);
    if (t.itemsize == 0) throw bad(name, "has unknown dtype \"" + t.dtype + "\"");
    if (!sh->is_array()) throw bad(name, "has a shape that is not an array");
    // numel * itemsize must stay below the data size: check each factor against it
    uint64_t bytes_needed = t.itemsize;
    bool zero = false;
    for (const Json& d : sh->items()) {
      if (!d.is_integer() || d.as_int() < 0)
        throw bad(name, "has a shape entry that is not a non-negative integer");
      t.shape.push_back(d.as_int());
      if (d.as_int() == 0) zero = true;
    }
    if (zero) {
      bytes_needed = 0;
    } else {
      for (int64_t d : t.shape) {
        if (bytes_needed > data_size / static_cast<uint64_t>(d))
          throw bad(name, "has shape " + shape_str(t.shape) + " of dtype " + t.dtype +
                              ", larger than the " + std::to_string(data_size) +
                              "-byte data section (file truncated?)");
        bytes_needed *= static_cast<uint64_t>(d);
      }
    }
    if (!off->is_array() || off->items().size() != 2 || !off->items()[0].is_integer() ||
        !off->items()[1].is_integer() || off->items()[0].as_int() < 0 ||
        off->items()[1].as_int() < 0)
      throw bad(name, "must have data_offsets [begin, end] of two non-negative integers");
    t.begin = static_cast<uint64_t>(off->items()[0].as_int());
    t.end = static_cast<uint64_t>(off->items()[1].as_int());
    if (t.end < t.begin) throw bad(name, "has data_offsets with end < begin");
    if (t.end > data_size)
      throw TruncatedFileError(where + " is truncated: tensor \"" + name + "\" ends at byte " +
                               std::to_string(t.end) + " of the data section, which has only " +
                               std::to_string(data_size) + " bytes");
    if (t.end - t.begin != bytes_needed)
      throw bad(name, "has shape " + shape_str(t.shape) + " and dtype " + t.dtype + " (" +
                          std::to_string(bytes_needed) + " bytes) but data_offsets span " +
                          std::to_string(t.end - t.begin) + " bytes");
    st.index_.emplace(name, st.tensors_.size());
    st.tensors_.push_back(std::move(t));
  }

  // The data section is exactly the tensors, back to back, in some order.
  std::vector<const TensorEntry*> order;
  for (const auto& t : st.tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t at = 0;
  const TensorEntry* prev = nullptr;
  for (const TensorEntry* t : order) {
    if (t->begin < at)
      throw HeaderError(where + ": tensors \"" + prev->name + "\" and \"" + t->name +
                        "\" overlap in the data section");
    if (t->begin > at)
      throw HeaderError(where + ": " + std::to_string(t->begin - at) +
                        " bytes of the data section before tensor \"" + t->name +
                        "\" belong to no tensor");
    at = t->end;
    prev = t;
  }
  if (at != data_size)
    throw HeaderError(where + ": the data section has " + std::to_string(data_size - at) +
                      " bytes after the last tensor that belong to no tensor");

  st.data_start_ = 8 + n;
  st.bytes_ = std::move(bytes);
  return st;
}

const TensorEntry* SafeTensors::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const std::string* SafeTensors::metadata_value(const std::string& key) const {
  for (const auto& m : metadata_)
    if (m.first == key) return &m.second;
  return nullptr;
}

std::vector<float> SafeTensors::read_float(const TensorEntry& t) const {
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  const char* p = data(t);
  if (t.dtype == "F32") {
    if (host_little_endian()) {
      if (n) std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
    } else {
      for (int64_t k = 0; k < n; ++k) out[k] = load_le<float>(p + 4 * k);
    }
  } else if (t.dtype == "F64") {
    for (int64_t k = 0; k < n; ++k) out[k] = static_cast<float>(load_le<double>(p + 8 * k));
  } else if (t.dtype == "BF16") {
    for (int64_t k = 0; k < n; ++k) {
      const uint32_t bits = uint32_t(load_le<uint16_t>(p + 2 * k)) << 16;
      std::memcpy(&out[k], &bits, 4);
    }
  } else {
    throw HeaderError(where_ + ": tensor \"" + t.name + "\" has dtype " + t.dtype +
                      ", expected F32, F64 or BF16");
  }
  return out;
}

std::vector<int8_t> SafeTensors::read_int8(const TensorEntry& t) const {
  if (t.dtype != "I8")
    throw HeaderError(where_ + ": tensor \"" + t.name + "\" has dtype " + t.dtype +
                      ", expected I8");
  std::vector<int8_t> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) std::memcpy(out.data(), data(t), out.size());
  return out;
}

std::vector<int64_t> SafeTensors::read_int64(const TensorEntry& t) const {
  const int64_t n = t.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  const char* p = data(t);
  if (t.dtype == "I64") {
    for (int64_t k = 0; k < n; ++k) out[k] = load_le<int64_t>(p + 8 * k);
  } else if (t.dtype == "I32") {
    for (int64_t k = 0; k < n; ++k) out[k] = load_le<int32_t>(p + 4 * k);
  } else {
    throw HeaderError(where_ + ": tensor \"" + t.name + "\" has dtype " + t.dtype +
                      ", expected I64");
  }
  return out;
}

}  // namespace fastlstm::detail
