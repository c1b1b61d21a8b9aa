// Turns record values into libpq parameters without re-encoding: binary values (the send
// format) go as binary parameters straight from the frame; integers and booleans get their
// binary form; text goes as text. Pointers stay valid until clear().
#ifndef DTS_APPLIER_APPLY_PARAMS_HPP
#define DTS_APPLIER_APPLY_PARAMS_HPP

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decode/decoder.hpp"

namespace dts::apply {

// Bump allocation for the few bytes some parameters need (integers, NUL-terminated text).
class Arena {
 public:
  char* allocate(size_t n);
  void clear();

 private:
  static constexpr size_t kBlock = 64 * 1024;
  std::vector<std::unique_ptr<char[]>> blocks_;  // kBlock bytes each, reused
  std::vector<std::unique_ptr<char[]>> big_;
  size_t block_ = 0;
  size_t used_ = 0;
};

// The parameter type a statement declares for a column: the type itself for built-in types
// (binary values need it), 0 (let the server infer) for the others, which travel as text.
uint32_t param_type_for(const decode::Column& column);

class ParamSet {
 public:
  void clear();
  void add(const decode::Column& column, const protocol::Value& value);
  // As add(), with the value's bytes copied: valid after the frame they came from is gone.
  void add_copy(const decode::Column& column, const protocol::Value& value);
  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }
  // Every value is NULL or in binary format: the set can travel as binary COPY.
  bool all_binary() const { return text_values_ == 0; }

 private:
  void push(const char* data, int len, int format);
  size_t text_values_ = 0;  // non-NULL values in text format
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  Arena arena_;
};

// Built-in types whose values are held in their binary send format, as binary COPY wants them:
// all but the reg* types, which travel as names.
bool binary_copy_type(uint32_t type_oid);

// `rows` rows of `ncols` binary parameters each as binary COPY tuples (per row a field count,
// then each field as length + bytes), without the stream's header and trailer.
std::string binary_copy_rows(const ParamSet& params, size_t rows, size_t ncols);
// The binary COPY stream's header and trailer.
const std::string& binary_copy_header();
const std::string& binary_copy_trailer();

// Appends one element of a text array literal: quoted, its quotes and backslashes escaped (so
// no delimiter, brace or space inside it counts).
void append_array_element(std::string& out, const char* data, size_t len);
// `items` as a text array literal ("{...}"), for a text[] parameter.
std::string text_array_literal(const std::vector<std::string>& items);

// One array parameter of `rows` values of one column, taken from a row-major ParamSet
// (the value of row r is at r * stride + offset): the binary array format when the values
// are binary (their element type is the column's), a text array literal when they are text.
// False when they mix the two (then they cannot share an array).
bool array_param(const decode::Column& column, const ParamSet& params, size_t rows, size_t stride, size_t offset,
                 std::string& out, int& format);

// A short text form of a value for error messages (numbers and text as they are, binary in
// hex, long values cut).
std::string describe_value(const decode::Column& column, const protocol::Value& value);
// The same for a value already turned into a parameter.
std::string describe_param(const decode::Column& column, const char* data, int len, int format);
// "("a", "b")=(1, 'x')": `columns` of `rel` with the parameters at `positions` of `params`.
std::string describe_param_key(const decode::Relation& rel, const std::vector<size_t>& columns, const ParamSet& params,
                               const std::vector<size_t>& positions);

}  // namespace dts::apply

#endif
