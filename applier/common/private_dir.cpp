#include "common/private_dir.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/error.hpp"

namespace dts {

std::string temp_root() {
  const char* base = std::getenv("TMPDIR");
  return base != nullptr && base[0] != '\0' ? base : "/tmp";
}

std::string PrivateDir::make(const std::string& prefix) {
  std::string root = temp_root();
  std::string name = root + "/" + prefix + "-XXXXXX";
  if (mkdtemp(name.data()) == nullptr)
    throw Error(ErrorKind::kConfig, "cannot create a private temporary directory in " + root + " (" +
                                        std::strerror(errno) + "); set TMPDIR to a directory this user can write");
  return name;
}

PrivateDir::PrivateDir(const std::string& prefix) : path(make(prefix)) {}

PrivateDir::~PrivateDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path, ignored);
}

}  // namespace dts
