// Jobs kept in a database (schema dts, table jobs): their settings, state and last progress,
// so that a restarted `serve` finds them and resumes them where they were.
#ifndef DTS_APPLIER_SERVE_JOB_STORE_HPP
#define DTS_APPLIER_SERVE_JOB_STORE_HPP

#include <mutex>
#include <string>
#include <vector>

#include "pg/connection.hpp"
#include "serve/job.hpp"

namespace dts::serve {

class JobStore {
 public:
  // Connects and creates dts.jobs if needed; throws Error on failure.
  explicit JobStore(std::string conninfo);

  // Stores a new job; sets its id and times.
  void insert(Job& job);
  void save(const Job& job);
  void remove(int64_t id);
  std::vector<Job> load_all();

 private:
  pg::Result exec(const std::string& sql, const std::vector<std::string>& params);

  std::string conninfo_;
  pg::Connection conn_;
  std::mutex mu_;
};

}  // namespace dts::serve

#endif
