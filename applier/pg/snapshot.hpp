// A source snapshot as pg_current_snapshot() prints it ("xmin:xmax:xip,..."), and whether a
// transaction's effects are in it. A chunk of the copy records the snapshot it was read in, so
// that the applier can tell, for each change the stream brings, whether the chunk already holds
// it: WAL order and visibility differ (a commit can be in the WAL and not yet visible), and the
// snapshot itself is the exact answer.
#ifndef DTS_APPLIER_PG_SNAPSHOT_HPP
#define DTS_APPLIER_PG_SNAPSHOT_HPP

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dts::pg {

struct Snapshot {
  uint64_t xmin = 0;  // full (64-bit) transaction ids, as pg_snapshot has them
  uint64_t xmax = 0;
  std::vector<uint64_t> xip;  // sorted: in progress when the snapshot was taken

  static std::optional<Snapshot> parse(const std::string& text);
  // Whether the transaction with this 32-bit id (as logical decoding gives it) had committed
  // for this snapshot. The id is widened relative to xmax: a live id is never 2^31 away.
  bool sees(uint32_t xid) const;
  std::string text() const;
};

}  // namespace dts::pg

#endif
