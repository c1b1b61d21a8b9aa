#include "apply/sql_builder.hpp"

namespace dts::apply {


std::string qualified_name(const decode::Relation& rel) { return quote_ident(rel.schema) + "." + quote_ident(rel.name); }

bool compare_as_text(uint32_t type_oid) {
  switch (type_oid) {
    case 114:  // json
    case 142:  // xml
    case 600:  // point
    case 601:  // lseg
    case 602:  // path
    case 603:  // box
    case 604:  // polygon
    case 628:  // line
    case 718:  // circle
      return true;
    default:
      return false;
  }
}

namespace {

void append_conditions(std::string& sql, const decode::Relation& rel, const RowMatch& match, int& param) {
  bool first = true;
  for (size_t i = 0; i < match.columns.size(); ++i) {
    const decode::Column& col = rel.columns[match.columns[i]];
    sql += first ? "" : " AND ";
    first = false;
    if (match.is_null[i]) {
      sql += quote_ident(col.name) + " IS NULL";
    } else if (compare_as_text(col.type_oid)) {
      sql += quote_ident(col.name) + "::text = $" + std::to_string(param++) + "::text";
    } else {
      sql += quote_ident(col.name) + " = $" + std::to_string(param++);
    }
  }
  if (first) sql += "true";
}

void append_where(std::string& sql, const decode::Relation& rel, const RowMatch& match, int& param) {
  sql += " WHERE ";
  if (!match.one_row) {
    append_conditions(sql, rel, match, param);
    return;
  }
  // tableoid with ctid: a ctid alone repeats across the partitions of a partitioned table.
  sql += "(tableoid, ctid) = (SELECT tableoid, ctid FROM " + qualified_name(rel) + " WHERE ";
  append_conditions(sql, rel, match, param);
  sql += " LIMIT 1)";
}

}  // namespace

std::string build_insert(const decode::Relation& rel, size_t rows) {
  if (rel.columns.empty()) {
    // No column to give a value (none at all, or only generated ones): `VALUES ()` is a syntax
    // error, and each row is one of defaults.
    if (rows == 1) return "INSERT INTO " + qualified_name(rel) + " DEFAULT VALUES";
    return "INSERT INTO " + qualified_name(rel) + " SELECT FROM generate_series(1, " + std::to_string(rows) + ")";
  }
  std::string sql = "INSERT INTO " + qualified_name(rel) + " (";
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    if (i > 0) sql += ", ";
    sql += quote_ident(rel.columns[i].name);
  }
  // The source's values, identity columns included: GENERATED ALWAYS refuses them otherwise.
  sql += ") OVERRIDING SYSTEM VALUE VALUES ";
  int param = 1;
  for (size_t r = 0; r < rows; ++r) {
    sql += r > 0 ? ", (" : "(";
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      if (i > 0) sql += ", ";
      sql += "$" + std::to_string(param++);
    }
    sql += ")";
  }
  return sql;
}

std::string build_update(const decode::Relation& rel, const std::vector<size_t>& set_columns, const RowMatch& match) {
  std::string sql = "UPDATE " + qualified_name(rel) + " SET ";
  int param = 1;
  for (size_t i = 0; i < set_columns.size(); ++i) {
    if (i > 0) sql += ", ";
    sql += quote_ident(rel.columns[set_columns[i]].name) + " = $" + std::to_string(param++);
  }
  append_where(sql, rel, match, param);
  return sql;
}

std::string build_delete(const decode::Relation& rel, const RowMatch& match) {
  std::string sql = "DELETE FROM " + qualified_name(rel);
  int param = 1;
  append_where(sql, rel, match, param);
  return sql;
}

std::string build_update_rows(const decode::Relation& rel, size_t rows) {
  std::string sql = "UPDATE " + qualified_name(rel) + " AS t SET ";
  bool first = true;
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    if (rel.columns[i].is_key) continue;
    sql += first ? "" : ", ";
    first = false;
    sql += quote_ident(rel.columns[i].name) + " = v." + quote_ident(rel.columns[i].name);
  }
  sql += " FROM (VALUES ";
  int param = 1;
  for (size_t r = 0; r < rows; ++r) {
    sql += r > 0 ? ", (" : "(";
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      if (i > 0) sql += ", ";
      // The first row's casts type the VALUES columns (text parameters of user types included).
      sql += "$" + std::to_string(param++) + (r == 0 ? "::" + rel.columns[i].type_name : "");
    }
    sql += ")";
  }
  sql += ") AS v (";
  for (size_t i = 0; i < rel.columns.size(); ++i) sql += (i > 0 ? ", " : "") + quote_ident(rel.columns[i].name);
  sql += ") WHERE ";
  for (size_t k = 0; k < rel.key_columns.size(); ++k) {
    const std::string col = quote_ident(rel.columns[rel.key_columns[k]].name);
    sql += (k > 0 ? " AND t." : "t.") + col + " = v." + col;
  }
  return sql;
}

namespace {

// unnest($1::T0[], ...) [WITH ORDINALITY] AS alias(m0, ..., s0, ...[, n])
std::string unnest_batch(const decode::Relation& rel, const std::vector<size_t>& match, const std::vector<size_t>& set,
                         bool ordinality, const char* alias) {
  std::string sql = "unnest(";
  std::string names;
  int param = 1;
  auto add = [&](size_t col, const std::string& name) {
    if (param > 1) {
      sql += ", ";
      names += ", ";
    }
    sql += "$" + std::to_string(param++) + "::" + rel.columns[col].type_name + "[]";
    names += name;
  };
  for (size_t i = 0; i < match.size(); ++i) add(match[i], "m" + std::to_string(i));
  for (size_t i = 0; i < set.size(); ++i) add(set[i], "s" + std::to_string(i));
  sql += ")";
  if (ordinality) {
    sql += " WITH ORDINALITY";
    names += ", n";
  }
  return sql + " AS " + alias + "(" + names + ")";
}

std::string set_list(const decode::Relation& rel, const std::vector<size_t>& set, const char* from) {
  std::string sql;
  for (size_t i = 0; i < set.size(); ++i)
    sql += (i > 0 ? ", " : "") + quote_ident(rel.columns[set[i]].name) + " = " + from + ".s" + std::to_string(i);
  return sql;
}

// t.k0 = v.m0 AND ... (as text for types without equality).
std::string key_join(const decode::Relation& rel, const std::vector<size_t>& match) {
  std::string sql;
  for (size_t i = 0; i < match.size(); ++i) {
    const decode::Column& col = rel.columns[match[i]];
    std::string m = "v.m" + std::to_string(i);
    sql += i > 0 ? " AND " : "";
    if (compare_as_text(col.type_oid))
      sql += "t." + quote_ident(col.name) + "::text = " + m + "::text";
    else
      sql += "t." + quote_ident(col.name) + " = " + m;
  }
  return sql;
}

// WITH vr: the batch numbered within each old image; tr: the table's rows equal to an image,
// numbered the same way; a change and a row pair up on (image, number).
std::string full_match_ctes(const decode::Relation& rel, const std::vector<size_t>& match,
                            const std::vector<size_t>& set) {
  std::string image_v = "ROW(", image_t = "ROW(";
  for (size_t i = 0; i < match.size(); ++i) {
    image_v += (i > 0 ? ", " : "") + std::string("u.m") + std::to_string(i) + "::text";
    image_t += (i > 0 ? ", " : "") + quote_ident(rel.columns[match[i]].name) + "::text";
  }
  image_v += ")::text";
  image_t += ")::text";
  return "WITH v AS (SELECT u.*, " + image_v + " AS img FROM " + unnest_batch(rel, match, set, true, "u") +
         "), vr AS (SELECT v.*, row_number() OVER (PARTITION BY v.img ORDER BY v.n) AS occ FROM v)"
         ", tr AS (SELECT r.toid, r.tid, r.img, row_number() OVER (PARTITION BY r.img ORDER BY r.toid, r.tid) AS occ"
         " FROM (SELECT tableoid AS toid, ctid AS tid, " + image_t + " AS img FROM " + qualified_name(rel) +
         ") AS r WHERE r.img IN (SELECT img FROM v)) ";
}

}  // namespace

std::string build_update_set(const decode::Relation& rel, const std::vector<size_t>& match,
                             const std::vector<size_t>& set, bool full) {
  if (full)
    return full_match_ctes(rel, match, set) + "UPDATE " + qualified_name(rel) + " AS t SET " + set_list(rel, set, "vr") +
           " FROM vr JOIN tr ON tr.img = vr.img AND tr.occ = vr.occ WHERE t.tableoid = tr.toid AND t.ctid = tr.tid";
  return "UPDATE " + qualified_name(rel) + " AS t SET " + set_list(rel, set, "v") + " FROM " +
         unnest_batch(rel, match, set, false, "v") + " WHERE " + key_join(rel, match);
}

std::string build_delete_set(const decode::Relation& rel, const std::vector<size_t>& match, bool full) {
  if (full)
    return full_match_ctes(rel, match, {}) + "DELETE FROM " + qualified_name(rel) +
           " AS t USING vr JOIN tr ON tr.img = vr.img AND tr.occ = vr.occ WHERE t.tableoid = tr.toid AND t.ctid = tr.tid";
  return "DELETE FROM " + qualified_name(rel) + " AS t USING " + unnest_batch(rel, match, {}, false, "v") + " WHERE " +
         key_join(rel, match);
}

std::string build_truncate(const std::vector<const decode::Relation*>& rels, const std::vector<bool>& partitioned,
                           bool cascade, bool restart_identity) {
  std::string sql = "TRUNCATE ";
  for (size_t i = 0; i < rels.size(); ++i) {
    if (i > 0) sql += ", ";
    // The source lists every table it emptied, inheritance children included: ONLY, or a
    // TRUNCATE ONLY of a parent empties its children here. A partitioned table refuses ONLY
    // (its partitions are listed too).
    if (i >= partitioned.size() || !partitioned[i]) sql += "ONLY ";
    sql += qualified_name(*rels[i]);
  }
  if (restart_identity) sql += " RESTART IDENTITY";
  if (cascade) sql += " CASCADE";
  return sql;
}

void build_match(const decode::Relation& rel, const decode::Values& values, bool key_only, bool full, RowMatch& match,
                 std::vector<const protocol::Value*>& match_values) {
  match.columns.clear();
  match.is_null.clear();
  match_values.clear();
  match.one_row = full;
  if (full) {
    for (size_t i = 0; i < rel.columns.size(); ++i) {
      if (values[i].kind == protocol::ValueKind::kUnchangedToast) continue;
      match.columns.push_back(i);
      match.is_null.push_back(values[i].kind == protocol::ValueKind::kNull);
      match_values.push_back(&values[i]);
    }
    return;
  }
  for (size_t k = 0; k < rel.key_columns.size(); ++k) {
    size_t col = rel.key_columns[k];
    const protocol::Value& v = key_only ? values[k] : values[col];
    match.columns.push_back(col);
    match.is_null.push_back(v.kind == protocol::ValueKind::kNull);
    match_values.push_back(&v);
  }
}

std::string match_key(const RowMatch& match) {
  std::string key;
  key.reserve(match.columns.size() * 3 + 2);
  key += match.one_row ? 'F' : 'K';
  for (size_t i = 0; i < match.columns.size(); ++i) {
    key += std::to_string(match.columns[i]);
    key += match.is_null[i] ? 'n' : ',';
  }
  return key;
}

}  // namespace dts::apply
