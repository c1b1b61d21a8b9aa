// The table-driven option parser of the output plugin.
extern "C" {
#include "postgres.h"

#include "commands/defrem.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
}

#include <cstddef>
#include <cstring>

#include "options.hpp"
#include "table_pattern.hpp"
#include "dts/protocol.h"

namespace dts::plugin {
namespace {

enum class OptionKind { kBool, kFormat, kOrigin, kInt, kTablePatterns, kMessagePrefixes };

struct OptionSpec {
  const char* name;
  OptionKind kind;
  size_t offset;  // of the field in DecodingOptions
  int min;        // kInt only
  int max;
  const char* accepted;  // for the hint when a value is rejected
};

#define FIELD(f) offsetof(DecodingOptions, f)

// Keep in step with the options table in README.md.
const OptionSpec kOptions[] = {
    {"format", OptionKind::kFormat, FIELD(format), 0, 0, "binary, json"},
    {"proto_version", OptionKind::kInt, FIELD(proto_version), dts::protocol::kMinSupportedVersion,
     dts::protocol::kMaxSupportedVersion, "1"},
    {"include_tables", OptionKind::kTablePatterns, FIELD(include_tables), 0, 0,
     "a comma-separated list of schema.table patterns, such as public.*, *.audit"},
    {"exclude_tables", OptionKind::kTablePatterns, FIELD(exclude_tables), 0, 0,
     "a comma-separated list of schema.table patterns, such as public.*, *.audit"},
    {"skip_empty_xacts", OptionKind::kBool, FIELD(skip_empty_xacts), 0, 0, "true, false"},
    {"origin", OptionKind::kOrigin, FIELD(origin_none), 0, 0, "any, none"},
    {"messages", OptionKind::kMessagePrefixes, FIELD(message_prefixes), 0, 0,
     "* (all), an empty string (none), or a comma-separated list of prefix patterns"},
    {"include_xids", OptionKind::kBool, FIELD(include_xids), 0, 0, "true, false"},
    {"include_timestamps", OptionKind::kBool, FIELD(include_timestamps), 0, 0, "true, false"},
    {"include_lsn", OptionKind::kBool, FIELD(include_lsn), 0, 0, "true, false"},
    {"streaming", OptionKind::kBool, FIELD(streaming), 0, 0, "true, false"},
    {"publish_via_partition_root", OptionKind::kBool, FIELD(publish_via_partition_root), 0, 0,
     "true, false"},
    {"message_bytes", OptionKind::kInt, FIELD(message_bytes), 1024, 16 * 1024 * 1024,
     "an integer from 1024 to 16777216"},
    {"pack_transactions", OptionKind::kBool, FIELD(pack_transactions), 0, 0, "true, false"},
};

#undef FIELD

// Option names are matched with '-' and '_' treated alike, so test_decoding-style spellings
// (include-xids) work as well.
bool name_equals(const char* spec, const char* given) {
  for (; *spec != '\0' && *given != '\0'; ++spec, ++given) {
    char g = (*given == '-') ? '_' : *given;
    if (*spec != g) return false;
  }
  return *spec == *given;
}

void reject(const OptionSpec* spec, const char* value, const char* detail) {
  if (detail != nullptr)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid value \"%s\" for option \"%s\"", value, spec->name),
                    errdetail("%s", detail), errhint("Accepted values: %s.", spec->accepted)));
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("invalid value \"%s\" for option \"%s\"", value, spec->name),
                  errhint("Accepted values: %s.", spec->accepted)));
}

void apply(const OptionSpec* spec, const char* value, DecodingOptions* out) {
  void* field = reinterpret_cast<char*>(out) + spec->offset;
  const char* error = nullptr;
  switch (spec->kind) {
    case OptionKind::kBool: {
      // A bare option name (no value) means true, as in test_decoding.
      bool b = true;
      if (value != nullptr && !parse_bool(value, &b)) reject(spec, value, nullptr);
      *static_cast<bool*>(field) = b;
      return;
    }
    case OptionKind::kFormat:
      if (value != nullptr && strcmp(value, "binary") == 0)
        *static_cast<OutputFormat*>(field) = OutputFormat::kBinary;
      else if (value != nullptr && strcmp(value, "json") == 0)
        *static_cast<OutputFormat*>(field) = OutputFormat::kJson;
      else
        reject(spec, value ? value : "", nullptr);
      return;
    case OptionKind::kOrigin:
      if (value != nullptr && strcmp(value, "any") == 0)
        *static_cast<bool*>(field) = false;
      else if (value != nullptr && strcmp(value, "none") == 0)
        *static_cast<bool*>(field) = true;
      else
        reject(spec, value ? value : "", nullptr);
      return;
    case OptionKind::kInt: {
      if (value == nullptr) reject(spec, "", nullptr);
      char* end = nullptr;
      errno = 0;
      long v = strtol(value, &end, 10);
      if (errno != 0 || end == value || *end != '\0' || v < spec->min || v > spec->max)
        reject(spec, value, nullptr);
      *static_cast<int*>(field) = static_cast<int>(v);
      return;
    }
    case OptionKind::kTablePatterns: {
      if (value == nullptr) reject(spec, "", nullptr);
      List* patterns = NIL;
      if (!parse_table_patterns(value, &patterns, &error)) reject(spec, value, error);
      *static_cast<List**>(field) = list_concat(*static_cast<List**>(field), patterns);
      return;
    }
    case OptionKind::kMessagePrefixes: {
      if (value == nullptr) reject(spec, "", nullptr);
      List* prefixes = NIL;
      if (!parse_glob_list(value, &prefixes, &error)) reject(spec, value, error);
      out->all_messages = false;
      *static_cast<List**>(field) = prefixes;
      return;
    }
  }
}

void reject_unknown(const char* name) {
  StringInfoData names;
  initStringInfo(&names);
  for (const OptionSpec& spec : kOptions) {
    if (names.len > 0) appendStringInfoString(&names, ", ");
    appendStringInfoString(&names, spec.name);
  }
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                  errmsg("unrecognized option \"%s\" for output plugin dts_decoding", name),
                  errhint("Accepted options: %s.", names.data)));
}

}  // namespace

void parse_options(List* options, DecodingOptions* out) {
  ListCell* lc;
  foreach (lc, options) {
    auto* elem = static_cast<DefElem*>(lfirst(lc));
    Assert(elem->arg == NULL || IsA(elem->arg, String));
    const char* value = elem->arg != nullptr ? strVal(elem->arg) : nullptr;
    const OptionSpec* found = nullptr;
    for (const OptionSpec& spec : kOptions) {
      if (name_equals(spec.name, elem->defname)) {
        found = &spec;
        break;
      }
    }
    if (found == nullptr) reject_unknown(elem->defname);
    apply(found, value, out);
  }
}

bool message_prefix_wanted(const DecodingOptions* opts, const char* prefix) {
  if (opts->all_messages) return true;
  ListCell* lc;
  foreach (lc, opts->message_prefixes) {
    if (glob_match(static_cast<const char*>(lfirst(lc)), prefix)) return true;
  }
  return false;
}

}  // namespace dts::plugin
