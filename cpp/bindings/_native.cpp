// pybind11 bindings of the native core. Buffers arrive as any C-contiguous buffer object;
// the GIL is released around the bulk work.
#include <pybind11/pybind11.h>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>  // madvise (a hint; skipped where there is none)
#endif

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <string>

#include "shardseal/aead.hpp"
#include "shardseal/bench.hpp"
#include "shardseal/cobblestone.hpp"
#include "shardseal/errors.hpp"
#include "shardseal/kernel.hpp"
#include "shardseal/random_read.hpp"
#include "shardseal/secure.hpp"
#include "shardseal/thread_pool.hpp"

namespace py = pybind11;
using shardseal::Suite;

namespace {

// Below this many bytes the work is shorter than releasing and re-taking the GIL.
constexpr size_t kReleaseGilAbove = 4096;

// A C-contiguous buffer held for the lifetime of this object.
class Buffer {
 public:
  Buffer(py::handle obj, const char* name, bool writable = false) {
    if (!PyObject_CheckBuffer(obj.ptr()))
      throw py::type_error(std::string(name) + " must be a bytes-like object, not " +
                           Py_TYPE(obj.ptr())->tp_name);
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view_, flags) != 0) {
      PyErr_Clear();
      throw py::type_error(std::string(name) + (writable ? " must be a writable C-contiguous buffer"
                                                         : " must be a C-contiguous buffer"));
    }
  }
  ~Buffer() { PyBuffer_Release(&view_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint8_t* data() const { return static_cast<uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

  void require_size(size_t expected, const char* name) const {
    if (size() != expected)
      throw py::value_error(std::string(name) + " must be " + std::to_string(expected) +
                            " bytes, got " + std::to_string(size()));
  }
  void require_room(size_t needed) const {
    if (size() < needed)
      throw py::value_error("output buffer too small: need " + std::to_string(needed) +
                            " bytes, got " + std::to_string(size()));
  }

 private:
  Py_buffer view_{};
};

unsigned thread_count(int threads) {
  if (threads < 1) throw py::value_error("threads must be at least 1");
  return static_cast<unsigned>(threads);
}

// Large fresh outputs are first touched by the workers; with 4 KiB pages that costs a page
// fault per 4 KiB and caps allocating calls far below the cipher's speed.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugePagesAbove = 8 * kHugePage;

void advise_huge_pages(uint8_t* data, size_t size) {
#if defined(MADV_HUGEPAGE)
  if (size < kHugePagesAbove) return;
  uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHugePage - 1) & ~(kHugePage - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint
#else
  (void)data;
  (void)size;
#endif
}

// A bytes object of `size` bytes that C++ fills before Python sees it.
py::bytes new_bytes(size_t size, uint8_t** data) {
  PyObject* obj = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
  if (obj == nullptr) throw py::error_already_set();
  *data = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(obj));
  advise_huge_pages(*data, size);
  return py::reinterpret_steal<py::bytes>(obj);
}

// Copies bytes into a new bytes object. Secrets arrive as SecretBytes, wiped when freed, so
// the only copy left is the one Python owns.
template <typename Bytes>
py::bytes to_bytes(const Bytes& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

// Runs fn without the GIL when the work is large enough to be worth it.
template <typename Fn>
void run_released(size_t work_bytes, Fn fn) {
  if (work_bytes > kReleaseGilAbove) {
    py::gil_scoped_release release;
    fn();
  } else {
    fn();
  }
}

size_t message_size(size_t plaintext_len) {
  return shardseal::kMessageHeaderSize + shardseal::sealed_size(plaintext_len, true);
}

size_t seal_into(int suite, py::handle key, py::handle salt, py::handle context,
                 py::handle plaintext, py::handle out, int threads) {
  Buffer k(key, "key"), s(salt, "salt"), c(context, "context"), p(plaintext, "plaintext");
  Buffer o(out, "out", true);
  s.require_size(shardseal::kSaltSize, "salt");
  size_t needed = message_size(p.size());
  o.require_room(needed);
  unsigned n = thread_count(threads);
  Suite st = shardseal::suite_from_bits(suite);
  run_released(p.size(), [&] {
    shardseal::seal_message(st, k.data(), k.size(), s.data(), c.data(), c.size(), p.data(),
                            p.size(), o.data(), n);
  });
  return needed;
}

size_t open_into(int suite, py::handle key, py::handle context, py::handle message,
                 py::handle out, int threads) {
  Buffer k(key, "key"), c(context, "context"), m(message, "message");
  Buffer o(out, "out", true);
  size_t needed = shardseal::message_plaintext_size(m.size());
  o.require_room(needed);
  unsigned n = thread_count(threads);
  Suite st = shardseal::suite_from_bits(suite);
  run_released(m.size(), [&] {
    shardseal::open_message(st, k.data(), k.size(), c.data(), c.size(), m.data(), m.size(),
                            o.data(), n);
  });
  return needed;
}

py::bytes seal(int suite, py::handle key, py::handle salt, py::handle context,
               py::handle plaintext, int threads, py::handle prefix) {
  Buffer k(key, "key"), s(salt, "salt"), c(context, "context"), p(plaintext, "plaintext");
  Buffer pre(prefix, "prefix");
  s.require_size(shardseal::kSaltSize, "salt");
  unsigned n = thread_count(threads);
  Suite st = shardseal::suite_from_bits(suite);
  uint8_t* out = nullptr;
  py::bytes result = new_bytes(pre.size() + message_size(p.size()), &out);
  std::memcpy(out, pre.data(), pre.size());
  run_released(p.size(), [&] {
    shardseal::seal_message(st, k.data(), k.size(), s.data(), c.data(), c.size(), p.data(),
                            p.size(), out + pre.size(), n);
  });
  return result;
}

py::bytes open(int suite, py::handle key, py::handle context, py::handle message,
               int threads) {
  Buffer k(key, "key"), c(context, "context"), m(message, "message");
  unsigned n = thread_count(threads);
  Suite st = shardseal::suite_from_bits(suite);
  uint8_t* out = nullptr;
  py::bytes result = new_bytes(shardseal::message_plaintext_size(m.size()), &out);
  run_released(m.size(), [&] {
    shardseal::open_message(st, k.data(), k.size(), c.data(), c.size(), m.data(), m.size(),
                            out, n);
  });
  return result;
}

// Python face of shardseal::MessageKeys, for chunk-range (random access, streaming) work.
class PyMessageKeys {
 public:
  PyMessageKeys(int suite, py::handle key, py::handle salt, py::handle context) {
    Buffer k(key, "key"), s(salt, "salt"), c(context, "context");
    s.require_size(shardseal::kSaltSize, "salt");
    keys_ = std::make_unique<shardseal::MessageKeys>(shardseal::suite_from_bits(suite),
                                                     k.data(), k.size(), s.data(), c.data(),
                                                     c.size());
  }

  py::bytes commitment() const {
    return py::bytes(reinterpret_cast<const char*>(keys_->commitment()),
                     shardseal::kCommitmentSize);
  }

  bool commitment_matches(py::handle candidate) const {
    Buffer c(candidate, "commitment");
    return c.size() == shardseal::kCommitmentSize && keys_->commitment_matches(c.data());
  }

  size_t seal_chunks_into(uint64_t first_chunk, py::handle plaintext, py::handle out,
                          bool final, int threads) const {
    Buffer p(plaintext, "plaintext"), o(out, "out", true);
    size_t needed = shardseal::sealed_size(p.size(), final);
    o.require_room(needed);
    unsigned n = thread_count(threads);
    run_released(p.size(), [&] {
      keys_->seal_chunks(first_chunk, p.data(), p.size(), final, o.data(), n);
    });
    return needed;
  }

  // One random read of a message stored in a file (see shardseal::read_plaintext). The GIL
  // is always released: pread may wait for a disk.
  size_t read_into(int fd, uint64_t data_start, uint64_t plaintext_size, uint64_t offset,
                   py::handle out, int threads) const {
    Buffer o(out, "out", true);
    unsigned n = thread_count(threads);
    shardseal::StoredMessage message{fd, data_start, plaintext_size};
    py::gil_scoped_release release;
    return shardseal::read_plaintext(*keys_, message, offset, o.data(), o.size(), n);
  }

  py::bytes read(int fd, uint64_t data_start, uint64_t plaintext_size, uint64_t offset,
                 uint64_t size, int threads) const {
    unsigned n = thread_count(threads);
    uint64_t available = offset < plaintext_size ? plaintext_size - offset : 0;
    uint8_t* data = nullptr;
    py::bytes result = new_bytes(static_cast<size_t>(std::min(size, available)), &data);
    shardseal::StoredMessage message{fd, data_start, plaintext_size};
    size_t len = PyBytes_GET_SIZE(result.ptr());
    {
      py::gil_scoped_release release;
      shardseal::read_plaintext(*keys_, message, offset, data, len, n);
    }
    return result;
  }

  size_t open_chunks_into(uint64_t first_chunk, py::handle ciphertext, py::handle out,
                          bool final, int threads) const {
    Buffer c(ciphertext, "ciphertext"), o(out, "out", true);
    size_t needed = shardseal::opened_size(c.size(), final);
    o.require_room(needed);
    unsigned n = thread_count(threads);
    run_released(c.size(), [&] {
      keys_->open_chunks(first_chunk, c.data(), c.size(), final, o.data(), n);
    });
    return needed;
  }

 private:
  std::unique_ptr<shardseal::MessageKeys> keys_;
};

shardseal::Kernel parse_kernel(const std::string& name) {
  try {
    return shardseal::kernel_from_name(name);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// name -> None when the kernel runs here, else the reason it does not.
py::dict kernel_status() {
  py::dict status;
  for (auto k : {shardseal::Kernel::kOpenSsl, shardseal::Kernel::kIpsecMb}) {
    std::string reason;
    if (shardseal::kernel_available(k, &reason))
      status[shardseal::kernel_name(k)] = py::none();
    else
      status[shardseal::kernel_name(k)] = reason;
  }
  return status;
}

void select_kernel(const std::string& name) {
  shardseal::Kernel k = parse_kernel(name);
  std::string reason;
  if (!shardseal::kernel_available(k, &reason))
    throw py::value_error("AES-GCM kernel " + name + " is not available: " + reason);
  shardseal::select_kernel(k);
}

void bench_copy(py::handle src, py::handle dst, int threads) {
  Buffer s(src, "src"), d(dst, "dst", true);
  d.require_room(s.size());
  unsigned n = thread_count(threads);
  py::gil_scoped_release release;
  shardseal::bench_copy(s.data(), d.data(), s.size(), n);
}

size_t bench_gcm_seal(const std::string& kernel, py::handle src, py::handle dst, int threads) {
  shardseal::Kernel k = parse_kernel(kernel);
  Buffer s(src, "src"), d(dst, "dst", true);
  size_t needed = shardseal::bench_gcm_sealed_size(s.size());
  d.require_room(needed);
  unsigned n = thread_count(threads);
  py::gil_scoped_release release;
  shardseal::bench_gcm_seal(k, s.data(), d.data(), s.size(), n);
  return needed;
}

void translate_errors(std::exception_ptr p) {
  auto raise = [](const char* cls, const char* what) {
    py::object type = py::module_::import("shardseal.errors").attr(cls);
    PyErr_SetString(type.ptr(), what);
  };
  try {
    if (p) std::rethrow_exception(p);
  } catch (const shardseal::AuthenticationFailure& e) {
    raise("AuthenticationError", e.what());
  } catch (const shardseal::TruncatedMessage& e) {
    raise("TruncatedError", e.what());
  } catch (const shardseal::IoFailure& e) {
    errno = e.error;
    PyErr_SetFromErrno(PyExc_OSError);
  } catch (const shardseal::CryptoLibraryError& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "shardseal native core: Cobblestone (C2SP chunked AES-GCM) on OpenSSL EVP or ipsec-mb.";
  py::register_exception_translator(translate_errors);

  m.attr("CHUNK_SIZE") = shardseal::kChunkSize;
  m.attr("TAG_SIZE") = shardseal::kTagSize;
  m.attr("SALT_SIZE") = shardseal::kSaltSize;
  m.attr("COMMITMENT_SIZE") = shardseal::kCommitmentSize;

  m.def(
      "kernel", [] { return std::string(shardseal::kernel_name(shardseal::current_kernel())); },
      "The AES-GCM kernel in use: 'ipsec-mb' or 'openssl'.");
  m.def("kernel_status", &kernel_status,
        "Every AES-GCM kernel: name -> None when it runs here, else why not.");
  m.def("select_kernel", &select_kernel, py::arg("name"),
        "Uses this AES-GCM kernel for new keys; ValueError when it is not available.");
  m.def(
      "kernel_detail",
      [](const std::string& name) { return shardseal::kernel_detail(parse_kernel(name)); },
      py::arg("name"), "A kernel's library and code path, e.g. 'ipsec-mb 1.3.0, ...'.");
  m.def("bench_copy", &bench_copy, py::arg("src"), py::arg("dst"), py::arg("threads"),
        "Benchmark ceiling: copies src into dst in 16 KiB pieces on `threads` threads.");
  m.def("bench_gcm_seal", &bench_gcm_seal, py::arg("kernel"), py::arg("src"), py::arg("dst"),
        py::arg("threads"),
        "Benchmark ceiling: raw AES-256-GCM of src in 16 KiB chunks (fixed key, no Cobblestone "
        "derivation) with one kernel; returns the bytes written to dst.");

  m.def("default_threads", &shardseal::available_cpus,
        "Number of CPUs this process may run on.");
  m.def(
      "hkdf_sha512",
      [](py::handle ikm, py::handle salt, py::handle info, size_t length) {
        Buffer i(ikm, "ikm"), s(salt, "salt"), f(info, "info");
        shardseal::SecretBytes out(length);
        shardseal::hkdf_sha512(i.data(), i.size(), s.data(), s.size(), f.data(), f.size(),
                               out.data(), length);
        return to_bytes(out);
      },
      py::arg("ikm"), py::arg("salt"), py::arg("info"), py::arg("length"),
      "HKDF-SHA512 (extract and expand).");
  m.def(
      "hkdf_expand_sha512",
      [](py::handle prk, py::handle info, size_t length) {
        Buffer p(prk, "prk"), f(info, "info");
        shardseal::SecretBytes out(length);
        shardseal::hkdf_expand_sha512(p.data(), p.size(), f.data(), f.size(), out.data(),
                                      length);
        return to_bytes(out);
      },
      py::arg("prk"), py::arg("info"), py::arg("length"), "HKDF-Expand-SHA512.");
  m.def(
      "gcm_seal",
      [](py::handle key, py::handle nonce, py::handle aad, py::handle plaintext) {
        Buffer k(key, "key"), n(nonce, "nonce"), a(aad, "aad"), p(plaintext, "plaintext");
        n.require_size(shardseal::kGcmNonceSize, "nonce");
        return to_bytes(shardseal::gcm_seal(k.data(), k.size(), n.data(), a.data(), a.size(),
                                            p.data(), p.size()));
      },
      py::arg("key"), py::arg("nonce"), py::arg("aad"), py::arg("plaintext"),
      "Single-message AES-GCM with a 96-bit nonce; returns ciphertext || tag.");
  m.def(
      "gcm_open",
      [](py::handle key, py::handle nonce, py::handle aad, py::handle ciphertext) {
        Buffer k(key, "key"), n(nonce, "nonce"), a(aad, "aad"), c(ciphertext, "ciphertext");
        n.require_size(shardseal::kGcmNonceSize, "nonce");
        return to_bytes(shardseal::gcm_open(k.data(), k.size(), n.data(), a.data(), a.size(),
                                            c.data(), c.size()));
      },
      py::arg("key"), py::arg("nonce"), py::arg("aad"), py::arg("ciphertext"),
      "Opens ciphertext || tag; raises AuthenticationError.");
  m.def("seal_into", &seal_into, py::arg("suite"), py::arg("key"), py::arg("salt"),
        py::arg("context"), py::arg("plaintext"), py::arg("out"), py::arg("threads"),
        "Seals a whole Cobblestone message into out; returns the bytes written.");
  m.def("open_into", &open_into, py::arg("suite"), py::arg("key"), py::arg("context"),
        py::arg("message"), py::arg("out"), py::arg("threads"),
        "Opens a whole Cobblestone message into out; returns the plaintext size.");
  m.def("seal", &seal, py::arg("suite"), py::arg("key"), py::arg("salt"), py::arg("context"),
        py::arg("plaintext"), py::arg("threads"), py::arg("prefix"),
        "Returns prefix || the sealed Cobblestone message.");
  m.def("open", &open, py::arg("suite"), py::arg("key"), py::arg("context"),
        py::arg("message"), py::arg("threads"), "Returns the plaintext of a whole message.");

  py::class_<PyMessageKeys>(m, "MessageKeys",
                            "Per-message Cobblestone keys for sealing and opening chunk runs.")
      .def(py::init<int, py::handle, py::handle, py::handle>(), py::arg("suite"),
           py::arg("key"), py::arg("salt"), py::arg("context"))
      .def_property_readonly("commitment", &PyMessageKeys::commitment)
      .def("commitment_matches", &PyMessageKeys::commitment_matches, py::arg("candidate"))
      .def("seal_chunks_into", &PyMessageKeys::seal_chunks_into, py::arg("first_chunk"),
           py::arg("plaintext"), py::arg("out"), py::arg("final"), py::arg("threads"))
      .def("open_chunks_into", &PyMessageKeys::open_chunks_into, py::arg("first_chunk"),
           py::arg("ciphertext"), py::arg("out"), py::arg("final"), py::arg("threads"))
      .def("read_into", &PyMessageKeys::read_into, py::arg("fd"), py::arg("data_start"),
           py::arg("plaintext_size"), py::arg("offset"), py::arg("out"), py::arg("threads"),
           "Reads plaintext at offset into out from a message stored in file fd (chunk 0 at "
           "data_start): one pread per run of chunks, every chunk touched authenticated; out "
           "zeroed on failure. Returns the bytes written (fewer only at the end).")
      .def("read", &PyMessageKeys::read, py::arg("fd"), py::arg("data_start"),
           py::arg("plaintext_size"), py::arg("offset"), py::arg("size"), py::arg("threads"),
           "As read_into, returning a new bytes object of up to size bytes.");
}
