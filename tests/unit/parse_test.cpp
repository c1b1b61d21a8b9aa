// Integers read from server or user text: an Error naming the value, never std::invalid_argument
// or std::out_of_range (issue 11, defect 8: exceptions that ended in std::terminate).
#include <gtest/gtest.h>

#include <string>

#include "common/parse.hpp"

using dts::parse_int64;

TEST(ParseInt64, ReadsWholeDecimalIntegers) {
  EXPECT_EQ(parse_int64("0", "x"), 0);
  EXPECT_EQ(parse_int64("-1", "x"), -1);
  EXPECT_EQ(parse_int64("9223372036854775807", "x"), INT64_MAX);
}

TEST(ParseInt64, AnythingElseIsAnErrorNamingWhatAndTheText) {
  for (const char* bad : {"", "abc", "12abc", " 12", "12 ", "1.5", "99999999999999999999"}) {
    try {
      parse_int64(bad, "the source's max_wal_senders");
      FAIL() << "no error for \"" << bad << "\"";
    } catch (const dts::Error& e) {
      std::string what = e.what();
      EXPECT_EQ(e.kind(), dts::ErrorKind::kProtocol);
      EXPECT_NE(what.find("the source's max_wal_senders"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("\"") + bad + "\""), std::string::npos) << what;
    }
  }
}

TEST(ParseInt64, TheKindIsTheCallers) {
  try {
    parse_int64("x", "--listen's port", dts::ErrorKind::kConfig);
    FAIL();
  } catch (const dts::Error& e) {
    EXPECT_EQ(e.kind(), dts::ErrorKind::kConfig);
  }
}
