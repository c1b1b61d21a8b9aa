// Streamed transactions kept on disk until they commit. A large transaction streamed while
// still in progress on the source normally applies on a target session of its own; the
// sessions are bounded, so one that arrives when they are all busy is spooled instead: its
// records go, as they came, into a private file, and at its commit they are replayed through a
// decoder of their own as one ordinary transaction. A subtransaction's abort cuts the file
// back to where that subtransaction began (as PostgreSQL's own apply worker does).
#ifndef DTS_APPLIER_APPLY_SPOOL_HPP
#define DTS_APPLIER_APPLY_SPOOL_HPP

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dts::apply {

// A private directory (mkdtemp, mode 0700) for the spool files of one applier, removed with
// whatever is left in it when the applier ends.
class SpoolDirectory {
 public:
  SpoolDirectory() = default;
  ~SpoolDirectory();
  SpoolDirectory(const SpoolDirectory&) = delete;
  SpoolDirectory& operator=(const SpoolDirectory&) = delete;

  // An applier killed (kill -9, a crash) leaves its spool behind: removes every spool of this
  // user whose owner process is gone (their transactions are streamed again from the slot).
  static void remove_orphans();
  // Created on first use, under $TMPDIR (or /tmp).
  const std::string& path();
  // Files created and bytes written since the applier started, for reports.
  uint64_t files_created = 0;
  uint64_t bytes_written = 0;
  uint64_t peak_bytes = 0;  // most bytes on disk at once
  uint64_t bytes_now = 0;

 private:
  std::string path_;
};

class SpoolFile {
 public:
  SpoolFile(SpoolDirectory& dir, uint32_t xid);
  ~SpoolFile();  // removes the file
  SpoolFile(const SpoolFile&) = delete;
  SpoolFile& operator=(const SpoolFile&) = delete;

  // Writes a relation's record unless this file already holds that version of it: rows and
  // truncates that follow refer to it.
  void append_relation(uint32_t relid, uint64_t version, std::string_view relation_raw);
  void append(std::string_view raw);
  // The end of a stream block: the file is closed until the next one (one descriptor at most
  // whatever the number of spooled transactions).
  void close();
  // A subtransaction starts: remembered where its records begin.
  void mark_subtransaction(uint32_t subxid);
  // A subtransaction aborted: its records, and those of every subtransaction after it, go.
  void abort_subtransaction(uint32_t subxid);
  uint64_t records() const { return records_; }
  // Reads the records back as frames of at most about 1 MB, each starting with the version byte.
  void replay(uint8_t version, const std::function<void(const uint8_t*, size_t)>& frame);

 private:
  void open_for_append();
  void write(const void* data, size_t len);
  void cut_to(uint64_t size);

  SpoolDirectory& dir_;
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
  uint64_t records_ = 0;
  struct Written {
    uint64_t version;
    uint64_t offset;
  };
  std::unordered_map<uint32_t, Written> relations_;             // relid -> the version written, and where
  std::vector<std::pair<uint32_t, uint64_t>> subtransactions_;  // subxid -> offset, in order
};

}  // namespace dts::apply

#endif
