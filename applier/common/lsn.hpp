// Log sequence numbers as PostgreSQL writes them: "16/B374D848".
#ifndef DTS_APPLIER_COMMON_LSN_HPP
#define DTS_APPLIER_COMMON_LSN_HPP

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dts {

using Lsn = uint64_t;

std::string format_lsn(Lsn lsn);
// nullopt unless `text` is two hex numbers separated by a slash, each at most 8 digits.
std::optional<Lsn> parse_lsn(std::string_view text);

// Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's timestamp epoch.
constexpr int64_t kPostgresEpochOffsetMicros = 946684800LL * 1000000LL;
int64_t now_postgres_micros();

}  // namespace dts

#endif
