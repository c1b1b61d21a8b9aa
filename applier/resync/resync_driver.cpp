#include "resync/resync_driver.hpp"

#include <spdlog/spdlog.h>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "core/table_selection.hpp"
#include "pg/snapshot.hpp"

namespace dts::resync {
namespace {

constexpr std::chrono::seconds kCheckInterval{1};
constexpr int kJobs = 2;

std::string qualified(const migrate::TableToCopy& t) {
  return apply::quote_ident(t.schema) + "." + apply::quote_ident(t.name);
}

}  // namespace

void create_request_table(const pg::Connection& target) {
  target.exec("CREATE SCHEMA IF NOT EXISTS dts");
  target.exec("CREATE TABLE IF NOT EXISTS dts.resync (id bigserial PRIMARY KEY, slot text NOT NULL, "
              "tables text NOT NULL, exclude_tables text NOT NULL DEFAULT '', chunk_bytes bigint NOT NULL DEFAULT 67108864, "
              "state text NOT NULL DEFAULT 'REQUESTED', error text, chunks int, rows bigint, "
              "requested_at timestamptz NOT NULL DEFAULT now(), done_at timestamptz)");
}

void ResyncDriver::attach(apply::ApplyEngine& engine) {
  stop();
  engine_ = &engine;
  stop_ = false;
}

void ResyncDriver::stop() {
  stop_ = true;
  if (copier_.joinable()) copier_.join();
  active_ = 0;
  finished_ = false;
  error_ = nullptr;
}

void ResyncDriver::tick(Lsn applied) {
  applied_ = applied;
  if (engine_ == nullptr) return;
  if (active_ != 0) {
    if (!finished_) return;
    copier_.join();
    int64_t id = active_;
    active_ = 0;
    finished_ = false;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::string why = "the copy failed";
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        why = ex.what();
      }
      record_stop(id, why);
      std::rethrow_exception(e);
    }
    uint64_t rows = 0;
    for (const auto& c : chunks_) rows += c.rows;
    target_.exec_params("UPDATE dts.resync SET state = 'DONE', rows = $2, done_at = now() WHERE id = $1",
                        {std::to_string(id), std::to_string(rows)});
    spdlog::info("resync {}: {} tables copied again ({} chunks, {} rows) while the stream went on", id, tables_.size(),
                 chunks_.size(), rows);
    return;
  }
  auto now = std::chrono::steady_clock::now();
  if (now - last_check_ < kCheckInterval || engine_->in_transaction()) return;
  last_check_ = now;
  if (!target_) target_ = pg::Connection::open(opts_.target, "target");
  if (target_.query_value("SELECT to_regclass('dts.resync') IS NOT NULL") != "t") return;
  // A copy under way first, whatever was asked before it: its tables were emptied and their
  // changes are skipped until it is read. A request queued earlier that went first would empty
  // and copy them in its own plan, and the copy under way, resumed after it, would then write
  // its rows a second time (a rewrite's copy behind a request made by hand).
  pg::Result r = target_.exec_params(
      "SELECT id, tables, exclude_tables, state, chunk_bytes FROM dts.resync WHERE slot = $1 "
      "AND state IN ('REQUESTED', 'COPYING') ORDER BY state = 'COPYING' DESC, id LIMIT 1", {opts_.slot});
  if (PQntuples(r.get()) == 0) return;
  int64_t id = std::strtoll(PQgetvalue(r.get(), 0, 0), nullptr, 10);
  try {
    chunk_bytes_ = std::strtoull(PQgetvalue(r.get(), 0, 4), nullptr, 10);
    if (!start(id, PQgetvalue(r.get(), 0, 1), PQgetvalue(r.get(), 0, 2), std::string(PQgetvalue(r.get(), 0, 3)) == "COPYING"))
      return;  // not now: the next tick tries again
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConnection) throw;
    // Refused before its tables were emptied: nothing to resume. After: as a failed copy.
    if (target_.query_value("SELECT state FROM dts.resync WHERE id = $1", {std::to_string(id)}) == "COPYING") {
      record_stop(id, e.what());
      throw;
    }
    target_.exec_params("UPDATE dts.resync SET state = 'FAILED', error = $2, done_at = now() WHERE id = $1",
                        {std::to_string(id), e.what()});
    spdlog::error("resync {} refused: {}", id, e.what());
  }
}

// A copy that stopped once its tables were emptied: FAILED, the chunks left would never be read
// and every change to those tables would go on being skipped, a silent loss. It stays COPYING
// with the error, and the next start of the stream (a reconnect, a restart) resumes it.
void ResyncDriver::record_stop(int64_t id, const std::string& why) {
  target_.exec_params("UPDATE dts.resync SET error = $2 WHERE id = $1", {std::to_string(id), why});
  spdlog::error("resync {}: the copy stopped ({}); it resumes when the stream starts again", id, why);
}

// Empties the tables and saves the plan, in one target transaction with the request's new
// state; the stream's changes of them are skipped from here on until their chunks are read.
void ResyncDriver::empty_tables(int64_t id) {
  target_.exec("BEGIN");
  try {
    // A streamed transaction of ours may still hold a lock on one of them: give way, not wait.
    target_.exec("SET LOCAL lock_timeout = '2s'");
    target_.exec("SET LOCAL session_replication_role = replica");
    for (const auto& t : tables_) {
      bool referenced = target_.query_value("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND "
                                            "confrelid = to_regclass($1))", {qualified(t)}) == "t";
      // Referenced by a foreign key, TRUNCATE would refuse (or cascade): DELETE, with the
      // foreign keys' triggers off in this replica session.
      target_.exec((referenced ? "DELETE FROM ONLY " : "TRUNCATE ONLY ") + qualified(t));
    }
    // The chunks of earlier copies of these tables go: after a restart the reconciler knows a
    // table by its newest copy (the highest generation), and a request queued before a copy it
    // runs after (COPYING goes first) has the lower id. Only finished copies are left here.
    std::string oids;
    for (const auto& t : tables_) oids += (oids.empty() ? "" : ",") + std::to_string(t.oid);
    target_.exec_params("DELETE FROM dts.copy_chunk WHERE slot = $1 AND generation <> $2 "
                        "AND relid = ANY (('{' || $3 || '}')::oid[])", {opts_.slot, std::to_string(id), oids});
    migrate::save_plan(target_, opts_.slot, id, tables_, chunks_);
    target_.exec_params("UPDATE dts.resync SET state = 'COPYING', chunks = $2 WHERE id = $1",
                        {std::to_string(id), std::to_string(chunks_.size())});
    target_.exec("COMMIT");
  } catch (...) {
    target_.exec("ROLLBACK");
    throw;
  }
}

// A resync under way names its tables by OID in its plan: a table renamed or moved since
// (a schema change after the one that asked for the copy) is still the one to copy, and one
// the source dropped meanwhile is forgotten.
core::CompiledSelection ResyncDriver::planned_tables(int64_t id, const pg::Connection& source) {
  pg::Result planned = target_.exec_params(
      "SELECT DISTINCT relid FROM dts.copy_chunk WHERE slot = $1 AND generation = $2", {opts_.slot, std::to_string(id)});
  std::string oids;
  for (int i = 0; i < PQntuples(planned.get()); ++i) oids += (oids.empty() ? "" : ",") + std::string(PQgetvalue(planned.get(), i, 0));
  pg::Result r = source.exec_params(
      "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.oid = ANY(('{' || $1 || '}')::oid[])", {oids});
  core::CompiledSelection selection;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    core::SelectedRelation rel;
    rel.oid = static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 0), nullptr, 10));
    rel.schema = PQgetvalue(r.get(), i, 1);
    rel.name = PQgetvalue(r.get(), i, 2);
    rel.kind = PQgetvalue(r.get(), i, 3)[0];
    selection.selected.push_back(std::move(rel));
  }
  for (int i = 0; i < PQntuples(planned.get()); ++i) {
    auto relid = static_cast<uint32_t>(std::strtoul(PQgetvalue(planned.get(), i, 0), nullptr, 10));
    if (std::any_of(selection.selected.begin(), selection.selected.end(), [relid](const auto& s) { return s.oid == relid; }))
      continue;
    target_.exec_params("DELETE FROM dts.copy_chunk WHERE slot = $1 AND generation = $2 AND relid = $3",
                        {opts_.slot, std::to_string(id), std::to_string(relid)});
    engine_->reconciler().forget(relid);
    spdlog::info("resync {}: table {} was dropped on the source meanwhile: not copied", id, relid);
  }
  return selection;
}

bool ResyncDriver::start(int64_t id, const std::string& tables, const std::string& exclude, bool resuming) {
  pg::Connection source = pg::Connection::open(opts_.source, "source");
  core::CompiledSelection selection =
      resuming ? planned_tables(id, source) : core::TableSelection(tables, exclude).compile(source);
  if (selection.selected.empty() && resuming) {
    target_.exec_params("UPDATE dts.resync SET state = 'DONE', rows = 0, done_at = now() WHERE id = $1", {std::to_string(id)});
    return true;
  }
  if (selection.selected.empty()) throw Error(ErrorKind::kConfig, "--tables \"" + tables + "\" selects no table");
  tables_ = migrate::tables_to_copy(selection, source);
  if (resuming) {
    chunks_ = migrate::load_plan(target_, opts_.slot, id, tables_);  // the engine loaded their state too
  } else {
    // Nothing of ours may be uncommitted when the tables are emptied.
    engine_->commit_group();
    engine_->sync();
    if (!engine_->idle()) return false;  // a streamed transaction is open
    chunks_ = migrate::plan_chunks(tables_, chunk_bytes_);
    try {
      empty_tables(id);
    } catch (const Error& e) {
      if (e.sqlstate() != "55P03") throw;  // lock_not_available: a streamed transaction holds one
      return false;
    }
    for (size_t i = 0; i < tables_.size(); ++i) {
      apply::CopiedTable ct;
      ct.key_column = tables_[i].key_column;
      ct.generation = id;
      for (const auto& c : chunks_) {
        if (c.table != i) continue;
        apply::CopiedChunk cc;
        cc.index = c.index;
        cc.lo = c.lo;
        cc.hi = c.hi;
        cc.state = apply::ChunkState::kPending;
        ct.chunks.push_back(std::move(cc));
      }
      engine_->reconciler().add(tables_[i].oid, std::move(ct), 0);
    }
  }
  size_t todo = std::count_if(chunks_.begin(), chunks_.end(), [](const migrate::Chunk& c) { return !c.done.load(); });
  spdlog::info("resync {}: copying {} tables again, {} chunks{}, while the stream goes on", id, tables_.size(), todo,
               resuming ? " (resumed)" : "");
  apply::CopyReconciler& reconciler = engine_->reconciler();
  // A copy again the stream asked for (a rewrite) is known to the reconciler by this id from now on.
  for (const auto& t : tables_) reconciler.adopt(t.oid, id);
  {
    std::lock_guard<std::mutex> lock(deferred_mu_);
    deferred_.clear();
  }
  record_ = migrate::ChunkRecord{opts_.slot, id,
      [&reconciler, id](const migrate::TableToCopy& t, const migrate::Chunk& c, const std::string& snapshot,
                        const std::string& lsn) {
        auto s = pg::Snapshot::parse(snapshot);
        if (!s) throw Error(ErrorKind::kSource, "the source gave a malformed snapshot: " + snapshot);
        return reconciler.start_reading(t.oid, id, c.index, *s, parse_lsn(lsn).value_or(0));
      },
      [&reconciler, id](const migrate::TableToCopy& t, const migrate::Chunk& c) {
        reconciler.finish_reading(t.oid, id, c.index);
      },
      [this](const migrate::TableToCopy& t, const migrate::Chunk&, const std::string& shape, const std::string& lsn) {
        return copy_common_columns(t, shape, parse_lsn(lsn).value_or(0));
      },
      [this, &reconciler, id](const migrate::TableToCopy& t, const migrate::Chunk& c, const std::string& lsn) {
        reconciler.give_back(t.oid, id, c.index);
        wait_before_reading_again(t, c, lsn.empty() ? 0 : parse_lsn(lsn).value_or(0));
      }};
  active_ = id;
  finished_ = false;
  copier_ = std::thread([this, &reconciler] {
    try {
      migrate::copy_chunks(opts_.source, opts_.target, record_, tables_, chunks_, kJobs, nullptr,
                           [this] { return stop_.load(); });
    } catch (const std::exception& e) {
      error_ = std::current_exception();
      reconciler.fail(e.what());
    } catch (...) {  // nothing may leave a thread
      error_ = std::current_exception();
      reconciler.fail("the copy failed");
    }
    finished_ = true;
  });
  return true;
}

// A chunk whose snapshot sees columns the target lacks: a column added, renamed or retyped on
// the source, whose schema change the stream has not applied yet. Copying the columns both
// sides have would lose the others for good (the stream's replay of the change cannot tell),
// so the chunk is handed back and read again once the stream has applied every transaction
// committed before this snapshot's position. If the target still lacks them then, with the
// source's columns unchanged, they will not come (replay off, or the target changed by hand):
// the columns both sides have are copied, as the first copy does.
bool ResyncDriver::copy_common_columns(const migrate::TableToCopy& t, const std::string& shape, Lsn lsn) {
  std::lock_guard<std::mutex> lock(deferred_mu_);
  auto it = deferred_.find(t.oid);
  if (it != deferred_.end() && it->second.first == shape && applied_.load() >= it->second.second) return true;
  if (it == deferred_.end() || it->second.first != shape) deferred_[t.oid] = {shape, lsn};
  return false;
}

// A chunk handed back (both its transactions ended, so nothing is held meanwhile): for the
// stream to pass `lsn`, or a moment for the applier to commit the lock it held (lsn 0).
void ResyncDriver::wait_before_reading_again(const migrate::TableToCopy& t, const migrate::Chunk& c, Lsn lsn) {
  if (lsn == 0) {
    spdlog::debug("{}.{}: chunk {} waited a second for a lock the applier holds; read again in a moment", t.schema,
                  t.name, c.index);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return;
  }
  spdlog::info("{}.{}: the source has columns the target lacks yet; chunk {} is read again once the stream has applied "
               "the schema change", t.schema, t.name, c.index);
  while (applied_.load() < lsn && !stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

}  // namespace dts::resync
