// Record values for the unit tests, as the decoder hands them to the applier.
#ifndef DTS_TESTS_UNIT_VALUES_HPP
#define DTS_TESTS_UNIT_VALUES_HPP

#include <cstdint>
#include <cstring>

#include "dts/protocol.h"

namespace dts::test {

inline protocol::Value value_of_kind(protocol::ValueKind kind) {
  protocol::Value out;
  out.kind = kind;
  return out;
}

inline protocol::Value int_value(int64_t v) {
  protocol::Value out = value_of_kind(protocol::ValueKind::kInt);
  out.int_value = v;
  return out;
}

// A view of `s`, which must outlive the value.
inline protocol::Value text_value(const char* s) {
  protocol::Value out = value_of_kind(protocol::ValueKind::kText);
  out.bytes = protocol::Bytes{reinterpret_cast<const uint8_t*>(s), std::strlen(s)};
  return out;
}

}  // namespace dts::test

#endif
