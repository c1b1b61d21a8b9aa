// A schema change of the source, as the extension's event triggers record it (a dts.ddl logical
// message, docs/protocol.md), and the statements that bring the target to the same state.
// Nothing here reads the target: a change is replayed from the source's state before and after
// the command, so the statements are the same however often they are planned, and the
// replication origin (committed with them) says whether they ran.
#ifndef DTS_APPLIER_DDL_SCHEMA_CHANGE_HPP
#define DTS_APPLIER_DDL_SCHEMA_CHANGE_HPP

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dts::ddl {

constexpr const char* kSchemaChangePrefix = "dts.ddl";

struct RelationRef {
  uint32_t relid = 0;
  std::string schema, name;
  std::string bound;  // a partition's FOR VALUES clause
  std::string qualified() const;
};

struct ColumnDef {
  int attnum = 0;
  std::string name, type;
  bool notnull = false;
  bool local = true;  // false: inherited from a partitioned parent
  std::optional<std::string> default_expr, generated, identity, collation;
  std::optional<std::string> missing;  // the value rows older than the column hold (atthasmissing), as text
};

struct ConstraintDef {
  uint32_t oid = 0;  // the same constraint before and after a command (renamed, validated)
  std::string name, def;  // def as pg_get_constraintdef writes it (NOT VALID included)
  char type = 'c';
  bool validated = true;
};

struct SequenceDef {
  std::string type, start, increment, min, max, cache;
  bool cycle = false;
  std::optional<std::string> owned_by;  // table.column, as an SQL name
  bool identity = false;                // an identity column's: the column makes it
};

struct RelationDef {
  RelationRef ref;
  char kind = 'r';  // pg_class.relkind
  char persistence = 'p';
  char replica_identity = 'd';
  std::optional<std::string> replica_index, partition_key, indexdef, viewdef;
  std::optional<RelationRef> parent, index_table;
  std::vector<RelationRef> partitions;
  std::vector<ColumnDef> columns;
  std::vector<ConstraintDef> constraints;
  std::optional<SequenceDef> sequence;
  bool constraint_index = false;  // an index a constraint made: the constraint replays it
};

struct TypeDef {
  char kind = 0;  // pg_type.typtype: e enum, c composite, d domain
  std::vector<std::string> labels;
  std::vector<std::pair<std::string, std::string>> attributes;  // name, type
  std::string base;
  bool notnull = false;
  std::optional<std::string> default_expr;
  std::vector<std::pair<std::string, std::string>> checks;  // name, definition
};

struct DroppedObject {
  std::string object_type, identity;
  std::string schema, name;  // for the table selection
  bool original = false;
};

enum class ChangeKind {
  kCommand,   // one object made or changed by a command (ddl_command_end)
  kDrop,      // objects a command dropped (sql_drop)
  kRewrite,   // a table rewritten (table_rewrite): its new rows are not in the stream
  kCreateAs,  // CREATE TABLE AS / SELECT INTO begins: its rows come before the table's record
  kGrant,     // GRANT or REVOKE, as the statement's parts
};

struct GrantDef {
  bool is_grant = true;
  std::string keyword;                  // TABLE, SEQUENCE, ROUTINE, SCHEMA, TYPE
  std::vector<std::string> objects;     // identities, quoted by the source
  std::vector<std::string> privileges;  // ALL, SELECT, "UPDATE (a, b)" ...
  std::vector<std::string> grantees;    // quoted role names, or PUBLIC
  bool grant_option = false;
  bool cascade = false;
};

struct SchemaChange {
  ChangeKind kind = ChangeKind::kCommand;
  std::string tag, object_type, identity;
  uint32_t objid = 0;
  uint32_t subxid = 0;  // the subtransaction that made it, when not the top-level transaction
  std::optional<RelationDef> relation, before;  // for relations
  // Other objects: what the catalog holds after the command.
  std::optional<std::string> functiondef, triggerdef, schema_name, comment;
  std::optional<RelationRef> trigger_table;
  bool trigger_internal = false;
  std::optional<TypeDef> type;
  std::optional<std::string> extension, extension_schema;
  // Renames and new schemas of objects that are not relations: the identity before.
  std::optional<std::string> before_identity, rename_to, set_schema;
  // A trigger or table constraint renamed: its table and its old name.
  std::optional<std::string> member_table, member_old_name;
  // An enum's label renamed (ALTER TYPE ... RENAME VALUE).
  std::optional<std::string> rename_value_from, rename_value_to;
  std::vector<DroppedObject> dropped;
  std::optional<GrantDef> grant;
  std::vector<RelationRef> grant_relations;  // the tables a grant is on, for the selection
  // A rewrite (dts_decoding 0.4.0 and later): the table rewritten (relid: objid) and the
  // partitioned tables above it, nearest first. Older records carry neither.
  std::optional<RelationRef> rewritten;
  std::vector<uint32_t> ancestors;
};

// Throws Error(kProtocol) naming the field that is missing or malformed.
SchemaChange parse_schema_change(std::string_view json);

// The tables the change is about (before and after: a rename out of the selection counts), for
// the table selection. Empty for objects that belong to no table.
std::vector<RelationRef> tables_of(const SchemaChange& change);

// The statements that replay `change` on the target. `rewritten`: the source rewrote the table
// in this transaction, and the target's copy has been emptied (it is copied again afterwards).
std::vector<std::string> replay_statements(const SchemaChange& change, bool rewritten);

std::string create_table_sql(const RelationDef& rel);

// Columns added, dropped, renamed or retyped between two states of a table.
bool columns_differ(const RelationDef& before, const RelationDef& after);

}  // namespace dts::ddl

#endif
