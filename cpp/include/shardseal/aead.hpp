// AES-GCM and HKDF-SHA512 on OpenSSL's EVP interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "shardseal/secure.hpp"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace shardseal {

constexpr size_t kGcmNonceSize = 12;
constexpr size_t kGcmTagSize = 16;

// Frees (and cleanses) an OpenSSL cipher context: owned by unique_ptr, so that no path that
// throws, the constructor's included, leaks one.
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const noexcept;
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// An AES-GCM context with its key schedule computed once, reused for many nonces.
// Not thread-safe: each worker thread owns one.
class GcmCipher {
 public:
  enum class Direction { kSeal, kOpen };

  // key_len is 16, 24 or 32 bytes (AES-128/192/256).
  GcmCipher(const uint8_t* key, size_t key_len, Direction direction);
  ~GcmCipher();
  GcmCipher(const GcmCipher&) = delete;
  GcmCipher& operator=(const GcmCipher&) = delete;

  // Writes len bytes of ciphertext to out and the 16-byte tag to tag.
  void seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in,
            size_t len, uint8_t* out, uint8_t* tag);

  // Returns false when the tag does not verify; out then holds unauthenticated bytes that
  // the caller must discard.
  bool open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in,
            size_t len, const uint8_t* tag, uint8_t* out);

 private:
  CipherCtxPtr ctx_;
};

// Single-message AES-GCM with a 96-bit nonce: returns ciphertext || tag.
std::vector<uint8_t> gcm_seal(const uint8_t* key, size_t key_len, const uint8_t* nonce,
                              const uint8_t* aad, size_t aad_len, const uint8_t* in,
                              size_t len);

// Opens ciphertext || tag. Throws AuthenticationFailure when the tag does not verify.
// The plaintext is often a key (unwrapped stanzas): it is wiped when freed.
SecretBytes gcm_open(const uint8_t* key, size_t key_len, const uint8_t* nonce,
                              const uint8_t* aad, size_t aad_len, const uint8_t* in,
                              size_t len);

// A read-only run of bytes.
struct ByteSpan {
  const uint8_t* data;
  size_t size;
};

// HKDF-Expand with HMAC-SHA512 (RFC 5869). out_len is at most 255 * 64 bytes.
// The info may be given in parts, hashed as their concatenation (no copy into one buffer).
void hkdf_expand_sha512(const uint8_t* prk, size_t prk_len, std::initializer_list<ByteSpan> info,
                        uint8_t* out, size_t out_len);
void hkdf_expand_sha512(const uint8_t* prk, size_t prk_len, const uint8_t* info,
                        size_t info_len, uint8_t* out, size_t out_len);

// HKDF-Extract then HKDF-Expand with HMAC-SHA512.
void hkdf_sha512(const uint8_t* ikm, size_t ikm_len, const uint8_t* salt, size_t salt_len,
                 const uint8_t* info, size_t info_len, uint8_t* out, size_t out_len);

// secure_wipe and wipe_buffer: see secure.hpp.

}  // namespace shardseal
