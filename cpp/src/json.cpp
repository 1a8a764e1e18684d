#include "json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace fastlstm::detail {

const Json* Json::find(const std::string& key) const {
  for (const auto& m : obj_)
    if (m.first == key) return &m.second;
  return nullptr;
}

const char* Json::kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    case Kind::Object: return "an object";
  }
  return "?";
}

class JsonParser {
 public:
  JsonParser(const std::string& s, int max_depth) : s_(s), max_depth_(max_depth) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected data after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw JsonError(what, pos_); }
  [[noreturn]] void fail_at(const std::string& what, size_t at) const {
    throw JsonError(what, at);
  }

  bool eof() const { return pos_ >= s_.size(); }
  char peek() const { return eof() ? '\0' : s_[pos_]; }

  void skip_ws() {
    while (!eof() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  void expect_word(const char* w) {
    const size_t start = pos_;
    for (const char* p = w; *p; ++p, ++pos_)
      if (eof() || s_[pos_] != *p) fail_at(std::string("invalid literal (expected '") + w + "')",
                                           start);
  }

  Json parse_value(int depth) {
    if (eof()) fail("unexpected end of JSON text (expected a value)");
    Json v;
    const char c = peek();
    if (c == '{') {
      parse_object(v, depth + 1);
    } else if (c == '[') {
      parse_array(v, depth + 1);
    } else if (c == '"') {
      v.kind_ = Json::Kind::String;
      v.str_ = parse_string();
    } else if (c == 't') {
      expect_word("true");
      v.kind_ = Json::Kind::Bool;
      v.bool_ = true;
    } else if (c == 'f') {
      expect_word("false");
      v.kind_ = Json::Kind::Bool;
      v.bool_ = false;
    } else if (c == 'n') {
      expect_word("null");
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      parse_number(v);
    } else {
      fail(std::string("unexpected character '") + printable(c) + "' (expected a value)");
    }
    return v;
  }

  static std::string printable(char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string(1, c);
    static const char* hex = "0123456789abcdef";
    return std::string("\\x") + hex[u >> 4] + hex[u & 15];
  }

  void parse_object(Json& v, int depth) {
    if (depth > max_depth_) fail("JSON nested deeper than " + std::to_string(max_depth_));
    v.kind_ = Json::Kind::Object;
    ++pos_;  // '{'
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      return;
    }
    std::vector<std::pair<std::string, size_t>> keys;  // for the duplicate check
    while (true) {
      skip_ws();
      if (peek() != '"') fail("expected a string key in object");
      const size_t key_pos = pos_;
      std::string key = parse_string();
      skip_ws();
      if (peek() != ':') fail("expected ':' after object key");
      ++pos_;
      skip_ws();
      Json member = parse_value(depth);
      keys.emplace_back(key, key_pos);
      v.obj_.emplace_back(std::move(key), std::move(member));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      fail(eof() ? "unexpected end of JSON text inside an object"
                 : "expected ',' or '}' in object");
    }
    std::sort(keys.begin(), keys.end());
    for (size_t k = 1; k < keys.size(); ++k)
      if (keys[k].first == keys[k - 1].first)
        fail_at("duplicate key \"" + keys[k].first + "\"", keys[k].second);
  }

  void parse_array(Json& v, int depth) {
    if (depth > max_depth_) fail("JSON nested deeper than " + std::to_string(max_depth_));
    v.kind_ = Json::Kind::Array;
    ++pos_;  // '['
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      return;
    }
    while (true) {
      skip_ws();
      v.arr_.push_back(parse_value(depth));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        break;
      }
      fail(eof() ? "unexpected end of JSON text inside an array"
                 : "expected ',' or ']' in array");
    }
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned u = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      u <<= 4;
      if (c >= '0' && c <= '9') u |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') u |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') u |= unsigned(c - 'A' + 10);
      else fail_at("invalid hex digit in \\u escape", pos_ - 1);
    }
    return u;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  // One multi-byte UTF-8 sequence starting at pos_, appended to out: refused if truncated,
  // overlong, a UTF-16 surrogate, or above U+10FFFF (RFC 3629).
  void utf8_sequence(std::string& out) {
    const size_t start = pos_;
    const unsigned char b0 = static_cast<unsigned char>(s_[pos_]);
    int n;
    unsigned cp, min;
    if (b0 >= 0xC2 && b0 <= 0xDF) n = 1, cp = b0 & 0x1Fu, min = 0x80;
    else if (b0 >= 0xE0 && b0 <= 0xEF) n = 2, cp = b0 & 0x0Fu, min = 0x800;
    else if (b0 >= 0xF0 && b0 <= 0xF4) n = 3, cp = b0 & 0x07u, min = 0x10000;
    else fail_at("invalid UTF-8 (byte " + printable(char(b0)) + " cannot start a character)", start);
    for (int k = 1; k <= n; ++k) {
      if (start + k >= s_.size()) fail_at("invalid UTF-8 (truncated character)", start);
      const unsigned char b = static_cast<unsigned char>(s_[start + k]);
      if ((b & 0xC0u) != 0x80u)
        fail_at("invalid UTF-8 (byte " + printable(char(b)) + " is not a continuation byte)",
                start + k);
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if (cp < min) fail_at("invalid UTF-8 (overlong encoding)", start);
    if (cp >= 0xD800 && cp <= 0xDFFF) fail_at("invalid UTF-8 (encoded UTF-16 surrogate)", start);
    if (cp > 0x10FFFF) fail_at("invalid UTF-8 (code point above U+10FFFF)", start);
    out.append(s_, start, size_t(n) + 1);
    pos_ = start + size_t(n) + 1;
  }

  std::string parse_string() {
    const size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (eof()) fail_at("unterminated string", start);
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20)
        fail("control character " + printable(c) + " inside a string (must be escaped)");
      if (static_cast<unsigned char>(c) >= 0x80) {
        utf8_sequence(out);
        continue;
      }
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      ++pos_;
      if (eof()) fail_at("unterminated string", start);
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              fail("unpaired UTF-16 surrogate in \\u escape");
            pos_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("invalid UTF-16 low surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired UTF-16 surrogate in \\u escape");
          }
          put_utf8(out, cp);
          break;
        }
        default:
          fail_at("invalid escape '\\" + printable(e) + "' in string", pos_ - 2);
      }
    }
  }

  void parse_number(Json& v) {
    const size_t start = pos_;
    auto digit = [&]() { return !eof() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    if (peek() == '-') ++pos_;
    if (!digit()) fail("invalid number (expected a digit)");
    if (peek() == '0') {
      ++pos_;
      if (digit()) fail_at("invalid number (leading zero)", start);
    } else {
      while (digit()) ++pos_;
    }
    bool integral = true;
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!digit()) fail("invalid number (expected a digit after '.')");
      while (digit()) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digit()) fail("invalid number (expected a digit in the exponent)");
      while (digit()) ++pos_;
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    v.kind_ = Json::Kind::Number;
    if (integral) {
      int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) {
        v.is_int_ = true;
        v.int_ = i;
        v.num_ = static_cast<double>(i);
        return;
      }
    }
    double d = 0.0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range || !std::isfinite(d))
      fail_at("number out of range", start);
    if (r.ec != std::errc() || r.ptr != last) fail_at("invalid number", start);
    v.num_ = d;
  }

  const std::string& s_;
  int max_depth_;
  size_t pos_ = 0;
};

Json Json::parse(const std::string& text, int max_depth) {
  return JsonParser(text, max_depth).parse_document();
}

}  // namespace fastlstm::detail
