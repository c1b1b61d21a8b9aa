// The relation cache. Invalidation callbacks only mark entries invalid: they can fire in the
// middle of a catalog lookup, so all rebuilding happens in relation_cache_get.
extern "C" {
#include "postgres.h"

#include "access/attmap.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
}

#include "json_format.hpp"
#include "options.hpp"
#include "relation_cache.hpp"
#include "table_pattern.hpp"

namespace dts::plugin {

struct RelationCache {
  HTAB* entries;
  RelationEntry* last;  // most changes hit the relation of the change before
  MemoryContext cxt;
  const DecodingOptions* opts;
};

namespace {

// One decoding session runs at a time in a backend; the callbacks reach its cache here.
RelationCache* g_active_cache = nullptr;
bool g_callbacks_registered = false;

void invalidate_entry(RelationEntry* e) {
  e->valid = false;
  e->schema_sent = false;
  e->invalidations++;
}

void invalidate_all(RelationCache* cache) {
  HASH_SEQ_STATUS seq;
  hash_seq_init(&seq, cache->entries);
  while (auto* e = static_cast<RelationEntry*>(hash_seq_search(&seq))) invalidate_entry(e);
}

bool has_ancestor(const RelationEntry* e, Oid relid) {
  for (int i = 0; i < e->nancestors; ++i) {
    if (e->ancestors[i] == relid) return true;
  }
  return false;
}

void on_relcache_invalidate(Datum, Oid relid) {
  RelationCache* cache = g_active_cache;
  if (cache == nullptr) return;
  // Publishing via the root ties partitions to their root's columns: any change may matter.
  if (relid == InvalidOid || cache->opts->publish_via_partition_root) {
    invalidate_all(cache);
    return;
  }
  // The entry itself, and partitions whose filter decision used this relation's name.
  HASH_SEQ_STATUS seq;
  hash_seq_init(&seq, cache->entries);
  while (auto* e = static_cast<RelationEntry*>(hash_seq_search(&seq))) {
    if (e->relid == relid || has_ancestor(e, relid)) invalidate_entry(e);
  }
}

// A renamed schema changes the names we send without a relcache invalidation.
void on_namespace_invalidate(Datum, int, uint32) {
  if (g_active_cache != nullptr) invalidate_all(g_active_cache);
}

bool is_reg_type(Oid type_oid) {
  Oid elem = get_element_type(type_oid);
  switch (OidIsValid(elem) ? elem : type_oid) {
    case REGPROCOID:
    case REGPROCEDUREOID:
    case REGOPEROID:
    case REGOPERATOROID:
    case REGCLASSOID:
    case REGTYPEOID:
    case REGCONFIGOID:
    case REGDICTIONARYOID:
    case REGNAMESPACEOID:
    case REGROLEOID:
    case REGCOLLATIONOID: return true;
    default: return false;
  }
}

ColumnEncoding choose_encoding(Oid type_oid, char typtype, Oid send_fn) {
  switch (type_oid) {
    case INT2OID: return ColumnEncoding::kInt2;
    case INT4OID: return ColumnEncoding::kInt4;
    case INT8OID: return ColumnEncoding::kInt8;
    case OIDOID: return ColumnEncoding::kOid;
    case BOOLOID: return ColumnEncoding::kBool;
    case FLOAT4OID: return ColumnEncoding::kFloat4;
    case FLOAT8OID: return ColumnEncoding::kFloat8;
    case TIMESTAMPOID:
    case TIMESTAMPTZOID:
    case TIMEOID: return ColumnEncoding::kFixed8;
    case DATEOID: return ColumnEncoding::kFixed4;
    case UUIDOID: return ColumnEncoding::kUuid;
    case NUMERICOID: return ColumnEncoding::kNumeric;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID:
    case JSONOID: return ColumnEncoding::kTextBytes;
    case BYTEAOID: return ColumnEncoding::kByteaBytes;
    case NAMEOID: return ColumnEncoding::kName;
    default: break;
  }
  // Built-in base types (arrays of them included) have stable send formats the applier can
  // hand to the target as they are; anything user-defined travels as text. Not the reg*
  // types: their binary form is a bare OID, meaningless on another server.
  if (type_oid < FirstGenbkiObjectId && typtype == TYPTYPE_BASE && OidIsValid(send_fn) &&
      !is_reg_type(type_oid))
    return ColumnEncoding::kSend;
  return ColumnEncoding::kOutput;
}


char* json_quoted(const char* s, const char* suffix) {
  StringInfoData buf;
  initStringInfo(&buf);
  escape_json(&buf, s);
  appendStringInfoString(&buf, suffix);
  return buf.data;
}

bool passes_filters(const DecodingOptions* opts, Relation rel, List* ancestors) {
  // The extension's own tables (its signing key) are the source's side of a migration.
  if (strcmp(get_namespace_name(RelationGetNamespace(rel)), "dts_decoding") == 0) return false;
  if (opts->include_tables == NIL && opts->exclude_tables == NIL) return true;
  // A partition is selected (or excluded) when it or any of its ancestors is.
  auto matches = [&](List* patterns) {
    if (any_table_pattern_matches(patterns, get_namespace_name(RelationGetNamespace(rel)),
                                  RelationGetRelationName(rel)))
      return true;
    ListCell* lc;
    foreach (lc, ancestors) {
      Oid a = lfirst_oid(lc);
      if (any_table_pattern_matches(patterns, get_namespace_name(get_rel_namespace(a)),
                                    get_rel_name(a)))
        return true;
    }
    return false;
  };
  if (opts->include_tables != NIL && !matches(opts->include_tables)) return false;
  return !matches(opts->exclude_tables);
}

void init_entry(RelationEntry* e) {
  e->valid = false;
  e->schema_sent = false;
  e->invalidations = 0;
  e->nancestors = 0;
  e->ancestors = nullptr;
  e->cxt = nullptr;
}

void build_entry(RelationCache* cache, RelationEntry* e, Relation rel) {
  const DecodingOptions* opts = cache->opts;
  if (e->cxt == nullptr)
    e->cxt = AllocSetContextCreate(cache->cxt, "dts_decoding relation", ALLOCSET_SMALL_SIZES);
  else
    MemoryContextReset(e->cxt);
  MemoryContext old = MemoryContextSwitchTo(e->cxt);
  // Not valid until fully built: an ERROR below (a streamed transaction's concurrent abort is
  // caught by PostgreSQL, and decoding goes on) must not leave half an entry in use. An
  // invalidation that arrives during the lookups leaves it invalid for the next change.
  e->valid = false;
  uint32 invalidations_at_start = e->invalidations;

  List* ancestors = rel->rd_rel->relispartition ? get_partition_ancestors(RelationGetRelid(rel)) : NIL;
  Relation pub = rel;
  bool via_root = opts->publish_via_partition_root && ancestors != NIL;
  if (via_root) {
    pub = RelationIdGetRelation(llast_oid(ancestors));
    if (!RelationIsValid(pub))
      elog(ERROR, "could not open partition root %u of relation \"%s\"", llast_oid(ancestors),
           RelationGetRelationName(rel));
  }

  char relkind = rel->rd_rel->relkind;
  // A partitioned table has no rows of its own; it is named on the wire only when publishing
  // via the root (for its TRUNCATE).
  e->publish = (relkind == RELKIND_RELATION ||
                (relkind == RELKIND_PARTITIONED_TABLE && opts->publish_via_partition_root)) &&
               passes_filters(opts, rel, ancestors);
  e->publish_relid = RelationGetRelid(pub);
  e->schema = get_namespace_name(RelationGetNamespace(pub));
  e->table = pstrdup(RelationGetRelationName(pub));
  {
    StringInfoData buf;
    initStringInfo(&buf);
    appendStringInfoString(&buf, "\"schema\":");
    escape_json(&buf, e->schema);
    appendStringInfoString(&buf, ",\"table\":");
    escape_json(&buf, e->table);
    e->json_names = buf.data;
  }
  e->nancestors = list_length(ancestors);
  e->ancestors = static_cast<Oid*>(palloc(sizeof(Oid) * Max(e->nancestors, 1)));
  for (int i = 0; i < e->nancestors; ++i) e->ancestors[i] = list_nth_oid(ancestors, i);

  // Keys and replica identity are those of the relation named on the wire.
  e->replica_identity = pub->rd_rel->relreplident;
  TupleDesc pub_desc = RelationGetDescr(pub);
  AttrMap* map = via_root ? build_attrmap_by_name(RelationGetDescr(rel), pub_desc) : nullptr;
  Bitmapset* key_attrs = nullptr;  // in pub's attribute numbers
  if (relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE) key_attrs = RelationGetIdentityKeyBitmap(pub);
  e->identity_mismatch = false;
  if (via_root && relkind == RELKIND_RELATION && rel->rd_rel->relreplident != REPLICA_IDENTITY_FULL) {
    // The partition's logged old key must hold every column of the root's identity.
    Bitmapset* leaf_keys = RelationGetIdentityKeyBitmap(rel);
    if (e->replica_identity == REPLICA_IDENTITY_FULL) e->identity_mismatch = true;
    for (int i = 0; i < pub_desc->natts && !e->identity_mismatch; ++i) {
      if (!bms_is_member(i + 1 - FirstLowInvalidHeapAttributeNumber, key_attrs)) continue;
      AttrNumber leaf_att = map->attnums[i];
      if (leaf_att <= 0 || !bms_is_member(leaf_att - FirstLowInvalidHeapAttributeNumber, leaf_keys))
        e->identity_mismatch = true;
    }
  }

  e->cols = static_cast<ColumnOutput*>(palloc0(sizeof(ColumnOutput) * Max(pub_desc->natts, 1)));
  e->ncols = 0;
  e->nkeys = 0;
  for (int i = 0; i < pub_desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(pub_desc, i);
    if (att->attisdropped || att->attgenerated) continue;
    AttrNumber attnum = map != nullptr ? map->attnums[i] : att->attnum;
    if (attnum <= 0) continue;  // no counterpart in this partition
    ColumnOutput* c = &e->cols[e->ncols++];
    c->attnum = attnum;
    c->type_oid = att->atttypid;
    c->typmod = att->atttypmod;
    c->is_key = bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, key_attrs);
    if (c->is_key) e->nkeys++;
    c->name = pstrdup(NameStr(att->attname));
    c->json_key = json_quoted(c->name, ":");
    c->type_name = format_type_with_typemod(att->atttypid, att->atttypmod);

    Oid out_fn = InvalidOid;
    Oid send_fn = InvalidOid;
    bool is_varlena = false;
    getTypeOutputInfo(att->atttypid, &out_fn, &is_varlena);
    c->is_varlena = is_varlena;
    fmgr_info_cxt(out_fn, &c->output_fn, e->cxt);
    char typtype = get_typtype(att->atttypid);
    if (typtype == TYPTYPE_BASE) {
      HeapTuple tp = SearchSysCache1(TYPEOID, ObjectIdGetDatum(att->atttypid));
      if (HeapTupleIsValid(tp)) {
        send_fn = reinterpret_cast<Form_pg_type>(GETSTRUCT(tp))->typsend;
        ReleaseSysCache(tp);
      }
    }
    c->encoding = choose_encoding(att->atttypid, typtype, send_fn);
    c->json_style = json_style_for_type(att->atttypid);
    if (c->encoding == ColumnEncoding::kSend) fmgr_info_cxt(send_fn, &c->send_fn, e->cxt);
  }

  if (via_root) RelationClose(pub);
  MemoryContextSwitchTo(old);
  e->valid = (e->invalidations == invalidations_at_start);
}

// The session's memory goes away without a shutdown callback when decoding fails in SQL; the
// callbacks must stop seeing the cache then.
void forget_cache(void* arg) {
  if (g_active_cache == static_cast<RelationCache*>(arg)) g_active_cache = nullptr;
}

}  // namespace

RelationCache* relation_cache_create(MemoryContext parent, const DecodingOptions* opts) {
  auto* cache = static_cast<RelationCache*>(MemoryContextAllocZero(parent, sizeof(RelationCache)));
  cache->cxt = AllocSetContextCreate(parent, "dts_decoding relation cache", ALLOCSET_DEFAULT_SIZES);
  cache->opts = opts;
  HASHCTL ctl;
  ctl.keysize = sizeof(Oid);
  ctl.entrysize = sizeof(RelationEntry);
  ctl.hcxt = cache->cxt;
  cache->entries = hash_create("dts_decoding relations", 128, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
  if (!g_callbacks_registered) {
    // These cannot be unregistered, so they outlive the session and look for the active cache.
    CacheRegisterRelcacheCallback(on_relcache_invalidate, (Datum)0);
    CacheRegisterSyscacheCallback(NAMESPACEOID, on_namespace_invalidate, (Datum)0);
    g_callbacks_registered = true;
  }
  auto* reset_cb = static_cast<MemoryContextCallback*>(
      MemoryContextAllocZero(parent, sizeof(MemoryContextCallback)));
  reset_cb->func = forget_cache;
  reset_cb->arg = cache;
  MemoryContextRegisterResetCallback(parent, reset_cb);
  g_active_cache = cache;
  return cache;
}

void relation_cache_detach(RelationCache* cache) {
  if (g_active_cache == cache) g_active_cache = nullptr;
}

RelationEntry* relation_cache_get(RelationCache* cache, Relation rel) {
  Oid relid = RelationGetRelid(rel);
  // Entries never move or go away (invalidation only clears `valid`), so the pointer stays good.
  if (cache->last != nullptr && cache->last->relid == relid && cache->last->valid) return cache->last;
  bool found = false;
  auto* e = static_cast<RelationEntry*>(hash_search(cache->entries, &relid, HASH_ENTER, &found));
  if (!found) init_entry(e);
  // Built even if an invalidation arrives meanwhile (it stays invalid for the next change):
  // the data of this build is still that of the current catalog snapshot.
  if (!e->valid) build_entry(cache, e, rel);
  cache->last = e;
  return e;
}

void relation_cache_forget_sent(RelationCache* cache) {
  HASH_SEQ_STATUS seq;
  hash_seq_init(&seq, cache->entries);
  while (auto* e = static_cast<RelationEntry*>(hash_seq_search(&seq))) e->schema_sent = false;
}

RelationEntry* relation_cache_published(RelationCache* cache, RelationEntry* entry) {
  if (entry->publish_relid == entry->relid) return entry;
  bool found = false;
  auto* root = static_cast<RelationEntry*>(
      hash_search(cache->entries, &entry->publish_relid, HASH_ENTER, &found));
  if (!found) init_entry(root);
  return root;
}

}  // namespace dts::plugin
