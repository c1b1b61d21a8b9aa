#include "apply/spool.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/error.hpp"
#include "common/private_dir.hpp"

namespace dts::apply {
namespace {

constexpr size_t kFrameBytes = 1 << 20;

[[noreturn]] void io_error(const std::string& what, const std::string& path) {
  throw Error(ErrorKind::kInternal,
              "could not " + what + " the spool file " + path + ": " + std::strerror(errno) +
                  "; large transactions that arrive while every apply session is busy are "
                  "kept there until they commit: free space under $TMPDIR or point TMPDIR "
                  "at a larger disk");
}


}  // namespace

void SpoolDirectory::remove_orphans() { remove_orphaned_dirs("dts-spool"); }

SpoolDirectory::~SpoolDirectory() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

const std::string& SpoolDirectory::path() {
  if (!path_.empty()) return path_;
  path_ = make_owned_dir("dts-spool");
  return path_;
}

SpoolFile::SpoolFile(SpoolDirectory& dir, uint32_t xid) : dir_(dir) {
  path_ = dir_.path() + "/xid-" + std::to_string(xid);
  int fd = ::open(path_.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) io_error("create", path_);
  ::close(fd);
  dir_.files_created++;
}

SpoolFile::~SpoolFile() {
  if (file_ != nullptr) std::fclose(file_);
  ::unlink(path_.c_str());
  dir_.bytes_now -= std::min(dir_.bytes_now, size_);
}

void SpoolFile::open_for_append() {
  if (file_ != nullptr) return;
  file_ = std::fopen(path_.c_str(), "ab");
  if (file_ == nullptr) io_error("open", path_);
  std::setvbuf(file_, nullptr, _IOFBF, 256 * 1024);
}

void SpoolFile::write(const void* data, size_t len) {
  open_for_append();
  if (std::fwrite(data, 1, len, file_) != len) io_error("write", path_);
  size_ += len;
  dir_.bytes_written += len;
  dir_.bytes_now += len;
  dir_.peak_bytes = std::max(dir_.peak_bytes, dir_.bytes_now);
}

void SpoolFile::append(std::string_view raw) {
  uint32_t len = static_cast<uint32_t>(raw.size());
  write(&len, sizeof len);
  write(raw.data(), raw.size());
  records_++;
}

void SpoolFile::append_relation(uint32_t relid, uint64_t version, std::string_view relation_raw) {
  auto it = relations_.find(relid);
  if (it != relations_.end() && it->second.version == version) return;
  relations_[relid] = Written{version, size_};
  append(relation_raw);
}

void SpoolFile::close() {
  if (file_ == nullptr) return;
  bool ok = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok) io_error("write", path_);
}

void SpoolFile::mark_subtransaction(uint32_t subxid) {
  for (const auto& s : subtransactions_)
    if (s.first == subxid) return;
  subtransactions_.emplace_back(subxid, size_);
}

void SpoolFile::abort_subtransaction(uint32_t subxid) {
  auto it = std::find_if(subtransactions_.begin(), subtransactions_.end(),
                         [&](const auto& s) { return s.first == subxid; });
  if (it == subtransactions_.end()) return;  // gone already with an enclosing one, or it wrote nothing
  uint64_t offset = it->second;
  subtransactions_.erase(it, subtransactions_.end());
  cut_to(offset);
}

void SpoolFile::cut_to(uint64_t size) {
  close();
  if (::truncate(path_.c_str(), static_cast<off_t>(size)) != 0) io_error("truncate", path_);
  dir_.bytes_now -= std::min(dir_.bytes_now, size_ - size);
  size_ = size;
  // A relation record cut away must be written again before the next row of that relation.
  for (auto it = relations_.begin(); it != relations_.end();)
    it = it->second.offset >= size ? relations_.erase(it) : std::next(it);
}

void SpoolFile::replay(uint8_t version, const std::function<void(const uint8_t*, size_t)>& frame) {
  close();
  std::FILE* in = std::fopen(path_.c_str(), "rb");
  if (in == nullptr) io_error("read", path_);
  std::string buf(1, static_cast<char>(version));
  buf.reserve(kFrameBytes + 1024);
  try {
    for (;;) {
      uint32_t len = 0;
      size_t got = std::fread(&len, 1, sizeof len, in);
      if (got == 0) break;
      if (got != sizeof len) io_error("read", path_);
      size_t at = buf.size();
      buf.resize(at + len);
      if (std::fread(&buf[at], 1, len, in) != len) io_error("read", path_);
      if (buf.size() >= kFrameBytes) {
        frame(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
        buf.resize(1);
      }
    }
    if (buf.size() > 1) frame(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
  } catch (...) {
    std::fclose(in);
    throw;
  }
  std::fclose(in);
}

}  // namespace dts::apply
