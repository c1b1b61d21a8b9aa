// The C side of schema-change capture: what an object was *before* a command changed it.
// ddl_command_end sees only the catalog as the command left it; a rename, a new schema or a
// renamed column cannot be told from a drop and a create without the state before. The
// ddl_command_start trigger records it here, per object, for the end trigger (SQL, in the
// extension script) to put into the record it emits. Entries live until the end of the top
// transaction: a command that fails between start and end leaves one behind, never more.
extern "C" {
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "replication/message.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(dts_decoding_capture_ddl_start);
PG_FUNCTION_INFO_V1(dts_decoding_ddl_before);
}

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

// describe_relation() of the extension, as text.
char* describe_relation(Oid relid) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[1] = {OIDOID};
  Datum args[1] = {ObjectIdGetDatum(relid)};
  char* result = nullptr;
  int rc = SPI_execute_with_args("SELECT dts_decoding.describe_relation($1)::text", 1, argtypes, args, nullptr, true, 1);
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
  StringInfoData json;
  initStringInfo(&json);
  appendStringInfoString(&json, "{\"identity\": ");
  escape_json(&json, identity);
  appendStringInfo(&json, ", \"%s\": ", key);
  escape_json(&json, value);
  appendStringInfoChar(&json, '}');
  remember(address.objectId, json.data);
}

void remember_schema_rename(const char* old_name, const char* new_name) {
  StringInfoData json;
  initStringInfo(&json);
  appendStringInfoString(&json, "{\"identity\": ");
  escape_json(&json, quote_identifier(old_name));
  appendStringInfoString(&json, ", \"rename_to\": ");
  escape_json(&json, new_name);
  appendStringInfoChar(&json, '}');
  Oid nsp = get_namespace_oid(old_name, true);
  if (OidIsValid(nsp)) remember(nsp, json.data);
}

void record_before(Node* tree) {
  switch (nodeTag(tree)) {
    case T_AlterTableStmt:
      remember_relation(reinterpret_cast<AlterTableStmt*>(tree)->relation);
      break;
    case T_RenameStmt: {
      auto* s = reinterpret_cast<RenameStmt*>(tree);
      if (s->relation != nullptr)
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
    case T_CreateTableAsStmt:
      // Its rows are decoded before the table's record (the end trigger runs after them): the
      // applier is told to set them aside and copy the new table once it exists.
      if (reinterpret_cast<CreateTableAsStmt*>(tree)->objtype == OBJECT_TABLE) {
        static const char kCreateAs[] = "{\"ddl\": \"create_as\"}";
        LogLogicalMessage("dts.ddl", kCreateAs, sizeof(kCreateAs) - 1, true);
      }
      break;
    default:
      break;
  }
}

}  // namespace
}  // namespace dts::plugin

extern "C" {

Datum dts_decoding_capture_ddl_start(PG_FUNCTION_ARGS) {
  if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("capture_ddl_start() must be fired by an event trigger")));
  const char* capture = GetConfigOption("dts_decoding.capture_ddl", true, false);
  if (capture != nullptr && strcmp(capture, "off") == 0) PG_RETURN_VOID();
  auto* data = reinterpret_cast<EventTriggerData*>(fcinfo->context);
  dts::plugin::record_before(data->parsetree);
  PG_RETURN_VOID();
}

// ddl_before(objid oid) returns text: the newest state recorded for the object, or NULL.
Datum dts_decoding_ddl_before(PG_FUNCTION_ARGS) {
  Oid objid = PG_GETARG_OID(0);
  for (dts::plugin::BeforeState* s = dts::plugin::stash; s != nullptr; s = s->next)
    if (s->objid == objid) PG_RETURN_TEXT_P(cstring_to_text(s->json));
  PG_RETURN_NULL();
}

}  // extern "C"
