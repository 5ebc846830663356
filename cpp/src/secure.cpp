#include "shardseal/secure.hpp"

#include <openssl/crypto.h>

#include <string.h>  // explicit_bzero, where the C library has it

namespace shardseal {

void secure_wipe(void* p, size_t len) {
  if (len > 0) OPENSSL_cleanse(p, len);
}

void wipe_buffer(void* p, size_t len) {
  if (len == 0) return;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 25))
  explicit_bzero(p, len);
#else
  OPENSSL_cleanse(p, len);
#endif
}

}  // namespace shardseal
