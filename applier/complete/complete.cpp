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
#include "migrate/large_objects.hpp"
#include "migrate/migrate.hpp"
#include "pg/connection.hpp"
#include "server/databases.hpp"
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

namespace {

// One database's migration in the cutover: its connections, its slot's watch, its stop marker.
struct Leg {
  std::string name;  // the database, for a job over several; "" for one
  CompleteOptions o;  // its source, target and slot
  pg::Connection src, tgt;
  std::unique_ptr<follow::AppliedWatch> watch;
  std::string origin;
  bool has_state = false;
  Lsn stop = 0;
  int sequences = 0;
  migrate::LargeObjectSync large_objects;  // brought up to date in the window
};
using Legs = std::vector<std::unique_ptr<Leg>>;

std::string leg_label(const Leg& leg) { return leg.name.empty() ? "" : "database " + leg.name + ": "; }

Legs make_legs(const CompleteOptions& o) {
  Legs legs;
  auto add = [&legs](const std::string& name, CompleteOptions lo) {
    auto leg = std::make_unique<Leg>();
    leg->name = name;
    leg->o = std::move(lo);
    leg->src = pg::Connection::open(leg->o.source, "source");
    leg->tgt = pg::Connection::open(leg->o.target, "target");
    verify::prepare_session(leg->src);  // its own writes (markers) stay possible when read-only
    verify::prepare_session(leg->tgt);
    leg->origin = "dts_" + leg->o.slot;
    leg->watch = std::make_unique<follow::AppliedWatch>(leg->src, leg->tgt, leg->origin);
    leg->has_state = leg->tgt.query_value("SELECT to_regclass('dts.migration') IS NOT NULL") == "t";
    legs.push_back(std::move(leg));
  };
  if (!o.databases.several()) {
    add("", o);
    return legs;
  }
  if (o.scope != ReadOnlyScope::kCluster)
    throw Error(ErrorKind::kConfig, "several databases cut over in one window need --read-only-scope cluster");
  for (const auto& db : server::resolve(o.databases, o.source, o.target, o.slot)) {
    CompleteOptions lo = o;
    lo.source = db.source;
    lo.target = db.target;
    lo.slot = db.slot;
    add(db.name, std::move(lo));
    // A database cut over by an earlier complete that failed further on: nothing left for it.
    const Leg& leg = *legs.back();
    if (leg.has_state && core::parse_phase(leg.tgt.query_value("SELECT phase FROM dts.migration WHERE slot = $1",
                                                               {leg.o.slot})) == core::Phase::kCompleted) {
      spdlog::info("database {}: already cut over", db.name);
      legs.pop_back();
    }
  }
  if (legs.empty()) throw Error(ErrorKind::kConfig, "every database of the job is already cut over");
  return legs;
}

// verify of every database after the window; "" if all are equal, else what to print.
std::string verify_legs(const Legs& legs, std::string& line) {
  auto t_verify = Clock::now();
  size_t tables = 0;
  for (const auto& leg : legs) {
    verify::VerifyOptions vo;
    vo.source = leg->o.source;
    vo.target = leg->o.target;
    vo.slot = leg->o.slot;
    vo.tables = leg->o.tables;
    vo.exclude = leg->o.exclude;
    vo.wait_for_applier = false;  // nothing moves on a read-only source
    std::vector<verify::TableResult> results = verify::verify_tables(vo, leg->src, leg->tgt);
    verify::SchemaResult schema = verify::verify_schema(vo, leg->src, leg->tgt);
    size_t bad = 0;
    for (const auto& r : results) bad += r.equal() ? 0 : 1;
    if (!schema.equal()) return leg_label(*leg) + verify::render_schema(schema) + "verify found the schemas different";
    if (bad > 0)
      return leg_label(*leg) + verify::render_table(results) + "verify found differences in " + std::to_string(bad) + " tables";
    tables += results.size();
  }
  char buf[200];
  std::snprintf(buf, sizeof(buf), "  verify: all %zu tables equal, schema equal%s (%.0f ms, after the window)\n", tables,
                legs.size() > 1 ? " in every database" : "", ms_since(t_verify));
  line = buf;
  return "";
}

// The slots and origins go once every applier has stopped at its marker.
void drop_slots(const Legs& legs) {
  for (const auto& leg : legs) {
    // Recorded before the slot goes: an applier that starts now finds the migration completed
    // rather than a missing slot.
    if (leg->has_state)
      leg->tgt.exec_params("UPDATE dts.migration SET phase = $2, updated_at = now() WHERE slot = $1",
                           {leg->o.slot, core::phase_name(core::Phase::kCompleted)});
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (leg->src.query_value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                                {leg->o.slot}) != "0" && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancel::drop_slot(leg->src, leg->o.slot, std::chrono::seconds(30));
    cancel::drop_origin(leg->tgt, leg->origin, std::chrono::seconds(30));
  }
}

void print_done(const CompleteOptions& o, const Legs& legs, double window_ms, double drained_ms, double applied_ms,
                const std::string& verify_line, const std::string& undo_sql) {
  int sequences = 0, large_objects = 0;
  std::string slots, origins;
  for (const auto& leg : legs) {
    sequences += leg->sequences;
    large_objects += leg->large_objects.created + leg->large_objects.changed + leg->large_objects.removed;
    slots += (slots.empty() ? "\"" : ", \"") + leg->o.slot + "\"";
    origins += (origins.empty() ? "\"" : ", \"") + leg->origin + "\"";
  }
  std::string where = legs.size() > 1 ? "the databases of " + pg::redact_conninfo(o.target)
                                      : pg::redact_conninfo(o.target);
  std::printf("cutover complete: the target holds everything the source committed%s\n"
              "  read-only window: %.0f ms (transactions drained %.0f ms, last changes applied %.0f ms, "
              "%d sequences copied with shift %lld, %d large objects brought up to date)\n%s"
              "  slot %s dropped on the source, origin %s dropped on the target\n"
              "next steps:\n"
              "  1. point the application at the target: %s\n"
              "  2. the source stays read-only; to make it writable again, run on it:\n"
              "       %s\n"
              "  3. once the application runs on the target, retire the source\n",
              legs.size() > 1 ? (" (" + std::to_string(legs.size()) + " databases)").c_str() : "", window_ms,
              drained_ms, applied_ms, sequences, static_cast<long long>(o.sequence_shift), large_objects, verify_line.c_str(),
              slots.c_str(), origins.c_str(), where.c_str(), undo_sql.c_str());
  std::fflush(stdout);
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
  Legs legs;
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
      for (const auto& leg : legs) {
        if (leg->stop == 0 || !leg->has_state) continue;
        try {
          pg::Connection t = pg::Connection::open(leg->o.target, "target");
          record_stop(t, leg->o.slot, "");
        } catch (const std::exception& e) {
          spdlog::error("could not clear the stop marker in dts.migration ({}); run on the target: UPDATE dts.migration "
                        "SET stop_lsn = NULL WHERE slot = '{}'", e.what(), leg->o.slot);
        }
        spdlog::warn("the applier stops at the stop marker it may have applied: run `dts_applier migrate` again to "
                     "go on following");
      }
    } else if (read_only && read_only->enabled()) {
      spdlog::warn("the target is ready, the source stays read-only; to undo: {}", read_only->undo_sql());
    }
  };
  try {
    legs = make_legs(o);
    for (const auto& leg : legs) check_ready(leg->o, leg->src, leg->tgt, *leg->watch, leg->has_state);
    for (const auto& leg : legs) wait_lag(leg->o, *leg->watch);

    // One switch for every database (cluster scope reaches them all), one window.
    const Leg& first = *legs.front();
    read_only = std::make_unique<ReadOnlySwitch>(first.src, first.o.source, o.scope);
    auto t_start = Clock::now();
    std::string point = read_only->enable();
    spdlog::warn("the source is read-only from {}; to undo: {}", point, read_only->undo_sql());
    drain_writers(first.src, point, o, interrupted);
    check_quiet(first.src);
    for (const auto& leg : legs) wait_for_copies(leg->o, leg->tgt, *leg->watch);
    double drained_ms = ms_since(t_start);

    // Everything committed on the source is before the stop markers: once they are applied,
    // the target holds it all, and each applier stops by itself.
    for (const auto& leg : legs) {
      leg->stop = leg->watch->write_marker(apply::kStopMarkerPrefix, "complete");
      if (leg->has_state) record_stop(leg->tgt, leg->o.slot, format_lsn(leg->stop));
    }
    for (const auto& leg : legs)
      leg->watch->wait_applied(leg->stop, std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout), &interrupted);
    check_quiet(first.src);
    double applied_ms = ms_since(t_start);
    for (const auto& leg : legs) {
      leg->large_objects = migrate::sync_large_objects(leg->src, leg->tgt);
      if (leg->large_objects.created + leg->large_objects.changed + leg->large_objects.removed +
              leg->large_objects.unchanged > 0)
        spdlog::info("{}large objects: {}", leg_label(*leg), leg->large_objects.summary());
      leg->sequences = migrate::copy_sequences(leg->src, leg->tgt, o.sequence_shift);
      spdlog::info("{}stop marker at {} applied; {} sequences copied (shift {})", leg_label(*leg), format_lsn(leg->stop),
                   leg->sequences, o.sequence_shift);
    }
    double window_ms = ms_since(t_start);
    target_ready = true;

    std::string verify_line;
    if (o.verify) {
      std::string differences = verify_legs(legs, verify_line);
      if (!differences.empty()) {
        std::printf("%s: the slots are kept and the source stays read-only.\n"
                    "Look into it before pointing the application at the target; to make the source writable "
                    "again: %s\n", differences.c_str(), read_only->undo_sql().c_str());
        return follow::kExitFailed;
      }
    }
    drop_slots(legs);
    print_done(o, legs, window_ms, drained_ms, applied_ms, verify_line, read_only->undo_sql());
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
