#include "pg/connection.hpp"

#include <cstring>

#include "common/error.hpp"

namespace dts::pg {
namespace {

bool is_secret_keyword(const char* keyword) {
  return std::strcmp(keyword, "password") == 0 || std::strcmp(keyword, "sslpassword") == 0;
}

// The connection itself went away: worth a retry. Errors the server reported are not.
bool connection_lost(PGconn* conn) { return conn == nullptr || PQstatus(conn) != CONNECTION_OK; }

}  // namespace

namespace {

// A connection string read as libpq's expand_dbname reads it (what Connection::open passes): a text with an "=" or a
// URI prefix is a conninfo, anything else the name of a database.
std::string as_conninfo(const std::string& text) {
  if (text.find('=') != std::string::npos || text.rfind("postgresql://", 0) == 0 || text.rfind("postgres://", 0) == 0)
    return text;
  std::string out = "dbname='";
  for (char c : text) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// Calls visit(keyword, value) for every option the conninfo sets; false if it does not parse.
template <typename Visit>
bool each_option(const std::string& conninfo, Visit visit) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(as_conninfo(conninfo).c_str(), &err);
  if (opts == nullptr) {
    if (err != nullptr) PQfreemem(err);
    return false;
  }
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
    if (o->val != nullptr && o->val[0] != '\0') visit(o->keyword, o->val);
  PQconninfoFree(opts);
  return true;
}

}  // namespace

std::string redact_conninfo(const std::string& conninfo) {
  std::string out;
  bool parsed = each_option(conninfo, [&](const char* keyword, const char* value) {
    out += std::string(out.empty() ? "" : " ") + keyword + "=" + (is_secret_keyword(keyword) ? "********" : value);
  });
  return parsed ? out : "(unparsable conninfo)";
}

std::string conninfo_option(const std::string& conninfo, const char* keyword) {
  std::string found;
  each_option(conninfo, [&](const char* k, const char* value) {
    if (std::strcmp(k, keyword) == 0) found = value;
  });
  return found;
}

void append_conninfo_option(std::string& out, const char* keyword, const std::string& value) {
  out += std::string(out.empty() ? "" : " ") + keyword + "='";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
}

namespace {

// The options of a conninfo or URI again, as a quoted conninfo, those `keep` accepts. Never the
// text itself when it does not parse: it may hold the password.
template <typename Keep>
std::string rebuilt(const std::string& conninfo, Keep keep) {
  std::string out;
  bool parsed = each_option(conninfo, [&](const char* keyword, const char* value) {
    if (keep(keyword, value)) append_conninfo_option(out, keyword, value);
  });
  if (!parsed)
    throw Error(ErrorKind::kConfig, "a connection string is neither a libpq conninfo (key=value ...) nor a "
                                    "postgresql:// URI; correct --source / --target");
  return out;
}

}  // namespace

std::string conninfo_without_password(const std::string& conninfo, std::string& password) {
  // The password goes apart: the result may go on a command line.
  return rebuilt(conninfo, [&password](const char* keyword, const char* value) {
    if (std::strcmp(keyword, "password") != 0) return true;
    password = value;
    return false;
  });
}

std::string conninfo_with_dbname(const std::string& conninfo, const std::string& dbname) {
  std::string out = rebuilt(conninfo, [](const char* keyword, const char*) { return std::strcmp(keyword, "dbname") != 0; });
  append_conninfo_option(out, "dbname", dbname);
  return out;
}

std::string sqlstate(const PGresult* r) {
  const char* s = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s != nullptr ? s : "";
}

bool session_ended(const PGresult* r) {
  std::string state = sqlstate(r);
  return state.rfind("57P0", 0) == 0 || state.rfind("08", 0) == 0;
}

Connection Connection::open(const std::string& conninfo, const char* what, bool replication) {
  Connection c;
  c.what_ = what;
  // Options as keyword arrays, never by editing the text: a postgresql:// URI (with its query
  // parameters) takes no " key=value" appended. With expand_dbname the conninfo or URI given as
  // dbname is expanded in place, and the keywords after it override what it sets.
  const char* keywords[] = {"dbname", replication ? "replication" : nullptr, nullptr};
  const char* values[] = {conninfo.c_str(), replication ? "database" : nullptr, nullptr};
  c.conn_.reset(PQconnectdbParams(keywords, values, /*expand_dbname=*/1));
  if (c.conn_ == nullptr) throw Error(ErrorKind::kConnection, std::string("out of memory connecting to the ") + what);
  if (PQstatus(c.conn_.get()) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c.conn_.get());
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    throw Error(ErrorKind::kConnection,
                std::string("could not connect to the ") + what + " (" + redact_conninfo(conninfo) + "): " + msg);
  }
  // The applier reports its own errors; keep libpq from printing notices to stderr.
  PQsetNoticeProcessor(c.conn_.get(), [](void*, const char*) {}, nullptr);
  return c;
}

std::string Connection::error_message() const {
  std::string msg = conn_ ? PQerrorMessage(conn_.get()) : "not connected";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

Result Connection::check(Result r, const std::string& sql) const {
  ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_BOTH || st == PGRES_COPY_OUT ||
      st == PGRES_COPY_IN)
    return r;
  std::string msg = r ? PQresultErrorMessage(r.get()) : error_message();
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  std::string state = sqlstate(r.get());
  // A server error is the target refusing something, or the source (or another server) failing
  // a query: an apply error only on the target.
  ErrorKind kind = connection_lost(conn_.get()) || session_ended(r.get()) ? ErrorKind::kConnection
                   : what_ == "target"          ? ErrorKind::kApply
                                                : ErrorKind::kSource;
  std::string head = sql.size() > 120 ? sql.substr(0, 120) + "..." : sql;
  throw Error(kind, "the " + what_ + " failed to run \"" + head + "\": " + msg +
                        (state.empty() ? "" : " (SQLSTATE " + state + ")"),
              state);
}

Result Connection::exec(const std::string& sql) const {
  return check(Result(PQexec(conn_.get(), sql.c_str())), sql);
}

Result Connection::exec_params(const std::string& sql, const std::vector<std::string>& params) const {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  return check(Result(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                                   values.data(), nullptr, nullptr, 0)),
               sql);
}

std::string Connection::query_value(const std::string& sql, const std::vector<std::string>& params) const {
  Result r = params.empty() ? exec(sql) : exec_params(sql, params);
  if (PQntuples(r.get()) < 1 || PQnfields(r.get()) < 1) return "";
  return PQgetisnull(r.get(), 0, 0) ? "" : PQgetvalue(r.get(), 0, 0);
}

}  // namespace dts::pg
