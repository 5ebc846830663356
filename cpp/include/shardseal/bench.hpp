// Ceilings for the benchmarks: the same buffer walk as the Cobblestone engine without the
// Cobblestone parts, so that every benchmark figure can be read as a ratio to the machine's
// limit measured in the same run. Not used by the library itself.
#pragma once

#include <cstddef>
#include <cstdint>

#include "shardseal/kernel.hpp"

namespace shardseal {

// Copies src to dst (len bytes each) in 16 KiB pieces with memcpy, split into contiguous
// ranges over `threads` threads exactly like seal_chunks: the physical ceiling of a cipher
// that reads every byte once and writes it once with ordinary stores.
void bench_copy(const uint8_t* src, uint8_t* dst, size_t len, unsigned threads);

// Raw AES-256-GCM over src in 16 KiB chunks with one fixed key and a per-chunk nonce, into
// dst laid out like Cobblestone chunks (each chunk followed by its 16-byte tag; dst holds
// len + 16 * ceil(len / 16 KiB) bytes). No key derivation, commitment or final chunk: the
// kernel's own ceiling.
void bench_gcm_seal(Kernel kernel, const uint8_t* src, uint8_t* dst, size_t len,
                    unsigned threads);
size_t bench_gcm_sealed_size(size_t len);

}  // namespace shardseal
