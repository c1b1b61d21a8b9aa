// serve's API token: every route but /health needs it. Without --token-file, serve generates
// one on its first start into its private work directory, and the `jobs` CLI of the same user
// reads it from there, so that no other account on the host can drive the API.
#ifndef DTS_APPLIER_SERVE_TOKEN_HPP
#define DTS_APPLIER_SERVE_TOKEN_HPP

#include <string>

namespace dts::serve {

// The generated token's file name inside the work directory.
constexpr const char* kTokenFileName = "api-token";

// The default work directory: $HOME/.dts-serve (/var/tmp/.dts-serve without a HOME).
std::string default_work_dir();

// Creates the work directory (0700) if it is missing; throws Error(kConfig) if it is a
// symlink, not a directory, owned by another user or open to group or others.
void prepare_work_dir(const std::string& work_dir);

// The token in <work_dir>/api-token, generated (32 random bytes, hex) on the first call.
// Throws Error(kConfig) if the file is a symlink, owned by another user, open to group or
// others, or does not hold a token.
std::string load_or_create_token(const std::string& work_dir);

// Reads the token of <work_dir>/api-token under the same checks, without creating it; throws
// Error(kConfig) naming the file when it is missing.
std::string read_work_dir_token(const std::string& work_dir);

// The first line of a token file the user named (--token-file). It may be a symlink (secret
// mounts are) and may be shared with a group, but not readable by every account.
std::string read_token_file(const std::string& path);

// Whether `given` is `token`, in a time that does not depend on where they differ (nor on the
// token's length).
bool token_matches(const std::string& given, const std::string& token);

}  // namespace dts::serve

#endif
