// The spool of streamed transactions: records come back as they went in, a subtransaction's
// abort cuts exactly its records (and later ones), relations are written again when cut away,
// and nothing is left on disk; private directories of dead processes are cleaned up.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "apply/spool.hpp"
#include "common/private_dir.hpp"
#include "dts/protocol.h"

using dts::apply::SpoolDirectory;
using dts::apply::SpoolFile;

namespace {

std::vector<std::string> replayed(SpoolFile& f) {
  std::vector<std::string> out;
  f.replay(7, [&](const uint8_t* frame, size_t len) {
    EXPECT_EQ(frame[0], 7);  // every frame starts with the version byte
    std::string body(reinterpret_cast<const char*>(frame) + 1, len - 1);
    out.push_back(body);
  });
  return out;
}

}  // namespace

TEST(Spool, RecordsComeBackInOrderInAPrivateDirectoryThatIsRemoved) {
  std::string path;
  {
    SpoolDirectory dir;
    {
      SpoolFile f(dir, 42);
      f.append("one");
      f.close();  // the end of a stream block: reopened for the next
      f.append("two");
      EXPECT_EQ(replayed(f), std::vector<std::string>{"onetwo"});
      EXPECT_EQ(f.records(), 2u);
    }
    path = dir.path();
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(path)) left.push_back(e.path().filename().string());
    EXPECT_EQ(left, std::vector<std::string>{"owner"});  // the spool file went with its SpoolFile
    EXPECT_EQ(dir.files_created, 1u);
    EXPECT_EQ(dir.bytes_now, 0u);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Spool, ASubtransactionAbortCutsItsRecordsAndLaterOnes) {
  SpoolDirectory dir;
  SpoolFile f(dir, 1);
  f.append_relation(10, 1, "R");
  f.append("a");
  f.mark_subtransaction(2);
  f.append("b");
  f.mark_subtransaction(3);
  f.append_relation(11, 1, "S");
  f.append("c");
  f.abort_subtransaction(2);  // takes 3 with it
  f.abort_subtransaction(3);  // already gone: nothing happens
  f.append("d");
  // Relation 10 was written before the cut and stays; 11 was cut away and comes again.
  f.append_relation(10, 1, "R");
  f.append_relation(11, 1, "S");
  f.append("e");
  EXPECT_EQ(replayed(f), std::vector<std::string>{"RadSe"});
}

TEST(Spool, ANewShapeOfARelationIsWrittenAgain) {
  SpoolDirectory dir;
  SpoolFile f(dir, 1);
  f.append_relation(10, 1, "R1");
  f.append("x");
  f.append_relation(10, 1, "R1");
  f.append_relation(10, 2, "R2");
  f.append("y");
  EXPECT_EQ(replayed(f), std::vector<std::string>{"R1xR2y"});
}

TEST(Spool, LargeSpoolsReplayInFramesOfWholeRecords) {
  SpoolDirectory dir;
  SpoolFile f(dir, 1);
  std::string record(1000, 'r');
  for (int i = 0; i < 3000; ++i) f.append(record);
  size_t frames = 0, bytes = 0;
  f.replay(1, [&](const uint8_t*, size_t len) {
    ++frames;
    EXPECT_EQ((len - 1) % record.size(), 0u);
    bytes += len - 1;
  });
  EXPECT_GT(frames, 1u);
  EXPECT_EQ(bytes, 3000 * record.size());
  EXPECT_GE(dir.peak_bytes, bytes);
}

// A private directory whose owner was killed (SIGKILL leaves it) goes when the next one is made;
// one whose owner lives, or a fresh one without owner, stays.
TEST(PrivateDirs, TheDeadOwnersDirectoriesAreRemovedTheLivingOnesKept) {
  std::string root = dts::make_owned_dir("dts-unit-root");  // a TMPDIR of the test's own
  setenv("TMPDIR", root.c_str(), 1);
  auto owned_by = [&](const std::string& name, long pid) {
    std::filesystem::create_directory(root + "/" + name);
    if (pid == 0) return;
    std::FILE* f = std::fopen((root + "/" + name + "/owner").c_str(), "w");
    std::fprintf(f, "%ld\n", pid);
    std::fclose(f);
  };
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid whose process is gone
  owned_by("dts-orphan-dead01", child);
  owned_by("dts-orphan-alive1", getpid());
  owned_by("dts-orphan-fresh1", 0);
  owned_by("dts-other-dead001", child);  // another prefix: not ours to judge
  {
    dts::PrivateDir made("dts-orphan");
    EXPECT_TRUE(std::filesystem::exists(made.path + "/owner"));
    EXPECT_FALSE(std::filesystem::exists(root + "/dts-orphan-dead01"));
    EXPECT_TRUE(std::filesystem::exists(root + "/dts-orphan-alive1"));
    EXPECT_TRUE(std::filesystem::exists(root + "/dts-orphan-fresh1"));
    EXPECT_TRUE(std::filesystem::exists(root + "/dts-other-dead001"));
  }
  unsetenv("TMPDIR");
  std::filesystem::remove_all(root);
}
