#include "serve/check_runs.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>

#include "serve/job.hpp"

namespace dts::serve {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

std::string state_of(check::Status s) {
  switch (s) {
    case check::Status::kPassed: return "passed";
    case check::Status::kWarning: return "warning";
    case check::Status::kFailed: return "failed";
  }
  return "failed";
}

}  // namespace

CheckRuns::~CheckRuns() {
  for (auto& [id, r] : runs_)
    if (r->thread.joinable()) r->thread.join();
}

std::optional<int64_t> CheckRuns::start(const check::CheckOptions& options, int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t running = std::count_if(runs_.begin(), runs_.end(), [](const auto& r) { return !r.second->finished; });
  if (running >= kMaxRunning) return std::nullopt;
  evict();
  auto r = std::make_unique<Run>();
  r->id = next_id_++;
  r->job_id = job_id;
  r->started_at = std::time(nullptr);
  for (const auto& name : check::step_names()) r->steps.push_back(Step{name, "notStarted", {}});
  Run* raw = r.get();
  runs_.emplace(raw->id, std::move(r));
  raw->thread = std::thread([this, raw, options] { run(raw, options); });
  return raw->id;
}

// Nothing may escape a thread's body: a check that cannot run is a failed step.
void CheckRuns::run(Run* r, check::CheckOptions options) {
  auto progress = [&](const std::string& name, bool done, const std::vector<check::Item>& items) {
    std::lock_guard<std::mutex> lock(mu_);
    for (Step& s : r->steps) {
      if (s.name != name) continue;
      s.state = "running";
      if (!done) return;
      s.items = items;
      check::Status worst = check::overall(items);
      s.state = items.empty() ? "passed" : state_of(worst);
    }
  };
  try {
    check::run_checks(options, nullptr, progress);
  } catch (const std::exception& e) {
    spdlog::error("check {}: {}", r->id, e.what());
    std::lock_guard<std::mutex> lock(mu_);
    for (Step& s : r->steps) {
      if (s.state != "running") continue;
      s.state = "failed";
      s.items.push_back(check::Item{s.name, check::Status::kFailed, e.what(), "see serve's log", "", ""});
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  r->finished = true;
  r->finished_at = std::time(nullptr);
}

// Finished runs beyond kKeep go, oldest first (their threads have ended or are about to).
void CheckRuns::evict() {
  while (runs_.size() >= kKeep) {
    auto it = std::find_if(runs_.begin(), runs_.end(), [](const auto& r) { return r.second->finished; });
    if (it == runs_.end()) return;
    if (it->second->thread.joinable()) it->second->thread.join();
    runs_.erase(it);
  }
}

std::string CheckRuns::model_of(const Run& r) const {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("id");
  w.Int64(r.id);
  w.Key("jobId");
  if (r.job_id > 0) w.Int64(r.job_id);
  else w.Null();
  key_string(w, "status", r.finished ? "finished" : "running");
  // The worst state of the steps once finished: what decides whether a job may start.
  std::string result = "passed";
  for (const Step& s : r.steps)
    if (s.state == "failed" || (s.state == "warning" && result == "passed")) result = s.state;
  w.Key("result");
  if (r.finished) w.String(result.c_str());
  else w.Null();
  key_string(w, "startedAt", format_iso8601(r.started_at));
  key_time(w, "finishedAt", r.finished ? r.finished_at : 0);
  w.Key("steps");
  w.StartArray();
  for (const Step& s : r.steps) {
    w.StartObject();
    key_string(w, "name", s.name);
    key_string(w, "state", s.state);
    w.Key("items");
    w.StartArray();
    for (const auto& i : s.items) {
      w.StartObject();
      key_string(w, "name", i.name);
      key_string(w, "group", check::group_of(i.name));
      key_string(w, "state", state_of(i.status));
      key_string(w, "reason", i.reason);
      key_string(w, "fix", i.fix);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return buf.GetString();
}

std::optional<std::string> CheckRuns::model(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = runs_.find(id);
  if (it == runs_.end()) return std::nullopt;
  return model_of(*it->second);
}

const CheckRuns::Run* CheckRuns::last_run_of(int64_t job_id) const {
  const Run* last = nullptr;
  for (const auto& [id, r] : runs_)  // ids grow: the last one seen is the newest
    if (r->job_id == job_id) last = r.get();
  return last;
}

int64_t CheckRuns::last_of(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  const Run* last = last_run_of(job_id);
  return last != nullptr ? last->id : 0;
}

std::string CheckRuns::blocking(int64_t job_id, const std::vector<std::string>& skipped) {
  std::lock_guard<std::mutex> lock(mu_);
  const Run* last = last_run_of(job_id);
  if (last == nullptr) return "";
  if (!last->finished) return "its check " + std::to_string(last->id) + " is still running";
  std::string failed;
  for (const Step& s : last->steps)
    for (const auto& i : s.items)
      if (i.status == check::Status::kFailed && std::find(skipped.begin(), skipped.end(), i.name) == skipped.end())
        failed += (failed.empty() ? "" : ", ") + i.name;
  if (failed.empty()) return "";
  return "its check " + std::to_string(last->id) + " has FAILED items: " + failed +
         "; fix them and check again (POST /api/jobs/{id}/check), or skip them by name (skipChecks)";
}

}  // namespace dts::serve
