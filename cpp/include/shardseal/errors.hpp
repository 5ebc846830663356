// Error types thrown by the native core. The Python bindings translate them, in one place,
// into the classes of shardseal.errors.
#pragma once

#include <stdexcept>

namespace shardseal {

// A tag or commitment did not verify: tampered data, a wrong key or a wrong context.
struct AuthenticationFailure : std::runtime_error {
  AuthenticationFailure() : std::runtime_error("message authentication failed") {}
};

// A message ends early: it is shorter than its header or lacks its final (short) chunk.
struct TruncatedMessage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// OpenSSL reported an internal error (out of memory, missing algorithm).
struct CryptoLibraryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace shardseal
