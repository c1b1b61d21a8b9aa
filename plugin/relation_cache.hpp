// Per-relation metadata of a decoding session: which columns to send, how to encode each, the
// cached output/send functions, and whether the relation passes the table filters.
// Include after the PostgreSQL headers.
#ifndef DTS_PLUGIN_RELATION_CACHE_HPP
#define DTS_PLUGIN_RELATION_CACHE_HPP

namespace dts::plugin {

struct DecodingOptions;

// How a column's values are written. Fixed binary encodings produce exactly the bytes of the
// type's send function, so the reader can treat every ValueKind::kBinary value as typsend output.
enum class ColumnEncoding : uint8_t {
  kInt2,
  kInt4,
  kInt8,
  kOid,
  kBool,
  kFloat4,      // 4 bytes, as float4send
  kFloat8,      // 8 bytes, as float8send
  kFixed8,      // int64 big-endian: timestamp, timestamptz, time
  kFixed4,      // int32 big-endian: date
  kUuid,        // 16 bytes
  kNumeric,     // numeric: the send format, built from the stored value
  kTextBytes,   // text, varchar, bpchar, json: the stored bytes are the text output
  kByteaBytes,  // bytea: the stored bytes are the send output
  kName,        // name: NUL-terminated in a fixed-size field
  kSend,        // other built-in base types: the send function
  kOutput,      // everything else: the output function
};

enum class JsonStyle : uint8_t { kString, kNumber, kBool };

struct ColumnOutput {
  AttrNumber attnum;  // in the tuples that arrive (the leaf, when publishing via the root)
  Oid type_oid;
  int32 typmod;
  ColumnEncoding encoding;
  JsonStyle json_style;
  bool is_key;
  bool is_varlena;
  FmgrInfo output_fn;
  FmgrInfo send_fn;  // only for kSend
  char* name;
  char* type_name;
  char* json_key;  // the name as a JSON string followed by ':'
};

struct RelationEntry {
  Oid relid;  // hash key: the relation whose changes arrive
  bool valid;
  uint32 invalidations;  // bumped by every invalidation: a build that saw one stays invalid
  bool schema_sent;  // meaningful on the entry of publish_relid
  bool publish;      // passes the filters; changes of other relations are skipped
  Oid publish_relid;  // the relation named on the wire (the root when publishing via the root)
  char* schema;
  char* table;
  char* json_names;  // "schema":"...","table":"..." ready to append
  char replica_identity;  // of the published relation
  // Publishing a partition as its root, the old rows PostgreSQL logs follow the partition's
  // replica identity; when that lacks a column of the root's key, old keys cannot be sent.
  bool identity_mismatch;
  Oid* ancestors;  // partition ancestors, nearest first (their renames change our decision)
  int nancestors;
  int ncols;
  int nkeys;
  ColumnOutput* cols;
  MemoryContext cxt;  // owns everything above; reset on rebuild
};

struct RelationCache;

// Creates the cache in `parent`; registers the invalidation callbacks once per backend.
RelationCache* relation_cache_create(MemoryContext parent, const DecodingOptions* opts);
// Forgets the cache so invalidation callbacks stop touching it (its memory goes with `parent`).
void relation_cache_detach(RelationCache* cache);

// The entry for `rel`, rebuilt first if it was invalidated.
RelationEntry* relation_cache_get(RelationCache* cache, Relation rel);
// Forgets which relation records were sent, so each is sent again before its next row.
void relation_cache_forget_sent(RelationCache* cache);
// The entry that carries the schema_sent flag for what `entry` publishes as.
RelationEntry* relation_cache_published(RelationCache* cache, RelationEntry* entry);

}  // namespace dts::plugin

#endif
