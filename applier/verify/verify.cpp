#include "verify/verify.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"
#include "core/migration.hpp"
#include "core/table_selection.hpp"
#include "follow/applied_watch.hpp"
#include "resync/resync.hpp"

namespace dts::verify {
namespace {

using Clock = std::chrono::steady_clock;
using Key = std::vector<std::string>;            // the key columns' text
using RowHashes = std::map<Key, std::string>;    // key -> hash of the row's text
// More differing rows than this in one chunk is not in-flight noise: reported without being
// re-read row by row.
constexpr size_t kMaxRecheckKeys = 2000;
// With the source rows locked, the target gets this long to show the applier's last commit.
constexpr std::chrono::milliseconds kSettle{3000};

struct Column {
  std::string name;  // quoted
  std::string type;  // format_type, for casting literals back
};

struct Shape {
  std::string table;  // quoted schema.table
  std::vector<Column> key;
  std::string hash;   // a bigint per row, from the text of all its columns
  std::string keys;   // "k1, k2"
};

struct Summary {
  int64_t rows = 0;
  std::string sum = "0";
  bool operator==(const Summary& o) const { return rows == o.rows && sum == o.sum; }
};

std::string key_tuple(const Shape& s, const Key& k) {
  std::string out = "(";
  for (size_t i = 0; i < k.size(); ++i)
    out += (i > 0 ? ", " : "") + apply::quote_literal(k[i]) + "::" + s.key[i].type;
  return out + ")";
}

// (lo, hi]: lo exclusive, hi inclusive; either may be open.
std::string range_sql(const Shape& s, const std::optional<Key>& lo, const std::optional<Key>& hi) {
  std::string w;
  if (lo) w += "(" + s.keys + ") > " + key_tuple(s, *lo);
  if (hi) w += std::string(w.empty() ? "" : " AND ") + "(" + s.keys + ") <= " + key_tuple(s, *hi);
  return w.empty() ? "true" : w;
}

std::string keys_in_sql(const Shape& s, const std::vector<Key>& keys) {
  std::string w = "(" + s.keys + ") IN (";
  for (size_t i = 0; i < keys.size(); ++i) w += (i > 0 ? ", " : "") + key_tuple(s, keys[i]);
  return w + ")";
}

std::string describe_key(const Shape& s, const Key& k) {
  std::string out;
  for (size_t i = 0; i < k.size(); ++i) out += (i > 0 ? ", " : "") + s.key[i].name + "=" + k[i];
  return out;
}

Summary summarize(const pg::Connection& c, const Shape& s, const std::string& where) {
  pg::Result r = c.exec("SELECT count(*), coalesce(sum(dts_h), 0)::text FROM (SELECT " + s.hash + " AS dts_h FROM ONLY " +
                        s.table + " WHERE " + where + ") rows");
  return Summary{parse_int64(PQgetvalue(r.get(), 0, 0), "the row count of " + s.table), PQgetvalue(r.get(), 0, 1)};
}

RowHashes fetch_rows(const pg::Connection& c, const Shape& s, const std::string& where, const char* suffix = "") {
  std::string cols;
  for (const auto& k : s.key) cols += k.name + "::text, ";
  pg::Result r = c.exec("SELECT " + cols + s.hash + "::text FROM ONLY " + s.table + " WHERE " + where + suffix);
  RowHashes out;
  int n = static_cast<int>(s.key.size());
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    Key k;
    for (int j = 0; j < n; ++j) k.emplace_back(PQgetvalue(r.get(), i, j));
    out.emplace(std::move(k), PQgetvalue(r.get(), i, n));
  }
  return out;
}

// Keys whose rows differ, with what the difference is.
std::map<Key, const char*> diff_rows(const RowHashes& source, const RowHashes& target) {
  std::map<Key, const char*> out;
  for (const auto& [k, h] : source) {
    auto it = target.find(k);
    if (it == target.end()) out.emplace(k, "missing on the target");
    else if (it->second != h) out.emplace(k, "differs");
  }
  for (const auto& [k, h] : target)
    if (source.count(k) == 0) out.emplace(k, "only on the target");
  return out;
}

class TableVerifier {
 public:
  TableVerifier(const VerifyOptions& o, const pg::Connection& src, const pg::Connection& tgt,
                const pg::Connection& lock, const follow::AppliedWatch* watch, Shape shape)
      : o_(o), src_(src), tgt_(tgt), lock_(lock), watch_(watch), s_(std::move(shape)) {}

  void run_keyed(TableResult& out);
  void run_whole(TableResult& out);

 private:
  // After a source read: wait until the target has everything the read saw.
  void settle() const {
    if (watch_ != nullptr) watch_->wait_applied(watch_->source_position(), o_.wait_timeout);
  }
  void begin_locked() const {
    lock_.exec("BEGIN ISOLATION LEVEL READ COMMITTED");
    lock_.exec("SET LOCAL lock_timeout = " + std::to_string(o_.lock_timeout.count()));
  }
  std::optional<Difference> recheck_chunk(const std::optional<Key>& lo, const std::optional<Key>& hi);
  std::map<Key, const char*> locked_rows(std::map<Key, const char*> differing, bool& unsettled);

  const VerifyOptions& o_;
  const pg::Connection& src_;
  const pg::Connection& tgt_;
  const pg::Connection& lock_;
  const follow::AppliedWatch* watch_;
  Shape s_;
};

void TableVerifier::run_keyed(TableResult& out) {
  // Qualified: the text columns are output under the same names, and would be sorted as text.
  std::string desc;
  for (const auto& k : s_.key) desc += (desc.empty() ? "c." : " DESC, c.") + k.name;
  desc += " DESC";
  std::string key_text;
  for (const auto& k : s_.key) key_text += ", c." + k.name + "::text";
  std::optional<Key> lo;
  for (;;) {
    // One chunk of the source in key order: its size, checksum and last key, in one read.
    pg::Result r = src_.exec("SELECT count(*) OVER (), (sum(c.dts_h) OVER ())::text" + key_text + " FROM (SELECT " + s_.keys +
                             ", " + s_.hash + " AS dts_h FROM ONLY " + s_.table + " WHERE " + range_sql(s_, lo, {}) +
                             " ORDER BY " + s_.keys + " LIMIT " + std::to_string(o_.chunk_rows) + ") c ORDER BY " + desc +
                             " LIMIT 1");
    Summary source;
    std::optional<Key> hi;
    if (PQntuples(r.get()) > 0) {
      source = Summary{parse_int64(PQgetvalue(r.get(), 0, 0), "the row count of a chunk of " + s_.table),
                       PQgetvalue(r.get(), 0, 1)};
      Key last;
      for (size_t j = 0; j < s_.key.size(); ++j) last.emplace_back(PQgetvalue(r.get(), 0, static_cast<int>(j) + 2));
      hi = std::move(last);
    }
    bool last_chunk = source.rows < o_.chunk_rows;
    if (last_chunk) hi.reset();  // the final chunk is open-ended: rows only the target has count too
    settle();
    Summary target = summarize(tgt_, s_, range_sql(s_, lo, hi));
    out.chunks++;
    out.source_rows += source.rows;
    out.target_rows += target.rows;
    if (!(source == target)) {
      out.rechecked++;
      if (auto d = recheck_chunk(lo, hi)) out.differences.push_back(std::move(*d));
    }
    if (last_chunk) return;
    lo = hi;
  }
}

std::optional<Difference> TableVerifier::recheck_chunk(const std::optional<Key>& lo, const std::optional<Key>& hi) {
  std::string where = range_sql(s_, lo, hi);
  Summary source, target;
  for (int round = 0; round < o_.rounds; ++round) {
    source = summarize(src_, s_, where);
    settle();
    target = summarize(tgt_, s_, where);
    if (source == target) return std::nullopt;
  }
  // Still different: which rows? Then read only those again, until they agree or stop moving.
  RowHashes src_rows = fetch_rows(src_, s_, where);
  settle();
  std::map<Key, const char*> differing = diff_rows(src_rows, fetch_rows(tgt_, s_, where));
  bool unsettled = false;
  if (!differing.empty() && differing.size() <= kMaxRecheckKeys) {
    for (int round = 0; round < o_.rounds && !differing.empty(); ++round) {
      std::vector<Key> keys;
      for (const auto& [k, what] : differing) keys.push_back(k);
      std::string in = keys_in_sql(s_, keys);
      RowHashes s = fetch_rows(src_, s_, in);
      settle();
      differing = diff_rows(s, fetch_rows(tgt_, s_, in));
    }
    if (!differing.empty()) differing = locked_rows(std::move(differing), unsettled);
  }
  if (differing.empty()) return std::nullopt;
  Difference d;
  d.range = where;
  d.source_rows = source.rows;
  d.target_rows = target.rows;
  d.rows_differing = differing.size();
  for (const auto& [k, what] : differing) {
    if (d.samples.size() >= o_.samples) break;
    d.samples.push_back(describe_key(s_, k) + ": " + what);
  }
  if (unsettled) d.samples.push_back("(the source rows could not be locked within lock_timeout; they kept changing)");
  return d;
}

// The last word on rows that still differ: lock them FOR SHARE on the source so they cannot
// change, wait until the applier is past that point, and read the target until it agrees
// (or the settle time is up: then they really differ).
std::map<Key, const char*> TableVerifier::locked_rows(std::map<Key, const char*> differing, bool& unsettled) {
  std::vector<Key> keys;
  for (const auto& [k, what] : differing) keys.push_back(k);
  std::string in = keys_in_sql(s_, keys);
  try {
    begin_locked();
    // FOR SHARE needs UPDATE privilege (PostgreSQL 15): a read-only migration role gets the
    // same last word without the lock, the rows read once more after the applier caught up.
    bool may_lock = src_.query_value("SELECT has_any_column_privilege($1::regclass, 'UPDATE')", {s_.table}) == "t";
    RowHashes s = fetch_rows(lock_, s_, in, may_lock ? " FOR SHARE" : "");
    settle();
    auto deadline = Clock::now() + kSettle;
    do {
      differing = diff_rows(s, fetch_rows(tgt_, s_, in));
      if (differing.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (Clock::now() < deadline);
    lock_.exec("COMMIT");
  } catch (const Error& e) {
    lock_.exec("ROLLBACK");
    if (e.sqlstate() != "55P03" && e.sqlstate() != "40P01") throw;
    unsettled = true;  // not locked within lock_timeout, or chosen as a deadlock victim
  }
  return differing;
}

void TableVerifier::run_whole(TableResult& out) {
  Summary source, target;
  out.chunks = 1;
  for (int round = 0; round <= o_.rounds; ++round) {
    source = summarize(src_, s_, "true");
    settle();
    target = summarize(tgt_, s_, "true");
    if (round == 0) {
      out.source_rows = source.rows;
      out.target_rows = target.rows;
    }
    if (source == target) return;
    if (round == 0) out.rechecked = 1;
  }
  // A table without a key has no rows to pin down: lock it against writes for one read.
  bool unsettled = false;
  try {
    begin_locked();
    // SHARE mode needs UPDATE, DELETE or TRUNCATE (PostgreSQL 15); without, one more read.
    if (src_.query_value("SELECT has_table_privilege($1::regclass, 'UPDATE, DELETE, TRUNCATE')", {s_.table}) == "t")
      lock_.exec("LOCK TABLE ONLY " + s_.table + " IN SHARE MODE");
    source = summarize(lock_, s_, "true");
    settle();
    auto deadline = Clock::now() + kSettle;
    while (!((target = summarize(tgt_, s_, "true")) == source) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    lock_.exec("COMMIT");
  } catch (const Error& e) {
    lock_.exec("ROLLBACK");
    if (e.sqlstate() != "55P03" && e.sqlstate() != "40P01") throw;
    unsettled = true;
  }
  if (source == target && !unsettled) return;
  Difference d;
  d.range = "whole table (no key)";
  d.source_rows = source.rows;
  d.target_rows = target.rows;
  d.samples.push_back(unsettled ? "the table could not be locked within lock_timeout; it kept changing"
                                : "checksum " + source.sum + " on the source, " + target.sum + " on the target");
  out.differences.push_back(std::move(d));
}

std::optional<Shape> shape_of(const pg::Connection& src, const pg::Connection& tgt, const std::string& oid,
                              const std::string& table, std::string& error) {
  Shape s;
  s.table = table;
  if (tgt.query_value("SELECT to_regclass($1) IS NOT NULL", {table}) != "t") {
    error = "missing on the target";
    return std::nullopt;
  }
  pg::Result cols = src.exec_params(
      "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped "
      "ORDER BY attnum", {oid});
  std::string list, missing;
  for (int i = 0; i < PQntuples(cols.get()); ++i) {
    std::string c = PQgetvalue(cols.get(), i, 0);
    list += (list.empty() ? "" : ", ") + c;
    if (tgt.query_value("SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND quote_ident(attname) = $2 "
                        "AND NOT attisdropped", {table, c}) == "0")
      missing += (missing.empty() ? "" : ", ") + c;
  }
  if (!missing.empty()) {
    error = "columns missing on the target: " + missing;
    return std::nullopt;
  }
  // The first 64 bits of the md5 of the row's text: summed per chunk, independent of row order.
  s.hash = "('x' || substr(md5(ROW(" + list + ")::text), 1, 16))::bit(64)::bigint";
  pg::Result key = src.exec_params(
      "SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod) FROM "
      "(SELECT indkey, indnkeyatts FROM pg_index WHERE indrelid = $1 AND (indisprimary OR indisreplident) "
      " ORDER BY indisprimary DESC LIMIT 1) i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
      "JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum WHERE k.ord <= i.indnkeyatts ORDER BY k.ord", {oid});
  for (int i = 0; i < PQntuples(key.get()); ++i) {
    s.key.push_back(Column{PQgetvalue(key.get(), i, 0), PQgetvalue(key.get(), i, 1)});
    s.keys += (s.keys.empty() ? "" : ", ") + s.key.back().name;
  }
  return s;
}

}  // namespace

void prepare_session(const pg::Connection& c) {
  c.exec("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
         "SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'; SET statement_timeout = 0; "
         "SET client_encoding = 'UTF8'; SET search_path = pg_catalog; SET default_transaction_read_only = off");
}

// The migration's selection unless other patterns are given: the plugin's dialect, compiled
// against the source's catalog as it is now (tables that match later are streamed too).
core::CompiledSelection selection_of(const VerifyOptions& o, const pg::Connection& src, const pg::Connection& tgt) {
  std::string tables = o.tables, exclude = o.exclude;
  if (tables.empty() && exclude.empty()) {
    if (auto stored = core::stored_selection(tgt, o.slot)) {
      tables = stored->tables;
      exclude = stored->exclude;
    }
  }
  return core::TableSelection(tables, exclude).compile(src);
}

SchemaResult verify_schema(const VerifyOptions& o, const pg::Connection& src, const pg::Connection& tgt) {
  SchemaResult r = compare_schemas(o.source, o.target, core::left_out_of_dump(selection_of(o, src, tgt)));
  spdlog::info("{}", r.equal() ? "schema equal" : "the schemas differ");
  return r;
}

std::vector<TableResult> verify_tables(const VerifyOptions& o, const pg::Connection& src, const pg::Connection& tgt) {
  pg::Connection lock = pg::Connection::open(o.source, "source");
  prepare_session(lock);
  follow::AppliedWatch watch(src, tgt, "dts_" + o.slot);
  bool applier = o.wait_for_applier && watch.has_applier();
  if (!applier && o.wait_for_applier) spdlog::info("no applier origin \"dts_{}\" on the target: comparing the tables as they are", o.slot);

  core::CompiledSelection selection = selection_of(o, src, tgt);
  // Partitioned tables hold no rows of their own: their partitions are compared.
  std::string oids;
  for (const auto& r : selection.selected)
    if (r.kind == 'r') oids += (oids.empty() ? "" : ",") + std::to_string(r.oid);
  pg::Result list = src.exec_params(
      "SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.oid = ANY(('{' || $1 || '}')::oid[]) ORDER BY 2", {oids});
  // A database without tables is equal when all of it is compared (a server's postgres
  // database, say); patterns that select nothing are a mistake.
  if (PQntuples(list.get()) == 0 && (!o.tables.empty() || !o.exclude.empty()))
    throw Error(ErrorKind::kConfig, "--tables/--exclude select no table of the source");

  std::vector<TableResult> results;
  for (int i = 0; i < PQntuples(list.get()); ++i) {
    TableResult r;
    r.table = PQgetvalue(list.get(), i, 1);
    auto start = Clock::now();
    try {
      std::optional<Shape> shape = shape_of(src, tgt, PQgetvalue(list.get(), i, 0), r.table, r.error);
      if (shape) {
        r.keyed = !shape->key.empty();
        TableVerifier v(o, src, tgt, lock, applier ? &watch : nullptr, std::move(*shape));
        if (r.keyed) v.run_keyed(r);
        else v.run_whole(r);
      }
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kConnection) throw;
      r.error = std::string("could not be compared: ") + e.what();  // the other tables still are
      lock.exec("ROLLBACK");
    }
    spdlog::info("{}: {} ({} rows, {} chunks, {:.2f} s)", r.table,
                 r.equal() ? "equal" : (r.error.empty() ? "DIFFERENT" : r.error), r.source_rows, r.chunks,
                 std::chrono::duration<double>(Clock::now() - start).count());
    results.push_back(std::move(r));
  }
  return results;
}

std::string render_table(const std::vector<TableResult>& results) {
  size_t w = 5;
  for (const auto& r : results) w = std::max(w, r.table.size());
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line), "%-*s  %-9s  %12s  %12s  %7s  %s\n", static_cast<int>(w), "table", "result",
                "source rows", "target rows", "chunks", "rechecked");
  out += line;
  for (const auto& r : results) {
    const char* result = r.equal() ? "EQUAL" : (r.error.empty() ? "DIFFERENT" : "ERROR");
    std::snprintf(line, sizeof(line), "%-*s  %-9s  %12lld  %12lld  %7lld  %lld\n", static_cast<int>(w), r.table.c_str(),
                  result, static_cast<long long>(r.source_rows), static_cast<long long>(r.target_rows),
                  static_cast<long long>(r.chunks), static_cast<long long>(r.rechecked));
    out += line;
    if (!r.error.empty()) out += "    " + r.error + "\n";
    for (const auto& d : r.differences) {
      out += "    range " + d.range + ": source " + std::to_string(d.source_rows) + " rows, target " +
             std::to_string(d.target_rows) + " rows" +
             (d.rows_differing > 0 ? ", " + std::to_string(d.rows_differing) + " rows differ" : "") + "\n";
      for (const auto& s : d.samples) out += "      " + s + "\n";
    }
  }
  size_t bad = 0;
  for (const auto& r : results) bad += r.equal() ? 0 : 1;
  out += bad == 0 ? "all " + std::to_string(results.size()) + " tables are equal\n"
                  : std::to_string(bad) + " of " + std::to_string(results.size()) + " tables differ\n";
  return out;
}

namespace {

void write_schema(rapidjson::Writer<rapidjson::StringBuffer>& w, const SchemaResult& schema) {
  w.Key("schema");
  w.StartObject();
  w.Key("result");
  w.String(schema.equal() ? "EQUAL" : "DIFFERENT");
  w.Key("statements");
  w.Uint64(schema.statements);
  for (auto [key, list] : {std::pair{"onlySource", &schema.only_source}, {"onlyTarget", &schema.only_target}}) {
    w.Key(key);
    w.StartArray();
    for (const auto& s : *list) w.String(s.c_str());
    w.EndArray();
  }
  w.EndObject();
}

}  // namespace

std::string render_json(const std::vector<TableResult>& results, const SchemaResult* schema) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  bool all_equal = schema == nullptr || schema->equal();
  for (const auto& r : results) all_equal = all_equal && r.equal();
  w.StartObject();
  w.Key("result");
  w.String(all_equal ? "EQUAL" : "DIFFERENT");
  if (schema != nullptr) write_schema(w, *schema);
  w.Key("tables");
  w.StartArray();
  for (const auto& r : results) {
    w.StartObject();
    w.Key("table");
    w.String(r.table.c_str());
    w.Key("result");
    w.String(r.equal() ? "EQUAL" : (r.error.empty() ? "DIFFERENT" : "ERROR"));
    w.Key("keyed");
    w.Bool(r.keyed);
    w.Key("sourceRows");
    w.Int64(r.source_rows);
    w.Key("targetRows");
    w.Int64(r.target_rows);
    w.Key("chunks");
    w.Int64(r.chunks);
    w.Key("rechecked");
    w.Int64(r.rechecked);
    w.Key("error");
    if (r.error.empty()) w.Null();
    else w.String(r.error.c_str());
    w.Key("differences");
    w.StartArray();
    for (const auto& d : r.differences) {
      w.StartObject();
      w.Key("range");
      w.String(d.range.c_str());
      w.Key("sourceRows");
      w.Int64(d.source_rows);
      w.Key("targetRows");
      w.Int64(d.target_rows);
      w.Key("rowsDiffering");
      w.Uint64(d.rows_differing);
      w.Key("samples");
      w.StartArray();
      for (const auto& s : d.samples) w.String(s.c_str());
      w.EndArray();
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize()) + "\n";
}

int run_verify(const VerifyOptions& o, bool json) {
  try {
    pg::Connection src = pg::Connection::open(o.source, "source");
    pg::Connection tgt = pg::Connection::open(o.target, "target");
    prepare_session(src);
    prepare_session(tgt);
    std::vector<TableResult> results = verify_tables(o, src, tgt);
    std::optional<SchemaResult> schema;
    if (o.schema) schema = verify_schema(o, src, tgt);
    std::fputs((json ? render_json(results, schema ? &*schema : nullptr)
                     : render_table(results) + (schema ? render_schema(*schema) : "")).c_str(), stdout);
    bool schema_differs = schema && !schema->equal();
    std::string differing;
    bool unrepairable = false;
    for (const auto& r : results) {
      if (!r.error.empty()) unrepairable = true;  // missing on the target, another shape: not rows
      else if (!r.equal()) differing += (differing.empty() ? "" : ",") + r.table;  // %I.%I: the patterns' dialect
    }
    if (differing.empty() || !o.repair) return differing.empty() && !unrepairable && !schema_differs ? 0 : 1;
    spdlog::info("repairing: copying {} again while the migration streams", differing);
    resync::ResyncOptions ro;
    ro.source = o.source;
    ro.target = o.target;
    ro.slot = o.slot;
    ro.tables = differing;
    std::atomic<bool> never_stop{false};
    if (resync::run_resync(ro, never_stop) != 0) return 1;
    VerifyOptions again = o;
    again.tables = differing;
    again.exclude.clear();
    std::vector<TableResult> after = verify_tables(again, src, tgt);
    std::fputs((json ? render_json(after) : render_table(after)).c_str(), stdout);
    for (const auto& r : after)
      if (!r.equal()) return 1;
    return unrepairable || schema_differs ? 1 : 0;
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}

}  // namespace dts::verify
