// Huawei Cloud-style online migration tasks (the DCS API's data migration routes, adapted to
// PostgreSQL), as views over serve's one job model: a task is a job of a project.
//
//   POST   /v2/{project_id}/migration/instance          create a task without its instances
//   POST   /v2/{project_id}/migration/{task_id}/task    configure it (instances, method) and start
//   POST   /v2/{project_id}/migration-task              create a task with everything, and start
//   GET    /v2/{project_id}/migration-task/{task_id}    show one
//   GET    /v2/{project_id}/migration-tasks             list (offset, limit, name)
//   POST   /v2/{project_id}/migration-task/{task_id}/stop
//   DELETE /v2/{project_id}/migration-task/{task_id}    (and DELETE .../migration-tasks/delete
//                                                        with {"task_id_list": [...]})
//
// Answers are the manual's: {id, name, status, error} and its statuses; errors are
// {error_msg, error_code, error_ext_msg} with 400, 401, 403, 404 or 500.
#ifndef DTS_APPLIER_SERVE_HUAWEI_TASKS_HPP
#define DTS_APPLIER_SERVE_HUAWEI_TASKS_HPP

#include <map>
#include <optional>
#include <string>

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace dts::serve {

class JobManager;

// Connections registered with serve (--connections FILE, a JSON object of name: conninfo), which a
// task's instance names by its `id`.
using Connections = std::map<std::string, std::string>;
// Reads the file; it must be readable by its owner only (it holds passwords). Throws Error(kConfig).
Connections load_connections(const std::string& path);

// "host1:5432,host2:5433" as a multi-host conninfo (libpq tries them in turn and keeps the
// primary); nullopt with `error` naming what is wrong.
std::optional<std::string> conninfo_from_addrs(const std::string& addrs, const std::string& user,
                                               const std::string& database, const std::string& password,
                                               std::string& error);

// Whether a request belongs to these routes (its errors then take their envelope).
bool is_huawei_path(const std::string& path);
// An error in the manual's envelope.
void huawei_error(httplib::Response& res, int status, const std::string& code, const std::string& message);

void add_huawei_routes(httplib::Server& svr, JobManager& jobs, const Connections& connections);

}  // namespace dts::serve

#endif
