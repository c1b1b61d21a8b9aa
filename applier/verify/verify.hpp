// `dts_applier verify`: are source and target equal, while changes keep flowing? Every
// selected table is compared in key-range chunks (row count and a checksum of the rows' text);
// a chunk that differs is read again on both sides after the applier has passed the source
// position of the read, down to single rows, so that a change still in flight is not reported.
// Rows that still differ at the end are checked once more with the source rows locked FOR SHARE
// (the whole table locked in SHARE mode if it has no key), which makes the answer exact.
#ifndef DTS_APPLIER_VERIFY_VERIFY_HPP
#define DTS_APPLIER_VERIFY_VERIFY_HPP

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "verify/schema_compare.hpp"

#include "pg/connection.hpp"

namespace dts::verify {

struct VerifyOptions {
  std::string source;
  std::string target;
  // The plugin's patterns (core/table_selection.hpp); both empty: the migration's (dts.migration),
  // or every table.
  std::string tables;
  std::string exclude;
  std::string slot = "dts_migrate";  // the applier's origin is dts_<slot>
  int64_t chunk_rows = 10000;
  int rounds = 3;  // re-reads of a differing chunk (then of its differing rows) before locking
  std::chrono::seconds wait_timeout{120};
  std::chrono::milliseconds lock_timeout{5000};
  size_t samples = 5;  // keys shown per differing chunk
  // Re-checks wait for the applier (if the target has its origin); off when nothing can move,
  // as in complete, where the source is read-only and the applier has stopped.
  bool wait_for_applier = true;
  // Differing tables are copied again (dts_applier resync) and compared once more.
  bool repair = false;
  // The schemas are compared too (schema_compare.hpp).
  bool schema = true;
};

struct Difference {
  std::string range;                 // the chunk's key range, e.g. "(id) > (100) AND (id) <= (200)"
  int64_t source_rows = 0;
  int64_t target_rows = 0;
  std::vector<std::string> samples;  // "id=150: changed", "id=151: missing on the target", ...
  size_t rows_differing = 0;         // 0 when unknown (a table without a key)
};

struct TableResult {
  std::string table;
  bool keyed = true;
  int64_t source_rows = 0;
  int64_t target_rows = 0;
  int64_t chunks = 0;
  int64_t rechecked = 0;  // chunks read again because they differed at first
  std::string error;      // the table could not be compared (missing on the target, ...)
  std::vector<Difference> differences;
  bool equal() const { return error.empty() && differences.empty(); }
};

// Compares the tables; connections are the caller's (complete runs it on its own).
std::vector<TableResult> verify_tables(const VerifyOptions& options, const pg::Connection& source,
                                       const pg::Connection& target);
// Sets the output settings every row's text depends on, the same on both sides.
void prepare_session(const pg::Connection& conn);

std::string render_table(const std::vector<TableResult>& results);
std::string render_json(const std::vector<TableResult>& results, const SchemaResult* schema = nullptr);

// The schema of the selection (the migration's unless options name one) on both sides.
SchemaResult verify_schema(const VerifyOptions& options, const pg::Connection& source, const pg::Connection& target);

// The command: 0 equal, 1 a difference, 2 bad options or an error.
int run_verify(const VerifyOptions& options, bool json);

}  // namespace dts::verify

#endif
