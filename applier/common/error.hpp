// The errors of the applier: a few kinds, each carrying the server's SQLSTATE when a server
// reported it, and one rule for which of them a retry can cure.
#ifndef DTS_APPLIER_COMMON_ERROR_HPP
#define DTS_APPLIER_COMMON_ERROR_HPP

#include <stdexcept>
#include <string>

namespace dts {

enum class ErrorKind {
  kConfig,      // bad options or settings: fix and run again
  kConnection,  // a server went away or could not be reached
  kProtocol,    // bytes on the wire that make no sense (malformed records, unknown version)
  kApply,       // the target rejected a change
  kSource,      // the source cannot serve us (slot missing or invalidated, plugin not allowed, a query failed)
  kInternal,
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, std::string sqlstate = "")
      : std::runtime_error(message), kind_(kind), sqlstate_(std::move(sqlstate)) {}
  ErrorKind kind() const { return kind_; }
  // The server's SQLSTATE ("" when no server reported the error): callers test it, never the text.
  const std::string& sqlstate() const { return sqlstate_; }
  // Only a lost connection is worth retrying: everything else fails the same way again.
  bool is_retryable() const { return kind_ == ErrorKind::kConnection; }

 private:
  ErrorKind kind_;
  std::string sqlstate_;
};

}  // namespace dts

#endif
