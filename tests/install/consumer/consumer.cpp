// A consumer of an installed attnkit: one causal attend() call on three keys and two
// queries, checked against the softmax computed by hand, and the version macros against
// the version the package manager reported (EXPECTED_VERSION, set by the build).
// Exit 0 when everything agrees, 1 with a message otherwise.
#include <attnkit/attnkit.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"<the package's version>\""
#endif

int main() {
  int failures = 0;
  auto check = [&](const char* what, double got, double want) {
    if (std::fabs(got - want) > 1e-5 * (1 + std::fabs(want))) {
      std::printf("FAIL %s: got %.9g, want %.9g\n", what, got, want);
      ++failures;
    }
  };
  if (std::strcmp(ATTNKIT_VERSION_STRING, EXPECTED_VERSION) != 0) {
    std::printf("FAIL version: header says %s, package says %s\n", ATTNKIT_VERSION_STRING, EXPECTED_VERSION);
    ++failures;
  }

  // Q [1, 1, 2, 4], K [1, 1, 3, 4], V [1, 1, 3, 2]. d_qk = 4, so the default scale is 1/2.
  const std::vector<float> q = {1, 0, 0, 0,   1, 1, 0, 0};
  const std::vector<float> k = {0, 0, 0, 0,   2, 0, 0, 0,   0, 2, 0, 0};
  const std::vector<float> v = {1, 0,   0, 1,   2, 2};
  attnkit::TensorView Q(q.data(), attnkit::DType::f32, {1, 1, 2, 4});
  attnkit::TensorView K(k.data(), attnkit::DType::f32, {1, 1, 3, 4});
  attnkit::TensorView V(v.data(), attnkit::DType::f32, {1, 1, 3, 2});
  attnkit::AttendOptions opts;
  opts.pattern = attnkit::Pattern::causal();
  const attnkit::Output out = attnkit::attend(Q, K, V, opts);
  const attnkit::TensorView o = out.o.view(), lse = out.lse.view();

  // Causal is bottom-right aligned: with 2 queries and 3 keys, query 0 sits at position 1
  // and sees keys 0 and 1 (scores 0, 1); query 1 sees keys 0, 1, 2 (scores 0, 1, 1).
  const double e = std::exp(1.0);
  // Weights exp(score) / sum: row 0 is (1, e) / (1 + e), row 1 is (1, e, e) / (1 + 2e).
  check("o[0][0]", o.get(0, 0, 0, 0), (1 * 1 + e * 0) / (1 + e));
  check("o[0][1]", o.get(0, 0, 0, 1), (1 * 0 + e * 1) / (1 + e));
  check("lse[0]", lse.get(0, 0, 0), std::log(1 + e));
  check("o[1][0]", o.get(0, 0, 1, 0), (1 * 1 + e * 0 + e * 2) / (1 + 2 * e));
  check("o[1][1]", o.get(0, 0, 1, 1), (1 * 0 + e * 1 + e * 2) / (1 + 2 * e));
  check("lse[1]", lse.get(0, 0, 1), std::log(1 + 2 * e));

  if (failures == 0) std::printf("consumer: attnkit %s, causal attend() matches the hand computation\n", ATTNKIT_VERSION_STRING);
  return failures == 0 ? 0 : 1;
}
