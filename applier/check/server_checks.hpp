// check's server-wide items (the runbook's users, databases, hba and misc groups).
#ifndef DTS_APPLIER_CHECK_SERVER_CHECKS_HPP
#define DTS_APPLIER_CHECK_SERVER_CHECKS_HPP

#include <vector>

#include "check/check.hpp"

namespace dts::check {

void check_server(const CheckOptions& options, std::vector<Item>& items);

}  // namespace dts::check

#endif
