#include "migrate/large_objects.hpp"

#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "common/error.hpp"
#include "common/text.hpp"
#include "pg/quote.hpp"

namespace dts::migrate {
namespace {

constexpr int kPiece = 1 << 20;

struct LargeObject {
  std::string md5;  // "" when the server could not compute it in one piece (over 1 GB): copied again
  std::string owner;
  std::string acl;
};

// Every large object with its owner and privileges, and its content's md5 unless `digests` is
// false (nothing to compare it with: the first copy into a target that has none).
std::map<uint32_t, LargeObject> list(const pg::Connection& c, bool digests = true) {
  const char* columns = "SELECT oid, pg_get_userbyid(lomowner), coalesce(lomacl::text, ''), ";
  pg::Result r;
  try {
    r = c.exec(std::string(columns) + (digests ? "md5(lo_get(oid))" : "''") + " FROM pg_largeobject_metadata ORDER BY oid");
  } catch (const Error& e) {
    // 54000: one is too large for a bytea (over 1 GB): no digest for any; each is copied again.
    if (e.sqlstate() != "54000") throw;
    r = c.exec(std::string(columns) + "'' FROM pg_largeobject_metadata ORDER BY oid");
  }
  std::map<uint32_t, LargeObject> out;
  for (int i = 0; i < PQntuples(r.get()); ++i)
    out.emplace(static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 0), nullptr, 10)),
                LargeObject{PQgetvalue(r.get(), i, 3), PQgetvalue(r.get(), i, 1), PQgetvalue(r.get(), i, 2)});
  return out;
}

pg::Result binary_query(const pg::Connection& c, const char* sql, const std::vector<std::string>& text_params,
                        const std::string* bytes = nullptr) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const auto& p : text_params) {
    values.push_back(p.c_str());
    lengths.push_back(0);
    formats.push_back(0);
  }
  if (bytes != nullptr) {
    values.push_back(bytes->data());
    lengths.push_back(static_cast<int>(bytes->size()));
    formats.push_back(1);
  }
  pg::Result r(PQexecParams(c.get(), sql, static_cast<int>(values.size()), nullptr, values.data(), lengths.data(),
                            formats.data(), /*resultFormat=*/1));
  ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
    throw Error(ErrorKind::kApply, std::string("large object copy: ") + (r ? PQresultErrorMessage(r.get()) : c.error_message()),
                r ? pg::sqlstate(r.get()) : "");
  return r;
}

// The privileges of one object, as GRANTs (its owner's are implicit).
std::vector<std::string> grants(const pg::Connection& source, uint32_t oid) {
  pg::Result r = source.exec_params(
      "SELECT a.grantee = 0, coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), ''), a.privilege_type, a.is_grantable "
      "FROM pg_largeobject_metadata m, aclexplode(m.lomacl) a WHERE m.oid = $1 AND a.grantee <> m.lomowner",
      {std::to_string(oid)});
  std::vector<std::string> out;
  for (int i = 0; i < PQntuples(r.get()); ++i)
    out.push_back(std::string("GRANT ") + PQgetvalue(r.get(), i, 2) + " ON LARGE OBJECT " + std::to_string(oid) + " TO " +
                  (PQgetvalue(r.get(), i, 0)[0] == 't' ? "PUBLIC" : pg::quote_ident(PQgetvalue(r.get(), i, 1))) +
                  (PQgetvalue(r.get(), i, 3)[0] == 't' ? " WITH GRANT OPTION" : ""));
  return out;
}

// An owner or a grant the target refuses (a role it lacks, a target role that may not give the
// object away) costs that statement, not the object: its data matters more, and complete must
// not fail inside its read-only window over a privilege.
void metadata(const pg::Connection& target, const std::string& sql) {
  target.exec("SAVEPOINT dts_lo_metadata");
  try {
    target.exec(sql);
    target.exec("RELEASE SAVEPOINT dts_lo_metadata");
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConnection) throw;
    target.exec("ROLLBACK TO SAVEPOINT dts_lo_metadata");
    spdlog::warn("large objects: the target refused `{}` ({}): run it there as a role allowed to", sql, first_line(e.what()));
  }
}

// One object, in one target transaction: whatever was there goes, the source's comes whole.
uint64_t copy_object(const pg::Connection& source, const pg::Connection& target, uint32_t oid, const LargeObject& lo,
                     bool exists, std::set<std::string>& missing_owners) {
  std::string id = std::to_string(oid);
  target.exec("BEGIN");
  try {
    if (exists) target.exec_params("SELECT lo_unlink($1::oid)", {id});
    target.exec_params("SELECT lo_create($1::oid)", {id});
    uint64_t copied = 0;
    for (int64_t offset = 0;; offset += kPiece) {
      pg::Result piece = binary_query(source, "SELECT lo_get($1::oid, $2::bigint, $3::int)",
                                      {id, std::to_string(offset), std::to_string(kPiece)});
      int n = PQgetlength(piece.get(), 0, 0);
      if (n == 0) break;
      std::string bytes(PQgetvalue(piece.get(), 0, 0), static_cast<size_t>(n));
      binary_query(target, "SELECT lo_put($1::oid, $2::bigint, $3::bytea)", {id, std::to_string(offset)}, &bytes);
      copied += static_cast<uint64_t>(n);
      if (n < kPiece) break;
    }
    if (target.query_value("SELECT count(*) FROM pg_roles WHERE rolname = $1", {lo.owner}) == "1")
      metadata(target, "ALTER LARGE OBJECT " + id + " OWNER TO " + pg::quote_ident(lo.owner));
    else
      missing_owners.insert(lo.owner);
    for (const auto& g : grants(source, oid)) metadata(target, g);
    target.exec("COMMIT");
    return copied;
  } catch (...) {
    if (PQtransactionStatus(target.get()) != PQTRANS_IDLE) PQclear(PQexec(target.get(), "ROLLBACK"));
    throw;
  }
}

}  // namespace

std::string LargeObjectSync::summary() const {
  return std::to_string(created) + " new, " + std::to_string(changed) + " changed, " + std::to_string(removed) +
         " removed, " + std::to_string(unchanged) + " unchanged (" + std::to_string(bytes / 1024) + " kB copied)";
}

LargeObjectCount count_large_objects(const pg::Connection& source) {
  pg::Result r = source.exec("SELECT count(*), pg_total_relation_size('pg_largeobject') FROM pg_largeobject_metadata");
  return LargeObjectCount{std::strtoll(PQgetvalue(r.get(), 0, 0), nullptr, 10),
                          std::strtoll(PQgetvalue(r.get(), 0, 1), nullptr, 10)};
}

LargeObjectSync sync_large_objects(const pg::Connection& source, const pg::Connection& target) {
  LargeObjectSync out;
  // The target's first: when it has none, the source's contents need no digest (each server
  // reads every object whole for one).
  std::map<uint32_t, LargeObject> have = list(target);
  std::map<uint32_t, LargeObject> want = list(source, !have.empty());
  std::set<std::string> missing_owners;
  for (const auto& [oid, lo] : want) {
    auto it = have.find(oid);
    bool exists = it != have.end();
    if (exists && !lo.md5.empty() && it->second.md5 == lo.md5 && it->second.owner == lo.owner && it->second.acl == lo.acl) {
      out.unchanged++;
      continue;
    }
    out.bytes += copy_object(source, target, oid, lo, exists, missing_owners);
    (exists ? out.changed : out.created)++;
  }
  for (const auto& [oid, lo] : have) {
    if (want.count(oid) > 0) continue;
    target.exec_params("SELECT lo_unlink($1::oid)", {std::to_string(oid)});
    out.removed++;
  }
  for (const auto& owner : missing_owners)
    spdlog::warn("large objects owned by {} on the source belong to the target role: {} is not a role of the target "
                 "(migrate --roles copies the roles)", owner, owner);
  return out;
}

}  // namespace dts::migrate
