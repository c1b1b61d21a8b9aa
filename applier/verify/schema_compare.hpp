// verify's schema half: both sides' schemas as pg_dump --schema-only writes them (without
// owners, privileges, the migration's own schema and dts_decoding), compared statement by
// statement. Schema changes are replayed during the migration (ddl/), so after one the two
// must still be the same.
#ifndef DTS_APPLIER_VERIFY_SCHEMA_COMPARE_HPP
#define DTS_APPLIER_VERIFY_SCHEMA_COMPARE_HPP

#include <string>
#include <vector>

namespace dts::verify {

struct SchemaResult {
  size_t statements = 0;                 // of the source's dump
  std::vector<std::string> only_source;  // each statement's first line
  std::vector<std::string> only_target;
  bool equal() const { return only_source.empty() && only_target.empty(); }
};

// The dump's statements, normalised: no comments, SET lines or blank lines, nothing of
// dts_decoding. Exposed for the unit tests.
std::vector<std::string> schema_statements(const std::string& dump);
SchemaResult compare_statements(const std::vector<std::string>& source, const std::vector<std::string>& target);

// `left_out`: the tables outside the selection, as "schema"."name" (pg_dump -T).
SchemaResult compare_schemas(const std::string& source, const std::string& target,
                             const std::vector<std::string>& left_out);

std::string render_schema(const SchemaResult& result);

}  // namespace dts::verify

#endif
