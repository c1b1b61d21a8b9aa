// How a migrate stops early: asked (SIGINT, SIGTERM) or cut off (cancel terminated the session
// that holds its job lock). Long waits — a tool running, the copy — ask a StopCheck every few
// tens of milliseconds and, when it says so, stop what they run and throw Stopped.
#ifndef DTS_APPLIER_MIGRATE_STOP_HPP
#define DTS_APPLIER_MIGRATE_STOP_HPP

#include <functional>
#include <stdexcept>
#include <string>

namespace dts::migrate {

// True when migrate must stop now.
using StopCheck = std::function<bool()>;

// Thrown where migrate stops early; whatever the step ran is stopped (and reaped) by then. Not
// a dts::Error: stopping is not a failure of the step that was running.
class Stopped : public std::runtime_error {
 public:
  explicit Stopped(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace dts::migrate

#endif
