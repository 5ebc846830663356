#include "ipsec_mb_gcm.hpp"

#include <intel-ipsec-mb.h>
#include <openssl/crypto.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "shardseal/errors.hpp"

namespace shardseal {
namespace ipsec_mb {
namespace {

constexpr size_t kAlign = 64;
constexpr uint64_t kTagLen = 16;
constexpr uint64_t kNeededFeatures = IMB_FEATURE_VAES | IMB_FEATURE_VPCLMULQDQ |
                                     IMB_FEATURE_AVX512F | IMB_FEATURE_AVX512BW |
                                     IMB_FEATURE_AVX512VL;

struct ManagerDeleter {
  void operator()(IMB_MGR* mgr) const { free_mb_mgr(mgr); }
};
using Manager = std::unique_ptr<IMB_MGR, ManagerDeleter>;

Manager new_manager(IMB_ARCH* arch) {
  Manager mgr(alloc_mb_mgr(0));
  if (!mgr) throw CryptoLibraryError("ipsec-mb: alloc_mb_mgr failed");
  init_mb_mgr_auto(mgr.get(), arch);
  if (imb_get_errno(mgr.get()) != 0)
    throw CryptoLibraryError(std::string("ipsec-mb: ") + imb_get_strerror(imb_get_errno(mgr.get())));
  return mgr;
}

// ipsec-mb's manager is not thread-safe: one per thread, made on first use.
IMB_MGR* thread_manager() {
  thread_local Manager mgr;
  if (!mgr) {
    IMB_ARCH arch;
    mgr = new_manager(&arch);
  }
  return mgr.get();
}

size_t key_data_size() { return (sizeof(gcm_key_data) + kAlign - 1) / kAlign * kAlign; }

void check(IMB_MGR* mgr) {
  int err = imb_get_errno(mgr);
  if (err != 0) throw CryptoLibraryError(std::string("ipsec-mb: ") + imb_get_strerror(err));
}

// ipsec-mb's parameter checks reject a null pointer even for an empty buffer.
const uint8_t* nonnull(const uint8_t* p) {
  static const uint8_t empty = 0;
  return p != nullptr ? p : &empty;
}

bool detect(std::string* reason) {
  __builtin_cpu_init();
  // libgcc's checks include the OS's support for the AVX-512 register state (XCR0).
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl")) {
    *reason = "the CPU (or OS) lacks AVX-512 F/BW/VL";
    return false;
  }
  if (!__builtin_cpu_supports("vaes") || !__builtin_cpu_supports("vpclmulqdq")) {
    *reason = "the CPU lacks VAES/VPCLMULQDQ";
    return false;
  }
  IMB_ARCH arch = IMB_ARCH_NONE;
  Manager mgr = new_manager(&arch);
  if (arch != IMB_ARCH_AVX512 || (mgr->features & kNeededFeatures) != kNeededFeatures) {
    *reason = "ipsec-mb did not select its VAES AVX-512 code path on this CPU";
    return false;
  }
  return true;
}

}  // namespace

bool supported(std::string* reason) {
  static std::string why;
  static const bool ok = [] {
    try {
      return detect(&why);
    } catch (const std::exception& e) {
      why = e.what();
      return false;
    }
  }();
  if (!ok && reason != nullptr) *reason = why;
  return ok;
}

std::string version() { return std::string("ipsec-mb ") + imb_get_version_str(); }

void* expand_key(const uint8_t* key, size_t key_len) {
  if (key_len != 16 && key_len != 24 && key_len != 32)
    throw std::invalid_argument("AES-GCM key must be 16, 24 or 32 bytes");
  IMB_MGR* mgr = thread_manager();
  // Owned (wiped and freed) until handed to the caller, whatever throws in between.
  std::unique_ptr<void, decltype(&free_key)> data(std::aligned_alloc(kAlign, key_data_size()),
                                                  &free_key);
  if (!data) throw std::bad_alloc();
  auto* kd = static_cast<gcm_key_data*>(data.get());
  switch (key_len) {
    case 16: IMB_AES128_GCM_PRE(mgr, key, kd); break;
    case 24: IMB_AES192_GCM_PRE(mgr, key, kd); break;
    default: IMB_AES256_GCM_PRE(mgr, key, kd); break;
  }
  check(mgr);
  return data.release();
}

void free_key(void* key_data) noexcept {
  if (key_data == nullptr) return;
  imb_clear_mem(key_data, key_data_size());
  std::free(key_data);
}

void seal(const void* key_data, size_t key_len, const uint8_t* nonce, const uint8_t* aad,
          size_t aad_len, const uint8_t* in, size_t len, uint8_t* out, uint8_t* tag) {
  IMB_MGR* mgr = thread_manager();
  auto* kd = static_cast<const gcm_key_data*>(key_data);
  gcm_context_data ctx;  // per message, on the stack
  in = nonnull(in);
  aad = nonnull(aad);
  out = const_cast<uint8_t*>(nonnull(out));
  switch (key_len) {
    case 16: IMB_AES128_GCM_ENC(mgr, kd, &ctx, out, in, len, nonce, aad, aad_len, tag, kTagLen); break;
    case 24: IMB_AES192_GCM_ENC(mgr, kd, &ctx, out, in, len, nonce, aad, aad_len, tag, kTagLen); break;
    default: IMB_AES256_GCM_ENC(mgr, kd, &ctx, out, in, len, nonce, aad, aad_len, tag, kTagLen); break;
  }
  imb_clear_mem(&ctx, sizeof ctx);
  check(mgr);
}

bool open(const void* key_data, size_t key_len, const uint8_t* nonce, const uint8_t* aad,
          size_t aad_len, const uint8_t* in, size_t len, const uint8_t* tag, uint8_t* out) {
  IMB_MGR* mgr = thread_manager();
  auto* kd = static_cast<const gcm_key_data*>(key_data);
  gcm_context_data ctx;
  uint8_t computed[kTagLen];
  in = nonnull(in);
  aad = nonnull(aad);
  uint8_t* dst = const_cast<uint8_t*>(nonnull(out));
  switch (key_len) {
    case 16: IMB_AES128_GCM_DEC(mgr, kd, &ctx, dst, in, len, nonce, aad, aad_len, computed, kTagLen); break;
    case 24: IMB_AES192_GCM_DEC(mgr, kd, &ctx, dst, in, len, nonce, aad, aad_len, computed, kTagLen); break;
    default: IMB_AES256_GCM_DEC(mgr, kd, &ctx, dst, in, len, nonce, aad, aad_len, computed, kTagLen); break;
  }
  imb_clear_mem(&ctx, sizeof ctx);
  check(mgr);
  bool ok = CRYPTO_memcmp(computed, tag, kTagLen) == 0;
  if (!ok && len > 0) OPENSSL_cleanse(out, len);  // no unauthenticated plaintext
  return ok;
}

}  // namespace ipsec_mb
}  // namespace shardseal
