#include "migrate/child_process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "common/error.hpp"

namespace dts::migrate {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kPoll{50};
// A tool's end is looked for after 1 ms, then twice as long each time up to kPoll: most runs of
// pg_restore -l or a small dump take tens of milliseconds, and a fixed 50 ms poll added 25 on
// average to each of migrate's eleven tool runs.
constexpr std::chrono::microseconds kFirstPoll{1000};
// pg_dump and pg_restore end within a second of SIGTERM (they only send a cancel request):
// a tool still there after this long is killed.
constexpr std::chrono::milliseconds kGrace{10000};
// Members of a killed group that are not our children are reaped by init, not by us.
constexpr std::chrono::milliseconds kGroupGone{5000};

// The contents of a small /proc file, "" if it cannot be read (the process has gone).
std::string read_proc_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[1024];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// True while a process other than a zombie is in process group `pgid` (zombies hold nothing:
// no connection, no lock; and kill(-pgid, 0) would count them).
bool group_has_live_members(pid_t pgid) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return kill(-pgid, 0) == 0;
  bool found = false;
  while (dirent* e = readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    // read(2), not a stream: a process that ends between readdir and the read makes read fail
    // with ESRCH, which libstdc++'s filebuf turns into an exception.
    std::string stat = read_proc_file(std::string("/proc/") + e->d_name + "/stat");
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3) continue;
    if (pgrp == pgid && state != 'Z') {
      found = true;
      break;
    }
  }
  closedir(proc);
  return found;
}

}  // namespace

std::string resolve_tool(const std::string& name) {
  namespace fs = std::filesystem;
  static std::mutex mutex;
  static std::map<std::string, std::string> resolved;
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  std::string key = name + '\0' + dirs;
  std::lock_guard<std::mutex> lock(mutex);
  auto known = resolved.find(key);
  if (known != resolved.end()) return known->second;
  std::string chosen = name;  // execvpe searches PATH itself
  std::error_code ec;
  for (size_t at = 0; at <= dirs.size();) {
    size_t end = std::min(dirs.find(':', at), dirs.size());
    std::string dir = dirs.substr(at, end - at);
    at = end + 1;
    fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    if (access(candidate.c_str(), X_OK) != 0) continue;
    if (fs::canonical(candidate, ec).filename() != "pg_wrapper") break;
    int newest = -1;
    for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
      const std::string version = e.path().filename().string();
      if (version.empty() || version.size() > 4 || version.find_first_not_of("0123456789") != std::string::npos) continue;
      fs::path binary = e.path() / "bin" / name;
      if (std::stoi(version) > newest && access(binary.c_str(), X_OK) == 0) {
        newest = std::stoi(version);
        chosen = binary.string();
      }
    }
    break;
  }
  resolved.emplace(key, chosen);
  return chosen;
}

void stop_group(pid_t leader, std::chrono::milliseconds grace) {
  kill(-leader, SIGTERM);
  auto deadline = Clock::now() + grace;
  bool reaped = false;
  int status = 0;
  while (Clock::now() < deadline) {
    if (!reaped) {
      pid_t r = waitpid(leader, &status, WNOHANG);
      reaped = r == leader || (r < 0 && errno == ECHILD);  // ECHILD: reaped before (it ended on its own)
    }
    if (reaped && !group_has_live_members(leader)) return;
    std::this_thread::sleep_for(kPoll);
  }
  spdlog::warn("process group {} did not end within {} ms of SIGTERM: killing it", leader, grace.count());
  kill(-leader, SIGKILL);
  if (!reaped) {
    while (waitpid(leader, &status, 0) < 0 && errno == EINTR) {
    }
  }
  auto gone = Clock::now() + kGroupGone;
  while (group_has_live_members(leader) && Clock::now() < gone) std::this_thread::sleep_for(kPoll);
}

int run_child(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& out_path,
              const std::string& err_path, const StopCheck& should_stop) {
  // Everything the child needs is made before fork: after it, only async-signal-safe calls.
  std::vector<std::string> args_copy = argv, env_copy = env;
  if (!args_copy.empty()) args_copy[0] = resolve_tool(args_copy[0]);
  std::vector<char*> args, envp;
  for (auto& a : args_copy) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);
  int err_fd = err_path.empty() ? -1 : open(err_path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
  int out_fd = out_path.empty() ? -1 : open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if ((!err_path.empty() && err_fd < 0) || (!out_path.empty() && out_fd < 0)) {
    std::string why = std::strerror(errno);
    if (err_fd >= 0) close(err_fd);
    if (out_fd >= 0) close(out_fd);
    throw Error(ErrorKind::kInternal, "cannot open the output files of " + argv[0] + ": " + why);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // migrate is already gone
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
    execvpe(args[0], args.data(), envp.data());
    const char msg[] = ": could not run it (is it installed and on PATH?)\n";
    ssize_t ignored = write(STDERR_FILENO, args[0], std::strlen(args[0]));
    ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)ignored;
    _exit(127);
  }
  if (err_fd >= 0) close(err_fd);
  if (out_fd >= 0) close(out_fd);
  if (pid < 0) throw Error(ErrorKind::kInternal, "could not start " + argv[0] + ": " + std::strerror(errno));
  setpgid(pid, pid);  // also here: whichever of the two runs first, the group exists before any signal
  int status = 0;
  std::chrono::microseconds poll = kFirstPoll;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      status = 255 << 8;  // lost the child: not a success
      break;
    }
    if (should_stop && should_stop()) {
      stop_group(pid, kGrace);
      throw Stopped(argv[0] + " was stopped");
    }
    std::this_thread::sleep_for(poll);
    poll = std::min<std::chrono::microseconds>(poll * 2, kPoll);
  }
  // A worker the tool left behind would go on without it.
  if (group_has_live_members(pid)) stop_group(pid, kGrace);
  return status;
}

}  // namespace dts::migrate
