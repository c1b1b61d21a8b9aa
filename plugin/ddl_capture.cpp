// The C side of schema-change capture. Records are signed here: any role may call
// pg_logical_emit_message, and a forged dts.ddl message would make the applier run SQL on the
// target; only these functions (callable only as event triggers) sign with the key no
// ordinary role can read, and the applier replays only what verifies.
//
// What an object was *before* a command changed it:
// ddl_command_end sees only the catalog as the command left it; a rename, a new schema or a
// renamed column cannot be told from a drop and a create without the state before. The
// ddl_command_start trigger records it here, per object, for the end trigger (SQL, in the
// extension script) to put into the record it emits. Entries live until the end of the top
// transaction: a command that fails between start and end leaves one behind, never more.
extern "C" {
#include "postgres.h"

#include "access/heapam.h"
#include "access/relation.h"
#include "access/tableam.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "access/xact.h"
#include "replication/message.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "commands/tablecmds.h"
#include "commands/trigger.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parse_type.h"
#include "tcop/deparse_utility.h"
#include "utils/acl.h"
#include "utils/aclchk_internal.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(dts_decoding_capture_ddl_start);
PG_FUNCTION_INFO_V1(dts_decoding_capture_ddl_end);
PG_FUNCTION_INFO_V1(dts_decoding_capture_sql_drop);
PG_FUNCTION_INFO_V1(dts_decoding_capture_table_rewrite);
PG_FUNCTION_INFO_V1(dts_decoding_ddl_before);
PG_FUNCTION_INFO_V1(dts_decoding_new_ddl_key);
PG_FUNCTION_INFO_V1(dts_decoding_grant_record);
PGDLLEXPORT void _PG_init(void);
}

#include <initializer_list>

namespace dts::plugin {
namespace {

struct BeforeState {
  Oid objid;
  char* json;
  BeforeState* next;
};

BeforeState* stash = nullptr;
MemoryContext stash_cxt = nullptr;

void forget_at_transaction_end(XactEvent event, void*) {
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
      event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT) {
    stash = nullptr;
    if (stash_cxt != nullptr) MemoryContextReset(stash_cxt);
  }
}

void forget_before() {
  stash = nullptr;
  if (stash_cxt != nullptr) MemoryContextReset(stash_cxt);
}

void remember(Oid objid, const char* json) {
  if (stash_cxt == nullptr) {
    stash_cxt = AllocSetContextCreate(TopMemoryContext, "dts_decoding ddl before", ALLOCSET_SMALL_SIZES);
    RegisterXactCallback(forget_at_transaction_end, nullptr);
  }
  auto* s = static_cast<BeforeState*>(MemoryContextAlloc(stash_cxt, sizeof(BeforeState)));
  s->objid = objid;
  s->json = MemoryContextStrdup(stash_cxt, json);
  s->next = stash;
  stash = s;
}

struct JsonField {
  const char* key;
  const char* value;
};

// {"key": "value", ...}, each escaped: the small records built here.
char* json_object(std::initializer_list<JsonField> fields) {
  StringInfoData json;
  initStringInfo(&json);
  appendStringInfoChar(&json, '{');
  for (const JsonField& f : fields) {
    if (json.len > 1) appendStringInfoString(&json, ", ");
    escape_json(&json, f.key);
    appendStringInfoString(&json, ": ");
    escape_json(&json, f.value);
  }
  appendStringInfoChar(&json, '}');
  return json.data;
}

// describe_relation() of the extension, as text.
char* describe_relation(Oid relid) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[1] = {OIDOID};
  Datum args[1] = {ObjectIdGetDatum(relid)};
  char* result = nullptr;
  // Qualified: the DDL role's search_path must not choose what "text" is.
  int rc = SPI_execute_with_args("SELECT dts_decoding.describe_relation($1)::pg_catalog.text", 1, argtypes, args,
                                 nullptr, true, 1);
  if (rc == SPI_OK_SELECT && SPI_processed == 1) {
    char* value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
    if (value != nullptr) result = MemoryContextStrdup(TopTransactionContext, value);
  }
  SPI_finish();
  return result;
}

void remember_relation(RangeVar* rv) {
  if (rv == nullptr) return;
  Oid relid = RangeVarGetRelid(rv, NoLock, true);
  if (!OidIsValid(relid)) return;
  if (char* json = describe_relation(relid)) remember(relid, json);
}

// A rename or a new schema of an object that is not a relation: its identity before.
void remember_object(ObjectType type, Node* object, const char* key, const char* value) {
  Relation rel = nullptr;
  ObjectAddress address = get_object_address(type, object, &rel, AccessShareLock, true);
  if (rel != nullptr) relation_close(rel, NoLock);
  if (!OidIsValid(address.objectId)) return;
  char* identity = getObjectIdentity(&address, true);
  if (identity == nullptr) return;
  remember(address.objectId, json_object({{"identity", identity}, {key, value}}));
}

void remember_schema_rename(const char* old_name, const char* new_name) {
  Oid nsp = get_namespace_oid(old_name, true);
  if (OidIsValid(nsp)) remember(nsp, json_object({{"identity", quote_identifier(old_name)}, {"rename_to", new_name}}));
}

constexpr size_t kKeyBytes = 32;

// dts_decoding.ddl_key, read directly: the role running the DDL has no privilege on it, and
// must not need one.
bytea* read_key() {
  Oid nsp = get_namespace_oid("dts_decoding", false);
  Oid relid = get_relname_relid("ddl_key", nsp);
  if (!OidIsValid(relid))
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("dts_decoding.ddl_key is missing"),
                    errhint("DROP EXTENSION dts_decoding; CREATE EXTENSION dts_decoding;")));
  Relation rel = table_open(relid, AccessShareLock);
  Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
  TableScanDesc scan = table_beginscan(rel, snapshot, 0, nullptr);
  bytea* key = nullptr;
  if (HeapTuple tuple = heap_getnext(scan, ForwardScanDirection)) {
    bool isnull = false;
    Datum d = heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);
    if (!isnull) key = DatumGetByteaPCopy(d);
  }
  table_endscan(scan);
  UnregisterSnapshot(snapshot);
  table_close(rel, AccessShareLock);
  if (key == nullptr || VARSIZE_ANY_EXHDR(key) < kKeyBytes)
    ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION), errmsg("dts_decoding.ddl_key holds no key"),
                    errhint("DROP EXTENSION dts_decoding; CREATE EXTENSION dts_decoding;")));
  return key;
}

// "<HMAC-SHA256 of the record, hex> <record>", as a transactional dts.ddl message. Inside a
// subtransaction the record also names it ("subxid"): a transaction streamed while in progress
// carries its messages under the top-level xid (the stream callbacks get no subtransaction for a
// message), so without it a schema change whose savepoint is rolled back could not be undone.
void sign_and_emit(const char* given) {
  StringInfoData with_subxid;
  const char* record = given;
  size_t given_len = strlen(given);
  if (GetCurrentTransactionNestLevel() > 1 && given_len > 1 && given[given_len - 1] == '}') {
    initStringInfo(&with_subxid);
    appendBinaryStringInfo(&with_subxid, given, static_cast<int>(given_len - 1));
    appendStringInfo(&with_subxid, ",\"subxid\":%u}", GetCurrentTransactionId());
    record = with_subxid.data;
  }
  bytea* key = read_key();
  uint8 mac[PG_SHA256_DIGEST_LENGTH];
  pg_hmac_ctx* ctx = pg_hmac_create(PG_SHA256);
  size_t len = strlen(record);
  if (ctx == nullptr || pg_hmac_init(ctx, reinterpret_cast<const uint8*>(VARDATA_ANY(key)), VARSIZE_ANY_EXHDR(key)) < 0 ||
      pg_hmac_update(ctx, reinterpret_cast<const uint8*>(record), len) < 0 || pg_hmac_final(ctx, mac, sizeof(mac)) < 0)
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not sign a schema-change record: %s",
                                                             ctx != nullptr ? pg_hmac_error(ctx) : "out of memory")));
  pg_hmac_free(ctx);
  StringInfoData content;
  initStringInfo(&content);
  static const char kHex[] = "0123456789abcdef";
  for (uint8 b : mac) {
    appendStringInfoChar(&content, kHex[b >> 4]);
    appendStringInfoChar(&content, kHex[b & 15]);
  }
  appendStringInfoChar(&content, ' ');
  appendBinaryStringInfo(&content, record, len);
  LogLogicalMessage("dts.ddl", content.data, content.len, true);
}

// Each row of `query` (one text column, the records) signed and emitted.
void emit_records(const char* query) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  if (SPI_execute(query, false, 0) != SPI_OK_SELECT) elog(ERROR, "%s failed", query);
  for (uint64 i = 0; i < SPI_processed; ++i)
    if (char* record = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)) sign_and_emit(record);
  SPI_finish();
}

// Superuser-only: a role that could turn it off could hide its schema changes from the
// migration (the target would then miss them without a word).
bool capture_ddl = true;

bool capture_off() { return !capture_ddl; }

void require_event_trigger(FunctionCallInfo fcinfo, const char* name) {
  if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("%s() must be fired by an event trigger", name)));
}

// A trigger or a table constraint renamed: the record's object is the trigger or constraint,
// whose old name only the statement knows.
void remember_member_rename(RenameStmt* s) {
  Oid relid = RangeVarGetRelid(s->relation, NoLock, true);
  if (!OidIsValid(relid)) return;
  Oid objid = s->renameType == OBJECT_TRIGGER ? get_trigger_oid(relid, s->subname, true)
                                               : get_relation_constraint_oid(relid, s->subname, true);
  if (!OidIsValid(objid)) return;
  ObjectAddress table;
  ObjectAddressSet(table, RelationRelationId, relid);
  remember(objid, json_object({{"table", getObjectIdentity(&table, false)}, {"old_name", s->subname},
                               {"rename_to", s->newname}}));
}

// GRANT and REVOKE: pg_event_trigger_ddl_commands() names no object for them; the collected
// command holds the statement as the server understood it (objects by OID, privileges as bits,
// grantees as roles). Written back as that statement's parts.
struct GrantTarget {
  Oid classid;
  const char* keyword;
};

bool grant_target(ObjectType type, GrantTarget* out) {
  switch (type) {
    case OBJECT_TABLE: *out = {RelationRelationId, "TABLE"}; return true;
    case OBJECT_SEQUENCE: *out = {RelationRelationId, "SEQUENCE"}; return true;
    case OBJECT_FUNCTION:
    case OBJECT_PROCEDURE:
    case OBJECT_ROUTINE: *out = {ProcedureRelationId, "ROUTINE"}; return true;
    case OBJECT_SCHEMA: *out = {NamespaceRelationId, "SCHEMA"}; return true;
    case OBJECT_TYPE:
    case OBJECT_DOMAIN: *out = {TypeRelationId, "TYPE"}; return true;
    default: return false;  // databases, tablespaces, languages, large objects, FDWs: not replayed
  }
}

void json_string_array_item(StringInfo json, bool& first, const char* value) {
  if (!first) appendStringInfoString(json, ", ");
  first = false;
  escape_json(json, value);
}

char* grant_json(const InternalGrant* g) {
  GrantTarget target;
  if (!grant_target(g->objtype, &target)) return nullptr;
  StringInfoData json;
  initStringInfo(&json);
  appendStringInfo(&json, "{\"ddl\": \"grant\", \"is_grant\": %s, \"keyword\": \"%s\", \"objects\": [",
                   g->is_grant ? "true" : "false", target.keyword);
  bool first = true;
  ListCell* lc;
  foreach (lc, g->objects) {
    ObjectAddress address;
    ObjectAddressSet(address, target.classid, lfirst_oid(lc));
    if (char* identity = getObjectIdentity(&address, true)) json_string_array_item(&json, first, identity);
  }
  appendStringInfoString(&json, "], \"relations\": [");
  first = true;
  if (target.classid == RelationRelationId) {
    foreach (lc, g->objects) {
      Oid relid = lfirst_oid(lc);
      if (!first) appendStringInfoString(&json, ", ");
      first = false;
      appendStringInfoString(&json, "{\"schema\": ");
      escape_json(&json, get_namespace_name(get_rel_namespace(relid)));
      appendStringInfoString(&json, ", \"name\": ");
      escape_json(&json, get_rel_name(relid));
      appendStringInfoChar(&json, '}');
    }
  }
  appendStringInfoString(&json, "], \"privileges\": [");
  first = true;
  if (g->all_privs && g->col_privs == NIL) {
    json_string_array_item(&json, first, "ALL");
  } else {
    static const struct { AclMode bit; const char* name; } kPrivileges[] = {
        {ACL_SELECT, "SELECT"}, {ACL_INSERT, "INSERT"}, {ACL_UPDATE, "UPDATE"}, {ACL_DELETE, "DELETE"},
        {ACL_TRUNCATE, "TRUNCATE"}, {ACL_REFERENCES, "REFERENCES"}, {ACL_TRIGGER, "TRIGGER"},
        {ACL_EXECUTE, "EXECUTE"}, {ACL_USAGE, "USAGE"}, {ACL_CREATE, "CREATE"}};
    for (const auto& p : kPrivileges)
      if (g->privileges & p.bit) json_string_array_item(&json, first, p.name);
    // Column privileges: "SELECT (a, b)", names quoted here.
    foreach (lc, g->col_privs) {
      auto* priv = static_cast<AccessPriv*>(lfirst(lc));
      StringInfoData item;
      initStringInfo(&item);
      appendStringInfoString(&item, priv->priv_name != nullptr ? priv->priv_name : "all");
      appendStringInfoString(&item, " (");
      ListCell* c;
      bool first_col = true;
      foreach (c, priv->cols) {
        if (!first_col) appendStringInfoString(&item, ", ");
        first_col = false;
        appendStringInfoString(&item, quote_identifier(strVal(lfirst(c))));
      }
      appendStringInfoChar(&item, ')');
      for (char* ch = item.data; *ch != '\0' && *ch != ' '; ++ch) *ch = static_cast<char>(pg_toupper(*ch));
      json_string_array_item(&json, first, item.data);
    }
  }
  appendStringInfoString(&json, "], \"grantees\": [");
  first = true;
  foreach (lc, g->grantees) {
    Oid role = lfirst_oid(lc);
    json_string_array_item(&json, first, role == ACL_ID_PUBLIC ? "PUBLIC" : quote_identifier(GetUserNameFromId(role, false)));
  }
  appendStringInfo(&json, "], \"grant_option\": %s, \"cascade\": %s}", g->grant_option ? "true" : "false",
                   g->behavior == DROP_CASCADE ? "true" : "false");
  return json.data;
}

// An event trigger whose record comes from `function(tag)` of the extension (NULL: nothing to
// record).
void emit_tagged_record(FunctionCallInfo fcinfo, const char* trigger, const char* function) {
  require_event_trigger(fcinfo, trigger);
  if (capture_off()) return;
  auto* data = reinterpret_cast<EventTriggerData*>(fcinfo->context);
  emit_records(psprintf("SELECT r FROM dts_decoding.%s(%s) r WHERE r IS NOT NULL", function,
                        quote_literal_cstr(GetCommandTagName(data->tag))));
}

void record_before(Node* tree) {
  switch (nodeTag(tree)) {
    case T_AlterTableStmt:
      remember_relation(reinterpret_cast<AlterTableStmt*>(tree)->relation);
      break;
    case T_RenameStmt: {
      auto* s = reinterpret_cast<RenameStmt*>(tree);
      if (s->relation != nullptr && (s->renameType == OBJECT_TRIGGER || s->renameType == OBJECT_TABCONSTRAINT))
        remember_member_rename(s);
      else if (s->relation != nullptr)
        remember_relation(s->relation);
      else if (s->renameType == OBJECT_SCHEMA)
        remember_schema_rename(s->subname, s->newname);
      else if (s->object != nullptr)
        remember_object(s->renameType, s->object, "rename_to", s->newname);
      break;
    }
    case T_AlterObjectSchemaStmt: {
      auto* s = reinterpret_cast<AlterObjectSchemaStmt*>(tree);
      if (s->relation != nullptr)
        remember_relation(s->relation);
      else if (s->object != nullptr)
        remember_object(s->objectType, s->object, "set_schema", s->newschema);
      break;
    }
    case T_AlterEnumStmt: {
      // RENAME VALUE: the end trigger sees only the labels as they now are.
      auto* s = reinterpret_cast<AlterEnumStmt*>(tree);
      if (s->oldVal != nullptr && s->newVal != nullptr) {
        Oid type = typenameTypeId(nullptr, makeTypeNameFromNameList(s->typeName));
        remember(type, json_object({{"rename_value_from", s->oldVal}, {"rename_value_to", s->newVal}}));
      }
      break;
    }
    case T_CreateTableAsStmt:
      // Its rows are decoded before the table's record (the end trigger runs after them): the
      // applier is told to set them aside and copy the new table once it exists.
      // Only for a table it will make: not a temporary one (never recorded), nor one that is
      // already there (IF NOT EXISTS: nothing is written). TEMP is not the only way to make one
      // temporary: the schema pg_temp, named or first in search_path, does too, and only the
      // namespace the table is made in tells (asking for it now raises what the command would).
      if (auto* stmt = reinterpret_cast<CreateTableAsStmt*>(tree);
          stmt->objtype == OBJECT_TABLE && stmt->into != nullptr && stmt->into->rel != nullptr &&
          stmt->into->rel->relpersistence == RELPERSISTENCE_PERMANENT &&
          !isAnyTempNamespace(RangeVarGetCreationNamespace(stmt->into->rel)) &&
          !OidIsValid(RangeVarGetRelid(stmt->into->rel, NoLock, true))) {
        sign_and_emit(json_object({{"ddl", "create_as"}, {"name", stmt->into->rel->relname}}));
      }
      break;
    default:
      break;
  }
}

}  // namespace
}  // namespace dts::plugin

extern "C" {

void _PG_init(void) {
  DefineCustomBoolVariable("dts_decoding.capture_ddl",
                           "Whether schema changes are written to the WAL for dts migrations.", nullptr,
                           &dts::plugin::capture_ddl, true, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  MarkGUCPrefixReserved("dts_decoding");
}

Datum dts_decoding_capture_ddl_start(PG_FUNCTION_ARGS) {
  dts::plugin::require_event_trigger(fcinfo, "capture_ddl_start");
  if (dts::plugin::capture_off()) PG_RETURN_VOID();
  auto* data = reinterpret_cast<EventTriggerData*>(fcinfo->context);
  dts::plugin::record_before(data->parsetree);
  PG_RETURN_VOID();
}

Datum dts_decoding_capture_ddl_end(PG_FUNCTION_ARGS) {
  dts::plugin::require_event_trigger(fcinfo, "capture_ddl_end");
  if (!dts::plugin::capture_off()) dts::plugin::emit_records("SELECT r FROM dts_decoding.ddl_end_records() r");
  // What was recorded before this command is spent: a later command of the transaction must
  // not be replayed against it.
  dts::plugin::forget_before();
  PG_RETURN_VOID();
}

Datum dts_decoding_capture_sql_drop(PG_FUNCTION_ARGS) {
  dts::plugin::emit_tagged_record(fcinfo, "capture_sql_drop", "sql_drop_record");
  PG_RETURN_VOID();
}

Datum dts_decoding_capture_table_rewrite(PG_FUNCTION_ARGS) {
  dts::plugin::emit_tagged_record(fcinfo, "capture_table_rewrite", "table_rewrite_record");
  PG_RETURN_VOID();
}

// grant_record(command pg_ddl_command) returns text: the record of a GRANT or REVOKE, or NULL
// for one on objects that are not replayed. (A pg_ddl_command comes only from
// pg_event_trigger_ddl_commands(): the type has no input function.)
Datum dts_decoding_grant_record(PG_FUNCTION_ARGS) {
  auto* cmd = reinterpret_cast<CollectedCommand*>(PG_GETARG_POINTER(0));
  if (cmd == nullptr || cmd->type != SCT_Grant) PG_RETURN_NULL();
  char* json = dts::plugin::grant_json(cmd->d.grant.istmt);
  if (json == nullptr) PG_RETURN_NULL();
  PG_RETURN_TEXT_P(cstring_to_text(json));
}

// new_ddl_key() returns bytea: 32 bytes from the server's strong random source.
Datum dts_decoding_new_ddl_key(PG_FUNCTION_ARGS) {
  bytea* key = static_cast<bytea*>(palloc(VARHDRSZ + dts::plugin::kKeyBytes));
  SET_VARSIZE(key, VARHDRSZ + dts::plugin::kKeyBytes);
  if (!pg_strong_random(VARDATA(key), dts::plugin::kKeyBytes))
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a random key")));
  PG_RETURN_BYTEA_P(key);
}

// ddl_before(objid oid) returns text: the newest state recorded for the object, or NULL.
Datum dts_decoding_ddl_before(PG_FUNCTION_ARGS) {
  Oid objid = PG_GETARG_OID(0);
  for (dts::plugin::BeforeState* s = dts::plugin::stash; s != nullptr; s = s->next)
    if (s->objid == objid) PG_RETURN_TEXT_P(cstring_to_text(s->json));
  PG_RETURN_NULL();
}

}  // extern "C"
