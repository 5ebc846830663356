// Random reads of a Cobblestone message stored in a file: one call per read, no per-chunk
// work in the caller. The only file code in the core: pread() on a descriptor the caller owns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "shardseal/cobblestone.hpp"

namespace shardseal {

// A read from the file failed (errno in `error`).
struct IoFailure : std::runtime_error {
  IoFailure(int error, const std::string& what) : std::runtime_error(what), error(error) {}
  int error;
};

// Where a message's chunks lie in a file: chunk k starts at data_start + k * kSealedChunkSize,
// and the message holds plaintext_size bytes of plaintext in all.
struct StoredMessage {
  int fd;
  uint64_t data_start;
  uint64_t plaintext_size;
};

// Reads the plaintext bytes [offset, offset + len) (clipped to the message) into out: preads
// the sealed chunks the range touches into a per-thread scratch buffer, authenticates and
// decrypts them (whole chunks straight into out, on up to `threads` threads), and copies the
// partial ones. The final chunk is opened as final, and a read that reaches the end of the
// plaintext (even an empty one, or one at or past the end) authenticates the final chunk.
// Returns the number of bytes written.
// On any failure the whole of out[0, len) is zeroed, then AuthenticationFailure,
// TruncatedMessage (the file is shorter than the message) or IoFailure is thrown.
size_t read_plaintext(const MessageKeys& keys, const StoredMessage& message, uint64_t offset,
                      uint8_t* out, size_t len, unsigned threads);

}  // namespace shardseal
