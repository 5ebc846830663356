// C2SP chunked encryption (https://c2sp.org/chunked-encryption): Cobblestone-256
// (AES-256-GCM) and Cobblestone-128 (AES-128-GCM), both with HKDF-Expand-SHA512.
//
// message = salt (24) || commitment (32) || chunk_0 || chunk_1 || ...
// Every chunk holds 16 KiB of plaintext plus a 16-byte tag, except the final one, which is
// shorter (possibly empty). Chunk k uses nonce = base_nonce XOR k (big-endian), no AAD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "shardseal/kernel.hpp"
#include "shardseal/secure.hpp"

namespace shardseal {

enum class Suite { kCobblestone128 = 128, kCobblestone256 = 256 };

constexpr size_t kChunkSize = 16384;
constexpr size_t kTagSize = 16;
constexpr size_t kSealedChunkSize = kChunkSize + kTagSize;
constexpr size_t kSaltSize = 24;
constexpr size_t kCommitmentSize = 32;
constexpr size_t kMessageHeaderSize = kSaltSize + kCommitmentSize;
constexpr uint64_t kMaxChunks = uint64_t{1} << 38;

// The input key length a suite takes: 32 for Cobblestone-256, 16 for Cobblestone-128.
size_t suite_key_size(Suite suite);
Suite suite_from_bits(int bits);  // throws std::invalid_argument for anything but 128/256

// Ciphertext size of a run of chunks holding plaintext_len bytes. A run that ends the
// message (final) adds a short final chunk; any other run holds whole chunks only.
size_t sealed_size(size_t plaintext_len, bool final);
// Plaintext size of a run of sealed chunks; throws TruncatedMessage when a final run ends
// without a short final chunk, std::invalid_argument when a non-final run is not whole chunks.
size_t opened_size(size_t ciphertext_len, bool final);

// The per-message key, base nonce and commitment, derived from the input key, salt and
// context. Wiped on destruction.
class MessageKeys {
 public:
  MessageKeys(Suite suite, const uint8_t* input_key, size_t key_len, const uint8_t* salt,
              const uint8_t* context, size_t context_len);
  ~MessageKeys();
  MessageKeys(const MessageKeys&) = delete;
  MessageKeys& operator=(const MessageKeys&) = delete;

  const uint8_t* commitment() const { return commitment_; }
  Kernel kernel() const { return gcm_->kernel(); }
  // Constant-time comparison with a message's commitment.
  bool commitment_matches(const uint8_t* candidate) const;

  // Seals the chunks first_chunk, first_chunk + 1, ... holding `plaintext` into `out`
  // (sealed_size(len, final) bytes) on up to `threads` threads.
  void seal_chunks(uint64_t first_chunk, const uint8_t* plaintext, size_t len, bool final,
                   uint8_t* out, unsigned threads) const;
  // Opens a run of sealed chunks into `out` (opened_size(len, final) bytes). On any failure
  // `out` is zeroed before AuthenticationFailure is thrown: no unauthenticated plaintext.
  void open_chunks(uint64_t first_chunk, const uint8_t* ciphertext, size_t len, bool final,
                   uint8_t* out, unsigned threads) const;

 private:
  void nonce_for(uint64_t chunk, uint8_t* nonce) const;
  template <typename Fn>
  void for_chunk_ranges(size_t n_chunks, unsigned threads, Fn fn) const;

  std::unique_ptr<GcmKey> gcm_;  // the chunk key, prepared once, shared by all workers
  SecretArray<12> base_nonce_;
  uint8_t commitment_[kCommitmentSize];
};

// Whole messages. out must hold exactly sealed_size(len, true) + kMessageHeaderSize bytes
// (seal) or the plaintext size (open). open checks the length, then the commitment, then
// every chunk; it throws TruncatedMessage or AuthenticationFailure.
void seal_message(Suite suite, const uint8_t* key, size_t key_len, const uint8_t* salt,
                  const uint8_t* context, size_t context_len, const uint8_t* plaintext,
                  size_t len, uint8_t* out, unsigned threads);
void open_message(Suite suite, const uint8_t* key, size_t key_len, const uint8_t* context,
                  size_t context_len, const uint8_t* message, size_t len, uint8_t* out,
                  unsigned threads);
// Plaintext size of a whole message; throws TruncatedMessage.
size_t message_plaintext_size(size_t message_len);

}  // namespace shardseal
