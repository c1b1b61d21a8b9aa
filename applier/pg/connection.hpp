// Move-only owners of libpq handles, and the few helpers every caller needs. libpq is used
// directly: the replication protocol and pipeline mode are not in libpqxx 6.
#ifndef DTS_APPLIER_PG_CONNECTION_HPP
#define DTS_APPLIER_PG_CONNECTION_HPP

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

namespace dts::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// A conninfo or postgresql:// URI as key=value pairs with its password (and other secrets)
// replaced, for messages.
std::string redact_conninfo(const std::string& conninfo);

class Connection {
 public:
  Connection() = default;
  // Connects or throws Error(kConnection), naming the redacted conninfo and libpq's reason. The
  // conninfo may be a postgresql:// URI with query parameters: options such as replication are
  // added as keywords, never by editing its text.
  static Connection open(const std::string& conninfo, const char* what, bool replication = false);

  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  PGconn* get() const { return conn_.get(); }
  explicit operator bool() const { return conn_ != nullptr; }
  bool is_ok() const { return conn_ != nullptr && PQstatus(conn_.get()) == CONNECTION_OK; }
  void close() { conn_.reset(); }

  // Runs SQL (simple protocol) and returns the result; throws on an error status, with the
  // server's SQLSTATE and message. A lost connection is Error(kConnection).
  Result exec(const std::string& sql) const;
  Result exec_params(const std::string& sql, const std::vector<std::string>& params) const;
  // The single value of a one-row, one-column result ("" for NULL).
  std::string query_value(const std::string& sql, const std::vector<std::string>& params = {}) const;
  std::string error_message() const;

 private:
  struct Deleter {
    void operator()(PGconn* c) const { PQfinish(c); }
  };
  Result check(Result r, const std::string& sql) const;

  std::unique_ptr<PGconn, Deleter> conn_;
  std::string what_;  // "source", "target": for messages
};

// The conninfo as key='value' pairs without its password, which goes to `password` (left
// as it was if there is none): for the command lines of pg_dump and pg_restore, which anyone
// can read in /proc, while the password travels in their environment (PGPASSWORD). URIs
// come out as key='value' pairs too, their password removed. Throws Error(kConfig) when the
// text does not parse, rather than hand it on with its password.
std::string conninfo_without_password(const std::string& conninfo, std::string& password);
// The value a conninfo (or URI) gives `keyword`; "" if none, or if it does not parse.
std::string conninfo_option(const std::string& conninfo, const char* keyword);
// Appends `keyword='value'` to a conninfo, the value quoted as libpq reads it.
void append_conninfo_option(std::string& out, const char* keyword, const std::string& value);
// The same connection to another database, as a conninfo (with the password, if it had one).
std::string conninfo_with_dbname(const std::string& conninfo, const std::string& dbname);

// SQLSTATE of an error result ("" if none).
std::string sqlstate(const PGresult* r);
// An error that ended the session (a shutdown, a restart, a terminated backend: class 57P0x; a
// broken connection: class 08), reported as a result before the socket closes: a lost
// connection, retried in resume mode auto, not a refused change, whatever PQstatus says yet.
bool session_ended(const PGresult* r);

}  // namespace dts::pg

#endif
