#include "shardseal/kernel.hpp"

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>

#include "shardseal/aead.hpp"

#ifdef SHARDSEAL_HAVE_IPSEC_MB
#include "ipsec_mb_gcm.hpp"
#endif

namespace shardseal {
namespace {

std::atomic<int> g_selected{-1};  // -1: not chosen yet, use best_kernel()

}  // namespace

const char* kernel_name(Kernel kernel) {
  return kernel == Kernel::kIpsecMb ? "ipsec-mb" : "openssl";
}

Kernel kernel_from_name(const std::string& name) {
  if (name == "openssl") return Kernel::kOpenSsl;
  if (name == "ipsec-mb") return Kernel::kIpsecMb;
  throw std::invalid_argument("unknown AES-GCM kernel (expected 'openssl' or 'ipsec-mb')");
}

bool kernel_available(Kernel kernel, std::string* reason) {
  if (kernel == Kernel::kOpenSsl) return true;
#ifdef SHARDSEAL_HAVE_IPSEC_MB
  return ipsec_mb::supported(reason);
#else
  if (reason != nullptr)
    *reason = "shardseal was built without ipsec-mb (install libipsec-mb-dev and rebuild)";
  return false;
#endif
}

Kernel best_kernel() {
  static const Kernel best =
      kernel_available(Kernel::kIpsecMb) ? Kernel::kIpsecMb : Kernel::kOpenSsl;
  return best;
}

Kernel current_kernel() {
  int selected = g_selected.load(std::memory_order_relaxed);
  return selected < 0 ? best_kernel() : static_cast<Kernel>(selected);
}

void select_kernel(Kernel kernel) {
  std::string reason;
  if (!kernel_available(kernel, &reason))
    throw std::runtime_error(std::string("AES-GCM kernel ") + kernel_name(kernel) +
                             " is not available: " + reason);
  g_selected.store(static_cast<int>(kernel), std::memory_order_relaxed);
}

std::string kernel_detail(Kernel kernel) {
#ifdef SHARDSEAL_HAVE_IPSEC_MB
  if (kernel == Kernel::kIpsecMb) return ipsec_mb::version() + ", VAES/VPCLMULQDQ AVX-512 GCM";
#endif
  (void)kernel;
  return std::string(OpenSSL_version(OPENSSL_VERSION)) + ", EVP AES-GCM";
}

GcmKey::GcmKey(const uint8_t* key, size_t key_len, Kernel kernel)
    : kernel_(kernel), key_len_(key_len) {
  if (key_len != 16 && key_len != 24 && key_len != 32)
    throw std::invalid_argument("AES-GCM key must be 16, 24 or 32 bytes");
  std::string reason;
  if (!kernel_available(kernel, &reason))
    throw std::runtime_error(std::string("AES-GCM kernel ") + kernel_name(kernel) +
                             " is not available: " + reason);
  if (kernel == Kernel::kOpenSsl) {
    std::copy(key, key + key_len, key_.data());
    return;
  }
#ifdef SHARDSEAL_HAVE_IPSEC_MB
  ipsec_key_.reset(ipsec_mb::expand_key(key, key_len));
#endif
}

GcmKey::~GcmKey() = default;  // key_ and ipsec_key_ wipe themselves

void GcmKey::IpsecKeyDeleter::operator()(void* key_data) const noexcept {
#ifdef SHARDSEAL_HAVE_IPSEC_MB
  ipsec_mb::free_key(key_data);
#else
  (void)key_data;  // never allocated without ipsec-mb
#endif
}

GcmKey::Worker::Worker(const GcmKey& key, bool seal) : key_(key) {
  if (key.kernel_ == Kernel::kOpenSsl)
    evp_ = std::make_unique<GcmCipher>(key.key_.data(), key.key_len_,
                                       seal ? GcmCipher::Direction::kSeal
                                            : GcmCipher::Direction::kOpen);
}

GcmKey::Worker::~Worker() = default;

void GcmKey::Worker::seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len,
                          const uint8_t* in, size_t len, uint8_t* out, uint8_t* tag) {
  if (evp_) {
    evp_->seal(nonce, aad, aad_len, in, len, out, tag);
    return;
  }
#ifdef SHARDSEAL_HAVE_IPSEC_MB
  ipsec_mb::seal(key_.ipsec_key_.get(), key_.key_len_, nonce, aad, aad_len, in, len, out, tag);
#endif
}

bool GcmKey::Worker::open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len,
                          const uint8_t* in, size_t len, const uint8_t* tag, uint8_t* out) {
  if (evp_) {
    // EVP_DecryptFinal_ex compares the tag with CRYPTO_memcmp.
    bool ok = evp_->open(nonce, aad, aad_len, in, len, tag, out);
    if (!ok) secure_wipe(out, len);
    return ok;
  }
#ifdef SHARDSEAL_HAVE_IPSEC_MB
  return ipsec_mb::open(key_.ipsec_key_.get(), key_.key_len_, nonce, aad, aad_len, in, len, tag, out);
#else
  return false;
#endif
}

}  // namespace shardseal
