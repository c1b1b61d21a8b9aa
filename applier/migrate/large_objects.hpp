// Large objects: logical decoding does not carry them (their data lives in pg_largeobject,
// written by the lo_* functions, which the stream never shows), so they are synchronised as a
// whole: after the copy of the tables, and again inside complete's read-only window, where
// nothing can change them any more. A pass creates the objects the target lacks, removes
// those the source no longer has, and copies again those whose content (an md5 each side
// computes) or owner or privileges differ. Both sides are read in windows of 1,000 objects in
// oid order and data moves in pieces of 1 MB (lo_get / lo_put with offsets), so memory stays
// bounded whatever the objects' number and size.
#ifndef DTS_APPLIER_MIGRATE_LARGE_OBJECTS_HPP
#define DTS_APPLIER_MIGRATE_LARGE_OBJECTS_HPP

#include <cstdint>
#include <string>

#include "pg/connection.hpp"

namespace dts::migrate {

struct LargeObjectSync {
  int created = 0, changed = 0, removed = 0, unchanged = 0;
  uint64_t bytes = 0;  // copied
  std::string summary() const;
};

// How many the source has and their total size (check's estimate of the cutover's cost).
struct LargeObjectCount {
  int64_t objects = 0;
  int64_t bytes = 0;
};
LargeObjectCount count_large_objects(const pg::Connection& source);

LargeObjectSync sync_large_objects(const pg::Connection& source, const pg::Connection& target);

}  // namespace dts::migrate

#endif
