// Connection strings: postgresql:// URIs (with query parameters) are redacted and stripped of
// their password like key=value conninfos (issue 11, defect 3); an unparsable one never goes
// on a command line.
#include <gtest/gtest.h>

#include <string>

#include "common/error.hpp"
#include "pg/connection.hpp"

using dts::pg::conninfo_without_password;
using dts::pg::redact_conninfo;

namespace {

const char* kUri = "postgresql://migrator:Pw-s3cret@127.0.0.1:26100/app?application_name=dts_it&connect_timeout=10";

}  // namespace

TEST(Conninfo, RedactsThePasswordOfAUri) {
  std::string r = redact_conninfo(kUri);
  EXPECT_EQ(r.find("Pw-s3cret"), std::string::npos) << r;
  EXPECT_NE(r.find("password=********"), std::string::npos) << r;
  EXPECT_NE(r.find("host=127.0.0.1"), std::string::npos) << r;
  EXPECT_NE(r.find("port=26100"), std::string::npos) << r;
  EXPECT_NE(r.find("dbname=app"), std::string::npos) << r;
  EXPECT_NE(r.find("application_name=dts_it"), std::string::npos) << r;
}

TEST(Conninfo, RedactsAPasswordGivenAsAUriQueryParameterOrPercentEncoded) {
  std::string r = redact_conninfo("postgres://u@h/db?password=q%20uery-secret&sslmode=disable");
  EXPECT_EQ(r.find("uery-secret"), std::string::npos) << r;
  EXPECT_NE(r.find("sslmode=disable"), std::string::npos) << r;
  r = redact_conninfo("postgresql://u:p%40ss-secret@h/db");
  EXPECT_EQ(r.find("ss-secret"), std::string::npos) << r;
  EXPECT_EQ(r.find("%40"), std::string::npos) << r;
}

TEST(Conninfo, RedactsKeywordConninfos) {
  std::string r = redact_conninfo("host=h dbname=d password='a b secret' sslpassword=k3y-secret");
  EXPECT_EQ(r.find("secret"), std::string::npos) << r;
  EXPECT_NE(r.find("dbname=d"), std::string::npos) << r;
}

TEST(Conninfo, AnUnparsableStringIsNotEchoed) {
  EXPECT_EQ(redact_conninfo("postgresql://u:secret@h/db?no_such_option=1"), "(unparsable conninfo)");
  EXPECT_EQ(redact_conninfo("host=h password=secret junk"), "(unparsable conninfo)");
}

TEST(Conninfo, WithoutPasswordTurnsAUriIntoKeywordsAndHandsThePasswordOver) {
  std::string password;
  std::string c = conninfo_without_password(kUri, password);
  EXPECT_EQ(password, "Pw-s3cret");
  EXPECT_EQ(c.find("Pw-s3cret"), std::string::npos) << c;
  EXPECT_EQ(c.find("password"), std::string::npos) << c;
  for (const char* want : {"host='127.0.0.1'", "port='26100'", "user='migrator'", "dbname='app'",
                           "application_name='dts_it'", "connect_timeout='10'"})
    EXPECT_NE(c.find(want), std::string::npos) << want << " in " << c;
}

TEST(Conninfo, WithoutPasswordLeavesThePasswordAloneWhenThereIsNone) {
  std::string password = "from-before";
  std::string c = conninfo_without_password("postgresql://u@h:5/db", password);
  EXPECT_EQ(password, "from-before");
  EXPECT_NE(c.find("dbname='db'"), std::string::npos) << c;
}

TEST(Conninfo, WithoutPasswordReadsABareNameAsADatabaseAsLibpqDoes) {
  std::string password;
  EXPECT_EQ(conninfo_without_password("app", password), "dbname='app'");
}

TEST(Conninfo, WithoutPasswordRefusesAnUnparsableStringWithoutEchoingIt) {
  std::string password;
  try {
    conninfo_without_password("postgresql://u:secret@h/db?no_such_option=1", password);
    FAIL() << "no error";
  } catch (const dts::Error& e) {
    EXPECT_EQ(e.kind(), dts::ErrorKind::kConfig);
    EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
  }
}
