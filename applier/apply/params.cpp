#include "apply/params.hpp"

#include "pg/quote.hpp"

#include <cstring>
#include <string>

namespace dts::apply {
namespace proto = dts::protocol;

namespace {

constexpr uint32_t kBoolOid = 16;
constexpr uint32_t kInt8Oid = 20;
constexpr uint32_t kInt2Oid = 21;
constexpr uint32_t kInt4Oid = 23;
constexpr uint32_t kOidOid = 26;
constexpr uint32_t kFirstNonBuiltinOid = 10000;

// Text-like built-in types whose binary input takes the text bytes as they are, so their text
// values can go as binary parameters with no copy.
bool text_is_binary(uint32_t type_oid) {
  switch (type_oid) {
    case 25:    // text
    case 1043:  // varchar
    case 1042:  // bpchar
    case 19:    // name
    case 114:   // json
      return true;
    default:
      return false;
  }
}

void put_be(char* out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(v >> (8 * (n - 1 - i)));
}

}  // namespace

char* Arena::allocate(size_t n) {
  if (n > kBlock) {  // a rare big value gets memory of its own until clear()
    big_.push_back(std::unique_ptr<char[]>(new char[n]));  // not zeroed: every byte is written
    return big_.back().get();
  }
  if (blocks_.empty() || used_ + n > kBlock) {
    if (!blocks_.empty()) ++block_;
    if (block_ == blocks_.size()) blocks_.push_back(std::unique_ptr<char[]>(new char[kBlock]));
    used_ = 0;
  }
  char* p = blocks_[block_].get() + used_;
  used_ += n;
  return p;
}

void Arena::clear() {
  big_.clear();
  block_ = 0;
  used_ = 0;
}

uint32_t param_type_for(const decode::Column& column) {
  return column.type_oid < kFirstNonBuiltinOid ? column.type_oid : 0;
}

void ParamSet::clear() {
  values_.clear();
  lengths_.clear();
  formats_.clear();
  text_values_ = 0;
  arena_.clear();
}

void ParamSet::push(const char* data, int len, int format) {
  values_.push_back(data);
  lengths_.push_back(len);
  formats_.push_back(format);
  if (data != nullptr && format == 0) text_values_++;
}

void ParamSet::add(const decode::Column& column, const proto::Value& value) {
  switch (value.kind) {
    case proto::ValueKind::kNull:
    case proto::ValueKind::kUnchangedToast:  // callers leave these columns out
      push(nullptr, 0, 0);
      return;
    case proto::ValueKind::kTrue:
    case proto::ValueKind::kFalse: {
      char* b = arena_.allocate(1);
      *b = value.kind == proto::ValueKind::kTrue ? 1 : 0;
      if (column.type_oid == kBoolOid) {
        push(b, 1, 1);
      } else {
        char* t = arena_.allocate(2);
        t[0] = *b ? 't' : 'f';
        t[1] = '\0';
        push(t, 1, 0);
      }
      return;
    }
    case proto::ValueKind::kInt: {
      size_t width = column.type_oid == kInt2Oid ? 2
                     : (column.type_oid == kInt4Oid || column.type_oid == kOidOid) ? 4
                     : column.type_oid == kInt8Oid ? 8 : 0;
      if (width == 0) {  // not an integer column after all: let the server parse the number
        std::string text = std::to_string(value.int_value);
        char* t = arena_.allocate(text.size() + 1);
        std::memcpy(t, text.c_str(), text.size() + 1);
        push(t, static_cast<int>(text.size()), 0);
        return;
      }
      char* b = arena_.allocate(width);
      put_be(b, static_cast<uint64_t>(value.int_value), width);
      push(b, static_cast<int>(width), 1);
      return;
    }
    case proto::ValueKind::kBinary:
      push(reinterpret_cast<const char*>(value.bytes.data), static_cast<int>(value.bytes.len), 1);
      return;
    case proto::ValueKind::kText: {
      if (text_is_binary(column.type_oid)) {
        push(reinterpret_cast<const char*>(value.bytes.data), static_cast<int>(value.bytes.len), 1);
        return;
      }
      // Text parameters are NUL-terminated strings.
      char* t = arena_.allocate(value.bytes.len + 1);
      std::memcpy(t, value.bytes.data, value.bytes.len);
      t[value.bytes.len] = '\0';
      push(t, static_cast<int>(value.bytes.len), 0);
      return;
    }
  }
}

void ParamSet::add_copy(const decode::Column& column, const proto::Value& value) {
  if ((value.kind == proto::ValueKind::kBinary || value.kind == proto::ValueKind::kText) && value.bytes.len > 0) {
    char* copy = arena_.allocate(value.bytes.len);
    std::memcpy(copy, value.bytes.data, value.bytes.len);
    proto::Value v = value;
    v.bytes.data = reinterpret_cast<const uint8_t*>(copy);
    add(column, v);
    return;
  }
  add(column, value);
}

std::string describe_value(const decode::Column& column, const proto::Value& value) {
  constexpr size_t kMax = 64;
  switch (value.kind) {
    case proto::ValueKind::kNull: return "NULL";
    case proto::ValueKind::kUnchangedToast: return "(unchanged)";
    case proto::ValueKind::kTrue: return "true";
    case proto::ValueKind::kFalse: return "false";
    case proto::ValueKind::kInt: return std::to_string(value.int_value);
    case proto::ValueKind::kText: {
      std::string s(reinterpret_cast<const char*>(value.bytes.data), std::min(value.bytes.len, kMax));
      return "'" + s + (value.bytes.len > kMax ? "...'" : "'");
    }
    case proto::ValueKind::kBinary: {
      static const char kHex[] = "0123456789abcdef";
      std::string s = "(" + column.type_name + ") \\x";
      for (size_t i = 0; i < std::min(value.bytes.len, kMax / 2); ++i) {
        s.push_back(kHex[value.bytes.data[i] >> 4]);
        s.push_back(kHex[value.bytes.data[i] & 15]);
      }
      return s + (value.bytes.len > kMax / 2 ? "..." : "");
    }
  }
  return "?";
}

}  // namespace dts::apply

namespace dts::apply {

std::string describe_param(const decode::Column& column, const char* data, int len, int format) {
  if (data == nullptr) return "NULL";
  proto::Value v;
  if (format == 0 || text_is_binary(column.type_oid)) {
    v.kind = proto::ValueKind::kText;
  } else if (column.type_oid == kInt2Oid || column.type_oid == kInt4Oid || column.type_oid == kInt8Oid ||
             column.type_oid == kOidOid) {
    uint64_t u = 0;
    for (int i = 0; i < len; ++i) u = (u << 8) | static_cast<uint8_t>(data[i]);
    int shift = 64 - 8 * len;  // sign-extend
    v.kind = proto::ValueKind::kInt;
    v.int_value = column.type_oid == kOidOid ? static_cast<int64_t>(u)
                                             : static_cast<int64_t>(u << shift) >> shift;
    return describe_value(column, v);
  } else {
    v.kind = proto::ValueKind::kBinary;
  }
  v.bytes = proto::Bytes{reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len)};
  return describe_value(column, v);
}

std::string binary_copy_rows(const ParamSet& params, size_t rows, size_t ncols) {
  auto put = [](std::string& out, uint32_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  const char* const* values = params.values();
  const int* lengths = params.lengths();
  std::string data;
  for (size_t r = 0; r < rows; ++r) {
    put(data, static_cast<uint32_t>(ncols), 2);
    for (size_t c = 0; c < ncols; ++c) {
      size_t i = r * ncols + c;
      if (values[i] == nullptr) {
        put(data, 0xffffffffu, 4);
        continue;
      }
      put(data, static_cast<uint32_t>(lengths[i]), 4);
      data.append(values[i], static_cast<size_t>(lengths[i]));
    }
  }
  return data;
}

const std::string& binary_copy_header() {
  // Signature, flags (none), header extension length (none).
  static const std::string header("PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0", 19);
  return header;
}

const std::string& binary_copy_trailer() {
  static const std::string trailer("\xff\xff", 2);  // a field count of -1
  return trailer;
}

namespace {

void put_be32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

bool array_param(const decode::Column& column, const ParamSet& params, size_t rows, size_t stride, size_t offset,
                 std::string& out, int& format) {
  const char* const* values = params.values();
  const int* lengths = params.lengths();
  const int* formats = params.formats();
  format = -1;
  bool nulls = false;
  for (size_t r = 0; r < rows; ++r) {
    size_t i = r * stride + offset;
    if (values[i] == nullptr) {
      nulls = true;
      continue;
    }
    if (format >= 0 && formats[i] != format) return false;
    format = formats[i];
  }
  if (format < 0) format = 0;  // all NULL
  out.clear();
  if (format == 1) {
    // array_recv's layout: dimensions, null flag, element type, then per dimension its
    // length and lower bound, then each element as length (-1: NULL) and bytes.
    put_be32(out, 1);
    put_be32(out, nulls ? 1 : 0);
    put_be32(out, column.type_oid);
    put_be32(out, static_cast<uint32_t>(rows));
    put_be32(out, 1);
    for (size_t r = 0; r < rows; ++r) {
      size_t i = r * stride + offset;
      if (values[i] == nullptr) {
        put_be32(out, 0xffffffffu);
        continue;
      }
      put_be32(out, static_cast<uint32_t>(lengths[i]));
      out.append(values[i], static_cast<size_t>(lengths[i]));
    }
    return true;
  }
  out.push_back('{');
  for (size_t r = 0; r < rows; ++r) {
    size_t i = r * stride + offset;
    if (r > 0) out.push_back(',');
    if (values[i] == nullptr)
      out += "NULL";
    else
      append_array_element(out, values[i], static_cast<size_t>(lengths[i]));
  }
  out.push_back('}');
  return true;
}

void append_array_element(std::string& out, const char* data, size_t len) {
  out.push_back('"');
  for (size_t k = 0; k < len; ++k) {
    if (data[k] == '"' || data[k] == '\\') out.push_back('\\');
    out.push_back(data[k]);
  }
  out.push_back('"');
}

std::string text_array_literal(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    append_array_element(out, items[i].data(), items[i].size());
  }
  return out + "}";
}

std::string describe_param_key(const decode::Relation& rel, const std::vector<size_t>& columns, const ParamSet& params,
                               const std::vector<size_t>& positions) {
  std::string names = "(", vals = "(";
  for (size_t i = 0; i < columns.size(); ++i) {
    const decode::Column& col = rel.columns[columns[i]];
    size_t at = positions[i];
    names += (i > 0 ? ", " : "") + pg::quote_ident(col.name);
    vals += (i > 0 ? ", " : "") + describe_param(col, params.values()[at], params.lengths()[at], params.formats()[at]);
  }
  return names + ")=" + vals + ")";
}

bool binary_copy_type(uint32_t oid) {
  switch (oid) {
    case 24: case 2202: case 2203: case 2204: case 2205: case 2206: case 3734: case 3769: case 4089: case 4096:
    case 4191: case 1008: case 2207: case 2208: case 2209: case 2210: case 2211: case 3735: case 3770: case 4090:
    case 4097: case 4192:
      return false;
    default:
      return oid < 10000;
  }
}

}  // namespace dts::apply
