#include "common/text.hpp"

#include <algorithm>

namespace dts {

std::string first_line(const std::string& text, size_t max) {
  std::string line = text.substr(0, text.find('\n'));
  return line.size() > max ? line.substr(0, max) + "..." : line;
}

std::string joined(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

std::string shortened(const std::vector<std::string>& items, size_t max) {
  std::vector<std::string> head(items.begin(), items.begin() + static_cast<long>(std::min(max, items.size())));
  return joined(head) + (items.size() > max ? ", ... (" + std::to_string(items.size()) + " in all)" : "");
}

}  // namespace dts
