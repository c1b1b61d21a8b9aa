#include "common/parse.hpp"

#include <charconv>

namespace dts {

int64_t parse_int64(const std::string& text, const std::string& what, ErrorKind kind) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec == std::errc() && ptr == end && !text.empty()) return value;
  std::string shown = text.size() > 60 ? text.substr(0, 60) + "..." : text;
  throw Error(kind, what + ": expected an integer" +
                        (ec == std::errc::result_out_of_range ? std::string(" within 64 bits") : std::string()) +
                        ", got \"" + shown + "\"");
}

}  // namespace dts
