#include "common/private_dir.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/error.hpp"

namespace dts {

std::string temp_root() {
  const char* base = std::getenv("TMPDIR");
  return base != nullptr && base[0] != '\0' ? base : "/tmp";
}

std::string make_owned_dir(const std::string& prefix) {
  std::string root = temp_root();
  std::string name = root + "/" + prefix + "-XXXXXX";
  if (mkdtemp(name.data()) == nullptr)
    throw Error(ErrorKind::kConfig, "cannot create a private temporary directory in " + root + " (" +
                                        std::strerror(errno) + "); set TMPDIR to a directory this user can write");
  if (std::FILE* owner = std::fopen((name + "/owner").c_str(), "w")) {
    std::fprintf(owner, "%ld\n", static_cast<long>(getpid()));
    std::fclose(owner);
  }
  return name;
}

void remove_orphaned_dirs(const std::string& prefix) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(temp_root(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(prefix + "-", 0) != 0) continue;
    struct stat st {};
    if (lstat(entry.path().c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) continue;
    long pid = 0;
    if (std::FILE* f = std::fopen((entry.path() / "owner").c_str(), "r")) {
      if (std::fscanf(f, "%ld", &pid) != 1) pid = 0;
      std::fclose(f);
    }
    if (pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) continue;
    if (pid <= 0 && time(nullptr) - st.st_mtime < 3600) continue;
    std::error_code ignored;
    std::filesystem::remove_all(entry.path(), ignored);
  }
}

std::string PrivateDir::make(const std::string& prefix) {
  remove_orphaned_dirs(prefix);
  return make_owned_dir(prefix);
}

PrivateDir::PrivateDir(const std::string& prefix) : path(make(prefix)) {}

PrivateDir::~PrivateDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path, ignored);
}

}  // namespace dts
