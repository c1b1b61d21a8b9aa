#include "complete/complete.hpp"

#include <spdlog/spdlog.h>

#include <memory>
#include <thread>

#include "apply/apply_engine.hpp"
#include "apply/sql_builder.hpp"
#include "cancel/cancel.hpp"
#include "check/privileges.hpp"
#include "common/error.hpp"
#include "core/migration.hpp"
#include "core/table_selection.hpp"
#include "follow/applied_watch.hpp"
#include "follow/follow.hpp"
#include "migrate/migrate.hpp"
#include "pg/connection.hpp"
#include "verify/verify.hpp"

namespace dts::complete {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// The source's switch to read-only: default_transaction_read_only for the cluster (ALTER
// SYSTEM and a reload reach existing sessions at their next transaction) or for the database
// (new sessions only, so its other sessions are disconnected). Remembers how to undo it.
class ReadOnlySwitch {
 public:
  ReadOnlySwitch(const pg::Connection& source, std::string conninfo, ReadOnlyScope scope)
      : src_(source), conninfo_(std::move(conninfo)), scope_(scope) {}

  // Returns the server time from which every new transaction is read-only.
  std::string enable() {
    if (scope_ == ReadOnlyScope::kCluster) {
      // From the file, not pg_settings: this session has its own value set. pg_file_settings is
      // for superusers (and roles granted its function): without it, the undo is a RESET, which
      // is right unless postgresql.auto.conf already held the setting (the source was writable,
      // or complete could not run: so at most an explicit "off" becomes the default "off").
      bool can_read = src_.query_value("SELECT has_function_privilege('pg_show_all_file_settings()', 'EXECUTE')") == "t";
      std::string before = !can_read ? "" : src_.query_value(
          "SELECT coalesce((SELECT setting FROM pg_file_settings WHERE name = 'default_transaction_read_only' "
          "AND sourcefile LIKE '%postgresql.auto.conf' AND applied ORDER BY seqno DESC LIMIT 1), '')");
      undo_ = (before.empty() ? std::string("ALTER SYSTEM RESET default_transaction_read_only")
                              : "ALTER SYSTEM SET default_transaction_read_only = " + before) +
              "; SELECT pg_reload_conf();";
      src_.exec("ALTER SYSTEM SET default_transaction_read_only = on");
      enabled_ = true;
      src_.exec("SELECT pg_reload_conf()");
    } else {
      std::string db = apply::quote_ident(src_.query_value("SELECT current_database()"));
      undo_ = "ALTER DATABASE " + db + " RESET default_transaction_read_only;";
      src_.exec("ALTER DATABASE " + db + " SET default_transaction_read_only = on");
      enabled_ = true;
    }
    // The reload is asynchronous: once a new session starts read-only, the postmaster has
    // signalled every backend, and each applies it before its next command.
    auto deadline = Clock::now() + std::chrono::seconds(10);
    for (;;) {
      pg::Connection probe = pg::Connection::open(conninfo_, "source");
      if (probe.query_value("SHOW default_transaction_read_only") == "on")
        return probe.query_value("SELECT extract(epoch FROM clock_timestamp())::text");
      if (Clock::now() > deadline)
        throw Error(ErrorKind::kSource, "the source did not turn read-only within 10 s of the reload");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // On a connection of its own: the failure being handled may be the loss of the other one.
  void undo() {
    if (!enabled_) return;
    pg::Connection c = pg::Connection::open(conninfo_, "source");
    c.exec("SET default_transaction_read_only = off");
    if (scope_ == ReadOnlyScope::kCluster) {
      c.exec(undo_.substr(0, undo_.find(';')));
      c.exec("SELECT pg_reload_conf()");
    } else {
      c.exec(undo_);
      spdlog::warn("sessions that connected while the database was read-only stay read-only until they reconnect");
    }
    enabled_ = false;
  }

  bool enabled() const { return enabled_; }
  const std::string& undo_sql() const { return undo_; }

 private:
  const pg::Connection& src_;
  std::string conninfo_;
  ReadOnlyScope scope_;
  bool enabled_ = false;
  std::string undo_;
};

// Transactions that began before the read-only point may still write: they get until the
// deadline to end, then are terminated. With database scope every other session of the
// database goes, since their sessions keep the old default.
void drain_writers(const pg::Connection& src, const std::string& point, const CompleteOptions& o,
                   const std::atomic<bool>& interrupted) {
  std::string self = src.query_value("SELECT pg_backend_pid()");
  std::string scope = o.scope == ReadOnlyScope::kDatabase ? " AND datname = current_database()" : "";
  std::string writers = "FROM pg_stat_activity WHERE backend_type IN ('client backend', 'background worker') "
                        "AND pid <> $1::int" + scope + " AND xact_start < to_timestamp($2::float8)";
  auto deadline = Clock::now() + o.drain_timeout;
  while (src.query_value("SELECT count(*) " + writers, {self, point}) != "0" && Clock::now() < deadline) {
    if (interrupted.load()) throw Error(ErrorKind::kInternal, "interrupted while transactions drained");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pg::Result killed = src.exec_params(
      "SELECT string_agg(format('pid %s (%s, %s)', pid, usename, coalesce(nullif(application_name, ''), 'no name')), ', '), "
      "count(pg_terminate_backend(pid)) " + writers, {self, point});
  if (std::string(PQgetvalue(killed.get(), 0, 1)) != "0") {
    spdlog::warn("terminated sessions whose transactions were still open {} s after the read-only point: {}",
                 o.drain_timeout.count(), PQgetvalue(killed.get(), 0, 0));
    // Termination is a signal: a backend already committing may still finish. Wait until they
    // are gone, so that no commit can land after the stop marker.
    auto gone = Clock::now() + std::chrono::seconds(30);
    while (src.query_value("SELECT count(*) " + writers, {self, point}) != "0") {
      if (Clock::now() > gone) throw Error(ErrorKind::kSource, "terminated sessions did not exit within 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (o.scope == ReadOnlyScope::kDatabase) {
    std::string n = src.query_value(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND datname = current_database() AND pid <> $1::int", {self});
    if (n != "0") spdlog::info("disconnected {} sessions of the database: they reconnect read-only", n);
  }
}

// Nothing may write after the stop marker: a prepared transaction can still be committed on a
// read-only server, and a session can ask for READ WRITE explicitly.
void check_quiet(const pg::Connection& src) {
  std::string prepared = src.query_value("SELECT string_agg(gid, ', ') FROM pg_prepared_xacts");
  if (!prepared.empty())
    throw Error(ErrorKind::kSource, "prepared transactions could still commit on the read-only source: " + prepared +
                                        "; COMMIT PREPARED or ROLLBACK PREPARED them, then run complete again");
  std::string writing = src.query_value(
      "SELECT string_agg(format('pid %s (%s)', pid, usename), ', ') FROM pg_stat_activity "
      "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND backend_type IN ('client backend', 'background worker')");
  if (!writing.empty())
    throw Error(ErrorKind::kSource, "sessions still write on the read-only source (they asked for READ WRITE): " +
                                        writing + "; stop them, then run complete again");
}

// The stop marker's LSN in dts.migration ("" clears it): a migrate restarted after applying
// the marker reads it there, and one restarted after an undone cutover goes on following.
void record_stop(const pg::Connection& tgt, const std::string& slot, const std::string& lsn) {
  tgt.exec_params("UPDATE dts.migration SET stop_lsn = NULLIF($2, '')::pg_lsn WHERE slot = $1", {slot, lsn});
}

// What must hold before anything changes on the source. `has_state`: the target has migrate's
// dts.migration (a plain follow has only its origin).
void check_ready(const CompleteOptions& o, const pg::Connection& src, const pg::Connection& tgt,
                 const follow::AppliedWatch& watch, bool has_state) {
  // Checked before anything changes: a role that is not a superuser needs grants for the
  // switch, and must see the other sessions' transactions (or drain_writers would miss them).
  long version = std::stol(src.query_value("SELECT current_setting('server_version_num')"));
  std::string missing = src.query_value(check::read_only_missing_sql(o.scope == ReadOnlyScope::kDatabase, version));
  if (!missing.empty())
    throw Error(ErrorKind::kConfig, "role " + src.query_value("SELECT current_user") +
                                        " cannot make the source read-only and end the sessions still writing; on the "
                                        "source, as a superuser: " + missing);
  if (!watch.has_applier())
    throw Error(ErrorKind::kConfig, "no migration streams into the target with slot \"" + o.slot + "\" (no origin dts_" +
                                        o.slot + "); start one with `dts_applier migrate`, or pass its --slot");
  if (has_state) {
    std::string phase = tgt.query_value("SELECT phase FROM dts.migration WHERE slot = $1", {o.slot});
    if (core::parse_phase(phase) == core::Phase::kCompleted) throw Error(ErrorKind::kConfig, "the migration with slot \"" + o.slot + "\" is already completed");
    if (core::parse_phase(phase) == core::Phase::kCopying)
      throw Error(ErrorKind::kConfig, "the migration is still copying; run complete once it streams (phase STREAMING)");
  }
  std::string active = src.query_value(
      "SELECT coalesce((SELECT (active_pid IS NOT NULL)::text FROM pg_replication_slots WHERE slot_name = $1), 'none')",
      {o.slot});
  if (active == "none") throw Error(ErrorKind::kConfig, "replication slot \"" + o.slot + "\" does not exist on the source");
  if (active != "true")
    throw Error(ErrorKind::kConfig, "no applier streams from slot \"" + o.slot +
                                        "\": run `dts_applier migrate` again (it resumes where it was), then complete");
  std::string overrides = src.query_value(
      "SELECT string_agg(coalesce(r.rolname, 'all roles') || ' in ' || coalesce(d.datname, 'all databases'), ', ') "
      "FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase, "
      "unnest(s.setconfig) c WHERE c ILIKE 'default_transaction_read_only=%' AND (s.setrole <> 0 OR "
      "s.setdatabase <> (SELECT oid FROM pg_database WHERE datname = current_database()))");
  if (!overrides.empty())
    throw Error(ErrorKind::kConfig, "default_transaction_read_only is set per role or database (" + overrides +
                                        "): those sessions would stay writable; ALTER ROLE/DATABASE ... RESET "
                                        "default_transaction_read_only first");
  std::string prepared = src.query_value("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()");
  if (prepared != "0")
    spdlog::warn("{} prepared transactions on the source cannot be committed once it is read-only: "
                 "COMMIT PREPARED or ROLLBACK PREPARED them first", prepared);
}

// A table being copied again (a resync, or the copy a schema change asked for) must be written
// before the stop marker: the applier that copies it ends there. Everything the source
// committed is applied first, so that every request is on the target.
void wait_for_copies(const CompleteOptions& o, const pg::Connection& tgt, const follow::AppliedWatch& watch) {
  if (tgt.query_value("SELECT to_regclass('dts.resync') IS NOT NULL") != "t") return;
  auto deadline = Clock::now() + o.timeout;
  watch.wait_applied(watch.write_marker(apply::kMarkerPrefix, "copies"),
                     std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout));
  for (;;) {
    std::string pending = tgt.query_value(
        "SELECT count(*) FROM dts.resync WHERE slot = $1 AND state IN ('REQUESTED', 'COPYING')", {o.slot});
    if (pending == "0") return;
    if (Clock::now() > deadline)
      throw Error(ErrorKind::kSource, pending + " tables were still being copied again after " +
                                          std::to_string(o.timeout.count()) + " s; raise --timeout");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a poll, with the deadline above
  }
}

// Marker round trips until one comes back within max_lag: the lag, measured end to end.
void wait_lag(const CompleteOptions& o, const follow::AppliedWatch& watch) {
  auto deadline = Clock::now() + o.timeout;
  for (;;) {
    auto t0 = Clock::now();
    Lsn m = watch.write_marker(apply::kMarkerPrefix, "lag probe");
    watch.wait_applied(m, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - t0));
    double lag = ms_since(t0);
    if (lag <= static_cast<double>(o.max_lag.count())) {
      spdlog::info("lag {:.0f} ms (max {} ms): cutting over", lag, o.max_lag.count());
      return;
    }
    spdlog::info("lag {:.0f} ms, above the {} ms asked for: waiting", lag, o.max_lag.count());
    if (Clock::now() > deadline)
      throw Error(ErrorKind::kSource, "the lag stayed above " + std::to_string(o.max_lag.count()) + " ms for " +
                                          std::to_string(o.timeout.count()) + " s; raise --max-lag or --timeout");
  }
}

}  // namespace

int run_complete(const CompleteOptions& o, const std::atomic<bool>& interrupted) {
  try {
    core::TableSelection(o.tables, o.exclude);  // a malformed list stops us before the source goes read-only
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return follow::kExitUsage;
  }
  std::unique_ptr<ReadOnlySwitch> read_only;
  bool target_ready = false;
  bool has_state = false;
  Lsn stop = 0;
  auto undo_after = [&](const std::string& what) {
    spdlog::error("{}", what);
    if (read_only && read_only->enabled() && !target_ready) {
      try {
        read_only->undo();
        spdlog::warn("the cutover did not finish: the source is writable again");
      } catch (const std::exception& undo_error) {
        spdlog::error("could not make the source writable again ({}); run on it: {}", undo_error.what(),
                      read_only->undo_sql());
      }
      if (stop != 0 && has_state) {
        try {
          pg::Connection t = pg::Connection::open(o.target, "target");
          record_stop(t, o.slot, "");
        } catch (const std::exception& e) {
          spdlog::error("could not clear the stop marker in dts.migration ({}); run on the target: UPDATE dts.migration "
                        "SET stop_lsn = NULL WHERE slot = '{}'", e.what(), o.slot);
        }
        spdlog::warn("the applier stops at the stop marker it may have applied: run `dts_applier migrate` again to "
                     "go on following");
      }
    } else if (read_only && read_only->enabled()) {
      spdlog::warn("the target is ready, the source stays read-only; to undo: {}", read_only->undo_sql());
    }
  };
  try {
    pg::Connection src = pg::Connection::open(o.source, "source");
    pg::Connection tgt = pg::Connection::open(o.target, "target");
    verify::prepare_session(src);  // its own writes (markers) stay possible when read-only
    verify::prepare_session(tgt);
    std::string origin = "dts_" + o.slot;
    follow::AppliedWatch watch(src, tgt, origin);
    has_state = tgt.query_value("SELECT to_regclass('dts.migration') IS NOT NULL") == "t";
    check_ready(o, src, tgt, watch, has_state);
    wait_lag(o, watch);

    read_only = std::make_unique<ReadOnlySwitch>(src, o.source, o.scope);
    auto t_start = Clock::now();
    std::string point = read_only->enable();
    spdlog::warn("the source is read-only from {}; to undo: {}", point, read_only->undo_sql());
    drain_writers(src, point, o, interrupted);
    check_quiet(src);
    wait_for_copies(o, tgt, watch);
    double drained_ms = ms_since(t_start);

    // Everything committed on the source is before the stop marker: once it is applied, the
    // target holds it all, and the applier stops by itself.
    stop = watch.write_marker(apply::kStopMarkerPrefix, "complete");
    if (has_state) record_stop(tgt, o.slot, format_lsn(stop));
    watch.wait_applied(stop, std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout), &interrupted);
    check_quiet(src);
    double applied_ms = ms_since(t_start);
    int sequences = migrate::copy_sequences(src, tgt, o.sequence_shift);
    double window_ms = ms_since(t_start);
    target_ready = true;
    spdlog::info("stop marker at {} applied; {} sequences copied (shift {})", format_lsn(stop), sequences,
                 o.sequence_shift);

    std::string verify_line;
    if (o.verify) {
      verify::VerifyOptions vo;
      vo.source = o.source;
      vo.target = o.target;
      vo.slot = o.slot;
      vo.tables = o.tables;
      vo.exclude = o.exclude;
      vo.wait_for_applier = false;  // nothing moves on a read-only source
      auto t_verify = Clock::now();
      std::vector<verify::TableResult> results = verify::verify_tables(vo, src, tgt);
      verify::SchemaResult schema = verify::verify_schema(vo, src, tgt);
      size_t bad = 0;
      for (const auto& r : results) bad += r.equal() ? 0 : 1;
      if (!schema.equal()) {
        std::fputs(verify::render_schema(schema).c_str(), stdout);
        std::printf("verify found the schemas different: the slot is kept and the source stays read-only.\n"
                    "Look into it before pointing the application at the target; to make the source writable "
                    "again: %s\n", read_only->undo_sql().c_str());
        return follow::kExitFailed;
      }
      if (bad > 0) {
        std::fputs(verify::render_table(results).c_str(), stdout);
        std::printf("verify found differences in %zu tables: the slot is kept and the source stays read-only.\n"
                    "Look into them before pointing the application at the target; to make the source writable "
                    "again: %s\n", bad, read_only->undo_sql().c_str());
        return follow::kExitFailed;
      }
      char line[160];
      std::snprintf(line, sizeof(line), "  verify: all %zu tables equal, schema equal (%.0f ms, after the window)\n",
                    results.size(), ms_since(t_verify));
      verify_line = line;
    }

    // Recorded before the slot goes: an applier that starts now finds the migration completed
    // rather than a missing slot.
    if (has_state)
      tgt.exec_params("UPDATE dts.migration SET phase = $2, updated_at = now() WHERE slot = $1",
                      {o.slot, core::phase_name(core::Phase::kCompleted)});
    // The applier has stopped at the marker (or is stopping): the slot and origin go.
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (src.query_value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                           {o.slot}) != "0" && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancel::drop_slot(src, o.slot, std::chrono::seconds(30));
    cancel::drop_origin(tgt, origin, std::chrono::seconds(30));

    std::printf("cutover complete: the target holds everything the source committed\n"
                "  read-only window: %.0f ms (transactions drained %.0f ms, last changes applied %.0f ms, "
                "%d sequences copied with shift %lld)\n%s"
                "  slot \"%s\" dropped on the source, origin \"%s\" dropped on the target\n"
                "next steps:\n"
                "  1. point the application at the target: %s\n"
                "  2. the source stays read-only; to make it writable again, run on it:\n"
                "       %s\n"
                "  3. once the application runs on the target, retire the source\n",
                window_ms, drained_ms, applied_ms, sequences, static_cast<long long>(o.sequence_shift),
                verify_line.c_str(), o.slot.c_str(), origin.c_str(), pg::redact_conninfo(o.target).c_str(),
                read_only->undo_sql().c_str());
    std::fflush(stdout);
    return follow::kExitOk;
  } catch (const Error& e) {
    undo_after(e.what());
    return e.kind() == ErrorKind::kConfig ? follow::kExitUsage : follow::kExitFailed;
  } catch (const std::exception& e) {
    undo_after(e.what());
    return follow::kExitFailed;
  }
}

}  // namespace dts::complete
