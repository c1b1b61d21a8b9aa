// --tables / --exclude as SQL, for the commands that select tables in the catalog (check,
// verify): each schema.table glob (* and ?) becomes a LIKE on "schema.table", and a name
// without a schema matches in any schema. Double quotes are dropped, so "Mixed Case".t works.
#ifndef DTS_APPLIER_COMMON_TABLE_FILTER_HPP
#define DTS_APPLIER_COMMON_TABLE_FILTER_HPP

#include <string>

namespace dts {

// A condition on pg_class c joined with pg_namespace n: ordinary and partitioned tables of
// user schemas (not dts's own), matching the patterns. Empty patterns select every table.
std::string table_filter_sql(const std::string& tables, const std::string& exclude);

}  // namespace dts

#endif
