#include "ddl/schema_change.hpp"

#include <rapidjson/document.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include "common/error.hpp"
#include "pg/quote.hpp"

namespace dts::ddl {
namespace {

using pg::quote_ident;
using pg::quote_literal;
using Json = rapidjson::Value;

[[noreturn]] void malformed(const std::string& what) {
  throw Error(ErrorKind::kProtocol, "malformed schema-change record (dts.ddl): " + what +
                                        "; the source's dts_decoding extension and this applier disagree: "
                                        "install the same release on both");
}

const Json* member(const Json& v, const char* key) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(key);
  return it == v.MemberEnd() || it->value.IsNull() ? nullptr : &it->value;
}

std::optional<std::string> opt_string(const Json& v, const char* key) {
  const Json* m = member(v, key);
  if (m == nullptr) return std::nullopt;
  if (m->IsString()) return std::string(m->GetString(), m->GetStringLength());
  if (m->IsInt64()) return std::to_string(m->GetInt64());
  malformed(std::string("\"") + key + "\" is not a string");
}

std::string string_of(const Json& v, const char* key) {
  auto s = opt_string(v, key);
  if (!s) malformed(std::string("\"") + key + "\" is missing");
  return *s;
}

// OIDs travel as strings (jsonb writes oid as text), counts as numbers.
int64_t int_of(const Json& v, const char* key) {
  const Json* m = member(v, key);
  if (m != nullptr && m->IsInt64()) return m->GetInt64();
  if (m != nullptr && m->IsString()) {
    char* end = nullptr;
    long long n = std::strtoll(m->GetString(), &end, 10);
    if (end != m->GetString() && *end == '\0') return n;
  }
  malformed(std::string("\"") + key + "\" is not a number");
}

bool bool_of(const Json& v, const char* key) {
  const Json* m = member(v, key);
  return m != nullptr && m->IsBool() && m->GetBool();
}

char char_of(const Json& v, const char* key, char fallback) {
  auto s = opt_string(v, key);
  return s && !s->empty() ? (*s)[0] : fallback;
}

RelationRef parse_ref(const Json& v) {
  RelationRef r;
  r.relid = static_cast<uint32_t>(int_of(v, "relid"));
  r.schema = string_of(v, "schema");
  r.name = string_of(v, "name");
  r.bound = opt_string(v, "bound").value_or("");
  return r;
}

RelationDef parse_relation(const Json& v) {
  RelationDef rel;
  rel.ref = parse_ref(v);
  rel.kind = char_of(v, "kind", 'r');
  rel.persistence = char_of(v, "persistence", 'p');
  rel.replica_identity = char_of(v, "replica_identity", 'd');
  rel.replica_index = opt_string(v, "replica_index");
  rel.partition_key = opt_string(v, "partition_key");
  rel.indexdef = opt_string(v, "indexdef");
  rel.viewdef = opt_string(v, "viewdef");
  rel.constraint_index = bool_of(v, "constraint_index");
  if (const Json* p = member(v, "parent")) rel.parent = parse_ref(*p);
  if (const Json* t = member(v, "index_table")) rel.index_table = parse_ref(*t);
  if (const Json* parts = member(v, "partitions"); parts != nullptr && parts->IsArray())
    for (const auto& p : parts->GetArray()) rel.partitions.push_back(parse_ref(p));
  if (const Json* cols = member(v, "columns"); cols != nullptr && cols->IsArray()) {
    for (const auto& c : cols->GetArray()) {
      ColumnDef col;
      col.attnum = static_cast<int>(int_of(c, "attnum"));
      col.name = string_of(c, "name");
      col.type = string_of(c, "type");
      col.notnull = bool_of(c, "notnull");
      const Json* local = member(c, "local");
      col.local = local == nullptr || !local->IsBool() || local->GetBool();
      col.default_expr = opt_string(c, "default");
      col.generated = opt_string(c, "generated");
      col.identity = opt_string(c, "identity");
      col.collation = opt_string(c, "collation");
      col.missing = opt_string(c, "missing");
      rel.columns.push_back(std::move(col));
    }
  }
  if (const Json* cons = member(v, "constraints"); cons != nullptr && cons->IsArray()) {
    for (const auto& c : cons->GetArray()) {
      ConstraintDef k;
      k.oid = member(c, "oid") != nullptr ? static_cast<uint32_t>(int_of(c, "oid")) : 0;
      k.name = string_of(c, "name");
      k.def = string_of(c, "def");
      k.type = char_of(c, "type", 'c');
      const Json* validated = member(c, "validated");
      k.validated = validated == nullptr || !validated->IsBool() || validated->GetBool();
      rel.constraints.push_back(std::move(k));
    }
  }
  if (const Json* s = member(v, "sequence")) {
    SequenceDef seq;
    seq.type = string_of(*s, "type");
    for (auto [key, field] : {std::pair{"start", &seq.start}, {"increment", &seq.increment}, {"min", &seq.min},
                              {"max", &seq.max}, {"cache", &seq.cache}})
      *field = std::to_string(int_of(*s, key));
    seq.cycle = bool_of(*s, "cycle");
    seq.owned_by = opt_string(*s, "owned_by");
    seq.identity = bool_of(*s, "identity");
    rel.sequence = std::move(seq);
  }
  return rel;
}

TypeDef parse_type(const Json& v) {
  TypeDef t;
  t.kind = char_of(v, "kind", 0);
  if (const Json* labels = member(v, "labels"); labels != nullptr && labels->IsArray())
    for (const auto& l : labels->GetArray())
      if (l.IsString()) t.labels.emplace_back(l.GetString(), l.GetStringLength());
  if (const Json* attrs = member(v, "attributes"); attrs != nullptr && attrs->IsArray())
    for (const auto& a : attrs->GetArray()) t.attributes.emplace_back(string_of(a, "name"), string_of(a, "type"));
  t.base = opt_string(v, "base").value_or("");
  t.notnull = bool_of(v, "notnull");
  t.default_expr = opt_string(v, "default");
  if (const Json* checks = member(v, "checks"); checks != nullptr && checks->IsArray())
    for (const auto& c : checks->GetArray()) t.checks.emplace_back(string_of(c, "name"), string_of(c, "def"));
  return t;
}

void parse_definition(const Json& def, const Json* before, SchemaChange& c) {
  if (member(def, "relid") != nullptr && member(def, "kind") != nullptr) {
    c.relation = parse_relation(def);
    if (before != nullptr && member(*before, "relid") != nullptr) c.before = parse_relation(*before);
    return;
  }
  c.functiondef = opt_string(def, "functiondef");
  c.triggerdef = opt_string(def, "triggerdef");
  c.trigger_internal = bool_of(def, "internal");
  if (const Json* t = member(def, "table"); t != nullptr && t->IsObject()) c.trigger_table = parse_ref(*t);
  if (c.object_type == "schema") c.schema_name = opt_string(def, "name");
  if (c.object_type == "extension") {
    c.extension = opt_string(def, "name");
    c.extension_schema = opt_string(def, "in_schema");
  }
  if (member(def, "kind") != nullptr && member(def, "relid") == nullptr) c.type = parse_type(def);
  if (before != nullptr) {
    c.before_identity = opt_string(*before, "identity");
    c.rename_to = opt_string(*before, "rename_to");
    c.set_schema = opt_string(*before, "set_schema");
    c.member_table = opt_string(*before, "table");
    c.member_old_name = opt_string(*before, "old_name");
    c.rename_value_from = opt_string(*before, "rename_value_from");
    c.rename_value_to = opt_string(*before, "rename_value_to");
  }
}

}  // namespace

std::string RelationRef::qualified() const { return quote_ident(schema) + "." + quote_ident(name); }

SchemaChange parse_schema_change(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) malformed("not a JSON object");
  SchemaChange c;
  std::string kind = string_of(doc, "ddl");
  if (member(doc, "subxid") != nullptr) c.subxid = static_cast<uint32_t>(int_of(doc, "subxid"));
  if (kind == "create_as") {
    c.kind = ChangeKind::kCreateAs;
    c.identity = opt_string(doc, "name").value_or("");  // the new table's name (its schema is not known yet)
    return c;
  }
  if (kind == "grant") {
    c.kind = ChangeKind::kGrant;
    c.tag = bool_of(doc, "is_grant") ? "GRANT" : "REVOKE";
    GrantDef g;
    g.is_grant = bool_of(doc, "is_grant");
    g.keyword = string_of(doc, "keyword");
    for (auto [key, list] : {std::pair{"objects", &g.objects}, {"privileges", &g.privileges}, {"grantees", &g.grantees}}) {
      const Json* a = member(doc, key);
      if (a == nullptr || !a->IsArray()) malformed(std::string("\"") + key + "\" is missing");
      for (const auto& v : a->GetArray())
        if (v.IsString()) list->emplace_back(v.GetString(), v.GetStringLength());
    }
    if (const Json* rels = member(doc, "relations"); rels != nullptr && rels->IsArray())
      for (const auto& r : rels->GetArray()) c.grant_relations.push_back(RelationRef{0, string_of(r, "schema"), string_of(r, "name"), ""});
    g.grant_option = bool_of(doc, "grant_option");
    g.cascade = bool_of(doc, "cascade");
    c.grant = std::move(g);
    return c;
  }
  c.tag = string_of(doc, "tag");
  if (kind == "rewrite") {
    c.kind = ChangeKind::kRewrite;
    c.objid = static_cast<uint32_t>(int_of(doc, "relid"));
    auto schema = opt_string(doc, "schema"), name = opt_string(doc, "name");
    if (schema && name) c.rewritten = RelationRef{c.objid, *schema, *name, ""};
    if (const Json* a = member(doc, "ancestors"); a != nullptr && a->IsArray())
      for (const auto& id : a->GetArray()) {
        if (!id.IsUint()) malformed("\"ancestors\" holds something other than relation ids");
        c.ancestors.push_back(id.GetUint());
      }
  } else if (kind == "drop") {
    c.kind = ChangeKind::kDrop;
    const Json* objects = member(doc, "objects");
    if (objects == nullptr || !objects->IsArray()) malformed("\"objects\" is missing");
    for (const auto& o : objects->GetArray())
      c.dropped.push_back(DroppedObject{string_of(o, "object_type"), opt_string(o, "identity").value_or(""),
                                        opt_string(o, "schema").value_or(""), opt_string(o, "name").value_or(""),
                                        bool_of(o, "original")});
  } else if (kind == "command") {
    c.object_type = string_of(doc, "object_type");
    c.identity = opt_string(doc, "identity").value_or("");
    c.objid = static_cast<uint32_t>(member(doc, "objid") != nullptr ? int_of(doc, "objid") : 0);
    c.comment = opt_string(doc, "comment");
    if (const Json* def = member(doc, "definition")) parse_definition(*def, member(doc, "before"), c);
  } else {
    malformed("unknown kind \"" + kind + "\"");
  }
  return c;
}

std::vector<RelationRef> tables_of(const SchemaChange& c) {
  std::vector<RelationRef> out;
  auto table_of = [&out](const RelationDef& r) {
    if (r.kind == 'r' || r.kind == 'p' || r.kind == 'f') out.push_back(r.ref);
    if (r.index_table) out.push_back(*r.index_table);
    if (r.parent) out.push_back(*r.parent);
  };
  if (c.relation) table_of(*c.relation);
  if (c.before) table_of(*c.before);
  if (c.trigger_table) out.push_back(*c.trigger_table);
  out.insert(out.end(), c.grant_relations.begin(), c.grant_relations.end());
  for (const auto& d : c.dropped)
    if (d.original && (d.object_type == "table" || d.object_type == "foreign table"))
      out.push_back(RelationRef{0, d.schema, d.name, ""});
  return out;
}

}  // namespace dts::ddl
