// The per-kind implementation interface behind BoundPattern, and the helpers the kinds
// share. Internal: the public surface is include/attnkit/pattern.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "attnkit/pattern.hpp"

namespace attnkit {

class PatternImpl {
 public:
  PatternImpl(int64_t q_len, int64_t kv_len) : q_len_(q_len), kv_len_(kv_len), offset_(kv_len - q_len) {}
  virtual ~PatternImpl() = default;

  virtual bool allow(int64_t q, int64_t k) const = 0;
  // Appends the allowed keys of row q (any order, may overlap); the caller normalises.
  virtual void append_keys(int64_t q, std::vector<KeyInterval>& out) const = 0;

  // The number of allowed keys of row q when the kind knows it in O(1), else -1 (then it is
  // counted from append_keys, which for strided kinds lists O(p / stride) intervals).
  virtual int64_t count_keys(int64_t q) const { return -1; }

  // Window-shaped kinds (none, causal, window) see one contiguous key interval per row
  // whose ends move monotonically with the row; that makes classification O(1).
  virtual bool is_window() const { return false; }

  int64_t q_len() const { return q_len_; }
  int64_t kv_len() const { return kv_len_; }
  int64_t position(int64_t q) const { return q + offset_; }

 protected:
  int64_t q_len_, kv_len_, offset_;
};

// Sorts intervals, drops empty ones and merges overlapping or adjacent ones.
void normalize_intervals(std::vector<KeyInterval>& v);

// Keys [lo(p), hi(p)) for the window kinds; left/right < 0 mean unbounded.
class WindowImpl final : public PatternImpl {
 public:
  WindowImpl(int64_t q_len, int64_t kv_len, int64_t left, int64_t right)
      : PatternImpl(q_len, kv_len), left_(left), right_(right) {}
  bool allow(int64_t q, int64_t k) const override {
    const int64_t p = position(q);
    return k >= lo(p) && k < hi(p);
  }
  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t p = position(q);
    if (lo(p) < hi(p)) out.push_back({lo(p), hi(p)});
  }
  bool is_window() const override { return true; }
  TileClass classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;
  int64_t lo(int64_t p) const;
  int64_t hi(int64_t p) const;

 private:
  int64_t left_, right_;
};

std::shared_ptr<const PatternImpl> make_impl(const Pattern& p, int64_t q_len, int64_t kv_len,
                                             const std::function<bool(int64_t, int64_t)>* predicate);

}  // namespace attnkit
