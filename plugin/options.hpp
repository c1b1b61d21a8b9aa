// Options of a decoding session: one table drives parsing, errors and the docs' options table.
// Include after the PostgreSQL headers (inside extern "C" in the .cpp).
#ifndef DTS_PLUGIN_OPTIONS_HPP
#define DTS_PLUGIN_OPTIONS_HPP

namespace dts::plugin {

enum class OutputFormat { kBinary, kJson };

struct TablePattern;  // table_pattern.hpp

struct DecodingOptions {
  OutputFormat format = OutputFormat::kBinary;
  int proto_version = 1;
  List* include_tables = nullptr;  // of TablePattern*; NIL means every table
  List* exclude_tables = nullptr;  // of TablePattern*
  bool skip_empty_xacts = true;
  bool origin_none = false;  // skip changes that carry a replication origin
  List* message_prefixes = nullptr;  // of char* glob patterns
  bool all_messages = true;
  bool include_xids = false;
  bool include_timestamps = false;
  bool include_lsn = false;
  bool streaming = false;
  bool publish_via_partition_root = false;
  int message_bytes = 65536;  // binary: a message is sent once this many bytes are pending
  // binary, replication protocol only: while more WAL waits to be decoded, finished
  // transactions wait for the next ones, to travel several to a message.
  bool pack_transactions = false;
};

// Parses the DefElem list given to the output plugin; ERRORs on an unknown option or a bad
// value, naming the option and what it accepts. Allocates in the current memory context.
void parse_options(List* options, DecodingOptions* out);

// True if a logical message with this prefix is to be sent.
bool message_prefix_wanted(const DecodingOptions* opts, const char* prefix);

}  // namespace dts::plugin

#endif
