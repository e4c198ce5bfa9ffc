// examples/quickstart.cpp — the README's first example: causal attention over four tokens.
// Built and run by the test suite (and against an installed copy by tests/install), so the
// README's code always compiles. Not for: anything beyond showing the call.
#include <attnkit/attnkit.hpp>
#include <cstdio>
#include <vector>

int main() {
  using namespace attnkit;
  // Q, K, V are [batch, heads, tokens, head_dim] = [1, 1, 4, 8]; every score is equal.
  std::vector<float> q(4 * 8, 0.5f), k(4 * 8, 0.5f), v(4 * 8);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i / 8);  // value row j holds j
  TensorView Q(q.data(), DType::f32, {1, 1, 4, 8}), K(k.data(), DType::f32, {1, 1, 4, 8}),
      V(v.data(), DType::f32, {1, 1, 4, 8});
  AttendOptions opts;
  opts.pattern = Pattern::causal();        // token i sees tokens 0..i
  Output out = attend(Q, K, V, opts);      // out.o: [1, 1, 4, 8] f32, out.lse: [1, 1, 4]
  for (int i = 0; i < 4; ++i)              // the mean of 0..i: 0, 0.5, 1, 1.5
    std::printf("row %d: %g\n", i, out.o.view().get(0, 0, i, 0));
}
