#include "core/table_selection.hpp"

#include <algorithm>
#include <cstdlib>
#include <unordered_map>
#include <unordered_set>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "pg/connection.hpp"

namespace dts::core {
namespace {

// The plugin's set (table_pattern.cpp): not isspace(), which also takes \f and \v.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// PostgreSQL folds unquoted identifiers; the plugin folds ASCII letters only, and so must we.
char fold(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

// The plugin's read_part: one part of a pattern, up to an unquoted '.', ',' or the end, with
// quoted wildcards (and every backslash) escaped for glob_match. Returns the plugin's error
// text, or nullptr.
const char* read_part(std::string_view s, size_t& pos, std::string& out) {
  size_t p = pos;
  bool quoted = false;
  bool any = false;
  while (p < s.size()) {
    char c = s[p];
    if (c == '"') {
      if (quoted && p + 1 < s.size() && s[p + 1] == '"') {
        out.push_back('"');
        p += 2;
        any = true;
        continue;
      }
      quoted = !quoted;
      any = true;
      ++p;
      continue;
    }
    if (!quoted && (c == '.' || c == ',')) break;
    if (!quoted && is_space(c)) {
      size_t q = p;
      while (q < s.size() && is_space(s[q])) ++q;
      if (q < s.size() && s[q] != ',') return "unquoted names cannot contain spaces; put the name in double quotes";
      p = q;
      break;
    }
    if (quoted) {
      if (c == '*' || c == '?' || c == '\\') out.push_back('\\');
      out.push_back(c);
    } else {
      if (c == '\\') out.push_back('\\');
      out.push_back(fold(c));
    }
    any = true;
    ++p;
  }
  if (quoted) return "unterminated double quote";
  if (!any || out.empty()) return "empty name in pattern";
  pos = p;
  return nullptr;
}

// The pattern that starts at `start`, as written: up to the next comma outside quotes.
std::string pattern_text(std::string_view s, size_t start) {
  bool quoted = false;
  size_t end = start;
  for (; end < s.size(); ++end) {
    if (s[end] == '"') quoted = !quoted;  // "" inside quotes toggles twice: still quoted
    else if (s[end] == ',' && !quoted) break;
  }
  while (end > start && is_space(s[end - 1])) --end;
  return std::string(s.substr(start, end - start));
}

std::string shortened(std::string_view s) {
  constexpr size_t kMax = 200;
  return s.size() <= kMax ? std::string(s) : std::string(s.substr(0, kMax)) + "...";
}

[[noreturn]] void refuse(std::string_view option, std::string_view text, size_t start, size_t number,
                         const char* why) {
  std::string pat = pattern_text(text, start);
  throw Error(ErrorKind::kConfig,
              "invalid " + std::string(option) + " \"" + shortened(text) + "\": pattern " + std::to_string(number) +
                  (pat.empty() ? std::string(" (empty)") : " \"" + shortened(pat) + "\"") + ": " + why +
                  ". Patterns are schema.table or table (any schema), comma-separated; * and ? are wildcards; "
                  "unquoted names fold to lower case; double-quote names with capitals, spaces, commas, dots or "
                  "wildcards, doubling the quotes inside them, e.g. \"My Schema\".\"a,b\"");
}

bool any_matches(const std::vector<TablePattern>& patterns, std::string_view schema, std::string_view name,
                 const std::vector<std::pair<std::string, std::string>>& ancestors) {
  for (const auto& p : patterns) {
    if (pattern_matches(p, schema, name)) return true;
    for (const auto& a : ancestors)
      if (pattern_matches(p, a.first, a.second)) return true;
  }
  return false;
}

bool by_name(const SelectedRelation& a, const SelectedRelation& b) {
  return a.schema != b.schema ? a.schema < b.schema : a.name < b.name;
}

}  // namespace

std::vector<TablePattern> parse_table_patterns(const std::string& text, std::string_view option) {
  std::vector<TablePattern> out;
  if (text.empty()) return out;
  // The plugin reads a C string: a NUL would silently end its list early.
  if (text.find('\0') != std::string::npos)
    throw Error(ErrorKind::kConfig, "invalid " + std::string(option) + ": it contains a NUL character");
  std::string_view s(text);
  size_t p = 0;
  for (;;) {
    while (p < s.size() && is_space(s[p])) ++p;
    size_t start = p;
    size_t number = out.size() + 1;
    TablePattern pat;
    std::string first;
    if (const char* why = read_part(s, p, first)) refuse(option, s, start, number, why);
    if (p < s.size() && s[p] == '.') {
      ++p;
      std::string second;
      if (const char* why = read_part(s, p, second)) refuse(option, s, start, number, why);
      if (p < s.size() && s[p] == '.') refuse(option, s, start, number, "too many dotted names; write schema.table");
      pat.schema = std::move(first);
      pat.table = std::move(second);
    } else {
      pat.table = std::move(first);
    }
    pat.text = pattern_text(s, start);
    out.push_back(std::move(pat));
    while (p < s.size() && is_space(s[p])) ++p;
    if (p == s.size()) break;
    if (s[p] != ',') refuse(option, s, start, number, "expected a comma between patterns");
    ++p;
  }
  return out;
}

// The plugin's iterative glob with single-star backtracking.
bool glob_match(std::string_view pattern, std::string_view text) {
  size_t p = 0, t = 0;
  size_t star_p = std::string_view::npos, star_t = 0;
  auto at = [&](size_t i) { return i < pattern.size() ? pattern[i] : '\0'; };
  while (t < text.size()) {
    if (at(p) == '*') {
      star_p = ++p;
      star_t = t;
      continue;
    }
    bool literal = at(p) == '\\' && at(p + 1) != '\0';
    char pc = literal ? at(p + 1) : at(p);
    if (p < pattern.size() && ((!literal && pc == '?') || pc == text[t])) {
      p += literal ? 2 : 1;
      ++t;
      continue;
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    t = ++star_t;
  }
  while (at(p) == '*') ++p;
  return p >= pattern.size();
}

bool pattern_matches(const TablePattern& pat, std::string_view schema, std::string_view table) {
  if (pat.schema && !glob_match(*pat.schema, schema)) return false;
  return glob_match(pat.table, table);
}

std::string SelectedRelation::quoted() const { return apply::quote_ident(schema) + "." + apply::quote_ident(name); }

std::vector<uint32_t> CompiledSelection::oids() const {
  std::vector<uint32_t> out;
  out.reserve(selected.size());
  for (const auto& r : selected) out.push_back(r.oid);
  return out;
}

std::string CompiledSelection::oid_array_sql() const {
  std::string out = "'{";
  for (size_t i = 0; i < selected.size(); ++i) out += (i > 0 ? "," : "") + std::to_string(selected[i].oid);
  return out + "}'::oid[]";
}

const char* const kCatalogSql =
    "SELECT c.oid, n.nspname, c.relname, c.relkind, coalesce(i.inhparent, 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dts_decoding') "
    "AND n.nspname NOT LIKE 'pg\\_%'";

std::vector<CatalogRelation> read_catalog(const pg::Connection& source) {
  pg::Result r = source.exec(kCatalogSql);
  std::vector<CatalogRelation> out;
  out.reserve(static_cast<size_t>(PQntuples(r.get())));
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    CatalogRelation c;
    c.oid = static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 0), nullptr, 10));
    c.schema = PQgetvalue(r.get(), i, 1);
    c.name = PQgetvalue(r.get(), i, 2);
    c.kind = PQgetvalue(r.get(), i, 3)[0];
    c.parent = static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 4), nullptr, 10));
    out.push_back(std::move(c));
  }
  return out;
}

TableSelection::TableSelection(std::string tables, std::string exclude, std::string_view tables_label,
                               std::string_view exclude_label)
    : tables_(std::move(tables)), exclude_text_(std::move(exclude)) {
  include_ = parse_table_patterns(tables_, tables_label);
  exclude_ = parse_table_patterns(exclude_text_, exclude_label);
}

bool TableSelection::selects(std::string_view schema, std::string_view name,
                             const std::vector<std::pair<std::string, std::string>>& ancestors) const {
  if (!include_.empty() && !any_matches(include_, schema, name, ancestors)) return false;
  return !any_matches(exclude_, schema, name, ancestors);
}

CompiledSelection TableSelection::compile(const std::vector<CatalogRelation>& catalog) const {
  std::unordered_map<uint32_t, const CatalogRelation*> by_oid;
  for (const auto& c : catalog) by_oid.emplace(c.oid, &c);
  CompiledSelection out;
  for (const auto& c : catalog) {
    SelectedRelation r{c.oid, c.schema, c.name, c.kind, {}};
    std::vector<std::pair<std::string, std::string>> names;
    // Nearest first, as get_partition_ancestors() gives them to the plugin; bounded in case
    // the catalog changed between the rows.
    for (uint32_t p = c.parent; p != 0 && r.ancestors.size() < catalog.size();) {
      auto it = by_oid.find(p);
      if (it == by_oid.end()) break;
      r.ancestors.push_back(p);
      names.emplace_back(it->second->schema, it->second->name);
      p = it->second->parent;
    }
    bool chosen = c.schema != kOwnSchema && selects(c.schema, c.name, names);
    (chosen ? out.selected : out.others).push_back(std::move(r));
  }
  std::sort(out.selected.begin(), out.selected.end(), by_name);
  std::sort(out.others.begin(), out.others.end(), by_name);
  return out;
}

CompiledSelection TableSelection::compile(const pg::Connection& source) const { return compile(read_catalog(source)); }

// The tables pg_dump leaves out: those not selected, except the partitioned tables that a
// selected partition hangs from (its CREATE needs them; their other partitions stay out).
std::vector<std::string> left_out_of_dump(const CompiledSelection& selection) {
  std::unordered_set<uint32_t> needed;
  for (const auto& r : selection.selected) {
    needed.insert(r.oid);
    needed.insert(r.ancestors.begin(), r.ancestors.end());
  }
  std::vector<std::string> out;
  for (const auto& r : selection.others)
    if (needed.count(r.oid) == 0) out.push_back(r.quoted());
  return out;
}

}  // namespace dts::core
