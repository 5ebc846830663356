// The low-level SHA-512 calls below are deprecated in OpenSSL 3 but not removed; where a build
// lacks them (OPENSSL_NO_DEPRECATED_3_0) the EVP_MAC fallback is used instead.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "shardseal/aead.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/sha.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "shardseal/errors.hpp"
#include "shardseal/kernel.hpp"

namespace shardseal {
namespace {

constexpr size_t kSha512Size = 64;
constexpr size_t kSha512Block = 128;

[[noreturn]] void fail(const char* what) {
  throw CryptoLibraryError(std::string("OpenSSL: ") + what + " failed");
}

// Explicitly fetched ciphers avoid OpenSSL 3's implicit fetch on every EVP_*Init call.
const EVP_CIPHER* gcm_cipher(size_t key_len) {
  static EVP_CIPHER* const aes128 = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
  static EVP_CIPHER* const aes192 = EVP_CIPHER_fetch(nullptr, "AES-192-GCM", nullptr);
  static EVP_CIPHER* const aes256 = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  const EVP_CIPHER* cipher = nullptr;
  switch (key_len) {
    case 16: cipher = aes128; break;
    case 24: cipher = aes192; break;
    case 32: cipher = aes256; break;
    default: throw std::invalid_argument("AES-GCM key must be 16, 24 or 32 bytes");
  }
  if (cipher == nullptr) fail("fetching AES-GCM");
  return cipher;
}

#ifndef OPENSSL_NO_DEPRECATED_3_0
// HMAC-SHA512 (RFC 2104) on OpenSSL's low-level SHA-512: the same assembly as EVP, without
// a heap context, provider look-ups or a digest fetch per key. A Cobblestone key derivation
// is a few compression-function calls, so these overheads were most of a small message's cost.
class HmacSha512 {
 public:
  HmacSha512(const uint8_t* key, size_t key_len) {
    uint8_t block[kSha512Block] = {0};
    if (key_len > kSha512Block)
      SHA512(key, key_len, block);
    else if (key_len > 0)
      std::copy(key, key + key_len, block);
    for (uint8_t& b : block) b ^= 0x36;
    SHA512_Init(&inner_);
    SHA512_Update(&inner_, block, kSha512Block);
    for (uint8_t& b : block) b ^= 0x36 ^ 0x5c;
    SHA512_Init(&outer_);
    SHA512_Update(&outer_, block, kSha512Block);
    secure_wipe(block, sizeof block);
    restart();
  }
  ~HmacSha512() {
    secure_wipe(&inner_, sizeof inner_);
    secure_wipe(&outer_, sizeof outer_);
    secure_wipe(&running_, sizeof running_);
  }
  HmacSha512(const HmacSha512&) = delete;
  HmacSha512& operator=(const HmacSha512&) = delete;

  // Starts a new MAC under the same key (the padded-key blocks are hashed once, in the constructor).
  void restart() { running_ = inner_; }
  void update(const uint8_t* data, size_t len) {
    if (len > 0) SHA512_Update(&running_, data, len);
  }
  void finish(uint8_t out[kSha512Size]) {
    uint8_t inner_hash[kSha512Size];
    SHA512_Final(inner_hash, &running_);
    running_ = outer_;
    SHA512_Update(&running_, inner_hash, kSha512Size);
    SHA512_Final(out, &running_);
    secure_wipe(inner_hash, sizeof inner_hash);
  }

 private:
  SHA512_CTX inner_;    // state after the key XOR ipad block
  SHA512_CTX outer_;    // state after the key XOR opad block
  SHA512_CTX running_;  // the MAC in progress
};
#else
// OpenSSL built without the deprecated low-level digests: HMAC through EVP_MAC.
EVP_MAC* hmac_algorithm() {
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (hmac == nullptr) fail("fetching HMAC");
  return hmac;
}

struct MacCtxDeleter {
  void operator()(EVP_MAC_CTX* ctx) const noexcept { EVP_MAC_CTX_free(ctx); }
};

class HmacSha512 {
 public:
  // ctx_ is owned before anything can throw: a failed init frees it.
  HmacSha512(const uint8_t* key, size_t key_len) : ctx_(EVP_MAC_CTX_new(hmac_algorithm())) {
    if (!ctx_) fail("EVP_MAC_CTX_new");
    char digest[] = "SHA512";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end()};
    // HMAC accepts an empty key; OpenSSL wants a non-null pointer for it.
    static const uint8_t empty = 0;
    if (EVP_MAC_init(ctx_.get(), key_len ? key : &empty, key_len, params) != 1)
      fail("HMAC init");
  }
  HmacSha512(const HmacSha512&) = delete;
  HmacSha512& operator=(const HmacSha512&) = delete;

  void restart() {
    if (EVP_MAC_init(ctx_.get(), nullptr, 0, nullptr) != 1) fail("HMAC init");
  }
  void update(const uint8_t* data, size_t len) {
    if (len > 0 && EVP_MAC_update(ctx_.get(), data, len) != 1) fail("HMAC update");
  }
  void finish(uint8_t out[kSha512Size]) {
    size_t written = 0;
    if (EVP_MAC_final(ctx_.get(), out, &written, kSha512Size) != 1) fail("HMAC final");
  }

 private:
  std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter> ctx_;
};
#endif

}  // namespace

void CipherCtxDeleter::operator()(EVP_CIPHER_CTX* ctx) const noexcept {
  EVP_CIPHER_CTX_free(ctx);  // also cleanses the key schedule
}

GcmCipher::GcmCipher(const uint8_t* key, size_t key_len, Direction direction)
    : ctx_(EVP_CIPHER_CTX_new()) {
  // ctx_ owns the context from here: the throws below (a bad key length, a failed set-up)
  // free it.
  if (!ctx_) fail("EVP_CIPHER_CTX_new");
  const EVP_CIPHER* cipher = gcm_cipher(key_len);
  int ok = direction == Direction::kSeal
               ? EVP_EncryptInit_ex(ctx_.get(), cipher, nullptr, key, nullptr)
               : EVP_DecryptInit_ex(ctx_.get(), cipher, nullptr, key, nullptr);
  if (ok != 1) fail("AES-GCM key setup");
}

GcmCipher::~GcmCipher() = default;

void GcmCipher::seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len,
                     const uint8_t* in, size_t len, uint8_t* out, uint8_t* tag) {
  EVP_CIPHER_CTX* ctx = ctx_.get();
  int n = 0;
  // Only the nonce changes per message: the key schedule from the constructor is kept.
  if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) != 1) fail("AES-GCM nonce");
  if (aad_len > 0 && EVP_EncryptUpdate(ctx, nullptr, &n, aad, static_cast<int>(aad_len)) != 1)
    fail("AES-GCM aad");
  // EVP lengths are int: feed large inputs in pieces.
  size_t done = 0;
  while (done < len) {
    size_t piece = std::min(len - done, size_t{1} << 30);
    if (EVP_EncryptUpdate(ctx, out + done, &n, in + done, static_cast<int>(piece)) != 1)
      fail("AES-GCM encrypt");
    done += piece;
  }
  if (EVP_EncryptFinal_ex(ctx, out + done, &n) != 1) fail("AES-GCM final");
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kGcmTagSize, tag) != 1) fail("AES-GCM tag");
}

bool GcmCipher::open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len,
                     const uint8_t* in, size_t len, const uint8_t* tag, uint8_t* out) {
  EVP_CIPHER_CTX* ctx = ctx_.get();
  int n = 0;
  if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) != 1) fail("AES-GCM nonce");
  if (aad_len > 0 && EVP_DecryptUpdate(ctx, nullptr, &n, aad, static_cast<int>(aad_len)) != 1)
    fail("AES-GCM aad");
  size_t done = 0;
  while (done < len) {
    size_t piece = std::min(len - done, size_t{1} << 30);
    if (EVP_DecryptUpdate(ctx, out + done, &n, in + done, static_cast<int>(piece)) != 1)
      fail("AES-GCM decrypt");
    done += piece;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kGcmTagSize,
                          const_cast<uint8_t*>(tag)) != 1)
    fail("AES-GCM tag");
  return EVP_DecryptFinal_ex(ctx, out + done, &n) == 1;
}

std::vector<uint8_t> gcm_seal(const uint8_t* key, size_t key_len, const uint8_t* nonce,
                              const uint8_t* aad, size_t aad_len, const uint8_t* in,
                              size_t len) {
  GcmKey gcm(key, key_len);
  GcmKey::Worker cipher(gcm, /*seal=*/true);
  std::vector<uint8_t> out(len + kGcmTagSize);
  cipher.seal(nonce, aad, aad_len, in, len, out.data(), out.data() + len);
  return out;
}

SecretBytes gcm_open(const uint8_t* key, size_t key_len, const uint8_t* nonce,
                              const uint8_t* aad, size_t aad_len, const uint8_t* in,
                              size_t len) {
  if (len < kGcmTagSize) throw AuthenticationFailure();
  GcmKey gcm(key, key_len);
  GcmKey::Worker cipher(gcm, /*seal=*/false);
  size_t body = len - kGcmTagSize;
  SecretBytes out(body);
  // A failed open leaves out zeroed (Worker::open), and its allocator wipes it when freed.
  if (!cipher.open(nonce, aad, aad_len, in, body, in + body, out.data()))
    throw AuthenticationFailure();
  return out;
}

void hkdf_expand_sha512(const uint8_t* prk, size_t prk_len, std::initializer_list<ByteSpan> info,
                        uint8_t* out, size_t out_len) {
  // Hand-rolled on HMAC rather than EVP_KDF "HKDF": OpenSSL 3.0 caps the info at 1 KiB and
  // the Cobblestone info carries the whole container header as its context.
  if (out_len > 255 * kSha512Size) throw std::invalid_argument("HKDF output too long");
  SecretArray<kSha512Size> block;  // wiped however this returns
  size_t done = 0;
  HmacSha512 hmac(prk, prk_len);
  for (uint8_t counter = 1; done < out_len; ++counter) {
    if (counter > 1) {
      hmac.restart();
      hmac.update(block.data(), kSha512Size);
    }
    for (const ByteSpan& part : info) hmac.update(part.data, part.size);
    hmac.update(&counter, 1);
    hmac.finish(block.data());
    size_t take = std::min(out_len - done, kSha512Size);
    std::copy(block.data(), block.data() + take, out + done);
    done += take;
  }
}

void hkdf_expand_sha512(const uint8_t* prk, size_t prk_len, const uint8_t* info,
                        size_t info_len, uint8_t* out, size_t out_len) {
  hkdf_expand_sha512(prk, prk_len, {{info, info_len}}, out, out_len);
}

void hkdf_sha512(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len,
                 const uint8_t* info, size_t info_len, uint8_t* out, size_t out_len) {
  // RFC 5869's empty salt means HashLen zeros; HMAC pads an empty key to exactly that.
  SecretArray<kSha512Size> prk;
  HmacSha512 extract(salt, salt_len);
  extract.update(ikm, ikm_len);
  extract.finish(prk.data());
  hkdf_expand_sha512(prk.data(), kSha512Size, info, info_len, out, out_len);
}

}  // namespace shardseal
