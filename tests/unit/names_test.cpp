// Names the applier gives and SQL it writes from names: a run's session name, and role settings.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "migrate/job_lock.hpp"
#include "roles/roles.hpp"

using dts::migrate::job_application_name;
using dts::migrate::run_application_name;

// PostgreSQL keeps 63 bytes of application_name: a long slot's name gives way, the run's pid
// stays whole (a stopping run ends only its own run's sessions by that name).
TEST(SessionNames, ARunsNameKeepsItsPidWhole) {
  std::string pid = "#" + std::to_string(getpid());
  EXPECT_EQ(run_application_name("dts_migrate"), "dts_migrate:dts_migrate" + pid);
  std::string slot(63, 's');
  std::string name = run_application_name(slot);
  EXPECT_EQ(name.size(), 63u);
  EXPECT_EQ(name.substr(name.size() - pid.size()), pid);
  EXPECT_EQ(job_application_name(slot).size(), 63u);
}

TEST(RoleSettings, ListSettingsAreQuotedPerElement) {
  EXPECT_EQ(dts::roles::setting_statement("app user", "search_path=app, \"My Schema\", public"),
            "ALTER ROLE \"app user\" SET \"search_path\" TO 'app', 'My Schema', 'public'");
  EXPECT_EQ(dts::roles::setting_statement("r", "search_path=\"$user\", public", "shop"),
            "ALTER ROLE \"r\" IN DATABASE \"shop\" SET \"search_path\" TO '$user', 'public'");
  EXPECT_EQ(dts::roles::setting_statement("r", "statement_timeout=5s"), "ALTER ROLE \"r\" SET \"statement_timeout\" TO '5s'");
  EXPECT_EQ(dts::roles::setting_statement("r", "application_name=it's"),
            "ALTER ROLE \"r\" SET \"application_name\" TO 'it''s'");
}
