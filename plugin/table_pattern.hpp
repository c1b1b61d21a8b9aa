// Table patterns such as `public.*`, `*.audit`, `"Mixed Case".t?`: which tables to decode.
// Include after the PostgreSQL headers.
#ifndef DTS_PLUGIN_TABLE_PATTERN_HPP
#define DTS_PLUGIN_TABLE_PATTERN_HPP

namespace dts::plugin {

// One `schema.table` pattern. A part is a glob where `*` matches any run of characters and
// `?` one character; inside double quotes both are literal and case is kept, outside
// them letters are folded to lower case as PostgreSQL folds identifiers.
struct TablePattern {
  char* schema;  // nullptr: any schema (the pattern named only a table)
  char* table;
};

// Parses a comma-separated list of patterns into a List of TablePattern*. On a malformed
// list returns false and points *error at a static description.
bool parse_table_patterns(const char* text, List** out, const char** error);

// Parses a comma-separated list of glob patterns (message prefixes) into a List of char*.
bool parse_glob_list(const char* text, List** out, const char** error);

bool glob_match(const char* pattern, const char* text);
bool table_pattern_match(const TablePattern* p, const char* schema, const char* table);
bool any_table_pattern_matches(List* patterns, const char* schema, const char* table);

}  // namespace dts::plugin

#endif
