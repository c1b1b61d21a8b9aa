// The bandwidth limit: how long to pause reading so that the bytes read so far stay within
// the rate. Pausing stops reading; the walsender's buffers then push back on the source.
#ifndef DTS_APPLIER_FOLLOW_THROTTLE_HPP
#define DTS_APPLIER_FOLLOW_THROTTLE_HPP

#include <algorithm>

namespace dts::follow {

// Seconds to wait after `total_bytes` were read in `elapsed_s` seconds at `bytes_per_s`
// (0 or less: no limit); never more than `max_wait_s` at once, so feedback keeps flowing.
inline double throttle_wait(double total_bytes, double bytes_per_s, double elapsed_s, double max_wait_s = 1.0) {
  if (bytes_per_s <= 0) return 0;
  double due = total_bytes / bytes_per_s;
  return due > elapsed_s ? std::min(due - elapsed_s, max_wait_s) : 0;
}

}  // namespace dts::follow

#endif
