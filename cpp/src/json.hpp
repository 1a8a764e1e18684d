// A small strict JSON reader (RFC 8259) for model file headers: no comments, no trailing commas,
// no duplicate keys, strings of valid UTF-8 only, a nesting limit, byte positions in every
// error. Objects keep their order.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fastlstm::detail {

// A parse error; offset is the byte position in the parsed text where it was detected.
class JsonError : public std::runtime_error {
 public:
  JsonError(const std::string& what, size_t offset)
      : std::runtime_error(what + " at byte " + std::to_string(offset)), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_object() const { return kind_ == Kind::Object; }
  // A number written without fraction or exponent that fits in int64.
  bool is_integer() const { return kind_ == Kind::Number && is_int_; }

  bool as_bool() const { return bool_; }
  double as_double() const { return num_; }
  int64_t as_int() const { return int_; }
  const std::string& as_string() const { return str_; }
  const std::vector<Json>& items() const { return arr_; }
  const std::vector<std::pair<std::string, Json>>& members() const { return obj_; }
  // nullptr when absent (objects only)
  const Json* find(const std::string& key) const;

  static const char* kind_name(Kind k);

  // Throws JsonError. max_depth bounds arrays/objects nesting (the parser recurses).
  static Json parse(const std::string& text, int max_depth = 64);

 private:
  friend class JsonParser;
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  bool is_int_ = false;
  double num_ = 0.0;
  int64_t int_ = 0;
  std::string str_;
  std::vector<Json> arr_;
  std::vector<std::pair<std::string, Json>> obj_;
};

}  // namespace fastlstm::detail
