// What the engine builds once per relation version, shared by its source files.
#ifndef DTS_APPLIER_APPLY_RELATION_PLAN_HPP
#define DTS_APPLIER_APPLY_RELATION_PLAN_HPP

#include <cstdint>
#include <string>
#include <vector>

#include "apply/apply_engine.hpp"

namespace dts::apply {

struct ApplyEngine::RelationPlan {
  uint64_t version = 0;
  std::string qualified;
  std::string key_prefix;  // of its statement keys
  std::vector<uint32_t> types;  // per column, see param_type_for
  bool copyable = false;        // every column can travel by binary COPY
  std::string copy_sql;
  int coalesce = -1;            // row images may be merged per key (-1: not asked yet)
  int set_update = -1;          // UPDATEs may go set-based (apply_set.cpp; -1: not asked yet)
  int set_delete = -1;          // DELETEs may
  int set_full = -1;            // changes under REPLICA IDENTITY FULL may (the target has no index)
};

}  // namespace dts::apply

#endif
