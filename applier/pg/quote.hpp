// Quoting for the SQL text the applier builds: every identifier and every literal that is not a
// parameter goes through these.
#ifndef DTS_APPLIER_PG_QUOTE_HPP
#define DTS_APPLIER_PG_QUOTE_HPP

#include <string>
#include <string_view>

namespace dts::pg {

// "name" with embedded quotes doubled: safe for any name, keeps case, spaces and unicode.
std::string quote_ident(std::string_view name);
// 'text' with embedded quotes doubled (E'' when it holds a backslash).
std::string quote_literal(std::string_view text);

}  // namespace dts::pg

#endif
