#include "serve/token.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/error.hpp"

namespace dts::serve {
namespace {

constexpr size_t kTokenBytes = 32;
constexpr size_t kMinTokenChars = 16;

[[noreturn]] void config_error(const std::string& message) { throw Error(ErrorKind::kConfig, message); }

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string strip_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string token_path(const std::string& work_dir) { return strip_trailing_slashes(work_dir) + "/" + kTokenFileName; }

// Closes the descriptor on every way out.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// The first line of an open file, without trailing blanks; a token is one word of at least 16
// printable characters.
std::string read_token(int fd, const std::string& path, const std::string& fix) {
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) config_error(path + ": cannot read it: " + std::strerror(errno));
    if (n == 0 || text.size() > 65536) break;
    text.append(buf, static_cast<size_t>(n));
  }
  std::string token = text.substr(0, text.find('\n'));
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
  bool printable = true;
  for (char c : token) printable = printable && c > ' ' && c < 0x7f;
  if (token.size() < kMinTokenChars || !printable)
    config_error(path + ": its first line must be a token of at least 16 printable characters without spaces; " + fix);
  return token;
}

// The file must be a regular file this user owns that no other account can read or change.
void check_private_file(int fd, const std::string& path) {
  struct stat st {};
  if (fstat(fd, &st) != 0) config_error(path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) config_error(path + " is not a regular file; remove it and start serve again");
  if (st.st_uid != geteuid())
    config_error(path + " belongs to another user (uid " + std::to_string(st.st_uid) +
                 "), who could read or replace the API token; remove it and start serve again");
  if ((st.st_mode & 077) != 0)
    config_error(path + " is open to other accounts (mode " + mode_text(st.st_mode) +
                 "): anyone who can read it can drive serve's API. Run `chmod 600 " + path +
                 "` if nobody else can have read it, or remove it so serve makes a new token");
}

std::string random_hex(size_t bytes) {
  unsigned char raw[64];
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = getrandom(raw + got, bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(ErrorKind::kInternal, std::string("cannot read random bytes for the API token: ") + std::strerror(errno));
    got += static_cast<size_t>(n);
  }
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (size_t i = 0; i < bytes; ++i) {
    hex += digits[raw[i] >> 4];
    hex += digits[raw[i] & 15];
  }
  return hex;
}

// Writes a new token to a temporary file (mkstemp: 0600, a fresh name) and links it into place:
// a crash leaves no half-written token, and of two serves starting at once the first one's wins.
// Returns false if another process created the file first.
bool create_token_file(const std::string& dir, const std::string& path) {
  std::string tmp = dir + "/.api-token.XXXXXX";
  Fd f{mkstemp(tmp.data())};
  if (f.fd < 0) config_error("cannot create the API token in " + dir + ": " + std::strerror(errno));
  std::string line = random_hex(kTokenBytes) + "\n";
  bool ok = fchmod(f.fd, 0600) == 0 && write(f.fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
            fsync(f.fd) == 0;
  int saved = errno;
  if (ok && link(tmp.c_str(), path.c_str()) != 0) {
    saved = errno;
    ok = false;
  }
  unlink(tmp.c_str());
  if (!ok && saved == EEXIST) return false;
  if (!ok) config_error("cannot write the API token to " + path + ": " + std::strerror(saved));
  Fd d{open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0) fsync(d.fd);  // the new name survives a crash too
  return true;
}

// Opens <work_dir>/api-token without following a symlink; -1 with errno ENOENT if it is missing.
int open_work_dir_token(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ELOOP)
    config_error(path + " is a symlink: serve reads its token only from a file of its own; remove the link and start "
                        "serve again");
  if (fd < 0 && errno != ENOENT) config_error(path + ": cannot open it: " + std::strerror(errno));
  return fd;
}

std::string read_checked(int raw_fd, const std::string& path) {
  Fd f{raw_fd};
  check_private_file(f.fd, path);
  return read_token(f.fd, path, "remove it and serve makes a new one");
}

}  // namespace

std::string default_work_dir() {
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && home[0] != '\0' ? home : "/var/tmp") + "/.dts-serve";
}

void prepare_work_dir(const std::string& work_dir_arg) {
  std::string dir = strip_trailing_slashes(work_dir_arg);
  if (dir.empty()) config_error("--work-dir must not be empty");
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) config_error("--work-dir " + dir + ": " + std::strerror(errno));
    std::error_code ec;
    auto parent = std::filesystem::path(dir).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) config_error("--work-dir " + dir + ": cannot create " + parent.string() + ": " + ec.message());
    // Private from its first moment: nobody else can plant links or read tokens in it.
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      config_error("--work-dir " + dir + ": cannot create it: " + std::strerror(errno));
    if (lstat(dir.c_str(), &st) != 0) config_error("--work-dir " + dir + ": " + std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode))
    config_error("--work-dir " + dir + " is a symlink: serve keeps its API token there and needs a directory of its own; "
                                       "name the real directory instead");
  if (!S_ISDIR(st.st_mode)) config_error("--work-dir " + dir + " is not a directory; choose another");
  if (st.st_uid != geteuid())
    config_error("--work-dir " + dir + " belongs to another user (uid " + std::to_string(st.st_uid) +
                 "); choose a directory of your own");
  if ((st.st_mode & 077) != 0)
    config_error("--work-dir " + dir + " is open to other accounts (mode " + mode_text(st.st_mode) +
                 "): it holds the API token and the jobs' logs. Run `chmod 700 " + dir + "`, or choose another directory");
}

std::string load_or_create_token(const std::string& work_dir) {
  std::string dir = strip_trailing_slashes(work_dir), path = token_path(work_dir);
  for (int attempt = 0; attempt < 3; ++attempt) {
    int fd = open_work_dir_token(path);
    if (fd >= 0) return read_checked(fd, path);
    create_token_file(dir, path);  // then read it back, under the same checks as ever after
  }
  config_error("cannot create the API token " + path + ": it keeps disappearing");
}

std::string read_work_dir_token(const std::string& work_dir) {
  std::string path = token_path(work_dir);
  int fd = open_work_dir_token(path);
  if (fd < 0)
    config_error("no API token at " + path + ": serve writes it there on its first start. Give this command serve's "
                 "--work-dir, or --token-file with the file serve was given");
  return read_checked(fd, path);
}

std::string read_token_file(const std::string& path) {
  Fd f{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) config_error("--token-file " + path + ": cannot open it: " + std::strerror(errno));
  struct stat st {};
  if (fstat(f.fd, &st) != 0) config_error("--token-file " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) config_error("--token-file " + path + " is not a regular file");
  if ((st.st_mode & 007) != 0)
    config_error("--token-file " + path + " is open to every account on this host (mode " + mode_text(st.st_mode) +
                 "): anyone could read the token. Run `chmod 600 " + path + "` (or 640 to share it with a group) and make "
                 "a new token if it may have been read");
  return read_token(f.fd, "--token-file " + path, "e.g. openssl rand -hex 32 > " + path);
}

bool token_matches(const std::string& given, const std::string& token) {
  if (token.empty()) return false;
  // Every byte of `given` is compared, against the token repeated: the time depends only on the
  // length the client chose.
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ token[i % token.size()]);
  return diff == 0;
}

}  // namespace dts::serve
