#pragma once
// A fixed-size, zero-initialised array for the per-(stage, micro-batch)
// tables of the checker, the walker and the simulator.
//
// Why not std::vector: those tables reach hundreds of megabytes on large
// schedules, and on virtual machines most of their cost is the first touch of
// each 4 KiB page. Large arrays here come straight from mmap (already zero, so
// no fill pass) and ask for transparent huge pages, which cuts the page faults
// by up to 512x where the kernel allows it (THP "madvise" mode). Elsewhere
// it still works, just without the speed-up.
#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace dualpipe {

template <class T>
class BigArray {
  static_assert(std::is_trivially_copyable_v<T>, "BigArray holds plain values whose zero bytes mean zero");

 public:
  BigArray() = default;
  explicit BigArray(std::size_t n) : n_(n) {
    bytes_ = n * sizeof(T);
    if (bytes_ >= kMapThreshold) {
      void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
      madvise(p, bytes_, MADV_HUGEPAGE);
#endif
      data_ = static_cast<T*>(p);
      mapped_ = true;
    } else if (n) {
      data_ = static_cast<T*>(::operator new(bytes_));
      std::fill_n(reinterpret_cast<unsigned char*>(data_), bytes_, 0);
    }
  }
  BigArray(BigArray&& o) noexcept { swap(o); }
  BigArray& operator=(BigArray&& o) noexcept {
    BigArray tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  BigArray(const BigArray&) = delete;
  BigArray& operator=(const BigArray&) = delete;
  ~BigArray() {
    if (mapped_)
      munmap(data_, bytes_);
    else
      ::operator delete(data_);
  }

  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  std::size_t size() const { return n_; }

 private:
  static constexpr std::size_t kMapThreshold = std::size_t{1} << 20;
  void swap(BigArray& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(n_, o.n_);
    std::swap(bytes_, o.bytes_);
    std::swap(mapped_, o.mapped_);
  }
  T* data_ = nullptr;
  std::size_t n_ = 0, bytes_ = 0;
  bool mapped_ = false;
};

}  // namespace dualpipe
