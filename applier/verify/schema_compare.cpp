#include "verify/schema_compare.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "common/private_dir.hpp"
#include "common/text.hpp"
#include "migrate/migrate.hpp"

namespace dts::verify {
namespace {

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string dump_schema(const std::string& conninfo, const std::vector<std::string>& left_out, const std::string& dir,
                        const std::string& name) {
  std::string out = dir + "/" + name + ".sql";
  std::vector<std::string> argv = {"pg_dump", "-d", conninfo, "--schema-only", "--no-owner", "--no-privileges",
                                   "-N", "dts", "-N", "dts_decoding"};
  for (const auto& t : left_out) argv.insert(argv.end(), {"-T", t});
  migrate::run_tool(argv, "pg_dump --schema-only of the " + name, dir, out);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::vector<std::string> schema_statements(const std::string& dump) {
  std::vector<std::string> statements;
  std::istringstream in(dump);
  std::string line, current;
  while (std::getline(in, line)) {
    if (current.empty() && (line.empty() || starts_with(line, "--") || starts_with(line, "SET ") ||
                            starts_with(line, "\\restrict") || starts_with(line, "\\unrestrict") ||
                            line.find("set_config(") != std::string::npos))
      continue;
    current += (current.empty() ? "" : "\n") + line;
    if (!line.empty() && line.back() == ';') {
      // dts_decoding is the source's side of the migration (pg_dump -N does not leave out an
      // extension's CREATE EXTENSION).
      if (current.find("dts_decoding") == std::string::npos) statements.push_back(current);
      current.clear();
    }
  }
  if (!current.empty()) statements.push_back(current);
  return statements;
}

SchemaResult compare_statements(const std::vector<std::string>& source, const std::vector<std::string>& target) {
  SchemaResult r;
  r.statements = source.size();
  std::map<std::string, int> count;
  for (const auto& s : source) count[s]++;
  for (const auto& s : target) count[s]--;
  for (const auto& s : source)
    if (count[s] > 0) {
      r.only_source.push_back(first_line(s, 157));
      count[s]--;
    }
  for (const auto& s : target)
    if (count[s] < 0) {
      r.only_target.push_back(first_line(s, 157));
      count[s]++;
    }
  return r;
}

SchemaResult compare_schemas(const std::string& source, const std::string& target,
                             const std::vector<std::string>& left_out) {
  PrivateDir dir("dts-verify-schema");
  return compare_statements(schema_statements(dump_schema(source, left_out, dir.path, "source")),
                            schema_statements(dump_schema(target, left_out, dir.path, "target")));
}

std::string render_schema(const SchemaResult& r) {
  if (r.equal()) return "schema equal (" + std::to_string(r.statements) + " statements of pg_dump --schema-only)\n";
  std::string out = "schema differs: " + std::to_string(r.only_source.size()) + " statements only on the source, " +
                    std::to_string(r.only_target.size()) + " only on the target\n";
  for (const auto& s : r.only_source) out += "  source only: " + s + "\n";
  for (const auto& s : r.only_target) out += "  target only: " + s + "\n";
  return out;
}

}  // namespace dts::verify
