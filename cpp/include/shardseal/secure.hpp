// Secret bytes that wipe themselves: keys and derived key material must not outlive their use
// in freed memory, whatever path (return, exception) ends their lifetime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace shardseal {

// Overwrites len bytes at p with zeros in a way the compiler cannot elide (OPENSSL_cleanse:
// for keys and other small secrets).
void secure_wipe(void* p, size_t len);

// The same for large buffers (decrypted chunks): explicit_bzero, a memset the compiler must
// keep, where the C library has it. OPENSSL_cleanse stores a byte or word at a time, which
// costs about 0.5 µs per 16 KiB chunk, a tenth of a random read.
void wipe_buffer(void* p, size_t len);

// A std::allocator that wipes memory before freeing it, so that a container of secrets is
// wiped on destruction and on every reallocation.
template <typename T>
struct WipingAllocator {
  using value_type = T;

  WipingAllocator() noexcept = default;
  template <typename U>
  WipingAllocator(const WipingAllocator<U>&) noexcept {}  // NOLINT: rebinding must be implicit

  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n) noexcept {
    secure_wipe(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }

  template <typename U>
  bool operator==(const WipingAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const WipingAllocator<U>&) const noexcept { return false; }
};

// Heap bytes holding a secret (a derived key, an unwrapped key): wiped when freed.
using SecretBytes = std::vector<uint8_t, WipingAllocator<uint8_t>>;

// N bytes of secret held in place (a member or a local): wiped on destruction, including when
// the constructor of the object that holds it throws after filling it.
template <size_t N>
class SecretArray {
 public:
  SecretArray() = default;
  ~SecretArray() { secure_wipe(bytes_, N); }
  SecretArray(const SecretArray&) = delete;
  SecretArray& operator=(const SecretArray&) = delete;

  uint8_t* data() { return bytes_; }
  const uint8_t* data() const { return bytes_; }
  static constexpr size_t size() { return N; }

 private:
  uint8_t bytes_[N] = {};
};

}  // namespace shardseal
