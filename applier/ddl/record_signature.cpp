#include "ddl/record_signature.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/error.hpp"
#include "pg/connection.hpp"

namespace dts::ddl {
namespace {

constexpr size_t kMacBytes = 32;

std::string mac_of(std::string_view record, std::string_view key) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(record.data()),
           record.size(), mac, &len) == nullptr || len != kMacBytes)
    throw Error(ErrorKind::kInternal, "HMAC-SHA256 failed (OpenSSL)");
  return std::string(reinterpret_cast<const char*>(mac), len);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

}  // namespace

std::optional<std::string> signing_key(const pg::Connection& source) {
  if (source.query_value("SELECT to_regprocedure('dts_decoding.ddl_signing_key()') IS NOT NULL") != "t")
    return std::nullopt;
  std::string text = source.query_value("SELECT coalesce(encode(dts_decoding.ddl_signing_key(), 'hex'), '')");
  if (text.empty())
    throw Error(ErrorKind::kSource,
                "dts_decoding.ddl_signing_key() gives this role no key, so schema changes cannot be told from forged "
                "ones: replicate as a role with REPLICATION (ALTER ROLE ... REPLICATION)");
  auto key = from_hex(text);
  if (!key) throw Error(ErrorKind::kSource, "dts_decoding.ddl_signing_key() returned a malformed key");
  return key;
}

std::optional<std::string_view> verified_record(std::string_view content, std::string_view key) {
  if (key.empty() || content.size() < 2 * kMacBytes + 1 || content[2 * kMacBytes] != ' ') return std::nullopt;
  auto mac = from_hex(content.substr(0, 2 * kMacBytes));
  if (!mac) return std::nullopt;
  std::string_view record = content.substr(2 * kMacBytes + 1);
  std::string want = mac_of(record, key);
  if (CRYPTO_memcmp(want.data(), mac->data(), kMacBytes) != 0) return std::nullopt;
  return record;
}

std::string sign_record(std::string_view record, std::string_view key) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : mac_of(record, key)) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out + " " + std::string(record);
}

}  // namespace dts::ddl
