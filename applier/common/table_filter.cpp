#include "common/table_filter.hpp"

#include "apply/sql_builder.hpp"

namespace dts {
namespace {

std::string patterns_sql(const std::string& patterns) {
  std::string out;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    std::string like = cur.find('.') == std::string::npos ? "%." : "";
    for (char ch : cur) {
      if (ch == '*') like += '%';
      else if (ch == '?') like += '_';
      else if (ch == '%' || ch == '_' || ch == '\\') { like += '\\'; like += ch; }
      else if (ch != '"') like += ch;
    }
    out += (out.empty() ? "" : " OR ") + std::string("(n.nspname || '.' || c.relname) LIKE ") +
           apply::quote_literal(like);
    cur.clear();
  };
  for (char ch : patterns) {
    if (ch == ',') flush();
    else if (ch != ' ') cur += ch;
  }
  flush();
  return out;
}

}  // namespace

std::string table_filter_sql(const std::string& tables, const std::string& exclude) {
  std::string where = "c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dts') "
                      "AND n.nspname NOT LIKE 'pg\\_%'";
  std::string inc = patterns_sql(tables), exc = patterns_sql(exclude);
  if (!inc.empty()) where += " AND (" + inc + ")";
  if (!exc.empty()) where += " AND NOT (" + exc + ")";
  return where;
}

}  // namespace dts
