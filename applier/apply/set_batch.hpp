// A run of UPDATEs or DELETEs of one table, of one shape, held to be applied as one set-based
// statement (sql_builder.hpp's build_update_set / build_delete_set) instead of one statement
// per row. A change joins only if its row is not one the run already changed: with a key, its
// key is new to the run; with REPLICA IDENTITY FULL, its old image is not a new image of the
// run. Applying the run at once is then the same as applying it in order.
#ifndef DTS_APPLIER_APPLY_SET_BATCH_HPP
#define DTS_APPLIER_APPLY_SET_BATCH_HPP

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "apply/params.hpp"
#include "decode/decoder.hpp"

namespace dts::apply {

struct SetShape {
  const decode::Relation* relation = nullptr;
  bool is_delete = false;
  bool full = false;           // REPLICA IDENTITY FULL: matched on the old image
  std::vector<size_t> match;   // columns that find the row
  std::vector<size_t> set;     // columns an UPDATE sets

  bool operator==(const SetShape& o) const {
    return relation == o.relation && is_delete == o.is_delete && full == o.full && match == o.match && set == o.set;
  }
};

class SetBatch {
 public:
  // Rows and bytes held at most: one statement's worth, and memory bounded per batch.
  static constexpr size_t kMaxRows = 2000;
  static constexpr size_t kMaxBytes = 8 << 20;

  // The shape `row` takes in a batch; false if it cannot be applied set-based: an UPDATE that
  // changes its key (an intermediate order could collide on the key), a FULL UPDATE that
  // leaves a large value unchanged (its new image is incomplete), a table with neither key
  // nor FULL identity.
  static bool shape_of(const decode::RowChange& row, SetShape& shape);

  bool empty() const { return rows_ == 0; }
  size_t rows() const { return rows_; }
  const SetShape& shape() const { return shape_; }
  // Whether `row`, of shape `shape`, may join this batch.
  bool accepts(const SetShape& shape, const decode::RowChange& row);
  // Adds it (accepts() said yes); `lsn`: its source transaction's commit LSN.
  void add(const SetShape& shape, const decode::RowChange& row, Lsn lsn);
  bool full() const { return rows_ >= kMaxRows || bytes_ >= kMaxBytes; }
  void clear();

  // Row-major: per row the match values, then the set values (NULLs as null pointers).
  const ParamSet& params() const { return params_; }
  size_t stride() const { return shape_.match.size() + shape_.set.size(); }
  const std::vector<Lsn>& lsns() const { return lsns_; }
  // The statement's cache key (after the relation's own prefix) and its text.
  std::string statement_key() const;
  std::string statement() const;

 private:
  SetShape shape_;
  ParamSet params_;
  size_t rows_ = 0;
  size_t bytes_ = 0;
  // Keys in the run (with a key), or new images of its UPDATEs (FULL).
  std::unordered_set<std::string> changed_;
  std::vector<Lsn> lsns_;
};

}  // namespace dts::apply

#endif
