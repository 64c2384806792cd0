// One decode step of the slot cache's attention (mathpo/sampling/slots.py), fused into one CPU op:
// for each active row, its new key/value written at its own position, then one softmax over [its prompt slot | its own generated tokens], read in place
// (each row only up to its own length: no masks, no padding, no merge of two partial results), and
// its log-sum-exp (slots.py merges a common prefix, attended for all rows at once, by it).
// Tasks are (prompt slot, kv head) pairs; a task runs the rows of its prompt one after another, so
// the prompt's keys/values are read from memory once and from cache for the other samples. Per row
// two passes: every score first (one max and one exp sweep per row, not per block), then the
// values. Built at first use by mathpo/sampling/kernel.py (torch.utils.cpp_extension).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include <algorithm>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int W = Vec::size();  // positions per block: one vector of scores
constexpr int MAX_GROUP = 16;   // query heads per kv head
constexpr int MAX_NV = 16;      // head_dim / W
constexpr int PREFETCH = 2;     // blocks ahead
constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// D = NV * W floats, widened from the cache's dtype.
template <typename T, int NV>
inline void load(const T* p, Vec* out) {
  if constexpr (std::is_same_v<T, float>) {
    for (int i = 0; i < NV; ++i) out[i] = Vec::loadu(p + i * W);
  } else {
    for (int i = 0; i < NV; i += 2) {
      auto [a, b] = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p + i * W));
      out[i] = a;
      out[i + 1] = b;
    }
  }
}

// Positions [0, nb) of a block as float32: the cache itself when it is float32, else widened into
// buf once (then read by every query from L1).
template <typename T, int NV>
inline const float* widen(const T* src, int nb, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    Vec x[NV];
    for (int j = 0; j < nb; ++j) {
      load<T, NV>(src + j * NV * W, x);
      for (int i = 0; i < NV; ++i) x[i].store(buf + (j * NV + i) * W);
    }
    return buf;
  }
}

// Ahead of use, so that reading memory overlaps the arithmetic (a run's two streams are too few
// for the hardware prefetcher alone to keep the cores fed).
template <typename T>
inline void prefetch(const T* base, int64_t j0, int64_t len, int64_t D) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  const int64_t end = std::min<int64_t>(len, j0 + (PREFETCH + 1) * W);
  for (int64_t j = j0 + PREFETCH * W; j < end; ++j)
    for (int64_t off = 0; off < D * (int64_t)sizeof(T); off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(base + j * D) + off, _MM_HINT_T0);
#endif
}

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
  alignas(64) float out[W];
  for (int i = 0; i < W; ++i) out[i] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, x[i]);
  return Vec::loadu(out);
#endif
}

template <typename T>
struct Run {
  const T *K, *V;
  int64_t len;
};

// One query head group of one row: G queries (q: fp32, scaled; qb: the raw bf16 query where
// vdpbf16ps takes it), its runs of keys/values in order, s: G x cap floats of scratch.
template <typename T, int NV>
struct Row {
  const Vec (*q)[NV];
  const T* qraw;
  float scale;
  int G;
  float* s;
  int64_t cap;

  // Pass 1: every score of one run, at s[g * cap + off ...] (a last block's extra lanes land past
  // the run and are overwritten by the next run or masked by the caller).
  void scores(const T* K, int64_t len, int64_t off) const {
    constexpr int D = NV * W;
    alignas(64) float kbuf[W * D];
    for (int64_t j0 = 0; j0 < len; j0 += W) {
      const int nb = (int)std::min<int64_t>(W, len - j0);
      prefetch(K, j0, len, D);
#if defined(__AVX512BF16__)
      if constexpr (std::is_same_v<T, at::BFloat16>) {  // bf16 pairs multiplied and summed in fp32
        for (int g = 0; g < G; ++g) {
          __m512bh qb[NV / 2];
          for (int i = 0; i < NV / 2; ++i) qb[i] = (__m512bh)_mm512_loadu_si512(qraw + g * D + i * 2 * W);
          Vec part[W];
          for (int j = 0; j < W; ++j) {
            __m512 sum = _mm512_setzero_ps();
            if (j < nb)
              for (int i = 0; i < NV / 2; ++i)
                sum = _mm512_dpbf16_ps(sum, qb[i], (__m512bh)_mm512_loadu_si512(K + (j0 + j) * D + i * 2 * W));
            part[j] = sum;
          }
          (reduce_lanes(part) * Vec(scale)).store(s + g * cap + off + j0);
        }
        continue;
      }
#endif
      const float* k = widen<T, NV>(K + j0 * D, nb, kbuf);
      for (int g = 0; g < G; ++g) {
        Vec part[W];  // per position: the lane-wise products summed over D
        for (int j = 0; j < W; ++j) {
          if (j >= nb) {
            part[j] = Vec(0.f);
            continue;
          }
          Vec sum = q[g][0] * Vec::loadu(k + j * D);
          for (int i = 1; i < NV; ++i) sum = at::vec::fmadd(q[g][i], Vec::loadu(k + j * D + i * W), sum);
          part[j] = sum;
        }
        reduce_lanes(part).store(s + g * cap + off + j0);
      }
    }
  }

  // Pass 2: acc[g] += weight * value over one run's positions. Each value row is widened once, in
  // registers, for up to GMAX queries at a time (not widened into a buffer that every query reads
  // back); per accumulator the same fused multiply-adds in the same order, so the same bits.
  static constexpr int REGS = Vec::size() == 16 ? 32 : 16;  // vector registers: AVX512 / narrower
  static constexpr int GMAX = std::max(1, std::min(4, (REGS - NV - 1) / NV));

  template <int GB>
  void values_of(const T* V, int64_t len, int64_t off, int g0, Vec (*acc)[NV]) const {
    constexpr int D = NV * W;
    Vec a[GB][NV];
    const float* w[GB];
    for (int g = 0; g < GB; ++g) {
      w[g] = s + (g0 + g) * cap + off;
      for (int i = 0; i < NV; ++i) a[g][i] = acc[g0 + g][i];
    }
    for (int64_t j = 0; j < len; ++j) {
      if (j % W == 0) prefetch(V, j, len, D);
      Vec v[NV];
      load<T, NV>(V + j * D, v);
      for (int g = 0; g < GB; ++g) {
        const Vec wj(w[g][j]);
        for (int i = 0; i < NV; ++i) a[g][i] = at::vec::fmadd(wj, v[i], a[g][i]);
      }
    }
    for (int g = 0; g < GB; ++g)
      for (int i = 0; i < NV; ++i) acc[g0 + g][i] = a[g][i];
  }

  void values(const T* V, int64_t len, int64_t off, Vec (*acc)[NV]) const {
    for (int g0 = 0; g0 < G; g0 += GMAX) {
      switch (std::min(GMAX, G - g0)) {
        case 1: values_of<1>(V, len, off, g0, acc); break;
        case 2: values_of<2>(V, len, off, g0, acc); break;
        case 3: values_of<3>(V, len, off, g0, acc); break;
        default: values_of<4>(V, len, off, g0, acc); break;
      }
    }
  }

  // Softmax over all runs' positions, then the weighted values: out (G x D) and lse (G).
  void attend(const Run<T>* runs, int nruns, T* out, float* lse) const {
    constexpr int D = NV * W;
    int64_t total = 0;
    for (int r = 0; r < nruns; ++r) {
      scores(runs[r].K, runs[r].len, total);
      total += runs[r].len;
    }
    const int64_t padded = (total + W - 1) / W * W;
    Vec acc[MAX_GROUP][NV];
    float l[MAX_GROUP], m[MAX_GROUP];
    for (int g = 0; g < G; ++g) {
      float* sg = s + g * cap;
      for (int64_t j = total; j < padded; ++j) sg[j] = NEG_INF;
      Vec mv(NEG_INF);
      for (int64_t j = 0; j < padded; j += W) mv = at::vec::maximum(mv, Vec::loadu(sg + j));
      m[g] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, mv);
      Vec lv(0.f);
      for (int64_t j = 0; j < padded; j += W) {
        const Vec e = (Vec::loadu(sg + j) - Vec(m[g])).exp_u20();
        e.store(sg + j);
        lv = lv + e;
      }
      l[g] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, lv);
      for (int i = 0; i < NV; ++i) acc[g][i] = Vec(0.f);
    }
    int64_t off = 0;
    for (int r = 0; r < nruns; ++r) {
      values(runs[r].V, runs[r].len, off, acc);
      off += runs[r].len;
    }
    alignas(64) float tmp[D];
    for (int g = 0; g < G; ++g) {
      const Vec inv(1.f / l[g]);
      for (int i = 0; i < NV; ++i) (acc[g][i] * inv).store(tmp + i * W);
      for (int d = 0; d < D; ++d) out[g * D + d] = static_cast<T>(tmp[d]);
      lse[g] = m[g] + std::log(l[g]);
    }
  }
};

template <typename T, int NV>
void kernel(const at::Tensor& q, const at::Tensor& key_new, const at::Tensor& value_new, at::Tensor& keys,
            at::Tensor& values, const at::Tensor& own_len,
            const at::Tensor& pkeys, const at::Tensor& pvalues, const at::Tensor& plen,
            const at::Tensor& order, const at::Tensor& starts, double scale, at::Tensor& out,
            at::Tensor& lse) {
  constexpr int D = NV * W;
  const int64_t KV = q.size(1), G = q.size(2);
  const int64_t Lg = keys.size(2), Lp = pkeys.size(2), P = plen.size(0);
  const T* qp = q.data_ptr<T>();
  T *kp = keys.data_ptr<T>(), *vp = values.data_ptr<T>();
  const T *knp = key_new.data_ptr<T>(), *vnp = value_new.data_ptr<T>();
  const T *pkp = pkeys.data_ptr<T>(), *pvp = pvalues.data_ptr<T>();
  const int64_t *own = own_len.data_ptr<int64_t>(), *pl = plen.data_ptr<int64_t>();
  const int64_t *ord = order.data_ptr<int64_t>(), *st0 = starts.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  float* lp = lse.data_ptr<float>();
  const int64_t cap = Lp + Lg + W;  // a row's scores, with room for a last block's extra lanes
  // Tasks differ in size (rows left per prompt, their lengths): handed out one at a time, not split
  // in equal halves as at::parallel_for would.
#pragma omp parallel num_threads(at::get_num_threads())
  {
    std::vector<float> scratch(G * cap);
    Vec qv[MAX_GROUP][NV];
    alignas(64) float tmp[D];
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < P * KV; ++t) {
      const int64_t slot = t / KV, h = t % KV;
      for (int64_t i = st0[slot]; i < st0[slot + 1]; ++i) {
        const int64_t r = ord[i], base = (r * KV + h) * G;
        // this task is the only one touching row r's head h: no other thread writes or reads it
        std::copy_n(knp + (r * KV + h) * D, D, kp + ((r * KV + h) * Lg + own[r] - 1) * D);
        std::copy_n(vnp + (r * KV + h) * D, D, vp + ((r * KV + h) * Lg + own[r] - 1) * D);
        for (int g = 0; g < G; ++g) {
          for (int d = 0; d < D; ++d) tmp[d] = static_cast<float>(qp[(base + g) * D + d]) * (float)scale;
          for (int k = 0; k < NV; ++k) qv[g][k] = Vec::loadu(tmp + k * W);
        }
        const Run<T> runs[2] = {{pkp + (slot * KV + h) * Lp * D, pvp + (slot * KV + h) * Lp * D, pl[slot]},
                                {kp + (r * KV + h) * Lg * D, vp + (r * KV + h) * Lg * D, own[r]}};
        Row<T, NV>{qv, qp + base * D, (float)scale, (int)G, scratch.data(), cap}.attend(runs, 2, op + base * D, lp + base);
      }
    }
  }
}

// q [B, KV, G, D]; key_new/value_new [B, KV, D], written into keys/values [S >= B, KV, Lg, D] at
// position own_len[b] - 1 of row b, whose own tokens are then positions [0, own_len[b]);
// pkeys/pvalues [Ps >= P, KV, Lp, D] (prompt slot p's tokens, plen[p] of them); order: rows
// grouped by prompt slot, slot p's rows at order[starts[p]:starts[p+1]]; scale multiplies q.k.
// Returns the output [B, KV, G, D] and its log-sum-exp [B, KV, G] (float32).
std::tuple<at::Tensor, at::Tensor> decode_attention(const at::Tensor& q, const at::Tensor& key_new,
                                                    const at::Tensor& value_new, at::Tensor& keys,
                                                    at::Tensor& values, const at::Tensor& own_len,
                                                    const at::Tensor& pkeys, const at::Tensor& pvalues,
                                                    const at::Tensor& plen, const at::Tensor& order,
                                                    const at::Tensor& starts, double scale) {
  TORCH_CHECK(q.dim() == 4 && q.is_contiguous() && keys.is_contiguous() && values.is_contiguous() &&
                  pkeys.is_contiguous() && pvalues.is_contiguous() && key_new.is_contiguous() &&
                  value_new.is_contiguous() && key_new.numel() == q.size(0) * q.size(1) * q.size(3) &&
                  value_new.numel() == key_new.numel(),
              "decode_attention: contiguous 4-d tensors expected");
  TORCH_CHECK(q.size(2) <= MAX_GROUP, "decode_attention: at most ", MAX_GROUP, " query heads per kv head");
  for (const auto& t : {own_len, plen, order, starts})
    TORCH_CHECK(t.scalar_type() == at::kLong && t.is_contiguous(), "decode_attention: int64 indices expected");
  const int64_t D = q.size(3), nv = D / W;
  TORCH_CHECK(D % (2 * W) == 0 && nv <= MAX_NV, "decode_attention: head_dim ", D, " not supported");
  auto out = at::empty_like(q);
  auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  auto by_width = [&](auto tag) {
    using T = decltype(tag);
    switch (nv) {
      case 2: kernel<T, 2>(q, key_new, value_new, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      case 4: kernel<T, 4>(q, key_new, value_new, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      case 8: kernel<T, 8>(q, key_new, value_new, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      case 16: kernel<T, 16>(q, key_new, value_new, keys, values, own_len, pkeys, pvalues, plen, order, starts, scale, out, lse); break;
      default: TORCH_CHECK(false, "decode_attention: head_dim ", D, " not supported");
    }
  };
  switch (q.scalar_type()) {
    case at::kFloat: by_width(float{}); break;
    case at::kBFloat16: by_width(at::BFloat16{}); break;
    case at::kHalf: by_width(at::Half{}); break;
    default: TORCH_CHECK(false, "decode_attention: float32, bfloat16 or float16 expected");
  }
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY(mathpo, m) {
  m.def("decode_attention(Tensor q, Tensor key_new, Tensor value_new, Tensor(a!) keys, Tensor(b!) values, "
        "Tensor own_len, Tensor pkeys, Tensor pvalues, Tensor plen, Tensor order, Tensor starts, float scale) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mathpo, CPU, m) { m.impl("decode_attention", &decode_attention); }
