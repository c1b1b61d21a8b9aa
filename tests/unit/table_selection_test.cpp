// The table selection: the plugin's pattern dialect (plugin/table_pattern.cpp) parsed and
// matched the same way in the applier, and compiled against a catalog into exact relations.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.hpp"
#include "core/table_selection.hpp"

using dts::core::CatalogRelation;
using dts::core::parse_table_patterns;
using dts::core::TablePattern;
using dts::core::TableSelection;

namespace {

std::vector<TablePattern> parse(const std::string& text) { return parse_table_patterns(text, "--tables"); }

bool matches(const std::string& patterns, const std::string& schema, const std::string& table) {
  return TableSelection(patterns, "").selects(schema, table);
}

// The message of the kConfig error a malformed list gives ("" if it parses).
std::string refusal(const std::string& text) {
  try {
    parse(text);
  } catch (const dts::Error& e) {
    EXPECT_EQ(e.kind(), dts::ErrorKind::kConfig);
    return e.what();
  }
  return "";
}

std::vector<std::string> names(const std::vector<dts::core::SelectedRelation>& rels) {
  std::vector<std::string> out;
  for (const auto& r : rels) out.push_back(r.schema + "." + r.name);
  return out;
}

}  // namespace

TEST(TablePatterns, UnquotedNamesFoldToLowerCase) {
  auto p = parse("Public.Orders");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(*p[0].schema, "public");
  EXPECT_EQ(p[0].table, "orders");
  EXPECT_TRUE(matches("Public.Orders", "public", "orders"));
  EXPECT_FALSE(matches("Public.Orders", "public", "Orders"));
  EXPECT_FALSE(matches("Public.Orders", "Public", "orders"));
}

TEST(TablePatterns, QuotedNamesKeepTheirCase) {
  EXPECT_TRUE(matches("public.\"Orders\"", "public", "Orders"));
  EXPECT_FALSE(matches("public.\"Orders\"", "public", "orders"));
  EXPECT_TRUE(matches("\"Sales\".t", "Sales", "t"));
  EXPECT_FALSE(matches("\"Sales\".t", "sales", "t"));
}

TEST(TablePatterns, CommasAndDotsInsideQuotesArePartOfTheName) {
  auto p = parse("\"My.Schema\".\"a,b\", c");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(*p[0].schema, "My.Schema");
  EXPECT_EQ(p[0].table, "a,b");
  EXPECT_EQ(p[0].text, "\"My.Schema\".\"a,b\"");
  EXPECT_FALSE(p[1].schema.has_value());
  EXPECT_EQ(p[1].table, "c");
  // A dot inside quotes does not make a schema.
  auto q = parse("\"a.b\"");
  ASSERT_EQ(q.size(), 1u);
  EXPECT_FALSE(q[0].schema.has_value());
  EXPECT_TRUE(matches("\"a.b\"", "anything", "a.b"));
  EXPECT_FALSE(matches("\"a.b\"", "a", "b"));
  EXPECT_TRUE(matches("\"My.Schema\".\"a,b\"", "My.Schema", "a,b"));
  EXPECT_FALSE(matches("\"My.Schema\".\"a,b\"", "My.Schema", "a"));
}

TEST(TablePatterns, DoubledQuotesAreOneQuote) {
  auto p = parse("\"weird \"\"q\"\"\"");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].table, "weird \"q\"");
  EXPECT_EQ(parse("\"\"\"\"")[0].table, "\"");
  EXPECT_TRUE(matches("public.\"weird \"\"q\"\"\"", "public", "weird \"q\""));
  // Unquoted and quoted runs join into one name, as the plugin reads them.
  EXPECT_EQ(parse("ab\"CD\"ef")[0].table, "abCDef");
}

TEST(TablePatterns, SpacesAroundPatternsAreDroppedInsideQuotesKept) {
  auto p = parse("  public.t ,\ts.u\n");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].table, "t");
  EXPECT_EQ(*p[1].schema, "s");
  EXPECT_EQ(p[1].table, "u");
  EXPECT_TRUE(matches("\"my table\"", "public", "my table"));
  EXPECT_TRUE(matches("\" x \"", "public", " x "));
  EXPECT_FALSE(matches("\" x \"", "public", "x"));
}

TEST(TablePatterns, GlobsOutsideQuotesLiteralInside) {
  EXPECT_TRUE(matches("s2.t_?", "s2", "t_1"));
  EXPECT_FALSE(matches("s2.t_?", "s2", "t_10"));
  EXPECT_TRUE(matches("s2.t_*", "s2", "t_10"));
  EXPECT_TRUE(matches("s2.t_*", "s2", "t_"));
  EXPECT_TRUE(matches("*.*", "x", "y"));
  EXPECT_TRUE(matches("s?.*", "s2", "anything"));
  EXPECT_FALSE(matches("s?.*", "s22", "anything"));
  // Quoted wildcards are characters.
  EXPECT_TRUE(matches("\"t_*\"", "s", "t_*"));
  EXPECT_FALSE(matches("\"t_*\"", "s", "t_1"));
  EXPECT_TRUE(matches("\"t?\"", "s", "t?"));
  EXPECT_FALSE(matches("\"t?\"", "s", "tx"));
  // Quoted and glob parts in one name: "T" keeps its case, * stays a wildcard.
  EXPECT_TRUE(matches("\"T\"*", "s", "T1"));
  EXPECT_FALSE(matches("\"T\"*", "s", "t1"));
  // Backslashes are characters, quoted or not.
  EXPECT_TRUE(matches("a\\b", "s", "a\\b"));
  EXPECT_TRUE(matches("\"a\\*\"", "s", "a\\*"));
  EXPECT_FALSE(matches("\"a\\*\"", "s", "a\\x"));
  // `_` and `%` are not wildcards (they were LIKE's in the old filter).
  EXPECT_FALSE(matches("t_1", "s", "tx1"));
  EXPECT_FALSE(matches("t%", "s", "t1"));
}

TEST(TablePatterns, WildcardsMatchBytesAsThePluginDoes) {
  // "é" is two bytes in UTF-8: the plugin's `?` matches one byte.
  EXPECT_FALSE(matches("t?", "s", "t\xc3\xa9"));
  EXPECT_TRUE(matches("t??", "s", "t\xc3\xa9"));
  EXPECT_TRUE(matches("T\xc3\xa9", "s", "t\xc3\xa9"));  // only ASCII letters fold
  EXPECT_FALSE(matches("t\xc3\x89", "s", "t\xc3\xa9"));
}

TEST(TablePatterns, APatternWithoutSchemaMatchesInEverySchema) {
  EXPECT_TRUE(matches("orders", "public", "orders"));
  EXPECT_TRUE(matches("orders", "s2", "orders"));
  EXPECT_FALSE(matches("orders", "s2", "orders2"));
}

TEST(TablePatterns, MalformedListsAreRefusedNamingThePattern) {
  std::string m = refusal("public.a,,public.b");
  EXPECT_NE(m.find("--tables"), std::string::npos) << m;
  EXPECT_NE(m.find("pattern 2"), std::string::npos) << m;
  EXPECT_NE(m.find("empty name"), std::string::npos) << m;
  m = refusal("public.a, my table");
  EXPECT_NE(m.find("\"my table\""), std::string::npos) << m;
  EXPECT_NE(m.find("cannot contain spaces"), std::string::npos) << m;
  m = refusal("a.b.c");
  EXPECT_NE(m.find("too many dotted names"), std::string::npos) << m;
  EXPECT_NE(m.find("\"a.b.c\""), std::string::npos) << m;
  m = refusal("x, \"Unclosed.t");
  EXPECT_NE(m.find("unterminated double quote"), std::string::npos) << m;
  EXPECT_NE(m.find("pattern 2 \"\"Unclosed.t\""), std::string::npos) << m;
  EXPECT_NE(refusal("a,").find("empty name"), std::string::npos);
  EXPECT_NE(refusal(",a").find("empty name"), std::string::npos);
  EXPECT_NE(refusal("\"\".t").find("empty name"), std::string::npos);
  EXPECT_NE(refusal("a.").find("empty name"), std::string::npos);
  EXPECT_NE(refusal(".a").find("empty name"), std::string::npos);
  EXPECT_NE(refusal("   ").find("empty name"), std::string::npos);
  EXPECT_NE(refusal("a .b").find("cannot contain spaces"), std::string::npos);
  EXPECT_NE(refusal("a. b").find("cannot contain spaces"), std::string::npos);
  EXPECT_NE(refusal(std::string("a\0b", 3)).find("NUL"), std::string::npos);
  // The label of the list is the one given.
  try {
    TableSelection("ok", "bad name", "--tables", "--exclude");
    FAIL() << "accepted";
  } catch (const dts::Error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid --exclude"), std::string::npos) << e.what();
  }
  // Empty means no filter; and these parse.
  EXPECT_TRUE(parse("").empty());
  EXPECT_TRUE(TableSelection("", "").everything());
  EXPECT_EQ(refusal("\"a b\".\"c,d\" , e"), "");
}

TEST(TableSelection, ExactQuotedNamesSelectTheirRelationAlone) {
  const std::vector<std::pair<std::string, std::string>> hostile = {
      {"public", "Orders"}, {"public", "orders"}, {"My.Schema", "a,b"}, {"public", "weird \"q\""},
      {"s", "t_*"},         {"s", "t_1"},         {"s", "a\\b"},        {"s p", " x "}};
  std::vector<CatalogRelation> catalog;
  uint32_t oid = 100;
  for (const auto& [s, n] : hostile) catalog.push_back({oid++, s, n, 'r', 0});
  for (const auto& [s, n] : hostile) {
    dts::core::SelectedRelation r{0, s, n, 'r', {}};
    auto got = TableSelection(r.quoted(), "").compile(catalog);
    EXPECT_EQ(names(got.selected), std::vector<std::string>{s + "." + n}) << r.quoted();
    EXPECT_EQ(got.others.size(), hostile.size() - 1);
  }
  EXPECT_EQ((dts::core::SelectedRelation{0, "public", "weird \"q\"", 'r', {}}.quoted()), "\"public\".\"weird \"\"q\"\"\"");
}

TEST(TableSelection, PartitionsFollowTheirAncestors) {
  std::vector<CatalogRelation> catalog = {
      {10, "public", "meas", 'p', 0},       {11, "parts", "meas_2023", 'r', 10}, {12, "parts", "meas_2024", 'p', 10},
      {13, "parts", "meas_2024_h1", 'r', 12}, {20, "public", "other", 'r', 0},
  };
  auto sel = [&](const std::string& t, const std::string& x) { return names(TableSelection(t, x).compile(catalog).selected); };
  using V = std::vector<std::string>;
  EXPECT_EQ(sel("public.meas", ""), (V{"parts.meas_2023", "parts.meas_2024", "parts.meas_2024_h1", "public.meas"}));
  EXPECT_EQ(sel("public.meas", "parts.meas_2024"), (V{"parts.meas_2023", "public.meas"}));
  EXPECT_EQ(sel("parts.meas_2024_h1", ""), (V{"parts.meas_2024_h1"}));
  EXPECT_EQ(sel("", "public.meas"), (V{"public.other"}));
  EXPECT_EQ(sel("public.*", "meas_2023"), (V{"parts.meas_2024", "parts.meas_2024_h1", "public.meas", "public.other"}));
  auto c = TableSelection("parts.meas_2024_h1", "").compile(catalog);
  ASSERT_EQ(c.selected.size(), 1u);
  EXPECT_EQ(c.selected[0].ancestors, (std::vector<uint32_t>{12, 10}));
}

TEST(TableSelection, NeverTheApplierOwnSchema) {
  std::vector<CatalogRelation> catalog = {{1, "dts", "migration", 'r', 0}, {2, "public", "t", 'r', 0}};
  EXPECT_EQ(names(TableSelection("", "").compile(catalog).selected), std::vector<std::string>{"public.t"});
  EXPECT_EQ(names(TableSelection("*.*", "").compile(catalog).selected), std::vector<std::string>{"public.t"});
  auto c = TableSelection("dts.*", "").compile(catalog);
  EXPECT_TRUE(c.selected.empty());
  EXPECT_EQ(c.others.size(), 2u);
  EXPECT_EQ(c.oid_array_sql(), "'{}'::oid[]");
  EXPECT_EQ(TableSelection("", "").compile(catalog).oid_array_sql(), "'{2}'::oid[]");
}

TEST(TableSelection, MixedSelectionOfTheIntegrationTest) {
  // The selection tests/integration/selection_test.py runs against real servers.
  std::vector<CatalogRelation> catalog = {
      {1, "public", "Orders", 'r', 0}, {2, "public", "orders", 'r', 0}, {3, "My.Schema", "a,b", 'r', 0},
      {4, "My.Schema", "a", 'r', 0},   {5, "public", "weird \"q\"", 'r', 0}, {6, "s2", "t_1", 'r', 0},
      {7, "s2", "t_10", 'r', 0},       {8, "s2", "t_2", 'r', 0},       {9, "public", "meas", 'p', 0},
      {10, "public", "meas_a", 'r', 9}, {11, "public", "meas_b", 'r', 9}, {12, "public", "Other", 'r', 0},
  };
  TableSelection s("public.\"Orders\", \"My.Schema\".\"a,b\", \"weird \"\"q\"\"\", S2.T_?, public.MEAS",
                   "s2.t_2, meas_b");
  EXPECT_EQ(names(s.compile(catalog).selected),
            (std::vector<std::string>{"My.Schema.a,b", "public.Orders", "public.meas", "public.meas_a",
                                      "public.weird \"q\"", "s2.t_1"}));
}
