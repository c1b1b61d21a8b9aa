// The HTTP routes of the ShardingSphere-Scaling manual (start, progress, list, stop), in its
// shapes, so that scripts written for it keep working against dts.
#ifndef DTS_APPLIER_SERVE_SHARDING_SPHERE_HPP
#define DTS_APPLIER_SERVE_SHARDING_SPHERE_HPP

#include <optional>
#include <string>

namespace httplib {
class Server;
}

namespace dts::serve {

class JobManager;

void add_sharding_sphere_routes(httplib::Server& svr, JobManager& jobs);

// A jdbc:postgresql://host:port/db URL with its user and password as a libpq conninfo;
// nullopt (and `error`) if it is not one.
std::optional<std::string> conninfo_from_jdbc(const std::string& url, const std::string& user,
                                              const std::string& password, std::string& error);

}  // namespace dts::serve

#endif
