#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/private_dir.hpp"
#include "migrate/child_process.hpp"

namespace fs = std::filesystem;
using dts::migrate::resolve_tool;
using dts::migrate::run_child;

namespace {

bool never() { return false; }

// PATH set for one test, restored after it.
class PathFor {
 public:
  explicit PathFor(const std::string& path) : old_(std::getenv("PATH") ? std::getenv("PATH") : "") {
    setenv("PATH", path.c_str(), 1);
  }
  ~PathFor() { setenv("PATH", old_.c_str(), 1); }

 private:
  std::string old_;
};

}  // namespace

TEST(ResolveTool, DebiansWrapperIsSkippedForTheNewestBinary) {
  std::error_code ec;
  if (fs::canonical("/usr/bin/pg_dump", ec).filename() != "pg_wrapper") GTEST_SKIP() << "no Debian pg_wrapper here";
  PathFor path("/usr/local/bin:/usr/bin:/bin");
  std::string tool = resolve_tool("pg_dump");
  EXPECT_EQ(tool.rfind("/usr/lib/postgresql/", 0), 0u) << tool;
  EXPECT_EQ(fs::path(tool).filename(), "pg_dump");
  EXPECT_EQ(access(tool.c_str(), X_OK), 0) << tool;
}

TEST(ResolveTool, AnEarlierHitOnPathAndOtherProgramsAreKept) {
  dts::PrivateDir dir("dts-unit-tool");
  std::string own = dir.path + "/pg_dump";
  std::ofstream(own) << "#!/bin/sh\nexit 0\n";
  chmod(own.c_str(), 0700);
  {
    PathFor path(dir.path + ":/usr/bin:/bin");
    EXPECT_EQ(resolve_tool("pg_dump"), "pg_dump");  // execvpe finds the user's own first
  }
  EXPECT_EQ(resolve_tool("sh"), "sh");
  EXPECT_EQ(resolve_tool("/bin/true"), "/bin/true");
}

TEST(RunChild, ReturnsTheToolsExitStatus) {
  std::vector<std::string> env = {"PATH=/usr/bin:/bin"};
  int status = run_child({"sh", "-c", "exit 3"}, env, "", "", never);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  status = run_child({"true"}, env, "", "", never);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
