// The AES-GCM kernels behind the Cobblestone engine and the choice between them.
//
// Two kernels give identical bytes: OpenSSL EVP (always built) and Intel's ipsec-mb (built
// when the library is found, used only on CPUs with VAES + VPCLMULQDQ + AVX-512, where its
// GCM is much faster than OpenSSL 3.0's). The choice is made at run time from the CPU, never
// at build time alone; select_kernel() overrides it (SHARDSEAL_KERNEL in Python).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "shardseal/secure.hpp"

namespace shardseal {

class GcmCipher;

enum class Kernel { kOpenSsl, kIpsecMb };

const char* kernel_name(Kernel kernel);  // "openssl" or "ipsec-mb"
// Throws std::invalid_argument for a name that is neither.
Kernel kernel_from_name(const std::string& name);

// Whether the kernel can run here; when not, *reason (if given) says why.
bool kernel_available(Kernel kernel, std::string* reason = nullptr);
// The fastest available kernel on this CPU.
Kernel best_kernel();

// The kernel new keys use: best_kernel() until select_kernel() is called.
Kernel current_kernel();
// Throws std::runtime_error (with the reason) when the kernel is not available.
void select_kernel(Kernel kernel);

// A short description of a kernel's implementation, e.g. its library version.
std::string kernel_detail(Kernel kernel);

// An AES-GCM key (16, 24 or 32 bytes) prepared once for one kernel and then shared read-only
// by every worker thread. Wiped on destruction.
class GcmKey {
 public:
  GcmKey(const uint8_t* key, size_t key_len, Kernel kernel = current_kernel());
  ~GcmKey();
  GcmKey(const GcmKey&) = delete;
  GcmKey& operator=(const GcmKey&) = delete;

  Kernel kernel() const { return kernel_; }

  // Seals and opens with one key; not thread-safe: each worker thread makes its own.
  class Worker {
   public:
    explicit Worker(const GcmKey& key, bool seal);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Writes len bytes of ciphertext to out and the 16-byte tag to tag. nonce: 12 bytes.
    void seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in,
              size_t len, uint8_t* out, uint8_t* tag);
    // Returns false when the tag does not verify (compared in constant time); out is then
    // zeroed.
    bool open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* in,
              size_t len, const uint8_t* tag, uint8_t* out);

   private:
    const GcmKey& key_;
    std::unique_ptr<GcmCipher> evp_;  // the OpenSSL kernel's per-thread context
  };

 private:
  // Wipes and frees ipsec-mb key data.
  struct IpsecKeyDeleter {
    void operator()(void* key_data) const noexcept;
  };

  Kernel kernel_;
  size_t key_len_;
  SecretArray<32> key_;  // the OpenSSL kernel's key (each worker sets up its own context)
  std::unique_ptr<void, IpsecKeyDeleter> ipsec_key_;  // 64-byte aligned ipsec-mb key data
};

}  // namespace shardseal
