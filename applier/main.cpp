// dts_applier: checks, copies and streams a PostgreSQL database into another. The
// subcommands arrive with the follow issue; for now it reports what it is.
#include <cstdio>
#include <cstring>

#include "dts/protocol.h"
#include "dts/version.h"

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--version") == 0 || std::strcmp(argv[1], "version") == 0)) {
    std::printf("dts_applier %s (record protocol %d)\n", DTS_VERSION, dts::protocol::kVersion);
    return 0;
  }
  std::fprintf(stderr,
               "usage: dts_applier --version\n"
               "The check, migrate, follow, verify and complete subcommands are not built yet.\n");
  return argc > 1 ? 2 : 0;
}
