// libFuzzer target: any bytes given to the decoder yield events or an Error, never a crash,
// a hang or an out-of-bounds read (built with AddressSanitizer). Frames may refer to
// relations described by earlier inputs: one decoder lives across the run, as in follow.
#include <cstddef>
#include <cstdint>

#include "common/error.hpp"
#include "decode/decoder.hpp"

namespace {

struct Discard : dts::decode::EventHandler {
  size_t n = 0;
  void on_begin(uint32_t, dts::Lsn, int64_t) override { ++n; }
  void on_commit(dts::Lsn, dts::Lsn, int64_t) override { ++n; }
  void on_origin(std::string_view s, dts::Lsn) override { n += s.size(); }
  void on_relation(const dts::decode::Relation& r) override { n += r.columns.size(); }
  void on_row(const dts::decode::RowChange& row) override {
    // Touch every value, as the applier does.
    for (const auto* vs : {row.old_values, row.new_values})
      for (const auto& v : *vs) n += v.bytes.len ? v.bytes.data[v.bytes.len - 1] : 0;
  }
  void on_truncate(const std::vector<const dts::decode::Relation*>& rels, bool, bool) override { n += rels.size(); }
  void on_message(bool, dts::Lsn, std::string_view p, std::string_view c) override { n += p.size() + c.size(); }
  void on_stream_start(uint32_t, bool) override { ++n; }
  void on_stream_stop() override { ++n; }
  void on_stream_xid(uint32_t) override { ++n; }
  void on_stream_commit(uint32_t, dts::Lsn, dts::Lsn, int64_t) override { ++n; }
  void on_stream_abort(uint32_t, uint32_t) override { ++n; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static dts::decode::Decoder decoder;
  static Discard sink;
  try {
    decoder.decode(data, size, 0, sink);
  } catch (const dts::Error& e) {
    if (e.kind() != dts::ErrorKind::kProtocol) __builtin_trap();  // only protocol errors are expected
  }
  return 0;
}
