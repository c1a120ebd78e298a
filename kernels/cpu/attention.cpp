// Fused CPU attention kernels (see attention.h for the equations, layouts and masking rule).
//
// Everything hot is a block product C (+)= A B with B row-major and a padded width that is a
// multiple of 8, so the micro-kernel (4 rows x 2 vectors of accumulators, A broadcast one
// scalar at a time, B loaded a vector at a time) never needs a tail case:
//   forward   S = Q K^T (K^T transposed once per key block), O += P V
//   backward  S = Q K^T, dP = dO V^T, dV += P^T dO, dK += dS^T Q, dQ += dS K
// A is addressed through two strides, so P^T and dS^T are read in place. Operands used as B keep
// D as their width: when D is a multiple of 8 they are read straight from the input tensors,
// otherwise a zero-padded copy of the tile is made (a cost of D per row against D x 64 flops).
//
// The fp32 drivers are compiled twice, for the baseline ISA and inside target("avx2,fma")
// functions, and cpu_isa() picks the build per call (as in kernels/cpu/siaf.cpp); every helper
// is always_inline so that it is compiled for the caller's ISA.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

constexpr int64_t kBlockQ = 64;  // query rows per tile
constexpr int64_t kBlockK = 64;  // keys per block
// Decode: fewest keys a split-K task gets, so the merge stays small against the work.
constexpr int64_t kMinKeysPerSplit = 256;
// Decode: fewest multiply-adds (QK^T and PV together) a thread is woken for.
constexpr int64_t kMinDecodeWork = int64_t(1) << 18;

template <class T>
struct Vec;
template <>
struct Vec<float> {
  using type = vmath::vf;
  static constexpr int64_t kLanes = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 4;
};
template <class T>
using V = typename Vec<T>::type;

template <class T>
CONCORD_ALWAYS_INLINE V<T> vload(const T* p) {
  V<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class T>
CONCORD_ALWAYS_INLINE void vstore(T* p, V<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
template <class T>
CONCORD_ALWAYS_INLINE V<T> vsplat(T c) {
  return V<T>{} + c;
}
CONCORD_ALWAYS_INLINE V<float> vexp(V<float> x) { return vmath::exp(x); }
CONCORD_ALWAYS_INLINE V<double> vexp(V<double> x) {
  for (int i = 0; i < 4; ++i) x[i] = std::exp(x[i]);
  return x;
}
template <class T>
CONCORD_ALWAYS_INLINE T hsum(V<T> v) {
  T s = 0;
  for (int64_t i = 0; i < Vec<T>::kLanes; ++i) s += v[i];
  return s;
}
template <class T>
CONCORD_ALWAYS_INLINE T hmax(V<T> v) {
  T m = v[0];
  for (int64_t i = 1; i < Vec<T>::kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

constexpr int64_t pad8(int64_t n) { return (n + 7) & ~int64_t(7); }

template <class T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// ---- block products ------------------------------------------------------------------------

// C[MR, NV*L] (+)= sum_k A(i, k) B[k, :] with A(i, k) = a[i*sam + k*sak].
template <class T, int MR, int NV, bool ACC>
CONCORD_ALWAYS_INLINE void micro(int64_t K, const T* a, int64_t sam, int64_t sak, const T* b,
                                 int64_t ldb, T* c, int64_t ldc) {
  constexpr int64_t L = Vec<T>::kLanes;
  V<T> acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = ACC ? vload<T>(c + i * ldc + j * L) : V<T>{};
  }
  for (int64_t k = 0; k < K; ++k) {
    V<T> bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = vload<T>(b + k * ldb + j * L);
    const T* ak = a + k * sak;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const V<T> ai = vsplat<T>(ak[i * sam]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] += ai * bv[j];
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) vstore<T>(c + i * ldc + j * L, acc[i][j]);
  }
}

// C[M, N] (+)= A(M, K) B[K, N]; N is a multiple of 8 (so of every lane count), B and C are
// row-major with leading dims ldb, ldc.
template <class T, bool ACC>
CONCORD_ALWAYS_INLINE void gemm(int64_t M, int64_t N, int64_t K, const T* a, int64_t sam,
                                int64_t sak, const T* b, int64_t ldb, T* c, int64_t ldc) {
  constexpr int64_t L = Vec<T>::kLanes;
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    int64_t n = 0;
    for (; n + 2 * L <= N; n += 2 * L) {
      micro<T, 4, 2, ACC>(K, a + m * sam, sam, sak, b + n, ldb, c + m * ldc + n, ldc);
    }
    for (; n < N; n += L) micro<T, 4, 1, ACC>(K, a + m * sam, sam, sak, b + n, ldb, c + m * ldc + n, ldc);
  }
  for (; m < M; ++m) {
    int64_t n = 0;
    for (; n + 2 * L <= N; n += 2 * L) {
      micro<T, 1, 2, ACC>(K, a + m * sam, sam, sak, b + n, ldb, c + m * ldc + n, ldc);
    }
    for (; n < N; n += L) micro<T, 1, 1, ACC>(K, a + m * sam, sam, sak, b + n, ldb, c + m * ldc + n, ldc);
  }
}

// ---- tiles -----------------------------------------------------------------------------------

template <class T>
struct Problem {
  const T* q;
  const T* k;
  const T* v;
  AttentionStrides qs, ks, vs;
  AttentionDims d;
  int64_t offset;  // Tk - Tq: position of query row 0
  int64_t group;   // Hq / Hkv
  int64_t Dp;      // D rounded up to 8
};

// K block rows [j0, j0 + n) of one kv head, transposed into kt[D, np], zero columns past n.
template <class T>
CONCORD_ALWAYS_INLINE void transpose_block(const T* base, int64_t ld, int64_t n, int64_t np,
                                           int64_t D, T* kt) {
  for (int64_t j = 0; j < n; ++j) {
    const T* row = base + j * ld;
    for (int64_t d = 0; d < D; ++d) kt[d * np + j] = row[d];
  }
  if (np > n) {
    for (int64_t d = 0; d < D; ++d) std::fill(kt + d * np + n, kt + d * np + np, T(0));
  }
}

// Rows [0, n) of a [*, D] operand as a B operand of width Dp: the input itself when D == Dp,
// else a zero-padded copy in `scratch`.
template <class T>
CONCORD_ALWAYS_INLINE const T* as_b_operand(const T* base, int64_t ld, int64_t n, int64_t D,
                                            int64_t Dp, T* scratch, int64_t& ld_out) {
  if (D == Dp) {
    ld_out = ld;
    return base;
  }
  for (int64_t j = 0; j < n; ++j) {
    std::memcpy(scratch + j * Dp, base + j * ld, static_cast<size_t>(D) * sizeof(T));
    std::fill(scratch + j * Dp + D, scratch + (j + 1) * Dp, T(0));
  }
  ld_out = Dp;
  return scratch;
}

// Scales a row of raw scores and sets the disallowed ones to -inf: keys j >= valid (past the
// causal edge or the live keys of the block) and, with segment ids, keys of other segments.
template <class T>
CONCORD_ALWAYS_INLINE void scale_and_mask(T* s, int64_t np, int64_t valid, T scale,
                                          const int64_t* seg, int64_t p, int64_t j0) {
  constexpr int64_t L = Vec<T>::kLanes;
  const V<T> vs = vsplat<T>(scale);
  for (int64_t j = 0; j < np; j += L) vstore<T>(s + j, vload<T>(s + j) * vs);
  for (int64_t j = valid; j < np; ++j) s[j] = neg_inf<T>();
  if (seg) {
    const int64_t sp = seg[p];
    for (int64_t j = 0; j < valid; ++j) {
      const int64_t key = j0 + j;
      if (key != p && (sp == 0 || seg[key] != sp)) s[j] = neg_inf<T>();
    }
  }
}

// s <- exp(s - shift), exactly 0 where s is -inf; returns the row sum.
template <class T>
CONCORD_ALWAYS_INLINE T exp_row(T* s, int64_t np, T shift) {
  constexpr int64_t L = Vec<T>::kLanes;
  const V<T> vm = vsplat<T>(shift), ninf = vsplat<T>(neg_inf<T>());
  V<T> sum = V<T>{};
  for (int64_t j = 0; j < np; j += L) {
    const V<T> x = vload<T>(s + j);
    const V<T> e = x == ninf ? V<T>{} : vexp(x - vm);
    vstore<T>(s + j, e);
    sum += e;
  }
  return hsum<T>(sum);
}

// One row of a block of raw scores sr[0, np) (keys j0 + j, j < valid allowed by the causal edge)
// into the online softmax of its query (position p): scales and masks the scores, turns them
// into exp(s - m_new) in place (0 where masked), and rescales the row's running sum l and
// output orow[0, Dp) to the new running max m (FlashAttention Algorithm 1, lines 9-10).
template <class T>
CONCORD_ALWAYS_INLINE void softmax_update_row(T* sr, int64_t np, int64_t valid, T scale,
                                              const int64_t* seg, int64_t p, int64_t j0, T& m,
                                              T& l, T* orow, int64_t Dp) {
  constexpr int64_t L = Vec<T>::kLanes;
  scale_and_mask(sr, np, valid, scale, seg, p, j0);
  V<T> mx = vsplat<T>(neg_inf<T>());
  for (int64_t j = 0; j < np; j += L) {
    const V<T> x = vload<T>(sr + j);
    mx = x > mx ? x : mx;
  }
  const T bmax = hmax<T>(mx);
  if (bmax == neg_inf<T>()) {  // nothing allowed in this block: the row is unchanged
    std::fill(sr, sr + np, T(0));
    return;
  }
  const T mnew = std::max(m, bmax);
  const T alpha = std::exp(m - mnew);  // 0 on the first block (m = -inf)
  l = l * alpha + exp_row(sr, np, mnew);
  m = mnew;
  if (alpha != T(1)) {
    const V<T> va = vsplat<T>(alpha);
    for (int64_t d = 0; d < Dp; d += L) vstore<T>(orow + d, vload<T>(orow + d) * va);
  }
}

template <class T>
struct FwdScratch {
  std::vector<T> kt, vp, s, o, m, l;
  FwdScratch(int64_t rows, int64_t D, int64_t Dp)
      : kt(static_cast<size_t>(D * kBlockK)),
        vp(static_cast<size_t>(kBlockK * Dp)),
        s(static_cast<size_t>(rows * kBlockK)),
        o(static_cast<size_t>(rows * Dp)),
        m(static_cast<size_t>(rows)),
        l(static_cast<size_t>(rows)) {}
};

// Online softmax over keys [kbeg, kend) of kv head (b, kvh) for R query rows: row r is read from
// q0 + r*q_step and sits at position pos0 + r*pos_step. Leaves the unnormalised output in sc.o
// ([R, Dp]), the running max in sc.m and the running sum in sc.l (FlashAttention Algorithm 1).
template <class T>
CONCORD_ALWAYS_INLINE void attend_tile(const Problem<T>& P, FwdScratch<T>& sc, int64_t b,
                                       int64_t kvh, const T* q0, int64_t q_step, int64_t R,
                                       int64_t pos0, int64_t pos_step, int64_t kbeg,
                                       int64_t kend) {
  const int64_t D = P.d.head_dim, Dp = P.Dp;
  const T scale = static_cast<T>(P.d.scale);
  T* O = sc.o.data();
  T* m = sc.m.data();
  T* l = sc.l.data();
  std::fill(O, O + R * Dp, T(0));
  std::fill(m, m + R, neg_inf<T>());
  std::fill(l, l + R, T(0));
  const int64_t pmax = pos0 + (R - 1) * pos_step;  // pos_step is 0 or 1
  if (P.d.causal) kend = std::min(kend, pmax + 1);
  const T* kbase = P.k + b * P.ks.batch + kvh * P.ks.head;
  const T* vbase = P.v + b * P.vs.batch + kvh * P.vs.head;
  const int64_t* seg = P.d.segment_ids ? P.d.segment_ids + b * P.d.kv_len : nullptr;
  for (int64_t j0 = kbeg; j0 < kend; j0 += kBlockK) {
    const int64_t n = std::min(kBlockK, kend - j0), np = pad8(n);
    transpose_block(kbase + j0 * P.ks.row, P.ks.row, n, np, D, sc.kt.data());
    int64_t ldv;
    const T* vb = as_b_operand(vbase + j0 * P.vs.row, P.vs.row, n, D, Dp, sc.vp.data(), ldv);
    T* S = sc.s.data();
    gemm<T, false>(R, np, D, q0, q_step, 1, sc.kt.data(), np, S, np);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t p = pos0 + r * pos_step;
      const int64_t valid = P.d.causal ? std::clamp<int64_t>(p + 1 - j0, 0, n) : n;
      softmax_update_row(S + r * np, np, valid, scale, seg, p, j0, m[r], l[r], O + r * Dp, Dp);
    }
    gemm<T, true>(R, Dp, n, S, np, 1, vb, ldv, O, Dp);
  }
}

// Items (b, hq, query block): one head's rows at consecutive positions, all keys.
template <class T>
CONCORD_ALWAYS_INLINE void prefill_range(const Problem<T>& P, T* out, T* lse, int64_t i0,
                                         int64_t i1) {
  const int64_t D = P.d.head_dim, Dp = P.Dp, Tq = P.d.q_len, Hq = P.d.q_heads;
  const int64_t nqb = (Tq + kBlockQ - 1) / kBlockQ;
  FwdScratch<T> sc(kBlockQ, D, Dp);
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t qb = item % nqb, bh = item / nqb, hq = bh % Hq, b = bh / Hq;
    const int64_t t0 = qb * kBlockQ, R = std::min(kBlockQ, Tq - t0);
    const T* q0 = P.q + b * P.qs.batch + hq * P.qs.head + t0 * P.qs.row;
    attend_tile(P, sc, b, hq / P.group, q0, P.qs.row, R, P.offset + t0, 1, 0, P.d.kv_len);
    for (int64_t r = 0; r < R; ++r) {
      T* orow = out + (bh * Tq + t0 + r) * D;
      const T lr = sc.l[r];
      const T inv = lr > 0 ? T(1) / lr : T(0);
      for (int64_t d = 0; d < D; ++d) orow[d] = sc.o[r * Dp + d] * inv;
      lse[bh * Tq + t0 + r] = lr > 0 ? sc.m[r] + std::log(lr) : neg_inf<T>();
    }
  }
}

// ---- decode (Tq == 1) ------------------------------------------------------------------------
// One query row per head meets each key once, so there is nothing to amortise a transposed K
// tile over (the prefill path's S = Q K^T micro-kernel): scores are dot products straight from
// the K rows, four keys at a time, and O += P V is an axpy over the V rows.

// s[j] = <q, k_j> for j < n, k_j = k + j*ldk; D elements each, contiguous.
template <class T>
CONCORD_ALWAYS_INLINE void dot_rows(const T* q, const T* k, int64_t ldk, int64_t n, int64_t D,
                                    T* s) {
  constexpr int64_t L = Vec<T>::kLanes;
  const int64_t Dv = D / L * L;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const T* k0 = k + j * ldk;
    const T *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
    V<T> a0 = V<T>{}, a1 = V<T>{}, a2 = V<T>{}, a3 = V<T>{};
    for (int64_t d = 0; d < Dv; d += L) {
      const V<T> qv = vload<T>(q + d);
      a0 += qv * vload<T>(k0 + d);
      a1 += qv * vload<T>(k1 + d);
      a2 += qv * vload<T>(k2 + d);
      a3 += qv * vload<T>(k3 + d);
    }
    T t0 = hsum<T>(a0), t1 = hsum<T>(a1), t2 = hsum<T>(a2), t3 = hsum<T>(a3);
    for (int64_t d = Dv; d < D; ++d) {
      t0 += q[d] * k0[d];
      t1 += q[d] * k1[d];
      t2 += q[d] * k2[d];
      t3 += q[d] * k3[d];
    }
    s[j] = t0;
    s[j + 1] = t1;
    s[j + 2] = t2;
    s[j + 3] = t3;
  }
  for (; j < n; ++j) {
    const T* kj = k + j * ldk;
    V<T> a = V<T>{};
    for (int64_t d = 0; d < Dv; d += L) a += vload<T>(q + d) * vload<T>(kj + d);
    T t = hsum<T>(a);
    for (int64_t d = Dv; d < D; ++d) t += q[d] * kj[d];
    s[j] = t;
  }
}

// o[0, D) += sum_{j < n} p[j] v_j, v_j = v + j*ldv (D contiguous elements each).
template <class T>
CONCORD_ALWAYS_INLINE void axpy_rows(const T* p, const T* v, int64_t ldv, int64_t n, int64_t D,
                                     T* o) {
  constexpr int64_t L = Vec<T>::kLanes;
  const int64_t Dv = D / L * L;
  int64_t d = 0;
  for (; d + 4 * L <= Dv; d += 4 * L) {  // four independent accumulators per key
    V<T> a0 = vload<T>(o + d), a1 = vload<T>(o + d + L), a2 = vload<T>(o + d + 2 * L),
         a3 = vload<T>(o + d + 3 * L);
    for (int64_t j = 0; j < n; ++j) {
      const T* vj = v + j * ldv + d;
      const V<T> pj = vsplat<T>(p[j]);
      a0 += pj * vload<T>(vj);
      a1 += pj * vload<T>(vj + L);
      a2 += pj * vload<T>(vj + 2 * L);
      a3 += pj * vload<T>(vj + 3 * L);
    }
    vstore<T>(o + d, a0);
    vstore<T>(o + d + L, a1);
    vstore<T>(o + d + 2 * L, a2);
    vstore<T>(o + d + 3 * L, a3);
  }
  for (; d < Dv; d += L) {
    V<T> a = vload<T>(o + d);
    for (int64_t j = 0; j < n; ++j) a += vsplat<T>(p[j]) * vload<T>(v + j * ldv + d);
    vstore<T>(o + d, a);
  }
  for (; d < D; ++d) {
    T a = o[d];
    for (int64_t j = 0; j < n; ++j) a += p[j] * v[j * ldv + d];
    o[d] = a;
  }
}

// Online softmax over keys [kbeg, kend) of kv head (b, kvh) for the G query heads of the group
// (row g read from q0 + g*q_step), all at position p. Leaves the unnormalised output in sc.o
// ([G, Dp]), the running max in sc.m and the running sum in sc.l.
template <class T>
CONCORD_ALWAYS_INLINE void decode_tile(const Problem<T>& P, FwdScratch<T>& sc, int64_t b,
                                       int64_t kvh, const T* q0, int64_t q_step, int64_t G,
                                       int64_t p, int64_t kbeg, int64_t kend) {
  const int64_t D = P.d.head_dim, Dp = P.Dp;
  const T scale = static_cast<T>(P.d.scale);
  T* O = sc.o.data();
  std::fill(O, O + G * Dp, T(0));
  std::fill(sc.m.begin(), sc.m.begin() + G, neg_inf<T>());
  std::fill(sc.l.begin(), sc.l.begin() + G, T(0));
  if (P.d.causal) kend = std::min(kend, p + 1);
  const T* kbase = P.k + b * P.ks.batch + kvh * P.ks.head;
  const T* vbase = P.v + b * P.vs.batch + kvh * P.vs.head;
  const int64_t* seg = P.d.segment_ids ? P.d.segment_ids + b * P.d.kv_len : nullptr;
  for (int64_t j0 = kbeg; j0 < kend; j0 += kBlockK) {
    const int64_t n = std::min(kBlockK, kend - j0), np = pad8(n);
    const T* kb = kbase + j0 * P.ks.row;
    const T* vb = vbase + j0 * P.vs.row;
    for (int64_t g = 0; g < G; ++g) {
      T* sr = sc.s.data() + g * np;
      dot_rows(q0 + g * q_step, kb, P.ks.row, n, D, sr);
      softmax_update_row(sr, np, n, scale, seg, p, j0, sc.m[g], sc.l[g], O + g * Dp, Dp);
      axpy_rows(sr, vb, P.vs.row, n, D, O + g * Dp);
    }
  }
}

// Decode items (b, kvh, split): one contiguous range of keys for the group's query heads; the
// partial (O, m, l) go to the workspace for the merge.
template <class T>
CONCORD_ALWAYS_INLINE void decode_range(const Problem<T>& P, int64_t splits, T* ws_o, T* ws_m,
                                        T* ws_l, int64_t i0, int64_t i1) {
  const int64_t D = P.d.head_dim, Dp = P.Dp, G = P.group, Hkv = P.d.kv_heads;
  const int64_t Tk = P.d.kv_len, BH = P.d.batch * P.d.q_heads;
  FwdScratch<T> sc(G, D, Dp);
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t s = item % splits, bk = item / splits, kvh = bk % Hkv, b = bk / Hkv;
    // Split boundaries on key-block multiples, so each split streams whole blocks.
    const int64_t nkb = (Tk + kBlockK - 1) / kBlockK;
    const int64_t kbeg = std::min(Tk, (nkb * s / splits) * kBlockK);
    const int64_t kend = std::min(Tk, (nkb * (s + 1) / splits) * kBlockK);
    const T* q0 = P.q + b * P.qs.batch + kvh * G * P.qs.head;
    decode_tile(P, sc, b, kvh, q0, P.qs.head, G, P.offset, kbeg, kend);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row = b * P.d.q_heads + kvh * G + g;
      std::memcpy(ws_o + (s * BH + row) * Dp, sc.o.data() + g * Dp,
                  static_cast<size_t>(Dp) * sizeof(T));
      ws_m[s * BH + row] = sc.m[g];
      ws_l[s * BH + row] = sc.l[g];
    }
  }
}

template <class T>
struct BwdProblem {
  Problem<T> f;
  const T* dout;
  AttentionStrides dos;
  const T* lse;
  const T* delta;  // [B, Hq, Tq]: rowsum(dO * O)
  T* dq_buf;       // [chunks][B, Hq, Tq, Dp]
  int64_t chunks;
  T* dk;
  T* dv;
};

template <class T>
struct BwdScratch {
  std::vector<T> kt, vt, kp, qp, dop, s, dp, dk, dv;
  BwdScratch(int64_t D, int64_t Dp)
      : kt(static_cast<size_t>(D * kBlockK)),
        vt(static_cast<size_t>(D * kBlockK)),
        kp(static_cast<size_t>(kBlockK * Dp)),
        qp(static_cast<size_t>(kBlockQ * Dp)),
        dop(static_cast<size_t>(kBlockQ * Dp)),
        s(static_cast<size_t>(kBlockQ * kBlockK)),
        dp(static_cast<size_t>(kBlockQ * kBlockK)),
        dk(static_cast<size_t>(kBlockK * Dp)),
        dv(static_cast<size_t>(kBlockK * Dp)) {}
};

// Items (b, kvh, chunk): key blocks chunk, chunk + chunks, ... of one kv head (interleaved so
// that causal chunks get similar work). For each key block, every query block of every query
// head of the group that can see it (FlashAttention-2 Algorithm 2, dq into the chunk's buffer).
template <class T>
CONCORD_ALWAYS_INLINE void backward_range(const BwdProblem<T>& B, int64_t i0, int64_t i1) {
  const Problem<T>& P = B.f;
  const int64_t D = P.d.head_dim, Dp = P.Dp, G = P.group, Hkv = P.d.kv_heads, Hq = P.d.q_heads;
  const int64_t Tq = P.d.q_len, Tk = P.d.kv_len;
  const int64_t nkb = (Tk + kBlockK - 1) / kBlockK;
  const T scale = static_cast<T>(P.d.scale);
  constexpr int64_t L = Vec<T>::kLanes;
  BwdScratch<T> sc(D, Dp);
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t c = item % B.chunks, bk = item / B.chunks, kvh = bk % Hkv, b = bk / Hkv;
    T* dq_buf = B.dq_buf + c * (P.d.batch * Hq * Tq * Dp);
    const T* kbase = P.k + b * P.ks.batch + kvh * P.ks.head;
    const T* vbase = P.v + b * P.vs.batch + kvh * P.vs.head;
    const int64_t* seg = P.d.segment_ids ? P.d.segment_ids + b * Tk : nullptr;
    for (int64_t kb = c; kb < nkb; kb += B.chunks) {
      const int64_t j0 = kb * kBlockK, n = std::min(kBlockK, Tk - j0), np = pad8(n);
      transpose_block(kbase + j0 * P.ks.row, P.ks.row, n, np, D, sc.kt.data());
      transpose_block(vbase + j0 * P.vs.row, P.vs.row, n, np, D, sc.vt.data());
      int64_t ldk;
      const T* kb_op = as_b_operand(kbase + j0 * P.ks.row, P.ks.row, n, D, Dp, sc.kp.data(), ldk);
      std::fill(sc.dk.begin(), sc.dk.end(), T(0));
      std::fill(sc.dv.begin(), sc.dv.end(), T(0));
      // Queries at positions < j0 see nothing of this block when causal.
      const int64_t t_first = P.d.causal ? std::max<int64_t>(0, j0 - P.offset) : 0;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = kvh * G + g, bh = b * Hq + hq;
        for (int64_t t0 = (t_first / kBlockQ) * kBlockQ; t0 < Tq; t0 += kBlockQ) {
          const int64_t R = std::min(kBlockQ, Tq - t0);
          const T* qrows = P.q + b * P.qs.batch + hq * P.qs.head + t0 * P.qs.row;
          const T* dorows = B.dout + b * B.dos.batch + hq * B.dos.head + t0 * B.dos.row;
          int64_t ldq, lddo;
          const T* q_op = as_b_operand(qrows, P.qs.row, R, D, Dp, sc.qp.data(), ldq);
          const T* do_op = as_b_operand(dorows, B.dos.row, R, D, Dp, sc.dop.data(), lddo);
          T* S = sc.s.data();
          T* dP = sc.dp.data();
          gemm<T, false>(R, np, D, qrows, P.qs.row, 1, sc.kt.data(), np, S, np);
          gemm<T, false>(R, np, D, dorows, B.dos.row, 1, sc.vt.data(), np, dP, np);
          for (int64_t r = 0; r < R; ++r) {
            const int64_t t = t0 + r, p = P.offset + t;
            const int64_t valid = P.d.causal ? std::clamp<int64_t>(p + 1 - j0, 0, n) : n;
            T* sr = S + r * np;
            T* dr = dP + r * np;
            const T lse = B.lse[bh * Tq + t];
            if (valid == 0 || lse == neg_inf<T>()) {
              std::fill(sr, sr + np, T(0));
              std::fill(dr, dr + np, T(0));
              continue;
            }
            scale_and_mask(sr, np, valid, scale, seg, p, j0);
            exp_row(sr, np, lse);  // P = exp(s - lse), the forward's normalised probabilities
            const V<T> vdelta = vsplat<T>(B.delta[bh * Tq + t]);
            for (int64_t j = 0; j < np; j += L) {
              vstore<T>(dr + j, vload<T>(sr + j) * (vload<T>(dr + j) - vdelta));  // dS
            }
          }
          gemm<T, true>(n, Dp, R, S, 1, np, do_op, lddo, sc.dv.data(), Dp);        // dV += P^T dO
          gemm<T, true>(n, Dp, R, dP, 1, np, q_op, ldq, sc.dk.data(), Dp);         // dK += dS^T Q
          gemm<T, true>(R, Dp, n, dP, np, 1, kb_op, ldk, dq_buf + (bh * Tq + t0) * Dp, Dp);
        }
      }
      const int64_t row0 = (b * Hkv + kvh) * Tk + j0;
      for (int64_t j = 0; j < n; ++j) {
        T* dkr = B.dk + (row0 + j) * D;
        T* dvr = B.dv + (row0 + j) * D;
        for (int64_t d = 0; d < D; ++d) {
          dkr[d] = scale * sc.dk[j * Dp + d];
          dvr[d] = sc.dv[j * Dp + d];
        }
      }
    }
  }
}

// ---- ISA dispatch for fp32 -------------------------------------------------------------------

using PrefillF = void (*)(const Problem<float>&, float*, float*, int64_t, int64_t);
using DecodeF = void (*)(const Problem<float>&, int64_t, float*, float*, float*, int64_t,
                         int64_t);
using BackwardF = void (*)(const BwdProblem<float>&, int64_t, int64_t);

void prefill_f32(const Problem<float>& P, float* out, float* lse, int64_t i0, int64_t i1) {
  prefill_range(P, out, lse, i0, i1);
}
void decode_f32(const Problem<float>& P, int64_t splits, float* o, float* m, float* l,
                int64_t i0, int64_t i1) {
  decode_range(P, splits, o, m, l, i0, i1);
}
void backward_f32(const BwdProblem<float>& B, int64_t i0, int64_t i1) {
  backward_range(B, i0, i1);
}

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define CONCORD_ATTENTION_AVX2 1
__attribute__((target("avx2,fma"))) void prefill_f32_avx2(const Problem<float>& P, float* out,
                                                          float* lse, int64_t i0, int64_t i1) {
  prefill_range(P, out, lse, i0, i1);
}
__attribute__((target("avx2,fma"))) void decode_f32_avx2(const Problem<float>& P,
                                                         int64_t splits, float* o, float* m,
                                                         float* l, int64_t i0, int64_t i1) {
  decode_range(P, splits, o, m, l, i0, i1);
}
__attribute__((target("avx2,fma"))) void backward_f32_avx2(const BwdProblem<float>& B,
                                                           int64_t i0, int64_t i1) {
  backward_range(B, i0, i1);
}
#endif

struct Kernels32 {
  PrefillF prefill;
  DecodeF decode;
  BackwardF backward;
};
// The AVX2 build whenever cpu_isa() allows it (AVX-512 machines run it too: these kernels have
// no 16-lane build yet).
const Kernels32& kernels32() {
  static const Kernels32 base{&prefill_f32, &decode_f32, &backward_f32};
#ifdef CONCORD_ATTENTION_AVX2
  static const Kernels32 avx2{&prefill_f32_avx2, &decode_f32_avx2, &backward_f32_avx2};
  if (cpu_isa() != CpuIsa::kBaseline) return avx2;
#endif
  return base;
}

// fp64 runs the baseline build only: it exists for gradient checks.
void prefill_any(const Problem<float>& P, float* out, float* lse, int64_t i0, int64_t i1) {
  kernels32().prefill(P, out, lse, i0, i1);
}
void prefill_any(const Problem<double>& P, double* out, double* lse, int64_t i0, int64_t i1) {
  prefill_range(P, out, lse, i0, i1);
}
void decode_any(const Problem<float>& P, int64_t s, float* o, float* m, float* l, int64_t i0,
                int64_t i1) {
  kernels32().decode(P, s, o, m, l, i0, i1);
}
void decode_any(const Problem<double>& P, int64_t s, double* o, double* m, double* l,
                int64_t i0, int64_t i1) {
  decode_range(P, s, o, m, l, i0, i1);
}
void backward_any(const BwdProblem<float>& B, int64_t i0, int64_t i1) {
  kernels32().backward(B, i0, i1);
}
void backward_any(const BwdProblem<double>& B, int64_t i0, int64_t i1) {
  backward_range(B, i0, i1);
}

// ---- drivers -------------------------------------------------------------------------------

int64_t threads() { return std::max<int64_t>(1, at::get_num_threads()); }

template <class T>
Problem<T> make_problem(const T* q, AttentionStrides qs, const T* k, AttentionStrides ks,
                        const T* v, AttentionStrides vs, const AttentionDims& d) {
  return Problem<T>{q, k, v, qs, ks, vs, d, d.kv_len - d.q_len, d.q_heads / d.kv_heads,
                    pad8(d.head_dim)};
}

template <class T>
void forward_impl(const T* q, AttentionStrides qs, const T* k, AttentionStrides ks, const T* v,
                  AttentionStrides vs, T* out, T* lse, const AttentionDims& d) {
  if (d.batch == 0 || d.q_heads == 0 || d.q_len == 0) return;
  const Problem<T> P = make_problem(q, qs, k, ks, v, vs, d);
  const int64_t D = d.head_dim, Dp = P.Dp;
  if (d.q_len > 1) {
    const int64_t items = d.batch * d.q_heads * ((d.q_len + kBlockQ - 1) / kBlockQ);
    at::parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) { prefill_any(P, out, lse, i0, i1); });
    return;
  }
  // Decode: enough splits of the keys for two tasks per thread (and at least 8 tasks, so the
  // split-K path does not depend on the machine), but no split under kMinKeysPerSplit keys.
  // A task set is only handed to the thread pool when each thread gets at least
  // kMinDecodeWork multiply-adds: below that the fork/join costs more than it saves (a decode
  // step of a small model is tens of microseconds of work).
  const int64_t groups = d.batch * d.kv_heads, BH = d.batch * d.q_heads;
  const int64_t tasks = std::max<int64_t>(8, 2 * threads());
  const int64_t by_threads = (tasks + groups - 1) / groups;
  const int64_t by_keys = std::max<int64_t>(1, d.kv_len / kMinKeysPerSplit);
  const int64_t splits = std::max<int64_t>(1, std::min(by_threads, by_keys));
  const int64_t items = groups * splits;
  const int64_t work_per_item =
      std::max<int64_t>(1, 2 * P.group * D * ((d.kv_len + splits - 1) / splits));
  const int64_t grain = std::max<int64_t>(1, kMinDecodeWork / work_per_item);
  std::vector<T> ws_o(static_cast<size_t>(splits * BH * Dp)), ws_m(static_cast<size_t>(splits * BH)),
      ws_l(static_cast<size_t>(splits * BH));
  at::parallel_for(0, items, grain, [&](int64_t i0, int64_t i1) {
    decode_any(P, splits, ws_o.data(), ws_m.data(), ws_l.data(), i0, i1);
  });
  // Merge the splits: rescale each partial to the common max (Milakov & Gimelshein 2018).
  at::parallel_for(0, BH, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      T M = neg_inf<T>();
      for (int64_t s = 0; s < splits; ++s) M = std::max(M, ws_m[s * BH + row]);
      T* orow = out + row * D;
      std::fill(orow, orow + D, T(0));
      if (M == neg_inf<T>()) {
        lse[row] = M;
        continue;
      }
      T Lsum = 0;
      for (int64_t s = 0; s < splits; ++s) {
        const T w = std::exp(ws_m[s * BH + row] - M);  // 0 for an empty split
        if (w == T(0)) continue;
        Lsum += w * ws_l[s * BH + row];
        const T* po = ws_o.data() + (s * BH + row) * Dp;
        for (int64_t dd = 0; dd < D; ++dd) orow[dd] += w * po[dd];
      }
      const T inv = T(1) / Lsum;
      for (int64_t dd = 0; dd < D; ++dd) orow[dd] *= inv;
      lse[row] = M + std::log(Lsum);
    }
  });
}

template <class T>
void backward_impl(const T* dout, AttentionStrides dos, const T* q, AttentionStrides qs,
                   const T* k, AttentionStrides ks, const T* v, AttentionStrides vs,
                   const T* out, const T* lse, T* dq, T* dk, T* dv, const AttentionDims& d) {
  const int64_t D = d.head_dim, Tq = d.q_len, Tk = d.kv_len;
  const int64_t BHq = d.batch * d.q_heads, BHkv = d.batch * d.kv_heads;
  if (BHkv == 0 || Tk == 0) return;
  if (Tq == 0) {  // no query sees any key
    std::fill(dk, dk + BHkv * Tk * D, T(0));
    std::fill(dv, dv + BHkv * Tk * D, T(0));
    return;
  }
  BwdProblem<T> B{make_problem(q, qs, k, ks, v, vs, d), dout, dos, lse, nullptr, nullptr, 1,
                  dk, dv};
  const int64_t Dp = B.f.Dp, rows = BHq * Tq;
  // delta = rowsum(dO * O) (FlashAttention-2's D_i), the softmax backward's row term.
  std::vector<T> delta(static_cast<size_t>(rows));
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = r % Tq, bh = r / Tq, h = bh % d.q_heads, b = bh / d.q_heads;
      const T* dor = dout + b * dos.batch + h * dos.head + t * dos.row;
      const T* orow = out + r * D;
      T acc = 0;
      for (int64_t dd = 0; dd < D; ++dd) acc += dor[dd] * orow[dd];
      delta[r] = acc;
    }
  });
  B.delta = delta.data();
  // Key chunks per kv head: enough tasks for two per thread. Each chunk adds into its own dq
  // buffer (O(T) memory, at most ~2 x threads x group copies of dq), summed in chunk order.
  const int64_t nkb = (Tk + kBlockK - 1) / kBlockK;
  B.chunks = std::clamp<int64_t>((2 * threads() + BHkv - 1) / BHkv, 1, nkb);
  if (BHkv >= threads()) B.chunks = 1;
  std::vector<T> dq_buf(static_cast<size_t>(B.chunks * rows * Dp), T(0));
  B.dq_buf = dq_buf.data();
  at::parallel_for(0, BHkv * B.chunks, 1,
                   [&](int64_t i0, int64_t i1) { backward_any(B, i0, i1); });
  const T scale = static_cast<T>(d.scale);
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* dqr = dq + r * D;
      for (int64_t dd = 0; dd < D; ++dd) {
        T acc = 0;
        for (int64_t c = 0; c < B.chunks; ++c) acc += dq_buf[(c * rows + r) * Dp + dd];
        dqr[dd] = scale * acc;
      }
    }
  });
}

}  // namespace

void attention_forward(const float* q, AttentionStrides qs, const float* k, AttentionStrides ks,
                       const float* v, AttentionStrides vs, float* out, float* lse,
                       const AttentionDims& dims) {
  forward_impl(q, qs, k, ks, v, vs, out, lse, dims);
}
void attention_forward(const double* q, AttentionStrides qs, const double* k,
                       AttentionStrides ks, const double* v, AttentionStrides vs, double* out,
                       double* lse, const AttentionDims& dims) {
  forward_impl(q, qs, k, ks, v, vs, out, lse, dims);
}

void attention_backward(const float* dout, AttentionStrides dos, const float* q,
                        AttentionStrides qs, const float* k, AttentionStrides ks, const float* v,
                        AttentionStrides vs, const float* out, const float* lse, float* dq,
                        float* dk, float* dv, const AttentionDims& dims) {
  backward_impl(dout, dos, q, qs, k, ks, v, vs, out, lse, dq, dk, dv, dims);
}
void attention_backward(const double* dout, AttentionStrides dos, const double* q,
                        AttentionStrides qs, const double* k, AttentionStrides ks,
                        const double* v, AttentionStrides vs, const double* out,
                        const double* lse, double* dq, double* dk, double* dv,
                        const AttentionDims& dims) {
  backward_impl(dout, dos, q, qs, k, ks, v, vs, out, lse, dq, dk, dv, dims);
}

bool attention_uses_avx2() { return cpu_isa() != CpuIsa::kBaseline; }

}  // namespace concord::kernels::cpu
