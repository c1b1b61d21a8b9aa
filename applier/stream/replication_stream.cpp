#include "stream/replication_stream.hpp"

#include <poll.h>

#include <cstring>
#include <thread>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"

namespace dts::stream {
namespace {

uint64_t read_be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

void write_be64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

[[noreturn]] void lost(const pg::Connection& conn, const std::string& doing) {
  throw Error(ErrorKind::kConnection, "lost the replication connection to the source while " + doing + ": " +
                                          conn.error_message());
}

}  // namespace

ReplicationStream::ReplicationStream(const std::string& conninfo)
    : conn_(pg::Connection::open(conninfo, "source", /*replication=*/true)) {
  const char* enc = PQparameterStatus(conn_.get(), "server_encoding");
  server_encoding_ = enc != nullptr ? enc : "UTF8";
}

ReplicationStream::~ReplicationStream() { release_buffer(); }

void ReplicationStream::release_buffer() {
  if (buffer_ != nullptr) {
    PQfreemem(buffer_);
    buffer_ = nullptr;
  }
}

bool ReplicationStream::slot_exists(const std::string& slot) {
  pg::Result r = conn_.exec("SELECT 1 FROM pg_replication_slots WHERE slot_name = " + apply::quote_literal(slot));
  return PQntuples(r.get()) > 0;
}

bool ReplicationStream::create_slot_if_missing(const std::string& slot) {
  // The replication protocol has no IF NOT EXISTS; the catalog is readable over it.
  // (A replication connection speaks only the simple query protocol: no parameters.)
  pg::Result r = conn_.exec("SELECT plugin FROM pg_replication_slots WHERE slot_name = " + apply::quote_literal(slot));
  if (PQntuples(r.get()) > 0) {
    std::string plugin = PQgetvalue(r.get(), 0, 0);
    if (plugin != "dts_decoding")
      throw Error(ErrorKind::kConfig, "replication slot \"" + slot + "\" exists but uses the " + plugin +
                                          " plugin; drop it or name another slot with --slot");
    return false;
  }
  conn_.exec("CREATE_REPLICATION_SLOT " + apply::quote_ident(slot) + " LOGICAL dts_decoding NOEXPORT_SNAPSHOT");
  return true;
}

void ReplicationStream::start(const std::string& slot, Lsn start_lsn, const PluginOptions& options) {
  // The walsender of an applier that was just killed keeps the slot until it notices: wait
  // for the slot to be free, not long.
  std::string busy_sql = "SELECT active_pid FROM pg_replication_slots WHERE slot_name = " + apply::quote_literal(slot) +
                         " AND active_pid IS NOT NULL";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    pg::Result busy = conn_.exec(busy_sql);
    if (PQntuples(busy.get()) == 0) break;
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(ErrorKind::kConfig, "replication slot \"" + slot + "\" is in use by the process with PID " +
                                          std::string(PQgetvalue(busy.get(), 0, 0)) +
                                          " on the source: another dts_applier may be following it; stop it first");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::string sql = "START_REPLICATION SLOT " + apply::quote_ident(slot) + " LOGICAL " + format_lsn(start_lsn);
  if (!options.empty()) {
    sql += " (";
    for (size_t i = 0; i < options.size(); ++i) {
      if (i > 0) sql += ", ";
      sql += apply::quote_ident(options[i].first) + " " + apply::quote_literal(options[i].second);
    }
    sql += ")";
  }
  if (!decoding_work_mem_.empty())
    conn_.exec("SET logical_decoding_work_mem = " + apply::quote_literal(decoding_work_mem_));
  pg::Result r(PQexec(conn_.get(), sql.c_str()));
  if (PQresultStatus(r.get()) == PGRES_COPY_BOTH) return;
  std::string msg = PQresultErrorMessage(r.get());
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  std::string state = pg::sqlstate(r.get());
  if (!conn_.is_ok()) lost(conn_, "starting replication");
  if (state == "42704")  // undefined_object: no such slot
    throw Error(ErrorKind::kSource, "replication slot \"" + slot +
                                        "\" does not exist on the source; create it with --create-slot: " + msg,
                state);
  if (msg.find("output_plugin_libraries") != std::string::npos || msg.find("may not be used as an output plugin") != std::string::npos)
    throw Error(ErrorKind::kSource, "the source refuses to load dts_decoding: " + msg +
                                        "; run ALTER SYSTEM SET output_plugin_libraries = '..., dts_decoding' and "
                                        "SELECT pg_reload_conf() on the source");
  throw Error(state == "55000" || state == "42P01" ? ErrorKind::kSource : ErrorKind::kConfig,
              "the source refused to start streaming from slot \"" + slot + "\": " + msg +
                  (state.empty() ? "" : " (SQLSTATE " + state + ")"),
              state);
}

ReplicationStream::Event ReplicationStream::next(std::chrono::milliseconds timeout, StreamMessage& msg) {
  release_buffer();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int len = PQgetCopyData(conn_.get(), &buffer_, 1);
    if (len > 0) {
      if (buffer_[0] == 'w') {
        if (len < 25) throw Error(ErrorKind::kProtocol, "XLogData message shorter than its header");
        msg.wal_start = read_be64(buffer_ + 1);
        msg.wal_end = read_be64(buffer_ + 9);
        msg.send_time = static_cast<int64_t>(read_be64(buffer_ + 17));
        msg.data = reinterpret_cast<const uint8_t*>(buffer_ + 25);
        msg.len = static_cast<size_t>(len - 25);
        msg.reply_requested = false;
        if (msg.wal_end > server_wal_end_) server_wal_end_ = msg.wal_end;
        return Event::kData;
      }
      if (buffer_[0] == 'k') {
        if (len < 18) throw Error(ErrorKind::kProtocol, "keepalive message shorter than its header");
        msg.wal_start = 0;
        msg.wal_end = read_be64(buffer_ + 1);
        msg.send_time = static_cast<int64_t>(read_be64(buffer_ + 9));
        msg.reply_requested = buffer_[17] != 0;
        msg.data = nullptr;
        msg.len = 0;
        if (msg.wal_end > server_wal_end_) server_wal_end_ = msg.wal_end;
        return Event::kKeepalive;
      }
      throw Error(ErrorKind::kProtocol, std::string("unexpected replication message type '") + buffer_[0] + "'");
    }
    if (len == -1) {  // the server ended the stream
      pg::Result r(PQgetResult(conn_.get()));
      std::string msg_text = r ? PQresultErrorMessage(r.get()) : conn_.error_message();
      while (!msg_text.empty() && msg_text.back() == '\n') msg_text.pop_back();
      // A shutdown, a terminated walsender or a broken connection is worth a reconnect; an
      // error about the slot itself (invalidated, dropped) would only come back.
      std::string state = pg::sqlstate(r.get());
      bool transient = state.empty() || state.rfind("57", 0) == 0 || state.rfind("08", 0) == 0;
      throw Error(transient ? ErrorKind::kConnection : ErrorKind::kSource,
                  "the source ended the replication stream: " +
                      (msg_text.empty() ? std::string("no reason given") : msg_text) +
                      (state.empty() ? "" : " (SQLSTATE " + state + ")"),
                  state);
    }
    if (len == -2) lost(conn_, "reading");
    // Nothing buffered: wait for the socket, up to the deadline.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Event::kTimeout;
    pollfd pfd{PQsocket(conn_.get()), POLLIN, 0};
    int rc = poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno != EINTR) lost(conn_, "waiting for data");
    if (rc > 0 && PQconsumeInput(conn_.get()) == 0) lost(conn_, "reading");
  }
}

void ReplicationStream::send_status(Lsn write, Lsn flush, Lsn apply, bool reply_requested) {
  char msg[34];
  msg[0] = 'r';
  write_be64(msg + 1, write);
  write_be64(msg + 9, flush);
  write_be64(msg + 17, apply);
  write_be64(msg + 25, static_cast<uint64_t>(now_postgres_micros()));
  msg[33] = reply_requested ? 1 : 0;
  if (PQputCopyData(conn_.get(), msg, sizeof(msg)) <= 0 || PQflush(conn_.get()) != 0) lost(conn_, "sending feedback");
}

}  // namespace dts::stream
