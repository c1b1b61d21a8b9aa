// A private temporary directory: what the tools write there (schema dumps that pg_restore runs
// against the target, their stderr) must be neither readable nor replaceable by another local
// account. mkdtemp makes it new (never an existing directory or a planted link), mode 0700,
// with a name nobody can guess, under $TMPDIR or /tmp; it is removed with its contents however
// its owner's scope ends.
#ifndef DTS_APPLIER_COMMON_PRIVATE_DIR_HPP
#define DTS_APPLIER_COMMON_PRIVATE_DIR_HPP

#include <string>

namespace dts {

class PrivateDir {
 public:
  // `prefix` names the directory (dts-migrate-XXXXXX); throws Error(kConfig) naming $TMPDIR
  // when it cannot be made.
  explicit PrivateDir(const std::string& prefix);
  ~PrivateDir();
  PrivateDir(const PrivateDir&) = delete;
  PrivateDir& operator=(const PrivateDir&) = delete;

  const std::string path;

 private:
  static std::string make(const std::string& prefix);
};

// $TMPDIR, or /tmp when it is unset or empty.
std::string temp_root();

// A new mkdtemp directory <temp_root>/<prefix>-XXXXXX (mode 0700) with an `owner` file holding
// this process's pid; throws Error(kConfig) naming $TMPDIR when it cannot be made.
std::string make_owned_dir(const std::string& prefix);
// Removes this user's <prefix>-* directories whose owner process is gone (a process killed with
// SIGKILL cannot clean up after itself; each new one cleans up after the dead), and those with
// no owner file that are over an hour old (left by a binary that wrote none).
void remove_orphaned_dirs(const std::string& prefix);

}  // namespace dts

#endif
