// Row images of one target transaction (a group of source transactions), merged per key: a row
// inserted and then updated, or updated again and again (a counter, a branch balance), is
// written once, as its last image. Inside one transaction the intermediate images are never
// visible, so only the final state matters; the caller coalesces only tables where nothing
// else could observe the order (a key, no other unique or exclusion index, no triggers firing).
#ifndef DTS_APPLIER_APPLY_COALESCER_HPP
#define DTS_APPLIER_APPLY_COALESCER_HPP

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "decode/decoder.hpp"

namespace dts::apply {

struct PendingRow {
  bool is_insert = false;
  Lsn lsn = 0;  // commit LSN of the source transaction that first wrote this row in the group
  std::vector<protocol::Value> values;  // every column; kUnchangedToast where an UPDATE left it
  std::vector<std::string> owned;       // the bytes the values point to
};

class Coalescer {
 public:
  // Records an INSERT (key must be new) or an UPDATE that kept its key.
  void add(const decode::Relation& rel, bool is_insert, const decode::Values& values, Lsn lsn);
  bool has(uint32_t relid) const;
  size_t rows() const { return rows_; }  // merged rows held, over every relation
  // The pending rows of one relation (or all), in the order their keys first appeared;
  // the rows are removed.
  struct Batch {
    const decode::Relation* relation;
    std::vector<PendingRow> rows;
  };
  std::vector<Batch> take(uint32_t relid);
  std::vector<Batch> take_all();

 private:
  struct PerRelation {
    const decode::Relation* relation = nullptr;
    std::unordered_map<std::string, size_t> index;  // key bytes -> position in rows
    std::vector<PendingRow> rows;
  };
  static std::string key_of(const decode::Relation& rel, const decode::Values& values);
  static void store(PendingRow& row, size_t col, const protocol::Value& v);

  std::unordered_map<uint32_t, PerRelation> relations_;
  std::vector<uint32_t> order_;  // relids in the order they first appeared
  size_t rows_ = 0;
};

}  // namespace dts::apply

#endif
