// Set-based UPDATEs and DELETEs: a run of them on one table goes as one statement per batch
// (set_batch.hpp), its row count checked like any other before the origin moves. The rows
// merged per key are written out here too.
#include <algorithm>

#include "apply/apply_engine.hpp"
#include "apply/relation_plan.hpp"

namespace dts::apply {
namespace proto = dts::protocol;

namespace {

// Rows of one UPDATE ... FROM (VALUES ...), for merged rows of a table without set-based UPDATEs.
constexpr size_t kValuesRows = 100;

// A multi-row statement's keys, kept with it: if fewer rows match than were sent, they are
// looked up one by one to name the missing ones. The caller adds each row's values.
std::shared_ptr<KeyProbe> new_key_probe(const decode::Relation& rel, const std::string& qualified,
                                        const std::vector<uint32_t>& types, const std::vector<size_t>& columns) {
  auto probe = std::make_shared<KeyProbe>();
  probe->select_sql = "SELECT 1 FROM " + qualified + " WHERE ";
  for (size_t i = 0; i < columns.size(); ++i) {
    probe->select_sql += (i > 0 ? " AND " : "") + quote_ident(rel.columns[columns[i]].name) + " = $" +
                         std::to_string(i + 1);
    probe->columns.push_back(rel.columns[columns[i]]);
    probe->types.push_back(types[columns[i]]);
  }
  return probe;
}

void add_probe_value(KeyProbe& probe, const ParamSet& params, size_t at) {
  const char* v = params.values()[at];
  probe.values.emplace_back(v != nullptr ? std::string(v, static_cast<size_t>(params.lengths()[at])) : "");
  probe.formats.push_back(params.formats()[at]);
}

}  // namespace

// What the target lets the engine do with this table's changes, in one query per relation
// version. Merging images per key, or sending a run of changes at once, changes the order rows
// are written in: only where no trigger fires for replicated rows (it would see another order)
// and no unique or exclusion index could object to an intermediate order where the source's
// did not — besides the primary key and replica identity index for merging, besides an index
// on exactly the key's columns for set-based UPDATEs. Set-based also needs columns that can
// travel in arrays unnested side by side (not an array, which would flatten; not a composite,
// which unnest expands into its fields; not a type whose array delimiter is not a comma, such
// as PostGIS's), and under FULL identity no index at all: a batch reads the whole table once,
// better than a scan per change but not than the index a single-row statement can use.
const ApplyEngine::RelationPlan& ApplyEngine::ask_target_facts(const decode::Relation& rel) {
  RelationPlan& plan = plan_for(rel);
  if (plan.facts_asked) return plan;
  if (schema_change_uncommitted()) {
    // A schema change of the transaction being applied (a unique index, a trigger) is not
    // committed yet, so the catalog session cannot see it: the worst is assumed until it is,
    // then asked (apply_schema_change forgot what was known).
    plan.coalesce = plan.set_delete = plan.set_update = plan.set_full = plan.no_unique_index = false;
    return plan;
  }
  // The key's column names as a text array literal, in byte order (as the query sorts them).
  std::vector<std::string> names;
  for (size_t k : rel.key_columns) names.push_back(rel.columns[k].name);
  std::sort(names.begin(), names.end());
  std::string keys = text_array_literal(names);
  pg::Result r = catalog_.exec_params(
      "WITH t AS (SELECT to_regclass($1) AS oid),"
      " unique_index AS (SELECT i.* FROM pg_index i, t WHERE i.indrelid = t.oid AND (i.indisunique OR i.indisexclusion))"
      " SELECT t.oid IS NOT NULL"
      "   AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t.oid AND g.tgenabled IN ('A', 'R')),"
      " NOT EXISTS (SELECT 1 FROM unique_index i WHERE NOT i.indisprimary AND NOT i.indisreplident),"
      " NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid"
      "   LEFT JOIN pg_type b ON b.oid = ty.typbasetype WHERE a.attrelid = t.oid AND a.attnum > 0"
      "   AND NOT a.attisdropped AND (coalesce(b.typcategory, ty.typcategory) = 'A'"
      "   OR coalesce(b.typtype, ty.typtype) = 'c' OR ty.typdelim <> ',')),"
      " NOT EXISTS (SELECT 1 FROM unique_index i WHERE i.indexprs IS NOT NULL OR i.indpred IS NOT NULL"
      "   OR $2::text[] = '{}' OR (SELECT array_agg(a.attname::text ORDER BY a.attname::text COLLATE \"C\")"
      "   FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) IS DISTINCT FROM $2::text[]),"
      " NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid),"
      " NOT EXISTS (SELECT 1 FROM unique_index)"
      " FROM t",
      {plan.qualified, keys});
  auto yes = [&](int col) { return std::string(PQgetvalue(r.get(), 0, col)) == "t"; };
  bool free_order = yes(0);  // the table exists and no trigger watches
  plan.coalesce = free_order && yes(1);
  plan.set_delete = free_order && yes(2);
  plan.set_update = plan.set_delete && yes(3);
  plan.set_full = plan.set_delete && yes(4);
  plan.no_unique_index = free_order && yes(5);
  plan.facts_asked = true;
  return plan;
}

bool ApplyEngine::set_based(const decode::Relation& rel, const SetShape& shape) {
  const RelationPlan& plan = ask_target_facts(rel);
  if (shape.full && !plan.set_full) return false;
  return shape.is_delete ? plan.set_delete : plan.set_update;
}

// Takes an UPDATE or DELETE (of the source transaction committed at `lsn`) into the set batch;
// false if it must go on its own.
bool ApplyEngine::batch_change(const decode::RowChange& row, Lsn lsn) {
  SetShape& shape = set_shape_;
  if (!SetBatch::shape_of(row, shape) || !set_based(*row.relation, shape)) return false;
  if (!set_batch_.accepts(shape, row)) flush_set_batch();
  set_batch_.add(shape, row, lsn);
  if (set_batch_.full()) flush_set_batch();
  return true;
}

void ApplyEngine::flush_set_batch() {
  if (set_batch_.empty()) return;
  const SetShape& shape = set_batch_.shape();
  const decode::Relation& rel = *shape.relation;
  RelationPlan& plan = plan_for(rel);
  TargetSession& session = current_session();
  size_t n = set_batch_.rows();
  size_t stride = set_batch_.stride();
  const char* action = shape.is_delete ? "DELETE" : "UPDATE";
  std::vector<std::string> arrays(stride);
  std::vector<int> formats(stride);
  bool arrays_ok = n > 1;
  for (size_t j = 0; j < stride && arrays_ok; ++j) {
    size_t col = j < shape.match.size() ? shape.match[j] : shape.set[j - shape.match.size()];
    arrays_ok = array_param(rel.columns[col], set_batch_.params(), n, stride, j, arrays[j], formats[j]);
  }
  if (!arrays_ok) {  // one row, or values that cannot share an array: the single-row statements
    for (size_t r = 0; r < n; ++r) send_set_row(session, plan, r);
    set_batch_.clear();
    return;
  }
  std::vector<const char*> values(stride);
  std::vector<int> lengths(stride);
  for (size_t j = 0; j < stride; ++j) {
    values[j] = arrays[j].c_str();
    lengths[j] = static_cast<int>(arrays[j].size());
  }
  std::string where = describe_set_row(0);
  where += " to " + describe_set_row(n - 1) + ", " + std::to_string(n) + " rows";
  ChangeContext context{plan.qualified, where, set_batch_.lsns().front(), action};
  if (!shape.full) context.probe = set_probe(plan);
  std::vector<uint32_t> types(stride, 0);  // each array typed by its cast in the statement
  session.execute(plan.key_prefix + set_batch_.statement_key(), [&] { return set_batch_.statement(); }, types,
                  static_cast<int>(stride), values.data(), lengths.data(), formats.data(), std::move(context), true, n);
  stats_.set_statements++;
  stats_.set_rows += n;
  set_batch_.clear();
}

// Row r of the set batch as the single-row UPDATE or DELETE (the statements apply_update_values
// and apply_delete prepare for that shape).
void ApplyEngine::send_set_row(TargetSession& session, RelationPlan& plan, size_t r) {
  const SetShape& shape = set_batch_.shape();
  const decode::Relation& rel = *shape.relation;
  size_t stride = set_batch_.stride();
  const ParamSet& p = set_batch_.params();
  size_t at = r * stride;
  RowMatch& match = match_;
  match.columns = shape.match;
  match.is_null.assign(shape.match.size(), false);
  match.one_row = shape.full;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  std::vector<uint32_t> types;
  std::string key = plan.key_prefix + (shape.is_delete ? "D" : "U");
  auto add = [&](size_t j, size_t col) {
    values.push_back(p.values()[at + j]);
    lengths.push_back(p.lengths()[at + j]);
    formats.push_back(p.formats()[at + j]);
    types.push_back(plan.types[col]);
  };
  for (size_t j = 0; j < shape.set.size(); ++j) {
    add(shape.match.size() + j, shape.set[j]);
    key += std::to_string(shape.set[j]) + ",";
  }
  for (size_t i = 0; i < shape.match.size(); ++i) {
    match.is_null[i] = p.values()[at + i] == nullptr;
    if (!match.is_null[i]) add(i, shape.match[i]);
  }
  key += match_key(match);
  ChangeContext context{plan.qualified, describe_set_row(r), set_batch_.lsns()[r], shape.is_delete ? "DELETE" : "UPDATE"};
  session.execute(
      key, [&] { return shape.is_delete ? build_delete(rel, match) : build_update(rel, shape.set, match); }, types,
      static_cast<int>(values.size()), values.data(), lengths.data(), formats.data(), std::move(context), true);
}

// "(id)=(42)" for a batch with a key; "" with FULL.
std::string ApplyEngine::describe_set_row(size_t r) const {
  const SetShape& shape = set_batch_.shape();
  if (shape.full) return "";
  std::vector<size_t> positions;
  for (size_t i = 0; i < shape.match.size(); ++i) positions.push_back(r * set_batch_.stride() + i);
  return describe_param_key(*shape.relation, shape.match, set_batch_.params(), positions);
}

// The batch's keys: the match columns, first in each row of its parameters.
std::shared_ptr<const KeyProbe> ApplyEngine::set_probe(const RelationPlan& plan) const {
  const SetShape& shape = set_batch_.shape();
  auto probe = new_key_probe(*shape.relation, plan.qualified, plan.types, shape.match);
  size_t n = set_batch_.rows(), stride = set_batch_.stride();
  probe->rows = n;
  probe->lsns = set_batch_.lsns();
  for (size_t r = 0; r < n; ++r)
    for (size_t i = 0; i < shape.match.size(); ++i) add_probe_value(*probe, set_batch_.params(), r * stride + i);
  return probe;
}

// Merged rows have distinct keys and their tables no other unique index or trigger, so their
// order does not matter: the inserts go first (batched, by COPY when large), then the updates
// as set-based runs.
void ApplyEngine::flush_coalesced(std::vector<Coalescer::Batch> batches) {
  std::vector<const PendingRow*> whole;  // complete rows of a table without set-based updates
  size_t free = order_batches(batches);
  for (size_t i = 0; i < batches.size(); ++i) {
    const Coalescer::Batch& b = batches[i];
    const decode::Relation& rel = *b.relation;
    if (i >= free) wait_for_merged_rows(b);
    for (const PendingRow& row : b.rows) {
      if (!row.is_insert) continue;
      apply_insert(decode::RowChange{decode::RowKind::kInsert, &rel, proto::OldTuple::kNone, nullptr, &row.values},
                   row.lsn);
    }
    flush_inserts();
    whole.clear();
    for (const PendingRow& row : b.rows) {
      if (row.is_insert) continue;
      decode::RowChange update{decode::RowKind::kUpdate, &rel, proto::OldTuple::kNone, nullptr, &row.values};
      if (batch_change(update, row.lsn)) continue;
      bool complete = std::none_of(row.values.begin(), row.values.end(), [](const proto::Value& v) {
        return v.kind == proto::ValueKind::kUnchangedToast;
      });
      if (complete && rel.key_columns.size() < rel.columns.size()) {
        whole.push_back(&row);
      } else {
        flush_set_batch();
        apply_update_values(rel, row.values, proto::OldTuple::kNone, nullptr, row.lsn);
      }
    }
    flush_set_batch();
    update_rows(rel, whole);
  }
}

// The keys of the rows in params_ (n rows of every column).
std::shared_ptr<const KeyProbe> ApplyEngine::key_probe(const decode::Relation& rel, const RelationPlan& plan,
                                                       const PendingRow* const* rows, size_t n) const {
  auto probe = new_key_probe(rel, plan.qualified, plan.types, rel.key_columns);
  size_t ncols = rel.columns.size();
  probe->rows = n;
  for (size_t r = 0; r < n; ++r) {
    probe->lsns.push_back(rows[r]->lsn);
    for (size_t c : rel.key_columns) add_probe_value(*probe, params_, r * ncols + c);
  }
  return probe;
}

void ApplyEngine::update_rows(const decode::Relation& rel, const std::vector<const PendingRow*>& rows) {
  if (rows.empty()) return;
  RelationPlan& plan = plan_for(rel);
  size_t ncols = rel.columns.size();
  size_t per_statement = std::max<size_t>(1, std::min(kValuesRows, 65535 / ncols));
  // The session first: getting it may send what waited for a pending commit, which must not
  // run between filling the scratch parameters below and sending them.
  TargetSession& session = current_session();
  for (size_t done = 0; done < rows.size();) {
    size_t n = std::min(per_statement, rows.size() - done);
    params_.clear();
    types_.clear();
    for (size_t r = 0; r < n; ++r) {
      for (size_t c = 0; c < ncols; ++c) params_.add(rel.columns[c], rows[done + r]->values[c]);
      types_.insert(types_.end(), plan.types.begin(), plan.types.end());
    }
    std::string where = describe_key(rel, rows[done]->values, false);
    if (n > 1) where += " to " + describe_key(rel, rows[done + n - 1]->values, false) + ", " + std::to_string(n) + " rows";
    ChangeContext context{plan.qualified, where, txn_commit_lsn_, "UPDATE"};
    context.probe = key_probe(rel, plan, rows.data() + done, n);
    session.execute(plan.key_prefix + "M" + std::to_string(n), [&] { return build_update_rows(rel, n); }, types_,
                    params_.size(), params_.values(), params_.lengths(), params_.formats(), std::move(context), true, n);
    done += n;
  }
}

}  // namespace dts::apply
