// `dts_applier cancel`: stops a migration at any phase and removes what it left behind — the
// slot on the source (its walsender terminated first), the origin and the state on the target
// — never touching any table's data.
#ifndef DTS_APPLIER_CANCEL_CANCEL_HPP
#define DTS_APPLIER_CANCEL_CANCEL_HPP

#include <string>

namespace dts::cancel {

struct CancelOptions {
  std::string source;
  std::string target;
  std::string slot = "dts_migrate";
};

int run_cancel(const CancelOptions& options);

}  // namespace dts::cancel

#endif
