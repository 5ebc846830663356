#include "shardseal/random_read.hpp"

#include <errno.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

// pread() is POSIX. Elsewhere (Windows) the Python side never passes a descriptor (it needs
// os.preadv), and a call reports ENOSYS instead of failing the build.
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define SHARDSEAL_HAVE_PREAD 1
#endif

#include "shardseal/aead.hpp"
#include "shardseal/errors.hpp"
#include "shardseal/thread_pool.hpp"

namespace shardseal {
namespace {

// Whole chunks are read and opened in batches of at most this many (4 MiB) to bound the scratch.
constexpr size_t kBatchChunks = 256;

// Ciphertext only: plaintext never stays in it.
std::vector<uint8_t>& sealed_scratch(size_t size) {
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < size) scratch.resize(size);
  return scratch;
}

#ifdef SHARDSEAL_HAVE_PREAD
void pread_exactly(int fd, uint8_t* out, size_t len, uint64_t offset) {
  // off_t is 32 bits on some 32-bit builds: refuse an offset it cannot hold, never wrap.
  if (len > static_cast<uint64_t>(std::numeric_limits<off_t>::max()) ||
      offset > static_cast<uint64_t>(std::numeric_limits<off_t>::max()) - len)
    throw IoFailure(EOVERFLOW, "reading the encrypted file failed: offset too large");
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, out + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw IoFailure(err, std::string("reading the encrypted file failed: ") + std::strerror(err));
    }
    if (n == 0) throw TruncatedMessage("the file was truncated while being read");
    done += static_cast<size_t>(n);
  }
}
#else
void pread_exactly(int /*fd*/, uint8_t* /*out*/, size_t /*len*/, uint64_t /*offset*/) {
  throw IoFailure(ENOSYS, "reading the encrypted file failed: no pread() on this platform");
}
#endif

class Reader {
 public:
  Reader(const MessageKeys& keys, const StoredMessage& message)
      : keys_(keys), message_(message), final_index_(message.plaintext_size / kChunkSize) {}

  // Plaintext length of chunk `index`.
  size_t chunk_len(uint64_t index) const {
    return index == final_index_ ? message_.plaintext_size - index * kChunkSize : kChunkSize;
  }

  // Chunks [first, first + count) are whole and never the final one (always short): opened
  // straight into out.
  void open_whole(uint64_t first, size_t count, uint8_t* out, unsigned threads) const {
    size_t sealed_len = count * kSealedChunkSize;
    std::vector<uint8_t>& sealed = sealed_scratch(sealed_len);
    pread_exactly(message_.fd, sealed.data(), sealed_len,
                  message_.data_start + first * kSealedChunkSize);
    keys_.open_chunks(first, sealed.data(), sealed_len, false, out, threads);
  }

  // Like open_whole for any count: batches of kBatchChunks, spread over the threads so that
  // each worker reads its own batch while the others decrypt theirs (a bulk read then costs
  // one pass of pread and one of the cipher, both on every core).
  void open_whole_batches(uint64_t first, size_t count, uint8_t* out, unsigned threads) const {
    size_t batches = (count + kBatchChunks - 1) / kBatchChunks;
    if (batches == 1 || threads <= 1) {
      for (size_t done = 0; done < count; done += kBatchChunks)
        open_whole(first + done, std::min(kBatchChunks, count - done), out + done * kChunkSize, threads);
      return;
    }
    parallel_for(batches, threads, [&](size_t batch) {
      size_t done = batch * kBatchChunks;
      open_whole(first + done, std::min(kBatchChunks, count - done), out + done * kChunkSize, 1);
    });
  }

  // Authenticates the final chunk alone (its plaintext is discarded).
  void verify_final() const { open_part(final_index_, 0, 0, nullptr); }

  uint64_t final_index() const { return final_index_; }

  // Copies bytes [within, within + len) of chunk `index` into out.
  void open_part(uint64_t index, size_t within, size_t len, uint8_t* out) const {
    alignas(64) uint8_t plain[kChunkSize];
    size_t plain_len = chunk_len(index);
    size_t sealed_len = plain_len + kTagSize;
    std::vector<uint8_t>& sealed = sealed_scratch(sealed_len);
    pread_exactly(message_.fd, sealed.data(), sealed_len,
                  message_.data_start + index * kSealedChunkSize);
    keys_.open_chunks(index, sealed.data(), sealed_len, index == final_index_, plain, 1);
    if (len > 0) std::memcpy(out, plain + within, len);
    wipe_buffer(plain, plain_len);
  }

 private:
  const MessageKeys& keys_;
  const StoredMessage& message_;
  uint64_t final_index_;
};

}  // namespace

size_t read_plaintext(const MessageKeys& keys, const StoredMessage& message, uint64_t offset,
                      uint8_t* out, size_t len, unsigned threads) {
  const uint64_t size = message.plaintext_size;
  uint64_t start = std::min(offset, size);
  uint64_t end = start + std::min<uint64_t>(len, size - start);
  Reader reader(keys, message);
  try {
    // A read that reaches the end proves the end is real: it authenticates the final chunk
    // even when it holds none of the bytes read (an empty final chunk, or a read at the end).
    bool final_in_range = start < end && (end - 1) / kChunkSize == reader.final_index();
    if (end == size && !final_in_range) reader.verify_final();
    uint64_t pos = start;
    while (pos < end) {
      uint64_t index = pos / kChunkSize;
      size_t within = pos % kChunkSize;
      size_t whole = within == 0 ? (end - pos) / kChunkSize : 0;
      uint8_t* dst = out + (pos - start);
      if (whole > 0) {
        reader.open_whole_batches(index, whole, dst, threads);
        pos += whole * kChunkSize;
      } else {
        size_t take = std::min<uint64_t>(reader.chunk_len(index) - within, end - pos);
        reader.open_part(index, within, take, dst);
        pos += take;
      }
    }
    return end - start;
  } catch (...) {
    secure_wipe(out, len);
    throw;
  }
}

}  // namespace shardseal
