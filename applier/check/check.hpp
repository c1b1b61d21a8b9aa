// `dts_applier check`: what will break, before anything starts. One item per row: PASSED,
// WARNING or FAILED, a one-line reason, and the fix (the setting, grant or statement).
#ifndef DTS_APPLIER_CHECK_CHECK_HPP
#define DTS_APPLIER_CHECK_CHECK_HPP

#include <functional>
#include <string>
#include <vector>

#include "core/table_selection.hpp"

namespace dts::check {

enum class Status { kPassed, kWarning, kFailed };

struct Item {
  std::string name;
  Status status = Status::kPassed;
  std::string reason;
  std::string fix;
  // When the fix is SQL: the statements alone, runnable as they are (also inside `fix`), and
  // where to run them ("source" or "target", as a superuser). Empty otherwise.
  std::string fix_sql;
  std::string fix_on;
};

struct CheckOptions {
  std::string source;
  std::string target;
  std::string tables;   // the plugin's patterns (core/table_selection.hpp); empty: every table
  std::string exclude;
  bool resuming = false;  // migrate running again: the target is not empty, by its own doing
  // As migrate will restore the schema: objects owned by the restoring role instead of their
  // source owners (pg_restore --no-owner); the source's grants left out (--no-privileges).
  bool no_owner = false;
  bool no_privileges = false;
};

// Every item run_checks reports, in order (for --skip-check).
const std::vector<std::string>& item_names();

// The check runs in steps (the source, its tables, ..., the target, the schema's trial restore);
// a step a failure makes pointless is not run. `progress` hears of each as it starts (done
// false) and ends (done true, with the items it reported).
using Progress = std::function<void(const std::string& step, bool done, const std::vector<Item>& items)>;
const std::vector<std::string>& step_names();

// `selection`, if given, receives the tables --tables/--exclude select (left empty when the
// source cannot be read or the patterns are malformed).
std::vector<Item> run_checks(const CheckOptions& options, std::vector<core::SelectedRelation>* selection = nullptr,
                             const Progress& progress = {});
const char* status_name(Status s);
// The runbook's group of an item: source, users, databases, hba, replica identity, misc.
const char* group_of(const std::string& name);
// The worst status: what the exit code reports (0 passed, 1 warnings, 2 failed).
Status overall(const std::vector<Item>& items);
std::string render_table(const std::vector<Item>& items);
// With `tables`, the selected relations too ("tables": [{schema, name, kind}]).
std::string render_json(const std::vector<Item>& items, const std::vector<core::SelectedRelation>* tables = nullptr);

}  // namespace dts::check

#endif
