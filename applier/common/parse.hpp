// Numbers read from text a server or a user gave us. std::stoi and friends throw
// std::invalid_argument / std::out_of_range, which name nothing and, escaping a command, end in
// std::terminate; these throw the project's Error, naming what was read and the text found.
#ifndef DTS_APPLIER_COMMON_PARSE_HPP
#define DTS_APPLIER_COMMON_PARSE_HPP

#include <cstdint>
#include <string>

#include "common/error.hpp"

namespace dts {

// The whole of `text` as a decimal integer (an optional leading '-', nothing else around it).
// Otherwise throws Error(kind, "<what>: expected an integer, got \"<text>\"").
int64_t parse_int64(const std::string& text, const std::string& what, ErrorKind kind = ErrorKind::kProtocol);

}  // namespace dts

#endif
