// AES-GCM on Intel's ipsec-mb (private to the core; compiled only with SHARDSEAL_HAVE_IPSEC_MB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace shardseal {
namespace ipsec_mb {

// Whether this CPU and OS run ipsec-mb's VAES/VPCLMULQDQ AVX-512 GCM; *reason says why not.
bool supported(std::string* reason);
std::string version();

// Expanded key data (struct gcm_key_data), 64-byte aligned, read-only after creation.
void* expand_key(const uint8_t* key, size_t key_len);
void free_key(void* key_data) noexcept;  // wipes, then frees; null is a no-op

void seal(const void* key_data, size_t key_len, const uint8_t* nonce, const uint8_t* aad,
          size_t aad_len, const uint8_t* in, size_t len, uint8_t* out, uint8_t* tag);
bool open(const void* key_data, size_t key_len, const uint8_t* nonce, const uint8_t* aad,
          size_t aad_len, const uint8_t* in, size_t len, const uint8_t* tag, uint8_t* out);

}  // namespace ipsec_mb
}  // namespace shardseal
