// verify and cancel over the databases of a job (server/databases.hpp): each database's
// migration in turn, with one report and one exit code.
#ifndef DTS_APPLIER_SERVER_SERVER_COMMANDS_HPP
#define DTS_APPLIER_SERVER_SERVER_COMMANDS_HPP

#include "cancel/cancel.hpp"
#include "server/databases.hpp"
#include "verify/verify.hpp"

namespace dts::server {

// Text: each database's report under its name. JSON: {"databases": [{"database", "report"}]}.
// The exit code is the worst of theirs.
int run_verify_databases(const verify::VerifyOptions& options, const DatabaseScope& scope, bool json);
int run_cancel_databases(const cancel::CancelOptions& options, const DatabaseScope& scope);

}  // namespace dts::server

#endif
