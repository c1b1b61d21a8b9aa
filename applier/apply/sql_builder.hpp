// SQL text for applying changes: INSERT, UPDATE, DELETE and TRUNCATE of a relation as the
// source described it. Every identifier is quoted; values are always parameters.
#ifndef DTS_APPLIER_APPLY_SQL_BUILDER_HPP
#define DTS_APPLIER_APPLY_SQL_BUILDER_HPP

#include <string>
#include <string_view>
#include <vector>

#include "decode/decoder.hpp"
#include "pg/quote.hpp"

namespace dts::apply {

using pg::quote_ident;
using pg::quote_literal;
std::string qualified_name(const decode::Relation& rel);

// Which columns identify the row, and which of them are NULL in this change: a NULL is
// matched with IS NULL (so `=` and its index serve every other column).
struct RowMatch {
  std::vector<size_t> columns;
  std::vector<bool> is_null;
  // REPLICA IDENTITY FULL may match several identical rows: change exactly one of them.
  bool one_row = false;
};

// Builds the match of a row: the columns that identify it, with their values in `values`
// (indexed like `columns` of the relation, or like key_columns when key_only); `full`: every
// column but the unchanged TOAST ones (REPLICA IDENTITY FULL).
void build_match(const decode::Relation& rel, const decode::Values& values, bool key_only, bool full, RowMatch& match,
                 std::vector<const protocol::Value*>& match_values);
// The shape of a match (which columns, which NULL), to key the statements prepared for it.
std::string match_key(const RowMatch& match);

// INSERT INTO t (all columns) OVERRIDING SYSTEM VALUE VALUES ($1, ...), (...) for `rows` rows;
// for a relation without columns, `rows` rows of defaults (no parameters).
std::string build_insert(const decode::Relation& rel, size_t rows);
// UPDATE t SET set_columns = $1.. WHERE match (parameters after the SET ones).
std::string build_update(const decode::Relation& rel, const std::vector<size_t>& set_columns, const RowMatch& match);
std::string build_delete(const decode::Relation& rel, const RowMatch& match);
// UPDATE t SET every non-key column FROM (VALUES (...), ...) matched on the key: `rows` rows of
// distinct keys, parameters in column order per row, each cast to its column's type.
std::string build_update_rows(const decode::Relation& rel, size_t rows);
// Set-based statements for a batch of UPDATEs or DELETEs of one table: each column's values
// travel as one array parameter (the `match` columns first, then the `set` ones), unnested
// side by side. With a key, rows are joined on it (the caller keeps keys distinct in a batch).
// With REPLICA IDENTITY FULL (`full`), each change takes exactly one row among those equal to
// its old image: images are compared as the text of the row (NULL and '' differ there), and
// the k-th change of an image takes the k-th such row, so duplicates are each changed once.
std::string build_update_set(const decode::Relation& rel, const std::vector<size_t>& match,
                             const std::vector<size_t>& set, bool full);
std::string build_delete_set(const decode::Relation& rel, const std::vector<size_t>& match, bool full);
// `partitioned[i]`: rels[i] is a partitioned table on the target (TRUNCATE ONLY is refused there).
std::string build_truncate(const std::vector<const decode::Relation*>& rels, const std::vector<bool>& partitioned,
                           bool cascade, bool restart_identity);

// True for types without a default btree equality operator (json, xml, geometric types):
// they are compared as text.
bool compare_as_text(uint32_t type_oid);

}  // namespace dts::apply

#endif
