// Text shaping for messages and SQL the applier writes.
#ifndef DTS_APPLIER_COMMON_TEXT_HPP
#define DTS_APPLIER_COMMON_TEXT_HPP

#include <cstddef>
#include <string>
#include <vector>

namespace dts {

// The first line of `text`, cut at `max` characters ("..." added when cut).
std::string first_line(const std::string& text, size_t max = 300);
// The items with `separator` between them.
std::string joined(const std::vector<std::string>& items, const char* separator = ", ");
// The first `max` items, joined, with how many there are in all when some are left out.
std::string shortened(const std::vector<std::string>& items, size_t max = 10);

}  // namespace dts

#endif
