// The errors of the applier: a few kinds, and one rule for which of them a retry can cure.
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
  kSource,      // the source cannot serve us (slot missing or invalidated, plugin not allowed)
  kInternal,
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  // Only a lost connection is worth retrying: everything else fails the same way again.
  bool is_retryable() const { return kind_ == ErrorKind::kConnection; }

 private:
  ErrorKind kind_;
};

}  // namespace dts

#endif
