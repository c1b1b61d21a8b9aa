#include "common/error.hpp"

namespace dts {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kConfig: return "configuration";
    case ErrorKind::kConnection: return "connection";
    case ErrorKind::kProtocol: return "protocol";
    case ErrorKind::kApply: return "apply";
    case ErrorKind::kSource: return "source";
    case ErrorKind::kInternal: return "internal";
  }
  return "unknown";
}

}  // namespace dts
