// One decode step of the slot cache's attention (mathpo/sampling/slots.py), fused into one CPU op:
// for each active row, one softmax over [its prompt slot | its own generated tokens], read in place
// (each row only up to its own length: no masks, no padding, no merge of two partial results), and
// its log-sum-exp (slots.py merges a common prefix, attended for all rows at once, by it). Tasks are (prompt slot, kv head) pairs; a task runs the rows of its prompt one after
// another, so the prompt's keys/values are read from memory once and from cache for the other
// samples. Built at first use by mathpo/sampling/kernel.py (torch.utils.cpp_extension).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

namespace {

using Vec = at::vec::Vectorized<float>;
alignas(64) constexpr float kIota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
constexpr int MAX_GROUP = 16;  // query heads per kv head

// D = NV * Vec::size() floats, widened from the cache's dtype.
template <typename T, int NV>
inline void load(const T* p, Vec* out) {
  if constexpr (std::is_same_v<T, float>) {
    for (int i = 0; i < NV; ++i) out[i] = Vec::loadu(p + i * Vec::size());
  } else {
    using BVec = at::vec::Vectorized<T>;
    for (int i = 0; i < NV; i += 2) {
      auto [a, b] = at::vec::convert_to_float<T>(BVec::loadu(p + i * Vec::size()));
      out[i] = a;
      out[i + 1] = b;
    }
  }
}

template <int NV>
struct State {
  Vec acc[MAX_GROUP][NV];
  float m[MAX_GROUP], l[MAX_GROUP];
};

// Lane i of the result: the sum of x[i]'s lanes (a transpose-and-add: ~3 instructions per sum
// where a horizontal reduction of each vector takes ~8).
inline Vec reduce_lanes(const Vec* x) {
#if defined(CPU_CAPABILITY_AVX512)
  __m512 t[8], u[4], v[2];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = x[2 * i], b = x[2 * i + 1];
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 2; ++i)
    v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
#else
  alignas(64) float out[Vec::size()];
  for (int i = 0; i < Vec::size(); ++i)
    out[i] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, x[i]);
  return Vec::loadu(out);
#endif
}

// Online softmax over positions [0, len) of one (keys, values) run, `G` queries at once, in blocks
// of Vec::size() positions (one vector of scores per query).
template <typename T, int NV>
inline void run(const T* K, const T* V, int64_t len, int64_t D, const Vec (*q)[NV], int G, State<NV>& st) {
  constexpr int W = Vec::size();
  Vec part[MAX_GROUP][W];  // per query, per position: the lane-wise products summed over D
  alignas(64) float p[MAX_GROUP][W];
  for (int64_t j0 = 0; j0 < len; j0 += W) {
    const int nb = (int)std::min<int64_t>(W, len - j0);
    for (int j = 0; j < nb; ++j) {
      Vec k[NV];
      load<T, NV>(K + (j0 + j) * D, k);
      for (int g = 0; g < G; ++g) {
        Vec sum = q[g][0] * k[0];
        for (int i = 1; i < NV; ++i) sum = at::vec::fmadd(q[g][i], k[i], sum);
        part[g][j] = sum;
      }
    }
    const Vec valid = Vec::loadu(kIota) < Vec(static_cast<float>(nb));  // all ones where j < nb
    for (int g = 0; g < G; ++g) {
      for (int j = nb; j < W; ++j) part[g][j] = Vec(0.f);
      const Vec sv = Vec::blendv(Vec(-std::numeric_limits<float>::infinity()), reduce_lanes(part[g]), valid);
      const float mb = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, sv);
      const float mn = std::max(st.m[g], mb);
      const float corr = std::exp(st.m[g] - mn);  // 0 at the first block (m = -inf)
      const Vec e = (sv - Vec(mn)).exp_u20();
      e.store(p[g]);
      st.l[g] = st.l[g] * corr + at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, e);
      st.m[g] = mn;
      if (corr != 1.f)
        for (int i = 0; i < NV; ++i) st.acc[g][i] = st.acc[g][i] * Vec(corr);
    }
    for (int j = 0; j < nb; ++j) {
      Vec v[NV];
      load<T, NV>(V + (j0 + j) * D, v);
      for (int g = 0; g < G; ++g) {
        const Vec w(p[g][j]);
        for (int i = 0; i < NV; ++i) st.acc[g][i] = at::vec::fmadd(w, v[i], st.acc[g][i]);
      }
    }
  }
}

template <typename T, int NV>
void kernel(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& own_len,
            const at::Tensor& pkeys, const at::Tensor& pvalues, const at::Tensor& plen,
            const at::Tensor& order, const at::Tensor& starts, double scale, at::Tensor& out,
            at::Tensor& lse) {
  const int64_t KV = q.size(1), G = q.size(2), D = q.size(3);
  const int64_t Lg = keys.size(2), Lp = pkeys.size(2);
  const int64_t P = plen.size(0);
  const T* qp = q.data_ptr<T>();
  const T *kp = keys.data_ptr<T>(), *vp = values.data_ptr<T>();
  const T *pkp = pkeys.data_ptr<T>(), *pvp = pvalues.data_ptr<T>();
  const int64_t *own = own_len.data_ptr<int64_t>(), *pl = plen.data_ptr<int64_t>();
  const int64_t *ord = order.data_ptr<int64_t>(), *st0 = starts.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  float* lp = lse.data_ptr<float>();
  at::parallel_for(0, P * KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = t / KV, h = t % KV;
      for (int64_t i = st0[slot]; i < st0[slot + 1]; ++i) {
        const int64_t r = ord[i];
        Vec qv[MAX_GROUP][NV];
        alignas(64) float tmp[NV * Vec::size()];
        for (int g = 0; g < G; ++g) {
          const T* src = qp + ((r * KV + h) * G + g) * D;
          for (int64_t d = 0; d < D; ++d) tmp[d] = static_cast<float>(src[d]) * (float)scale;
          for (int k = 0; k < NV; ++k) qv[g][k] = Vec::loadu(tmp + k * Vec::size());
        }
        State<NV> s;
        for (int g = 0; g < G; ++g) {
          s.m[g] = -std::numeric_limits<float>::infinity();
          s.l[g] = 0.f;
          for (int k = 0; k < NV; ++k) s.acc[g][k] = Vec(0.f);
        }
        run<T, NV>(pkp + (slot * KV + h) * Lp * D, pvp + (slot * KV + h) * Lp * D, pl[slot], D, qv, G, s);
        run<T, NV>(kp + (r * KV + h) * Lg * D, vp + (r * KV + h) * Lg * D, own[r], D, qv, G, s);
        for (int g = 0; g < G; ++g) {
          const Vec inv(1.f / s.l[g]);
          for (int k = 0; k < NV; ++k) (s.acc[g][k] * inv).store(tmp + k * Vec::size());
          T* dst = op + ((r * KV + h) * G + g) * D;
          for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<T>(tmp[d]);
          lp[(r * KV + h) * G + g] = s.m[g] + std::log(s.l[g]);
        }
      }
    }
  });
}

// q [B, KV, G, D]; keys/values [S >= B, KV, Lg, D] (row b's own tokens, own_len[b] of them);
// pkeys/pvalues [Ps >= P, KV, Lp, D] (prompt slot p's tokens, plen[p] >= 1 of them); order: rows
// grouped by prompt slot, slot p's rows at order[starts[p]:starts[p+1]]; scale multiplies q.k.
// Returns the output [B, KV, G, D] and its log-sum-exp [B, KV, G] (float32).
std::tuple<at::Tensor, at::Tensor> decode_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& own_len, const at::Tensor& pkeys, const at::Tensor& pvalues,
                            const at::Tensor& plen, const at::Tensor& order, const at::Tensor& starts, double scale) {
  TORCH_CHECK(q.dim() == 4 && q.is_contiguous() && keys.is_contiguous() && values.is_contiguous() &&
                  pkeys.is_contiguous() && pvalues.is_contiguous(),
              "decode_attention: contiguous 4-d tensors expected");
  TORCH_CHECK(q.size(2) <= MAX_GROUP, "decode_attention: at most ", MAX_GROUP, " query heads per kv head");
  const int64_t D = q.size(3);
  TORCH_CHECK(D % (2 * Vec::size()) == 0, "decode_attention: head_dim must be a multiple of ", 2 * Vec::size());
  auto out = at::empty_like(q);
  auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  const int64_t nv = D / Vec::size();
  auto run_nv = [&](auto tag) {
    using T = decltype(tag);
    switch (nv) {
      case 2: kernel<T, 2>(q, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      case 4: kernel<T, 4>(q, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      case 8: kernel<T, 8>(q, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      case 16: kernel<T, 16>(q, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      default: TORCH_CHECK(false, "decode_attention: head_dim ", D, " not supported");
    }
  };
  switch (q.scalar_type()) {
    case at::kFloat: run_nv(float{}); break;
    case at::kBFloat16: run_nv(at::BFloat16{}); break;
    case at::kHalf: run_nv(at::Half{}); break;
    default: TORCH_CHECK(false, "decode_attention: float32, bfloat16 or float16 expected");
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY(mathpo, m) {
  m.def("decode_attention(Tensor q, Tensor keys, Tensor values, Tensor own_len, Tensor pkeys, Tensor pvalues, "
        "Tensor plen, Tensor order, Tensor starts, float scale) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mathpo, CPU, m) { m.impl("decode_attention", &decode_attention); }
