// The small ops of a decoder layer fused, each into one CPU op, for the hf backend's own sampling
// copy (mathpo/sampling/fused.py): RMSNorm, SiLU(gate) * up, rotary embedding of q and k, and
// temperature sampling by inverse CDF. Each replaces 2-12 PyTorch ops (and their dispatch and
// temporaries) with one pass over the rows, and computes what the transformers code it replaces
// computes, rounding to the model's dtype where that code rounds (a bf16 multiply of two bf16
// values is exact in fp32 and rounded once), summing in the order PyTorch's CPU sum kernel sums
// (torch_sum) and taking exp from the same vectorized code as PyTorch's SiLU: the same bits
// (tests/test_sampling_fused.py). The sampler's running sum is the exception (see sample). Built
// with decode_attention.cpp by mathpo/sampling/kernel.py.
// No fused multiply-adds where the code writes a multiply and an add: PyTorch rounds the product
// first (GCC would contract x * c + r * s into an FMA in fp32, and the bits would differ).
#pragma GCC optimize("fp-contract=off")

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int W = Vec::size();

template <typename T>
inline float rnd(float x) {  // x rounded to T and back, as a PyTorch op on T tensors leaves it
  return static_cast<float>(static_cast<T>(x));
}

// The sum of H floats in the order PyTorch's CPU sum kernel adds them (aten/src/ATen/native/cpu/
// SumKernel.cpp: vectorized_inner_sum -> row_sum -> multi_row_sum, for a contiguous row): vectors
// of 8 (the kernel runs its AVX2 build on AVX512 CPUs too) taken 4 at a time into 4 accumulators,
// cascaded in 4 levels, then the 4 combined, the scalar tail, and the lanes in order. A sum in
// another order differs in the last bit now and then, and one such bit in a norm changes the
// samples that follow it. Lane-wise float adds are exact IEEE operations, so plain arrays give the
// vector code's bits.
inline float torch_sum(const float* x, int64_t H) {
  constexpr int L = 8, ILP = 4, LEVELS = 4;
  using Lanes = std::array<float, L>;
  auto add = [](Lanes& a, const float* b) {
    for (int l = 0; l < L; ++l) a[l] += b[l];
  };
  const int64_t nvec = H / L, rows = nvec / ILP;
  int64_t log2 = 0;
  while ((int64_t{1} << log2) < rows) ++log2;  // c10's CeilLog2
  const int64_t power = std::max<int64_t>(4, log2 / LEVELS), step = int64_t{1} << power, mask = step - 1;
  Lanes acc[LEVELS][ILP] = {};
  int64_t i = 0;
  while (i + step <= rows) {
    for (int64_t j = 0; j < step; ++j, ++i)
      for (int k = 0; k < ILP; ++k) add(acc[0][k], x + (i * ILP + k) * L);
    for (int j = 1; j < LEVELS; ++j) {
      for (int k = 0; k < ILP; ++k) {
        add(acc[j][k], acc[j - 1][k].data());
        acc[j - 1][k] = Lanes{};
      }
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < rows; ++i)
    for (int k = 0; k < ILP; ++k) add(acc[0][k], x + (i * ILP + k) * L);
  for (int j = 1; j < LEVELS; ++j)
    for (int k = 0; k < ILP; ++k) add(acc[0][k], acc[j][k].data());
  for (int64_t v = rows * ILP; v < nvec; ++v) add(acc[0][0], x + v * L);
  for (int k = 1; k < ILP; ++k) add(acc[0][0], acc[0][k].data());
  float sum = 0.f;
  for (int64_t t = nvec * L; t < H; ++t) sum += x[t];
  for (int l = 0; l < L; ++l) sum += acc[0][0][l];
  return sum;
}

// x [..., H], weight [H]: transformers' LlamaRMSNorm (and Qwen2's): in fp32,
// x * rsqrt(mean(x^2) + eps) (the mean a sum divided by H, as PyTorch's CPU mean is), rounded to
// x's dtype, then times the weight in that dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.is_contiguous() && weight.is_contiguous() && weight.dim() == 1 &&
                  x.size(-1) == weight.size(0) && x.scalar_type() == weight.scalar_type(),
              "rms_norm: contiguous x [..., H] and weight [H] of one dtype expected");
  const int64_t H = x.size(-1), rows = x.numel() / H;
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *wp = weight.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    std::vector<float> w(H);
    for (int64_t i = 0; i < H; ++i) w[i] = static_cast<float>(wp[i]);
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> buf(H), sq(H);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = xp + r * H;
        for (int64_t i = 0; i < H; ++i) {
          buf[i] = static_cast<float>(row[i]);
          sq[i] = buf[i] * buf[i];
        }
        const float inv = 1.f / std::sqrt(torch_sum(sq.data(), H) / static_cast<float>(H) + static_cast<float>(eps));
        for (int64_t j = 0; j < H; ++j)
          op[r * H + j] = static_cast<scalar_t>(w[j] * rnd<scalar_t>(buf[j] * inv));
      }
    });
  });
  return out;
}

// x [..., 2I] = [gate | up] -> [..., I]: transformers' LlamaMLP middle, act_fn(gate) * up with
// SiLU computed as PyTorch's CPU kernel does (x / (1 + exp(-x)) in fp32), rounded to the dtype,
// then the product rounded.
at::Tensor silu_mul(const at::Tensor& x) {
  TORCH_CHECK(x.is_contiguous() && x.size(-1) % 2 == 0, "silu_mul: contiguous [..., 2I] expected");
  const int64_t I = x.size(-1) / 2, rows = x.numel() / (2 * I);
  auto sizes = x.sizes().vec();
  sizes.back() = I;
  auto out = at::empty(sizes, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "silu_mul", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> g(I + W);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t *gate = xp + r * 2 * I, *up = gate + I;
        for (int64_t i = 0; i < I; ++i) g[i] = static_cast<float>(gate[i]);
        int64_t i = 0;
        const Vec one(1.f);
        for (; i + W <= I; i += W) {
          const Vec v = Vec::loadu(g.data() + i);
          (v / (one + v.neg().exp())).store(g.data() + i);
        }
        for (; i < I; ++i) g[i] = g[i] / (1.f + std::exp(-g[i]));
        for (int64_t j = 0; j < I; ++j)
          op[r * I + j] = static_cast<scalar_t>(rnd<scalar_t>(g[j]) * static_cast<float>(up[j]));
      }
    });
  });
  return out;
}

// qkv [B, S, (Hq + 2 Hk) * D] (a fused q|k|v projection), cos/sin [1 or B, S, D]: the rotary
// embedding of q and k as transformers' apply_rotary_pos_emb computes it (q * cos +
// rotate_half(q) * sin, each product and the sum rounded to the dtype). Returns q [B, S, Hq, D] and
// k [B, S, Hk, D], contiguous; v stays a view of qkv.
std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                                          int64_t q_heads, int64_t kv_heads) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.is_contiguous() && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.sizes() == sin.sizes() && cos.dim() == 3 && cos.scalar_type() == qkv.scalar_type() &&
                  sin.scalar_type() == qkv.scalar_type(),
              "rotary: contiguous qkv [B, S, N] and cos/sin [1 or B, S, D] of its dtype expected");
  const int64_t B = qkv.size(0), S = qkv.size(1), D = cos.size(2), N = qkv.size(2);
  TORCH_CHECK(N == (q_heads + 2 * kv_heads) * D && D % 2 == 0 && cos.size(1) == S &&
                  (cos.size(0) == 1 || cos.size(0) == B),
              "rotary: qkv's width is not (q_heads + 2 kv_heads) * head_dim");
  auto q = at::empty({B, S, q_heads, D}, qkv.options());
  auto k = at::empty({B, S, kv_heads, D}, qkv.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "rotary", [&] {
    const scalar_t *xp = qkv.data_ptr<scalar_t>(), *cp = cos.data_ptr<scalar_t>(), *sp = sin.data_ptr<scalar_t>();
    scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>();
    const int64_t half = D / 2, heads = q_heads + kv_heads;
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> c(D), s(D);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / S, pos = t % S, ct = (cos.size(0) == 1 ? 0 : b) * S + pos;
        for (int64_t d = 0; d < D; ++d) {
          c[d] = static_cast<float>(cp[ct * D + d]);
          s[d] = static_cast<float>(sp[ct * D + d]);
        }
        for (int64_t h = 0; h < heads; ++h) {
          const scalar_t* x = xp + t * N + h * D;
          scalar_t* o = h < q_heads ? qp + (t * q_heads + h) * D : kp + (t * kv_heads + h - q_heads) * D;
          for (int64_t d = 0; d < D; ++d) {
            const float xd = static_cast<float>(x[d]);
            const float rd = d < half ? -static_cast<float>(x[d + half]) : static_cast<float>(x[d - half]);
            o[d] = static_cast<scalar_t>(rnd<scalar_t>(xd * c[d]) + rnd<scalar_t>(rd * s[d]));
          }
        }
      }
    });
  });
  return {q, k};
}

// n values as fp32: in place when they are, else widened (exactly) into buf.
template <typename T>
inline const float* as_float(const T* x, int64_t n, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(x[i]);
    return buf;
  }
}

// logits [B, V] (fp32, or bf16/fp16 widened exactly), u [B] fp32 uniforms: per row the token inverse-CDF sampling picks from
// softmax(logits / temperature), as mathpo/sampling/sampler.py's top-p = 1 path computes it (the
// weights exp(l / t - max) in fp32; the first position whose running sum, accumulated in double
// and compared in fp32 as PyTorch's cumsum stores it, exceeds u * total) without writing the
// [B, V] intermediates and without a sequential pass over the whole row: the sum is taken in
// blocks (each block's in double, vectorized), the crossing found among the block sums, and only
// that block scanned in order. The double sums' order differs from cumsum's, which moves the
// running sum by ~1e-16 of itself: a pick differs only where u * total falls that close to a
// boundary of the fp32 running sum (tests/test_sampling_fused.py compares picks). The logits are
// left as they are.
at::Tensor sample(const at::Tensor& logits, double temperature, const at::Tensor& u) {
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous() && u.dim() == 1 && u.size(0) == logits.size(0) &&
                  u.scalar_type() == at::kFloat && temperature > 0 &&
                  (dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf),
              "sample: fp32/bf16/fp16 logits [B, V], fp32 u [B] and a temperature > 0 expected");
  constexpr int64_t BLOCK = 64, L = 8;  // positions per block sum; double lanes per block
  const int64_t B = logits.size(0), V = logits.size(1), blocks = (V + BLOCK - 1) / BLOCK;
  auto pick = at::empty({B}, logits.options().dtype(at::kLong));
  const float* up = u.data_ptr<float>();
  int64_t* pp = pick.data_ptr<int64_t>();
  const float t = static_cast<float>(temperature);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample", [&] {
  const scalar_t* lp = logits.data_ptr<scalar_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> e(blocks * BLOCK + W, 0.f);  // zero past V: the last block sums no garbage
    std::vector<double> sums(blocks);
    for (int64_t r = begin; r < end; ++r) {
      const float* row = as_float(lp + r * V, V, e.data());
      const Vec tv(t);
      Vec mv(-std::numeric_limits<float>::infinity());
      int64_t i = 0;
      for (; i + W <= V; i += W) {
        const Vec y = Vec::loadu(row + i) / tv;
        y.store(e.data() + i);
        mv = at::vec::maximum(mv, y);
      }
      float m = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, mv);
      for (; i < V; ++i) {
        e[i] = row[i] / t;
        m = std::max(m, e[i]);
      }
      const Vec m_v(m);
      for (i = 0; i + W <= V; i += W) (Vec::loadu(e.data() + i) - m_v).exp().store(e.data() + i);
      for (; i < V; ++i) e[i] = std::exp(e[i] - m);
      double total = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        double lanes[L] = {};
        const float* x = e.data() + b * BLOCK;
        for (int64_t j = 0; j < BLOCK; j += L)
          for (int l = 0; l < L; ++l) lanes[l] += static_cast<double>(x[j + l]);
        double s = 0;
        for (int l = 0; l < L; ++l) s += lanes[l];
        sums[b] = s;
        total += s;
      }
      const float target = up[r] * static_cast<float>(total);
      double acc = 0;
      int64_t b = 0;
      for (; b < blocks - 1 && static_cast<float>(acc + sums[b]) <= target; ++b) acc += sums[b];
      int64_t j = b * BLOCK;
      for (; j < V - 1; ++j) {
        acc += e[j];
        if (static_cast<float>(acc) > target) break;
      }
      pp[r] = j;
    }
  });
  });
  return pick;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mathpo, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("silu_mul(Tensor x) -> Tensor");
  m.def("rotary(Tensor qkv, Tensor cos, Tensor sin, int q_heads, int kv_heads) -> (Tensor, Tensor)");
  m.def("sample(Tensor logits, float temperature, Tensor u) -> Tensor");
}

TORCH_LIBRARY_IMPL(mathpo, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("silu_mul", &silu_mul);
  m.impl("rotary", &rotary);
  m.impl("sample", &sample);
}
