// C++ tests of the native core, for what the Python tests cannot see: leaks on throw paths
// (run under LeakSanitizer by cpp/tools/sanitized_tests.sh) and secrets wiped on destruction.
// No framework: each check prints what failed, and the exit status is the failure count.
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>

#include "shardseal/aead.hpp"
#include "shardseal/errors.hpp"
#include "shardseal/secure.hpp"
#include "shardseal/thread_pool.hpp"

namespace {

int g_failures = 0;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                   \
    }                                                                 \
  } while (0)

template <typename Exception, typename Fn>
bool throws(Fn fn) {
  try {
    fn();
  } catch (const Exception&) {
    return true;
  } catch (...) {
  }
  return false;
}

// The cipher context is allocated before the key length is checked: the constructor's throw
// must free it (LeakSanitizer reports it at exit otherwise).
void gcm_cipher_constructor_throw_frees_the_context() {
  const uint8_t key[20] = {0};
  for (int i = 0; i < 3; ++i)
    CHECK(throws<std::invalid_argument>([&] {
      shardseal::GcmCipher cipher(key, sizeof key, shardseal::GcmCipher::Direction::kSeal);
    }));
}

void gcm_round_trip_and_failure() {
  const uint8_t key[32] = {7};
  const uint8_t nonce[12] = {1};
  const uint8_t plain[5] = {'s', 'h', 'a', 'r', 'd'};
  std::vector<uint8_t> sealed = shardseal::gcm_seal(key, sizeof key, nonce, nullptr, 0, plain,
                                                    sizeof plain);
  shardseal::SecretBytes opened =
      shardseal::gcm_open(key, sizeof key, nonce, nullptr, 0, sealed.data(), sealed.size());
  CHECK(opened.size() == sizeof plain && std::memcmp(opened.data(), plain, sizeof plain) == 0);
  sealed.back() ^= 1;
  CHECK(throws<shardseal::AuthenticationFailure>([&] {
    shardseal::gcm_open(key, sizeof key, nonce, nullptr, 0, sealed.data(), sealed.size());
  }));
}

// The storage outlives the object in it, so the bytes left behind can be read.
void secret_array_wipes_on_destruction() {
  alignas(shardseal::SecretArray<16>) unsigned char storage[sizeof(shardseal::SecretArray<16>)];
  auto* secret = new (storage) shardseal::SecretArray<16>();
  std::memset(secret->data(), 0xA5, secret->size());
  secret->~SecretArray();
  unsigned char zeros[sizeof storage] = {0};
  CHECK(std::memcmp(storage, zeros, sizeof storage) == 0);
}

void secret_bytes_use_the_wiping_allocator() {
  static_assert(std::is_same<shardseal::SecretBytes::allocator_type,
                             shardseal::WipingAllocator<uint8_t>>::value,
                "SecretBytes must wipe when freed");
  shardseal::SecretBytes bytes(100, 0xA5);
  bytes.resize(10000);  // a reallocation wipes the old block
  CHECK(bytes[0] == 0xA5 && bytes[9999] == 0);
}

void available_cpus_is_positive() { CHECK(shardseal::available_cpus() >= 1); }

}  // namespace

int main() {
  gcm_cipher_constructor_throw_frees_the_context();
  gcm_round_trip_and_failure();
  secret_array_wipes_on_destruction();
  secret_bytes_use_the_wiping_allocator();
  available_cpus_is_positive();
  if (g_failures == 0) std::puts("core tests: all passed");
  return g_failures;
}
