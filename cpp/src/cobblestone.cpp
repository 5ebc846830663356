#include "shardseal/cobblestone.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "shardseal/aead.hpp"
#include "shardseal/errors.hpp"
#include "shardseal/thread_pool.hpp"

namespace shardseal {
namespace {

constexpr char kInfoPrefix[] = "c2sp.org/chunked-encryption@v1+";
constexpr size_t kNonceSize = kGcmNonceSize;
// A task covers at least this many chunks (1 MiB) so that per-task setup stays negligible,
// and there are a few tasks per thread so that a slow core does not hold up the rest.
constexpr size_t kMinChunksPerTask = 64;
constexpr size_t kTasksPerThread = 4;

const char* aead_name(Suite suite) {
  return suite == Suite::kCobblestone256 ? "AEAD_AES_256_GCM" : "AEAD_AES_128_GCM";
}

size_t chunk_count(size_t plaintext_len, bool final) {
  return plaintext_len / kChunkSize + (final ? 1 : 0);
}

void check_chunk_range(uint64_t first_chunk, size_t n_chunks) {
  if (first_chunk > kMaxChunks || n_chunks > kMaxChunks - first_chunk)
    throw std::length_error("message exceeds 2^38 chunks");
}

}  // namespace

size_t suite_key_size(Suite suite) { return suite == Suite::kCobblestone256 ? 32 : 16; }

Suite suite_from_bits(int bits) {
  if (bits == 256) return Suite::kCobblestone256;
  if (bits == 128) return Suite::kCobblestone128;
  throw std::invalid_argument("suite must be 128 or 256");
}

size_t sealed_size(size_t plaintext_len, bool final) {
  if (!final && plaintext_len % kChunkSize != 0)
    throw std::invalid_argument("a non-final run of chunks must hold whole 16 KiB chunks");
  return plaintext_len + chunk_count(plaintext_len, final) * kTagSize;
}

size_t opened_size(size_t ciphertext_len, bool final) {
  size_t full = ciphertext_len / kSealedChunkSize;
  size_t rest = ciphertext_len % kSealedChunkSize;
  if (!final) {
    if (rest != 0)
      throw std::invalid_argument("a non-final run of chunks must hold whole sealed chunks");
    return full * kChunkSize;
  }
  if (rest == 0) throw TruncatedMessage("message truncated: the final chunk is missing");
  if (rest < kTagSize) throw TruncatedMessage("message truncated inside a chunk tag");
  return full * kChunkSize + rest - kTagSize;
}

MessageKeys::MessageKeys(Suite suite, const uint8_t* input_key, size_t key_len,
                         const uint8_t* salt, const uint8_t* context, size_t context_len) {
  const size_t chunk_key_len = suite_key_size(suite);
  if (key_len != chunk_key_len)
    throw std::invalid_argument("Cobblestone-" + std::to_string(static_cast<int>(suite)) +
                                " needs a " + std::to_string(chunk_key_len) + "-byte key");
  // info = prefix || aead_name || 0x00 || salt || context, hashed in parts (no copy)
  const char* name = aead_name(suite);
  static const uint8_t zero = 0;
  SecretArray<32 + kNonceSize + kCommitmentSize> okm;  // wiped however this returns
  size_t okm_len = chunk_key_len + kNonceSize + kCommitmentSize;
  hkdf_expand_sha512(input_key, key_len,
                     {{reinterpret_cast<const uint8_t*>(kInfoPrefix), sizeof kInfoPrefix - 1},
                      {reinterpret_cast<const uint8_t*>(name), std::strlen(name)},
                      {&zero, 1},
                      {salt, kSaltSize},
                      {context, context_len}},
                     okm.data(), okm_len);
  gcm_ = std::make_unique<GcmKey>(okm.data(), chunk_key_len);
  const uint8_t* nonce = okm.data() + chunk_key_len;
  const uint8_t* commitment = nonce + kNonceSize;
  std::copy(nonce, commitment, base_nonce_.data());
  std::copy(commitment, commitment + kCommitmentSize, commitment_);
}

MessageKeys::~MessageKeys() = default;  // gcm_ and base_nonce_ wipe themselves

bool MessageKeys::commitment_matches(const uint8_t* candidate) const {
  return CRYPTO_memcmp(candidate, commitment_, kCommitmentSize) == 0;
}

void MessageKeys::nonce_for(uint64_t chunk, uint8_t* nonce) const {
  std::copy(base_nonce_.data(), base_nonce_.data() + kNonceSize, nonce);
  for (int i = 0; i < 5; ++i) nonce[kNonceSize - 1 - i] ^= static_cast<uint8_t>(chunk >> (8 * i));
}

// Splits chunks [0, n_chunks) into contiguous ranges and calls fn(begin, end) for each,
// in parallel.
template <typename Fn>
void MessageKeys::for_chunk_ranges(size_t n_chunks, unsigned threads, Fn fn) const {
  threads = std::max(1u, threads);
  size_t per_task = std::max(kMinChunksPerTask,
                             (n_chunks + threads * kTasksPerThread - 1) / (threads * kTasksPerThread));
  size_t n_tasks = (n_chunks + per_task - 1) / per_task;
  parallel_for(n_tasks, threads, [&](size_t task) {
    size_t begin = task * per_task;
    fn(begin, std::min(n_chunks, begin + per_task));
  });
}

void MessageKeys::seal_chunks(uint64_t first_chunk, const uint8_t* plaintext, size_t len,
                              bool final, uint8_t* out, unsigned threads) const {
  sealed_size(len, final);  // validates a non-final run
  size_t n_chunks = chunk_count(len, final);
  check_chunk_range(first_chunk, n_chunks);
  for_chunk_ranges(n_chunks, threads, [&](size_t begin, size_t end) {
    GcmKey::Worker cipher(*gcm_, /*seal=*/true);
    uint8_t nonce[kNonceSize];
    for (size_t i = begin; i < end; ++i) {
      size_t offset = i * kChunkSize;
      size_t chunk_len = std::min(kChunkSize, len - offset);
      uint8_t* sealed = out + i * kSealedChunkSize;
      nonce_for(first_chunk + i, nonce);
      cipher.seal(nonce, nullptr, 0, plaintext + offset, chunk_len, sealed, sealed + chunk_len);
    }
  });
}

void MessageKeys::open_chunks(uint64_t first_chunk, const uint8_t* ciphertext, size_t len,
                              bool final, uint8_t* out, unsigned threads) const {
  size_t plaintext_len = opened_size(len, final);
  size_t n_chunks = final ? len / kSealedChunkSize + 1 : len / kSealedChunkSize;
  check_chunk_range(first_chunk, n_chunks);
  try {
    for_chunk_ranges(n_chunks, threads, [&](size_t begin, size_t end) {
      GcmKey::Worker cipher(*gcm_, /*seal=*/false);
      uint8_t nonce[kNonceSize];
      for (size_t i = begin; i < end; ++i) {
        const uint8_t* sealed = ciphertext + i * kSealedChunkSize;
        size_t chunk_len = std::min(kSealedChunkSize, len - i * kSealedChunkSize) - kTagSize;
        nonce_for(first_chunk + i, nonce);
        if (!cipher.open(nonce, nullptr, 0, sealed, chunk_len, sealed + chunk_len,
                         out + i * kChunkSize))
          throw AuthenticationFailure();
      }
    });
  } catch (...) {
    secure_wipe(out, plaintext_len);
    throw;
  }
}

size_t message_plaintext_size(size_t message_len) {
  if (message_len < kMessageHeaderSize)
    throw TruncatedMessage("message truncated: shorter than its salt and commitment");
  return opened_size(message_len - kMessageHeaderSize, true);
}

void seal_message(Suite suite, const uint8_t* key, size_t key_len, const uint8_t* salt,
                  const uint8_t* context, size_t context_len, const uint8_t* plaintext,
                  size_t len, uint8_t* out, unsigned threads) {
  MessageKeys keys(suite, key, key_len, salt, context, context_len);
  std::copy(salt, salt + kSaltSize, out);
  std::copy(keys.commitment(), keys.commitment() + kCommitmentSize, out + kSaltSize);
  keys.seal_chunks(0, plaintext, len, true, out + kMessageHeaderSize, threads);
}

void open_message(Suite suite, const uint8_t* key, size_t key_len, const uint8_t* context,
                  size_t context_len, const uint8_t* message, size_t len, uint8_t* out,
                  unsigned threads) {
  message_plaintext_size(len);  // length first: it needs no key
  MessageKeys keys(suite, key, key_len, message, context, context_len);
  if (!keys.commitment_matches(message + kSaltSize)) throw AuthenticationFailure();
  keys.open_chunks(0, message + kMessageHeaderSize, len - kMessageHeaderSize, true, out,
                   threads);
}

}  // namespace shardseal
