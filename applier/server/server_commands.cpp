#include "server/server_commands.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "common/error.hpp"

namespace dts::server {

int run_verify_databases(const verify::VerifyOptions& o, const DatabaseScope& scope, bool json) {
  std::vector<SourceDatabase> dbs;
  try {
    dbs = resolve(scope, o.source, o.target, o.slot);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
  int worst = 0;
  if (json) std::fputs("{\"databases\": [", stdout);
  for (size_t i = 0; i < dbs.size(); ++i) {
    verify::VerifyOptions vo = o;
    vo.source = dbs[i].source;
    vo.target = dbs[i].target;
    vo.slot = dbs[i].slot;
    if (json) {
      std::string name = dbs[i].name;
      std::string escaped;
      for (char ch : name) escaped += ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch);
      std::printf("%s{\"database\": \"%s\", \"report\": ", i == 0 ? "" : ", ", escaped.c_str());
    } else {
      std::printf("database %s:\n", dbs[i].name.c_str());
    }
    std::fflush(stdout);
    worst = std::max(worst, verify::run_verify(vo, json));
    if (json) std::fputs("}", stdout);
  }
  if (json) std::fputs("]}\n", stdout);
  return worst;
}

int run_cancel_databases(const cancel::CancelOptions& o, const DatabaseScope& scope) {
  int worst = 0;
  for (const auto& db : resolve(scope, o.source, o.target, o.slot)) {
    cancel::CancelOptions co = o;
    co.source = db.source;
    co.target = db.target;
    co.slot = db.slot;
    spdlog::info("database {}: cancelling the migration with slot {}", db.name, db.slot);
    worst = std::max(worst, cancel::run_cancel(co));
  }
  return worst;
}

}  // namespace dts::server
