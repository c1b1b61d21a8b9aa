#include "migrate/copier.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"
#include "pg/connection.hpp"

namespace dts::migrate {

std::vector<TableToCopy> tables_to_copy(const core::CompiledSelection& selection, const pg::Connection& source) {
  std::vector<TableToCopy> out;
  for (const auto& r : selection.selected) {
    if (r.kind != 'r') continue;
    TableToCopy tc;
    tc.oid = r.oid;
    tc.schema = r.schema;
    tc.name = r.name;
    std::string oid = std::to_string(r.oid);
    pg::Result info = source.exec_params(
        "SELECT c.reltuples::bigint, pg_relation_size(c.oid) FROM pg_class c WHERE c.oid = $1", {oid});
    if (PQntuples(info.get()) == 0) continue;  // dropped since the selection was compiled
    tc.estimated_rows = std::strtoll(PQgetvalue(info.get(), 0, 0), nullptr, 10);
    tc.bytes = std::strtoull(PQgetvalue(info.get(), 0, 1), nullptr, 10);
    pg::Result cols = source.exec_params(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = '' ORDER BY attnum",
        {oid});
    for (int j = 0; j < PQntuples(cols.get()); ++j) tc.columns.push_back(PQgetvalue(cols.get(), j, 0));
    // The key the stream identifies rows by (the primary key, or the replica identity index),
    // if it is one integer column: changes are then placed in chunks by plain comparison.
    tc.key_column = source.query_value(
        "SELECT a.attname FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
        "WHERE c.oid = $1 AND i.indnkeyatts = 1 AND a.atttypid IN (20, 21, 23) "
        "AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))",
        {oid});
    if (!tc.key_column.empty()) {
      std::string key = apply::quote_ident(tc.key_column);
      pg::Result range = source.exec("SELECT min(" + key + ")::text, max(" + key + ")::text FROM ONLY " +
                                     apply::quote_ident(tc.schema) + "." + apply::quote_ident(tc.name));
      if (!PQgetisnull(range.get(), 0, 0)) {
        tc.key_min = parse_int64(PQgetvalue(range.get(), 0, 0), "the smallest key of " + tc.name);
        tc.key_max = parse_int64(PQgetvalue(range.get(), 0, 1), "the largest key of " + tc.name);
      }
    }
    out.push_back(std::move(tc));
  }
  return out;
}

std::vector<Chunk> plan_chunks(const std::vector<TableToCopy>& tables, uint64_t split_bytes) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < tables.size(); ++i) {
    const TableToCopy& t = tables[i];
    uint64_t n = split_bytes == 0 ? 1 : (t.bytes + split_bytes - 1) / split_bytes;
    if (t.key_column.empty() || !t.key_min || !t.key_max || n <= 1) {
      Chunk c;
      c.table = i;
      chunks.push_back(c);
      continue;
    }
    // Even ranges between the smallest and largest key: as even in size as the keys are dense.
    // Unsigned arithmetic: the distance between two int64 keys always fits.
    uint64_t span = static_cast<uint64_t>(*t.key_max) - static_cast<uint64_t>(*t.key_min);
    if (n > span) n = span + 1;
    uint64_t step = span / n + 1;
    for (uint64_t j = 0; j < n; ++j) {
      Chunk c;
      c.table = i;
      c.index = static_cast<int>(j);
      if (j > 0) c.lo = static_cast<int64_t>(static_cast<uint64_t>(*t.key_min) + step * j);
      bool last = j + 1 == n || step * (j + 1) > span;  // the next range would start past the largest key
      if (!last) c.hi = static_cast<int64_t>(static_cast<uint64_t>(*t.key_min) + step * (j + 1));
      chunks.push_back(c);
      if (last) break;
    }
  }
  return chunks;
}

namespace {

std::string column_list(const TableToCopy& t) {
  std::string cols;
  for (const auto& c : t.columns) cols += (cols.empty() ? "" : ", ") + apply::quote_ident(c);
  return cols;
}

std::string qualified(const TableToCopy& t) { return apply::quote_ident(t.schema) + "." + apply::quote_ident(t.name); }

std::string bound_param(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string(); }

}  // namespace

std::string chunk_read_sql(const TableToCopy& t, const Chunk& c, const std::string& cols) {
  // A table with no column to copy (none at all, or only generated ones) still has rows:
  // `SELECT FROM t` gives them as rows of zero fields, which binary COPY carries.
  std::string sql = "COPY (SELECT " + (cols.empty() ? "" : cols + " ") + "FROM ONLY " + qualified(t);
  std::string key = apply::quote_ident(t.key_column);
  std::string where = c.lo ? key + " >= " + std::to_string(*c.lo) : "";
  if (c.hi) where += (where.empty() ? "" : " AND ") + key + " < " + std::to_string(*c.hi);
  if (!where.empty()) sql += " WHERE " + where;
  return sql + ") TO STDOUT (FORMAT binary)";
}

std::string chunk_write_sql(const TableToCopy& t, const std::string& cols) {
  // `COPY t () FROM` is a syntax error: without a list COPY takes every column but the
  // generated ones, which is the same (empty) list.
  return "COPY " + qualified(t) + (cols.empty() ? "" : " (" + cols + ")") + " FROM STDIN (FORMAT binary)";
}

std::string chunk_range_text(const Chunk& c) {
  if (!c.lo && !c.hi) return "all";
  return (c.lo ? std::to_string(*c.lo) : "") + "-" + (c.hi ? std::to_string(*c.hi - 1) : "");
}

void create_chunk_table(const pg::Connection& target) {
  // generation: 0 for the migration's copy, a resync's id for a table copied again (the latest
  // one of a table is what the stream is reconciled with).
  target.exec("CREATE TABLE IF NOT EXISTS dts.copy_chunk (slot text NOT NULL, relid oid NOT NULL, "
              "generation bigint NOT NULL DEFAULT 0, chunk int NOT NULL, "
              "table_name text NOT NULL, key_column text NOT NULL, lo bigint, hi bigint, "
              "attempts int NOT NULL DEFAULT 0, snapshot text, snapshot_lsn pg_lsn, rows bigint, bytes bigint, "
              "done_at timestamptz, PRIMARY KEY (slot, relid, generation, chunk))");
}

void save_plan(const pg::Connection& target, const std::string& slot, int64_t generation,
               const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks) {
  std::string g = std::to_string(generation);
  target.exec_params("DELETE FROM dts.copy_chunk WHERE slot = $1 AND generation = $2", {slot, g});
  for (const Chunk& c : chunks) {
    const TableToCopy& t = tables[c.table];
    target.exec_params("INSERT INTO dts.copy_chunk (slot, relid, generation, chunk, table_name, key_column, lo, hi) "
                       "VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, '')::bigint, NULLIF($8, '')::bigint)",
                       {slot, std::to_string(t.oid), g, std::to_string(c.index), qualified(t), t.key_column,
                        bound_param(c.lo), bound_param(c.hi)});
  }
}

std::vector<Chunk> load_plan(const pg::Connection& target, const std::string& slot, int64_t generation,
                             const std::vector<TableToCopy>& tables) {
  std::vector<Chunk> chunks;
  pg::Result r = target.exec_params(
      "SELECT relid, chunk, lo, hi, attempts, snapshot IS NOT NULL, coalesce(rows, 0), coalesce(bytes, 0) "
      "FROM dts.copy_chunk WHERE slot = $1 AND generation = $2 ORDER BY relid, chunk",
      {slot, std::to_string(generation)});
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    auto oid = static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 0), nullptr, 10));
    auto t = std::find_if(tables.begin(), tables.end(), [oid](const TableToCopy& x) { return x.oid == oid; });
    if (t == tables.end())
      throw Error(ErrorKind::kConfig, "the saved plan of the copy names a table the source no longer has (oid " +
                                          std::to_string(oid) + "): cancel the migration and start it again");
    Chunk c;
    c.table = static_cast<size_t>(t - tables.begin());
    c.index = std::atoi(PQgetvalue(r.get(), i, 1));
    if (!PQgetisnull(r.get(), i, 2)) c.lo = std::strtoll(PQgetvalue(r.get(), i, 2), nullptr, 10);
    if (!PQgetisnull(r.get(), i, 3)) c.hi = std::strtoll(PQgetvalue(r.get(), i, 3), nullptr, 10);
    c.done = std::string(PQgetvalue(r.get(), i, 5)) == "t";
    c.redone = !c.done && std::atoi(PQgetvalue(r.get(), i, 4)) > 0;
    c.rows = std::strtoull(PQgetvalue(r.get(), i, 6), nullptr, 10);
    c.bytes = std::strtoull(PQgetvalue(r.get(), i, 7), nullptr, 10);
    chunks.push_back(c);
  }
  return chunks;
}

namespace {

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0;
  std::atomic<bool> stop{false};
  int finished = 0;
  std::exception_ptr error;
  uint64_t rows = 0;
  uint64_t bytes = 0;
  std::vector<PGcancel*> cancels;  // of the workers' open connections, to cancel their queries
};

// A worker's connections in Shared::cancels while they are open: the calling thread cancels
// their queries when the copy must stop (PQcancel is safe from another thread).
class Cancellable {
 public:
  Cancellable(Shared& sh, const pg::Connection& src, const pg::Connection& dst) : sh_(sh) {
    std::lock_guard<std::mutex> lock(sh_.mu);
    for (const pg::Connection* c : {&src, &dst})
      if (PGcancel* k = PQgetCancel(c->get())) mine_.push_back(k), sh_.cancels.push_back(k);
  }
  ~Cancellable() {
    std::lock_guard<std::mutex> lock(sh_.mu);
    for (PGcancel* k : mine_) {
      sh_.cancels.erase(std::remove(sh_.cancels.begin(), sh_.cancels.end(), k), sh_.cancels.end());
      PQfreeCancel(k);
    }
  }
  Cancellable(const Cancellable&) = delete;
  Cancellable& operator=(const Cancellable&) = delete;

 private:
  Shared& sh_;
  std::vector<PGcancel*> mine_;
};

// One chunk: read in a source transaction of its own, whose snapshot is recorded with the
// chunk in the target transaction that writes its rows.
// Begins the chunk's source transaction and returns its snapshot and the WAL position read just
// after it. A resync may ask for a newer snapshot (a change it skipped is committed in the WAL
// but not visible yet): a moment later it is.
std::pair<std::string, std::string> chunk_snapshot(const pg::Connection& src, const ChunkRecord& record,
                                                   const TableToCopy& t, const Chunk& c) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    src.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    // The snapshot is taken by this first statement; the WAL position is read after it, so
    // every transaction it sees committed before that position.
    pg::Result snap = src.exec("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text");
    std::pair<std::string, std::string> out{PQgetvalue(snap.get(), 0, 0), PQgetvalue(snap.get(), 0, 1)};
    if (!record.on_snapshot || record.on_snapshot(t, c, out.first, out.second)) return out;
    src.exec("ROLLBACK");
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(ErrorKind::kSource, "no snapshot of the source saw a transaction committed in its WAL for a minute");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// The columns to copy: the plan's, unless a schema change came between the plan and this
// chunk (a column dropped, renamed or retyped on the source, or not on the target yet): then
// those both sides have now with the same type, in the source's order (the source's in the
// chunk's snapshot). For the first copy, the stream's replay of that change copies the table
// again (apply/apply_schema_change.cpp), so what is left out here is not what the target ends
// with; a copy made while the stream runs waits for the target to catch up instead
// (ChunkRecord::on_shape_differs).
struct ChunkColumns {
  std::string list;
  bool complete = true;  // every column the source has, the target has with the same type
  std::string source_shape;  // the source's names and types, to tell one shape from another
};

ChunkColumns columns_now(const pg::Connection& src, const pg::Connection& dst, const TableToCopy& t) {
  const char* sql = "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass "
                    "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum";
  pg::Result s = src.exec_params(sql, {std::to_string(t.oid)});
  pg::Result d = dst.exec_params(sql, {qualified(t)});
  std::vector<std::string> planned = t.columns, now;
  ChunkColumns out;
  bool same = PQntuples(s.get()) == static_cast<int>(planned.size()) && PQntuples(d.get()) == PQntuples(s.get());
  for (int i = 0; i < PQntuples(s.get()); ++i) {
    std::string name = PQgetvalue(s.get(), i, 0), type = PQgetvalue(s.get(), i, 1);
    out.source_shape += apply::quote_ident(name) + " " + type + ", ";
    same = same && name == planned[static_cast<size_t>(i)];
    for (int j = 0; j < PQntuples(d.get()); ++j)
      if (name == PQgetvalue(d.get(), j, 0) && type == PQgetvalue(d.get(), j, 1)) now.push_back(name);
  }
  out.complete = now.size() == static_cast<size_t>(PQntuples(s.get()));
  if (same && now.size() == planned.size()) {
    out.list = column_list(t);
    return out;
  }
  for (const auto& c : now) out.list += (out.list.empty() ? "" : ", ") + apply::quote_ident(c);
  return out;
}

// Ends both sides' transactions of a chunk not copied.
void abandon_chunk(const pg::Connection& src, const pg::Connection& dst, const char* why) {
  if (PQtransactionStatus(dst.get()) == PQTRANS_ACTIVE) {
    PQputCopyEnd(dst.get(), why);
    while (PGresult* r = PQgetResult(dst.get())) PQclear(r);
  }
  dst.exec("ROLLBACK");
  src.exec("ROLLBACK");
}

// Pumps the chunk's rows from the source's COPY OUT into the target's COPY IN, both open.
void transfer_chunk(const pg::Connection& src, const pg::Connection& dst, const TableToCopy& t, Chunk& c,
                    uint64_t& bytes, const std::atomic<bool>& stop) {
  char* buf = nullptr;
  int len;
  while ((len = PQgetCopyData(src.get(), &buf, 0)) > 0) {
    if (stop.load()) {
      // Abandoned: the target rolls the chunk back (its transaction never commits).
      PQfreemem(buf);
      PQputCopyEnd(dst.get(), "migrate is stopping");
      throw Stopped("the copy of " + qualified(t) + " was stopped");
    }
    int ok = PQputCopyData(dst.get(), buf, len);
    PQfreemem(buf);
    if (ok != 1) throw Error(ErrorKind::kConnection, "lost the target while copying " + qualified(t));
    bytes += static_cast<uint64_t>(len);
    c.bytes += static_cast<uint64_t>(len);
  }
  if (len == -2) throw Error(ErrorKind::kConnection, "lost the source while copying " + qualified(t));
  pg::Result src_done(PQgetResult(src.get()));
  if (PQresultStatus(src_done.get()) != PGRES_COMMAND_OK)
    throw Error(pg::session_ended(src_done.get()) ? ErrorKind::kConnection : ErrorKind::kSource,
                "copying " + qualified(t) + " from the source failed: " + std::string(PQresultErrorMessage(src_done.get())),
                pg::sqlstate(src_done.get()));
  while (PGresult* r = PQgetResult(src.get())) PQclear(r);
  if (PQputCopyEnd(dst.get(), nullptr) != 1) throw Error(ErrorKind::kConnection, "lost the target copying " + qualified(t));
  pg::Result dst_done(PQgetResult(dst.get()));
  if (PQresultStatus(dst_done.get()) != PGRES_COMMAND_OK)
    throw Error(ErrorKind::kApply, "the target rejected the data of " + qualified(t) + ": " +
                                       std::string(PQresultErrorMessage(dst_done.get())), pg::sqlstate(dst_done.get()));
  c.rows = std::strtoull(PQcmdTuples(dst_done.get()), nullptr, 10);
  while (PGresult* r = PQgetResult(dst.get())) PQclear(r);
}

enum class Attempt { kCopied, kAgain, kWithdrawn };

// A chunk not copied now: both transactions end, and the copy made while the stream runs waits
// as its record says before the chunk is read again.
Attempt hand_back(const pg::Connection& src, const pg::Connection& dst, const ChunkRecord& record,
                  const TableToCopy& t, const Chunk& c, const char* why, const std::string& lsn) {
  abandon_chunk(src, dst, why);
  if (record.on_handed_back) record.on_handed_back(t, c, lsn);
  return Attempt::kAgain;
}

// The chunk's rows, read in its snapshot and written in one target transaction with its
// record. kWithdrawn: a later copy of the table superseded this one (its dts.copy_chunk row
// is gone), and nothing was written.
Attempt copy_attempt(const pg::Connection& src, const pg::Connection& dst, const ChunkRecord& record,
                     const TableToCopy& t, Chunk& c, uint64_t& bytes, const std::atomic<bool>& stop, int& tries) {
  auto [snapshot, snapshot_lsn] = chunk_snapshot(src, record, t, c);
  // A key range is read through the key's index: the planner would rather scan the whole table
  // for a range of a sixth of it, and then every chunk reads every page.
  if (c.lo || c.hi) src.exec("SET LOCAL enable_seqscan = off");
  dst.exec("BEGIN");
  // While the stream runs, the applier may hold a lock this COPY needs and wait for the chunk:
  // the worker gives way instead (the chunk is handed back and read again).
  if (record.on_handed_back) dst.exec("SET LOCAL lock_timeout = '1s'");
  ChunkColumns cols = columns_now(src, dst, t);
  if (!cols.complete && record.copy_common_columns) {
    if (!record.copy_common_columns(t, c, cols.source_shape, snapshot_lsn))
      return hand_back(src, dst, record, t, c, "the target's columns are behind the source's", snapshot_lsn);
    spdlog::warn("{}: the target lacks columns the source has ({}) though it has every schema change up to the "
                 "chunk's snapshot; copying those both sides have", qualified(t), cols.source_shape);
  } else if (cols.list != column_list(t)) {
    spdlog::info("{}: its columns changed since the copy was planned; copying those both sides have", qualified(t));
  }
  pg::Result in(PQexec(dst.get(), chunk_write_sql(t, cols.list).c_str()));
  if (PQresultStatus(in.get()) != PGRES_COPY_IN) {
    if (record.on_handed_back && pg::sqlstate(in.get()) == "55P03")
      return hand_back(src, dst, record, t, c, "lock timeout", "");
    throw Error(ErrorKind::kApply, "the target refused COPY into " + qualified(t) + ": " +
                                       std::string(PQresultErrorMessage(in.get())), pg::sqlstate(in.get()));
  }
  pg::Result out(PQexec(src.get(), chunk_read_sql(t, c, cols.list).c_str()));
  const char* state = PQresultErrorField(out.get(), PG_DIAG_SQLSTATE);
  if (PQresultStatus(out.get()) != PGRES_COPY_OUT && tries > 1 && state != nullptr && std::string(state) == "42703") {
    // A column dropped or renamed after this chunk's snapshot: the snapshot's catalog still
    // had it, the server's relation cache not. A snapshot taken now agrees with both.
    abandon_chunk(src, dst, "the source's columns changed");
    tries--;
    return Attempt::kAgain;
  }
  if (PQresultStatus(out.get()) != PGRES_COPY_OUT)
    throw Error(ErrorKind::kSource, "the source refused to copy " + qualified(t) + ": " +
                                        std::string(PQresultErrorMessage(out.get())));
  try {
    transfer_chunk(src, dst, t, c, bytes, stop);
  } catch (const Error& e) {
    // A row of the chunk waited too long on one the applier has not committed (a unique key).
    if (!record.on_handed_back || e.sqlstate() != "55P03") throw;
    return hand_back(src, dst, record, t, c, "lock timeout", "");
  }
  // The chunk and the record that it is done commit together: all there or not at all.
  pg::Result recorded = dst.exec_params(
      "UPDATE dts.copy_chunk SET snapshot = $5, snapshot_lsn = $6::pg_lsn, rows = $7, bytes = $8, "
      "done_at = now() WHERE slot = $1 AND relid = $2 AND generation = $3 AND chunk = $4",
      {record.slot, std::to_string(t.oid), std::to_string(record.generation), std::to_string(c.index),
       snapshot, snapshot_lsn, std::to_string(c.rows.load()), std::to_string(c.bytes.load())});
  if (std::string(PQcmdTuples(recorded.get())) == "0") {
    abandon_chunk(src, dst, "withdrawn");
    return Attempt::kWithdrawn;
  }
  dst.exec("COMMIT");
  src.exec("COMMIT");
  return Attempt::kCopied;
}

void copy_one(const pg::Connection& src, const pg::Connection& dst, const ChunkRecord& record, const TableToCopy& t,
              Chunk& c, uint64_t& bytes, const std::atomic<bool>& stop) {
  pg::Result started = dst.exec_params(
      "UPDATE dts.copy_chunk SET attempts = attempts + 1 WHERE slot = $1 AND relid = $2 AND generation = $3 AND chunk = $4",
      {record.slot, std::to_string(t.oid), std::to_string(record.generation), std::to_string(c.index)});
  Attempt done = std::string(PQcmdTuples(started.get())) == "0" && record.on_snapshot ? Attempt::kWithdrawn : Attempt::kAgain;
  int tries = 3;
  while (done == Attempt::kAgain) {
    if (stop.load()) throw Stopped("the copy of " + qualified(t) + " was stopped");
    done = copy_attempt(src, dst, record, t, c, bytes, stop, tries);
  }
  c.done = true;
  if (done == Attempt::kWithdrawn) {
    // A later copy of the table took over (a rewrite on the source): nothing of this one is written.
    c.rows = 0;
    spdlog::info("{}: chunk {} of an earlier copy withdrawn (the table is copied again)", qualified(t), c.index);
    return;
  }
  if (record.on_written) record.on_written(t, c);
}

void worker(const std::string& source, const std::string& target, const ChunkRecord& record,
            const std::vector<TableToCopy>& tables, std::vector<Chunk>& chunks, Shared& sh) {
  try {
    pg::Connection src = pg::Connection::open(source, "source");
    pg::Connection dst = pg::Connection::open(target, "target");
    dst.exec("SET session_replication_role = replica");
    dst.exec("SET synchronous_commit = off");
    Cancellable cancellable(sh, src, dst);
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(sh.mu);
        while (sh.next < chunks.size() && chunks[sh.next].done) sh.next++;
        if (sh.stop || sh.next >= chunks.size()) {
          sh.finished++;
          sh.cv.notify_all();
          return;
        }
        i = sh.next++;
      }
      uint64_t bytes = 0;
      copy_one(src, dst, record, tables[chunks[i].table], chunks[i], bytes, sh.stop);
      std::lock_guard<std::mutex> lock(sh.mu);
      sh.rows += chunks[i].rows;
      sh.bytes += bytes;
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(sh.mu);
    sh.finished++;
    sh.cv.notify_all();
    if (!sh.error) sh.error = std::current_exception();
    sh.stop = true;
  }
}

}  // namespace

CopyResult copy_chunks(const std::string& source, const std::string& target, const ChunkRecord& record,
                       const std::vector<TableToCopy>& tables, std::vector<Chunk>& chunks, int jobs,
                       const std::function<void()>& report, const StopCheck& should_stop) {
  using Clock = std::chrono::steady_clock;
  Shared sh;
  jobs = std::max(1, jobs);
  std::vector<std::thread> threads;
  // No exception may leave here while a worker runs: a joinable std::thread destroyed by the
  // unwinding calls std::terminate. Errors stop the workers, which are joined, then rethrown.
  std::exception_ptr own_error;
  try {
    for (int j = 0; j < jobs; ++j)
      threads.emplace_back(worker, std::cref(source), std::cref(target), std::cref(record), std::cref(tables),
                           std::ref(chunks), std::ref(sh));
  } catch (...) {  // a thread could not be started
    own_error = std::current_exception();
  }
  bool stopping = false;
  auto last_report = Clock::now();
  Clock::time_point last_cancel;
  {
    std::unique_lock<std::mutex> lock(sh.mu);
    if (own_error) sh.stop = true;
    while (sh.finished < static_cast<int>(threads.size())) {
      sh.cv.wait_for(lock, std::chrono::milliseconds(100));
      if (!stopping && should_stop) {
        lock.unlock();
        stopping = should_stop();
        lock.lock();
        if (stopping) sh.stop = true;
      }
      // Again every second: a cancel that arrives between two statements cancels nothing.
      if (stopping && Clock::now() - last_cancel >= std::chrono::seconds(1)) {
        char err[256];
        for (PGcancel* k : sh.cancels) PQcancel(k, err, sizeof(err));
        last_cancel = Clock::now();
      }
      if (report && !stopping && !own_error && Clock::now() - last_report >= std::chrono::milliseconds(500)) {
        lock.unlock();
        try {
          report();
        } catch (...) {
          own_error = std::current_exception();
        }
        lock.lock();
        if (own_error) sh.stop = true;  // each worker ends after its chunk
        last_report = Clock::now();
      }
    }
  }
  for (auto& t : threads) t.join();
  // The workers' errors are then those of their cancelled queries: not worth a word.
  if (stopping) throw Stopped("the copy was stopped");
  if (sh.error) std::rethrow_exception(sh.error);
  if (own_error) std::rethrow_exception(own_error);
  return CopyResult{sh.rows, sh.bytes};
}

}  // namespace dts::migrate
