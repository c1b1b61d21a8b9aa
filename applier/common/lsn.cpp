#include "common/lsn.hpp"

#include <chrono>
#include <cstdio>

namespace dts {

std::string format_lsn(Lsn lsn) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%X/%X", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn));
  return buf;
}

std::optional<Lsn> parse_lsn(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash == text.size() - 1) return std::nullopt;
  auto hex = [](std::string_view part) -> std::optional<uint64_t> {
    if (part.size() > 8) return std::nullopt;
    uint64_t v = 0;
    for (char c : part) {
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else return std::nullopt;
      v = v * 16 + static_cast<uint64_t>(d);
    }
    return v;
  };
  auto hi = hex(text.substr(0, slash));
  auto lo = hex(text.substr(slash + 1));
  if (!hi || !lo) return std::nullopt;
  return (*hi << 32) | *lo;
}

int64_t now_postgres_micros() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration_cast<std::chrono::microseconds>(now).count() - kPostgresEpochOffsetMicros;
}

}  // namespace dts
