// The signature of schema-change records. pg_logical_emit_message is open to every role of the
// source, so a dts.ddl message proves nothing by its prefix; dts_decoding's event triggers sign
// each record with a key only they and roles with REPLICATION can read
// (dts_decoding.ddl_signing_key()), and the applier replays only records that verify.
#ifndef DTS_APPLIER_DDL_RECORD_SIGNATURE_HPP
#define DTS_APPLIER_DDL_RECORD_SIGNATURE_HPP

#include <optional>
#include <string>
#include <string_view>

namespace dts::pg {
class Connection;
}

namespace dts::ddl {

// The key, read from the source; nullopt without dts_decoding 0.2.0 there. Throws Error(kSource)
// when the extension is there but will not give it (the role lacks REPLICATION).
std::optional<std::string> signing_key(const pg::Connection& source);

// "<HMAC-SHA256 in hex> <record>": the record if the MAC is the key's, else nullopt.
std::optional<std::string_view> verified_record(std::string_view content, std::string_view key);

// The same signature, for tests.
std::string sign_record(std::string_view record, std::string_view key);

}  // namespace dts::ddl

#endif
