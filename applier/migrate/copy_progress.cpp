#include "migrate/copy_progress.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/error.hpp"

namespace dts::migrate {

SnapshotWatch::SnapshotWatch(const std::string& source, std::string application_name, std::string slot)
    : source_(pg::Connection::open(source, "source")),
      application_name_(std::move(application_name)),
      slot_(std::move(slot)) {}

void SnapshotWatch::sample() {
  // This session is the job's too: not counted (it holds no snapshot between samples). A
  // failed sample costs only the figure, not the copy.
  try {
    pg::Result r = source_.exec_params(
        "SELECT coalesce(extract(epoch FROM max(clock_timestamp() - xact_start) "
        "  FILTER (WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid())), 0), "
        " EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $2 AND xmin IS NOT NULL) "
        "FROM pg_stat_activity WHERE application_name = $1",
        {application_name_, slot_});
    longest_seconds_ = std::max(longest_seconds_, std::strtod(PQgetvalue(r.get(), 0, 0), nullptr));
    slot_holds_xmin_ = slot_holds_xmin_ || std::string(PQgetvalue(r.get(), 0, 1)) == "t";
  } catch (const Error& e) {
    if (!failed_) spdlog::warn("could not sample the snapshots held on the source: {}", e.what());
    failed_ = true;
  }
}

std::string copy_json(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks,
                      const CopyFigures& figures) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  uint64_t rows = 0, bytes = 0;
  size_t done = 0, redone = 0;
  for (const auto& c : chunks) {
    rows += c.rows;
    bytes += c.bytes;
    done += c.done ? 1 : 0;
    redone += c.redone ? 1 : 0;
  }
  w.StartObject();
  w.Key("rows_copied");
  w.Uint64(rows);
  w.Key("bytes_copied");
  w.Uint64(bytes);
  w.Key("chunks");
  w.Uint64(chunks.size());
  w.Key("chunks_done");
  w.Uint64(done);
  w.Key("chunks_redone");  // started by a run that stopped before they were done
  w.Uint64(redone);
  w.Key("seconds");
  w.Double(figures.seconds);
  w.Key("longest_snapshot_seconds");
  w.Double(figures.longest_snapshot_seconds);
  if (!figures.schema.empty()) {
    w.Key("schema");  // how ownership and grants were restored
    w.String(figures.schema.c_str());
  }
  w.Key("tables");
  w.StartArray();
  for (size_t i = 0; i < tables.size(); ++i) {
    uint64_t t_rows = 0, t_chunks = 0, t_done = 0;
    for (const auto& c : chunks) {
      if (c.table != i) continue;
      t_rows += c.rows;
      t_chunks++;
      t_done += c.done ? 1 : 0;
    }
    w.StartObject();
    w.Key("table");
    w.String((tables[i].schema + "." + tables[i].name).c_str());
    w.Key("estimated_rows");
    w.Int64(std::max<int64_t>(tables[i].estimated_rows, 0));
    w.Key("copied_rows");
    w.Uint64(t_rows);
    w.Key("chunks");
    w.Uint64(t_chunks);
    w.Key("chunks_done");
    w.Uint64(t_done);
    // Each chunk: its key range, estimated rows (its share of the table's estimate), copied
    // rows (known when done) and bytes streamed so far.
    w.Key("chunk_progress");
    w.StartArray();
    for (const auto& c : chunks) {
      if (c.table != i) continue;
      w.StartObject();
      w.Key("range");
      w.String(chunk_range_text(c).c_str());
      w.Key("estimated_rows");
      w.Int64(std::max<int64_t>(tables[i].estimated_rows, 0) / static_cast<int64_t>(std::max<uint64_t>(t_chunks, 1)));
      w.Key("copied_rows");
      w.Uint64(c.rows);
      w.Key("bytes");
      w.Uint64(c.bytes);
      w.Key("done");
      w.Bool(c.done);
      w.Key("redone");
      w.Bool(c.redone);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

// On a terminal: a line for each table as it completes, and a bar for the copy as a whole.
void progress_bar(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks,
                  std::vector<bool>& reported, double seconds) {
  if (isatty(STDERR_FILENO) == 0) return;
  for (size_t t = 0; t < tables.size(); ++t) {
    if (reported[t]) continue;
    uint64_t rows = 0;
    bool all = true;
    for (const auto& c : chunks) {
      if (c.table != t) continue;
      all = all && c.done;
      rows += c.rows;
    }
    if (!all) continue;
    reported[t] = true;
    std::fprintf(stderr, "\r\033[K  copied %s.%s: %llu rows\n", tables[t].schema.c_str(), tables[t].name.c_str(),
                 static_cast<unsigned long long>(rows));
  }
  uint64_t bytes = 0;
  size_t done = 0;
  for (const auto& c : chunks) {
    bytes += c.bytes;
    done += c.done ? 1 : 0;
  }
  constexpr int kWidth = 30;
  int filled = chunks.empty() ? kWidth : static_cast<int>(kWidth * done / chunks.size());
  std::fprintf(stderr, "\rCOPYING [%s%s] %zu/%zu chunks %.1f MB %.1f MB/s\033[K", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), done, chunks.size(), bytes / 1e6,
               seconds > 0 ? bytes / 1e6 / seconds : 0.0);
}

}  // namespace dts::migrate
