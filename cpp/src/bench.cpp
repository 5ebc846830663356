#include "shardseal/bench.hpp"

#include <algorithm>
#include <cstring>

#include "shardseal/cobblestone.hpp"
#include "shardseal/thread_pool.hpp"

namespace shardseal {
namespace {

// The same split as MessageKeys::for_chunk_ranges: >= 64 chunks per task, 4 tasks per thread.
template <typename Fn>
void for_ranges(size_t n_chunks, unsigned threads, Fn fn) {
  threads = std::max(1u, threads);
  size_t per_task = std::max<size_t>(64, (n_chunks + threads * 4 - 1) / (threads * 4));
  size_t n_tasks = (n_chunks + per_task - 1) / per_task;
  parallel_for(n_tasks, threads, [&](size_t task) {
    size_t begin = task * per_task;
    fn(begin, std::min(n_chunks, begin + per_task));
  });
}

}  // namespace

void bench_copy(const uint8_t* src, uint8_t* dst, size_t len, unsigned threads) {
  size_t n_chunks = (len + kChunkSize - 1) / kChunkSize;
  for_ranges(n_chunks, threads, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      size_t offset = i * kChunkSize;
      std::memcpy(dst + offset, src + offset, std::min(kChunkSize, len - offset));
    }
  });
}

size_t bench_gcm_sealed_size(size_t len) {
  return len + (len + kChunkSize - 1) / kChunkSize * kTagSize;
}

void bench_gcm_seal(Kernel kernel, const uint8_t* src, uint8_t* dst, size_t len,
                    unsigned threads) {
  static const uint8_t key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
  GcmKey gcm(key, sizeof key, kernel);
  size_t n_chunks = (len + kChunkSize - 1) / kChunkSize;
  for_ranges(n_chunks, threads, [&](size_t begin, size_t end) {
    GcmKey::Worker worker(gcm, /*seal=*/true);
    uint8_t nonce[12] = {0};
    for (size_t i = begin; i < end; ++i) {
      size_t offset = i * kChunkSize;
      size_t chunk_len = std::min(kChunkSize, len - offset);
      uint8_t* out = dst + i * kSealedChunkSize;
      std::memcpy(nonce + 4, &i, sizeof i);
      worker.seal(nonce, nullptr, 0, src + offset, chunk_len, out, out + chunk_len);
    }
  });
}

}  // namespace shardseal
