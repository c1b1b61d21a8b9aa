#include "serve/job_store.hpp"

#include <rapidjson/document.h>

#include "common/error.hpp"
#include "common/parse.hpp"


namespace dts::serve {
namespace {

// Times go through the database as Unix seconds.
constexpr const char* kColumns =
    "id, settings::text, status, queued, cancelled, coalesce(error, ''), coalesce(floor(extract(epoch FROM error_at))::bigint, 0), "
    "coalesce(progress::text, ''), coalesce(verify_status, ''), coalesce(verify_report, ''), "
    "coalesce(floor(extract(epoch FROM verify_at))::bigint, 0), floor(extract(epoch FROM created_at))::bigint, "
    "floor(extract(epoch FROM updated_at))::bigint, coalesce(floor(extract(epoch FROM started_at))::bigint, 0)";

// Stored by us, so valid; a row edited by hand into something invalid comes back as a FAILED
// job saying so, rather than keeping serve from starting.
bool settings_from_json(const std::string& text, JobSettings& s, std::string& error) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  if (d.HasParseError()) {
    error = "its stored settings are not JSON";
    return false;
  }
  return parse_settings(d, s, error);
}

std::string time_param(int64_t t) { return t == 0 ? "" : std::to_string(t); }

}  // namespace

JobStore::JobStore(std::string conninfo) : conninfo_(std::move(conninfo)) {
  conn_ = pg::Connection::open(conninfo_, "job store");
  conn_.exec("SET client_min_messages = warning");
  conn_.exec("CREATE SCHEMA IF NOT EXISTS dts");
  conn_.exec(
      "CREATE TABLE IF NOT EXISTS dts.jobs (id bigserial PRIMARY KEY, settings jsonb NOT NULL, status text NOT NULL, "
      "queued bool NOT NULL DEFAULT false, cancelled bool NOT NULL DEFAULT false, error text, error_at timestamptz, "
      "progress jsonb, verify_status text, verify_report text, verify_at timestamptz, "
      "created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), "
      "started_at timestamptz)");
  // The settings hold conninfos (passwords included, when given so): only the owner reads them.
  conn_.exec("REVOKE ALL ON dts.jobs FROM PUBLIC");
}

pg::Result JobStore::exec(const std::string& sql, const std::vector<std::string>& params) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    return conn_.exec_params(sql, params);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kConnection) throw;
    conn_ = pg::Connection::open(conninfo_, "job store");  // one reconnect, then the error stands
    return conn_.exec_params(sql, params);
  }
}

void JobStore::insert(Job& job) {
  pg::Result r = exec(
      "INSERT INTO dts.jobs (settings, status, queued) VALUES ($1::jsonb, $2, $3::bool) RETURNING id, "
      "floor(extract(epoch FROM created_at))::bigint",
      {settings_json(job.settings, false), status_name(job.status), job.queued ? "true" : "false"});
  job.id = parse_int64(PQgetvalue(r.get(), 0, 0), "the id of a new job in dts.jobs");
  job.created_at = job.updated_at = parse_int64(PQgetvalue(r.get(), 0, 1), "the creation time of a new job in dts.jobs");
}

void JobStore::save(const Job& job) {
  exec("UPDATE dts.jobs SET status = $2, queued = $3::bool, cancelled = $4::bool, error = NULLIF($5, ''), "
       "error_at = to_timestamp(NULLIF($6, '')::bigint), progress = NULLIF($7, '')::jsonb, "
       "verify_status = NULLIF($8, ''), verify_report = NULLIF($9, ''), verify_at = to_timestamp(NULLIF($10, '')::bigint), "
       "settings = $11::jsonb, started_at = to_timestamp(NULLIF($12, '')::bigint), updated_at = now() "
       "WHERE id = $1::bigint",
       {std::to_string(job.id), status_name(job.status), job.queued ? "true" : "false", job.cancelled ? "true" : "false",
        job.error, time_param(job.error_at), job.progress, job.verify.status, job.verify.report,
        time_param(job.verify.at), settings_json(job.settings, false), time_param(job.started_at)});
}

void JobStore::remove(int64_t id) { exec("DELETE FROM dts.jobs WHERE id = $1::bigint", {std::to_string(id)}); }

std::vector<Job> JobStore::load_all() {
  pg::Result r = exec(std::string("SELECT ") + kColumns + " FROM dts.jobs ORDER BY id", {});
  std::vector<Job> jobs;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    Job j;
    auto v = [&](int c) { return std::string(PQgetvalue(r.get(), i, c)); };
    auto n = [&](int c) { return parse_int64(v(c), std::string("dts.jobs column ") + PQfname(r.get(), c)); };
    j.id = n(0);
    std::string bad;
    bool valid = settings_from_json(v(1), j.settings, bad);
    j.status = parse_status(v(2)).value_or(JobStatus::kFailed);
    j.queued = v(3) == "t";
    j.cancelled = v(4) == "t";
    j.error = v(5);
    j.error_at = n(6);
    j.progress = v(7);
    j.verify.status = v(8);
    j.verify.report = v(9);
    j.verify.at = n(10);
    j.created_at = n(11);
    j.updated_at = n(12);
    j.started_at = n(13);
    if (!valid) {
      j.status = JobStatus::kFailed;
      j.queued = false;
      j.error = "dts.jobs holds settings for this job that do not parse: " + bad;
    }
    jobs.push_back(std::move(j));
  }
  return jobs;
}

}  // namespace dts::serve
