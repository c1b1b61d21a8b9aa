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
  // What the target's table allows, asked once (ask_target_facts in apply_set.cpp):
  bool facts_asked = false;
  bool coalesce = false;    // row images may be merged per key
  bool set_update = false;  // UPDATEs may go set-based
  bool set_delete = false;  // DELETEs may
  bool set_full = false;    // changes under REPLICA IDENTITY FULL may (the target has no index)
  bool no_unique_index = false;  // no unique or exclusion index, no trigger: inserts collide with nothing
};

}  // namespace dts::apply

#endif
