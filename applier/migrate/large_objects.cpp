#include "migrate/large_objects.hpp"

#include <spdlog/spdlog.h>

#include <set>
#include <utility>
#include <vector>

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

// Objects are listed and compared a window at a time, in oid order on both sides, so memory
// stays bounded however many a database holds (millions of small ones are common).
constexpr int kWindow = 1000;

// One side's large objects in oid order with their owner, privileges and, unless `digests` is
// false (nothing to compare them with: a first copy into a target that has none), the md5 of
// their content, fetched a window at a time.
class ObjectCursor {
 public:
  ObjectCursor(const pg::Connection& c, bool digests) : c_(c), digests_(digests) {}

  // The next object, or nullptr past the last one.
  const std::pair<uint32_t, LargeObject>* peek() {
    if (pos_ == window_.size() && !last_window_) fetch();
    return pos_ < window_.size() ? &window_[pos_] : nullptr;
  }
  void next() { ++pos_; }

 private:
  void fetch() {
    window_ = read_window(digests_);
    pos_ = 0;
    last_window_ = window_.size() < static_cast<size_t>(kWindow);
    if (!window_.empty()) after_ = window_.back().first;
  }

  std::vector<std::pair<uint32_t, LargeObject>> read_window(bool digests) {
    pg::Result r;
    try {
      r = c_.exec_params(std::string("SELECT oid, pg_get_userbyid(lomowner), coalesce(lomacl::text, ''), ") +
                             (digests ? "md5(lo_get(oid))" : "''") +
                             " FROM pg_largeobject_metadata WHERE oid > $1::oid ORDER BY oid LIMIT " +
                             std::to_string(kWindow),
                         {std::to_string(after_)});
    } catch (const Error& e) {
      // 54000: an object of this window is over 1 GB, too large for one bytea: digests one by one.
      if (e.sqlstate() != "54000" || !digests) throw;
      auto window = read_window(false);
      for (auto& [oid, lo] : window) lo.md5 = digest_of(oid);
      return window;
    }
    std::vector<std::pair<uint32_t, LargeObject>> out;
    out.reserve(static_cast<size_t>(PQntuples(r.get())));
    for (int i = 0; i < PQntuples(r.get()); ++i)
      out.emplace_back(static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 0), nullptr, 10)),
                       LargeObject{PQgetvalue(r.get(), i, 3), PQgetvalue(r.get(), i, 1), PQgetvalue(r.get(), i, 2)});
    return out;
  }

  // "" for an object over 1 GB: it is copied again.
  std::string digest_of(uint32_t oid) {
    try {
      return c_.query_value("SELECT md5(lo_get($1::oid))", {std::to_string(oid)});
    } catch (const Error& e) {
      if (e.sqlstate() != "54000") throw;
      return "";
    }
  }

  const pg::Connection& c_;
  bool digests_;
  std::vector<std::pair<uint32_t, LargeObject>> window_;
  size_t pos_ = 0;
  uint32_t after_ = 0;  // oid 0 is never a large object's
  bool last_window_ = false;
};

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

// A merge of both sides in oid order. Each side's cursor has read past an oid before the
// target gets an object of that oid, so an object this pass creates is never read back as one
// the target had.
LargeObjectSync sync_large_objects(const pg::Connection& source, const pg::Connection& target) {
  LargeObjectSync out;
  ObjectCursor have(target, true);
  // When the target has none, the source's need no digest (each server reads every object whole for one).
  ObjectCursor want(source, have.peek() != nullptr);
  std::set<std::string> missing_owners;
  for (;;) {
    const auto* w = want.peek();
    const auto* h = have.peek();
    if (w == nullptr && h == nullptr) break;
    if (w == nullptr || (h != nullptr && h->first < w->first)) {
      target.exec_params("SELECT lo_unlink($1::oid)", {std::to_string(h->first)});
      out.removed++;
      have.next();
      continue;
    }
    bool exists = h != nullptr && h->first == w->first;
    const LargeObject& lo = w->second;
    if (exists && !lo.md5.empty() && h->second.md5 == lo.md5 && h->second.owner == lo.owner && h->second.acl == lo.acl) {
      out.unchanged++;
    } else {
      out.bytes += copy_object(source, target, w->first, lo, exists, missing_owners);
      (exists ? out.changed : out.created)++;
    }
    if (exists) have.next();
    want.next();
  }
  for (const auto& owner : missing_owners)
    spdlog::warn("large objects owned by {} on the source belong to the target role: {} is not a role of the target "
                 "(migrate --roles copies the roles)", owner, owner);
  return out;
}

}  // namespace dts::migrate
