// The table selection of a migration: --tables / --exclude parsed once, in the dialect of the
// plugin (plugin/table_pattern.cpp), and compiled against the source's catalog into the exact
// relations every command works on. The plugin decides which changes stream; check, migrate,
// verify and complete must pick the same tables, so this file mirrors the plugin's rules byte
// for byte:
//  - a comma outside double quotes separates patterns; spaces around a pattern are dropped,
//    an unquoted space inside one is an error;
//  - a pattern is `table` (any schema) or `schema.table`; a dot inside quotes is a character;
//  - outside quotes, ASCII letters fold to lower case and `*` (any run of bytes) and `?` (one
//    byte) are globs; inside quotes everything is literal and `""` is one quote;
//  - a partition is selected when it or any of its ancestors matches --tables, and left out
//    when it or any ancestor matches --exclude.
#ifndef DTS_APPLIER_CORE_TABLE_SELECTION_HPP
#define DTS_APPLIER_CORE_TABLE_SELECTION_HPP

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dts::pg {
class Connection;
}

namespace dts::core {

// One pattern, each part a glob in the plugin's internal form: `*` and `?` are wildcards and
// `\` makes the next byte literal (quoted wildcards and every backslash arrive escaped).
struct TablePattern {
  std::optional<std::string> schema;  // nullopt: the pattern named only a table (any schema)
  std::string table;
  std::string text;  // as written, for messages
};

// Parses a comma-separated list. Throws Error(kConfig) naming `option` and the bad pattern
// where the plugin would refuse the list. An empty text is an empty list (no filter); a text
// of spaces only is refused, as the plugin refuses it.
std::vector<TablePattern> parse_table_patterns(const std::string& text, std::string_view option);

// The plugin's glob_match: bytes, not characters.
bool glob_match(std::string_view pattern, std::string_view text);
bool pattern_matches(const TablePattern& pattern, std::string_view schema, std::string_view table);

// A table or partitioned table of the source as the catalog query (kCatalogSql) returns it.
struct CatalogRelation {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  char kind = 'r';      // 'r' table (or leaf partition), 'p' partitioned table
  uint32_t parent = 0;  // the partitioned table it is a partition of; 0 if none
};

struct SelectedRelation {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  char kind = 'r';
  std::vector<uint32_t> ancestors;  // partition ancestors, nearest first
  // "schema"."name", every quote doubled: a pattern for this relation alone, in the plugin's
  // dialect and in pg_dump's (-t / -T), and an SQL name.
  std::string quoted() const;
};

struct CompiledSelection {
  std::vector<SelectedRelation> selected;  // by schema, then name (bytes)
  std::vector<SelectedRelation> others;    // the catalog's other relations, dts's own included
  std::vector<uint32_t> oids() const;      // of the selected ones
  // `'{1,2,3}'::oid[]`, for `c.oid = ANY(...)` in catalog queries.
  std::string oid_array_sql() const;
};

// Every ordinary and partitioned table outside the system schemas, with the parent of each
// partition: oid, nspname, relname, relkind, parent oid (0). dts's own schema is in the
// result (its tables can be partition ancestors) and left out by compile().
extern const char* const kCatalogSql;
std::vector<CatalogRelation> read_catalog(const pg::Connection& source);

class TableSelection {
 public:
  TableSelection() = default;
  // Throws Error(kConfig) for a malformed list (see parse_table_patterns). `label` names the
  // pair in messages ("--tables/--exclude", or serve's field names).
  TableSelection(std::string tables, std::string exclude, std::string_view tables_label = "--tables",
                 std::string_view exclude_label = "--exclude");

  // Neither list given: every table.
  bool everything() const { return include_.empty() && exclude_.empty(); }
  const std::string& tables() const { return tables_; }
  const std::string& exclude() const { return exclude_text_; }

  // The plugin's decision for a relation, given its names and its ancestors' (nearest first).
  bool selects(std::string_view schema, std::string_view name,
               const std::vector<std::pair<std::string, std::string>>& ancestors = {}) const;

  // The exact relations of `catalog` this selection picks (never in schemas dts and dts_decoding).
  CompiledSelection compile(const std::vector<CatalogRelation>& catalog) const;
  CompiledSelection compile(const pg::Connection& source) const;

 private:
  std::string tables_, exclude_text_;
  std::vector<TablePattern> include_, exclude_;
};

// The schema the applier keeps its state in on the target: never part of a selection.
inline constexpr const char* kOwnSchema = "dts";

// The tables pg_dump leaves out (-T, exact and quoted): those not selected, except the
// partitioned tables that a selected partition hangs from.
std::vector<std::string> left_out_of_dump(const CompiledSelection& selection);

}  // namespace dts::core

#endif
