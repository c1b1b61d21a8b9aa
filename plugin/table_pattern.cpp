// Parsing and matching of table patterns and message prefix globs.
extern "C" {
#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
}

#include "table_pattern.hpp"

namespace dts::plugin {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Reads one part of a pattern (up to an unquoted '.', ',' or the end) into `out`, escaping
// wildcards that were quoted so glob_match treats them literally.
bool read_part(const char** pos, StringInfo out, const char** error) {
  const char* p = *pos;
  bool quoted = false;
  bool any = false;
  while (*p != '\0') {
    char c = *p;
    if (c == '"') {
      if (quoted && p[1] == '"') {
        appendStringInfoChar(out, '"');
        p += 2;
        any = true;
        continue;
      }
      quoted = !quoted;
      any = true;  // "" is an explicit (empty) name; caught below
      ++p;
      continue;
    }
    if (!quoted && (c == '.' || c == ',')) break;
    if (!quoted && is_space(c)) {
      // Spaces are allowed only around a pattern, never inside an unquoted name.
      const char* q = p;
      while (is_space(*q)) ++q;
      if (*q != '\0' && *q != ',') {
        *error = "unquoted names cannot contain spaces; put the name in double quotes";
        return false;
      }
      p = q;
      break;
    }
    if (quoted) {
      if (c == '*' || c == '?' || c == '\\') appendStringInfoChar(out, '\\');
      appendStringInfoChar(out, c);
    } else {
      if (c == '\\') appendStringInfoChar(out, '\\');
      appendStringInfoChar(out, (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c);
    }
    any = true;
    ++p;
  }
  if (quoted) {
    *error = "unterminated double quote";
    return false;
  }
  if (!any || out->len == 0) {
    *error = "empty name in pattern";
    return false;
  }
  *pos = p;
  return true;
}

}  // namespace

bool parse_table_patterns(const char* text, List** out, const char** error) {
  List* result = NIL;
  const char* p = text;
  for (;;) {
    while (is_space(*p)) ++p;
    StringInfoData first, second;
    initStringInfo(&first);
    if (!read_part(&p, &first, error)) return false;
    auto* pat = static_cast<TablePattern*>(palloc0(sizeof(TablePattern)));
    if (*p == '.') {
      ++p;
      initStringInfo(&second);
      if (!read_part(&p, &second, error)) return false;
      if (*p == '.') {
        *error = "too many dotted names; write schema.table";
        return false;
      }
      pat->schema = first.data;
      pat->table = second.data;
    } else {
      pat->table = first.data;
    }
    result = lappend(result, pat);
    while (is_space(*p)) ++p;
    if (*p == '\0') break;
    if (*p != ',') {
      *error = "expected a comma between patterns";
      return false;
    }
    ++p;
  }
  *out = result;
  return true;
}

bool parse_glob_list(const char* text, List** out, const char** error) {
  List* result = NIL;
  const char* p = text;
  while (*p != '\0') {
    while (is_space(*p)) ++p;
    const char* start = p;
    while (*p != '\0' && *p != ',') ++p;
    const char* end = p;
    while (end > start && is_space(end[-1])) --end;
    if (end == start) {
      *error = "empty prefix in list";
      return false;
    }
    result = lappend(result, pnstrdup(start, static_cast<Size>(end - start)));
    if (*p == ',') {
      ++p;
      if (*p == '\0') {
        *error = "empty prefix in list";
        return false;
      }
    }
  }
  *out = result;
  return true;
}

// Iterative glob with single-star backtracking: linear in practice, no recursion.
bool glob_match(const char* pattern, const char* text) {
  const char* star_p = nullptr;
  const char* star_t = nullptr;
  const char* p = pattern;
  const char* t = text;
  while (*t != '\0') {
    if (*p == '*') {
      star_p = ++p;
      star_t = t;
      continue;
    }
    bool literal = (*p == '\\' && p[1] != '\0');
    char pc = literal ? p[1] : *p;
    if (pc != '\0' && ((!literal && pc == '?') || pc == *t)) {
      p += literal ? 2 : 1;
      ++t;
      continue;
    }
    if (star_p == nullptr) return false;
    p = star_p;
    t = ++star_t;
  }
  while (*p == '*') ++p;
  return *p == '\0';
}

bool table_pattern_match(const TablePattern* pat, const char* schema, const char* table) {
  if (pat->schema != nullptr && !glob_match(pat->schema, schema)) return false;
  return glob_match(pat->table, table);
}

bool any_table_pattern_matches(List* patterns, const char* schema, const char* table) {
  ListCell* lc;
  foreach (lc, patterns) {
    if (table_pattern_match(static_cast<TablePattern*>(lfirst(lc)), schema, table)) return true;
  }
  return false;
}

}  // namespace dts::plugin
