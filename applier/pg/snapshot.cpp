#include "pg/snapshot.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace dts::pg {
namespace {

bool parse_u64(const std::string& s, uint64_t& out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  out = std::strtoull(s.c_str(), nullptr, 10);
  return errno == 0;
}

}  // namespace

std::optional<Snapshot> Snapshot::parse(const std::string& text) {
  size_t a = text.find(':');
  size_t b = a == std::string::npos ? a : text.find(':', a + 1);
  if (b == std::string::npos) return std::nullopt;
  Snapshot s;
  if (!parse_u64(text.substr(0, a), s.xmin) || !parse_u64(text.substr(a + 1, b - a - 1), s.xmax) || s.xmin > s.xmax)
    return std::nullopt;
  std::string rest = text.substr(b + 1);
  size_t pos = 0;
  while (pos < rest.size()) {
    size_t comma = rest.find(',', pos);
    if (comma == std::string::npos) comma = rest.size();
    uint64_t x = 0;
    if (!parse_u64(rest.substr(pos, comma - pos), x)) return std::nullopt;
    s.xip.push_back(x);
    pos = comma + 1;
  }
  std::sort(s.xip.begin(), s.xip.end());
  return s;
}

bool Snapshot::sees(uint32_t xid) const {
  // Widen relative to xmax: the signed 32-bit distance places it in the right epoch.
  int32_t distance = static_cast<int32_t>(xid - static_cast<uint32_t>(xmax));
  if (distance >= 0) return false;  // at or after xmax: started after the snapshot
  uint64_t full = xmax - static_cast<uint64_t>(-static_cast<int64_t>(distance));
  if (full < xmin) return true;
  return !std::binary_search(xip.begin(), xip.end(), full);
}

std::string Snapshot::text() const {
  std::string out = std::to_string(xmin) + ":" + std::to_string(xmax) + ":";
  for (size_t i = 0; i < xip.size(); ++i) out += (i > 0 ? "," : "") + std::to_string(xip[i]);
  return out;
}

}  // namespace dts::pg
