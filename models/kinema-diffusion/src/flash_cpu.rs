//! Attention on CPU in f32 without materialising scores ("flash" style): for each head
//! and block of queries, keys are visited in blocks with an online softmax (running
//! row maximum and sum), so working memory is a few cache-sized buffers per thread
//! whatever the sequence length. Blocks of (head, queries) run in parallel; each
//! product is one single-threaded GEMM.

use rayon::prelude::*;

/// Query rows per task.
const QB: usize = 64;
/// Keys per inner step.
const KB: usize = 512;

/// `e^x` for `x <= 0`-ish inputs, vectorisable (no branches, no calls): Cody-Waite
/// range reduction `x = n ln2 + r` and a degree-6 polynomial for `e^r`; relative error
/// ~2e-7. Inputs below -87 give ~0.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67 + r * (0.041_666_66 + r * (0.008_333_48 + r * 0.001_388_89)))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// Row `r` of `s` (length `kb`): `s = e^(s - m_new)`, returns (m_new, sum).
#[inline(always)]
fn softmax_row(s: &mut [f32], m_old: f32) -> (f32, f32) {
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
        }
    }
    let mut m = mx.iter().fold(m_old, |a, &b| if b > a { b } else { a });
    for &v in chunks.remainder() {
        if v > m {
            m = v;
        }
    }
    let mut acc = [0f32; 8];
    let mut chunks = s.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            let e = exp_approx(c[i] - m);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in chunks.into_remainder() {
        let e = exp_approx(*v - m);
        *v = e;
        sum += e;
    }
    (m, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(s: &mut [f32], m_old: f32) -> (f32, f32) {
    softmax_row(s, m_old)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(s: &mut [f32], m_old: f32) -> (f32, f32) {
    softmax_row(s, m_old)
}

type RowFn = fn(&mut [f32], f32) -> (f32, f32);

fn pick_softmax_row() -> RowFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return |s, m| unsafe { softmax_row_avx512(s, m) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return |s, m| unsafe { softmax_row_avx2(s, m) };
        }
    }
    softmax_row
}

/// `softmax(q k^T * scale) v` for `q: [bh, lq, d]`, `k, v: [bh, lk, d]` (contiguous
/// row-major data; `shape` is `(bh, lq, lk, d)`); returns `[bh, lq, d]`.
pub fn attention_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: (usize, usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    let (bh, lq, lk, d) = shape;
    assert!(q.len() == bh * lq * d && k.len() == bh * lk * d && v.len() == bh * lk * d);
    let mut out = vec![0f32; bh * lq * d];
    if lq == 0 || d == 0 {
        return out;
    }
    let row_fn = pick_softmax_row();
    out.par_chunks_mut(lq * d)
        .enumerate()
        .for_each(|(h, out_h)| {
            let qh = &q[h * lq * d..(h + 1) * lq * d];
            let kh = &k[h * lk * d..(h + 1) * lk * d];
            let vh = &v[h * lk * d..(h + 1) * lk * d];
            out_h
                .par_chunks_mut(QB * d)
                .enumerate()
                .for_each(|(qi, ob)| {
                    let n = ob.len() / d;
                    let q0 = qi * QB;
                    let qs: Vec<f32> = qh[q0 * d..(q0 + n) * d].iter().map(|x| x * scale).collect();
                    let mut s = vec![0f32; n * KB];
                    let mut m = vec![f32::NEG_INFINITY; n];
                    let mut l = vec![0f32; n];
                    let mut first = true;
                    let mut k0 = 0;
                    while k0 < lk {
                        let kb = KB.min(lk - k0);
                        // s[n x kb] = qs[n x d] @ K[k0..k0+kb]^T
                        // SAFETY: dst n x kb (row stride kb) inside `s`; lhs n x d (row
                        // stride d); rhs d x kb read from K rows (rhs(i, j) = K[k0 + j][i]:
                        // row stride 1, column stride d), all in bounds.
                        unsafe {
                            gemm::gemm(
                                n,
                                kb,
                                d,
                                s.as_mut_ptr(),
                                1,
                                kb as isize,
                                false,
                                qs.as_ptr(),
                                1,
                                d as isize,
                                kh.as_ptr().add(k0 * d),
                                d as isize,
                                1,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                        for r in 0..n {
                            let row = &mut s[r * kb..(r + 1) * kb];
                            let (m_new, sum) = row_fn(row, m[r]);
                            let corr = if first { 0.0 } else { (m[r] - m_new).exp() };
                            l[r] = l[r] * corr + sum;
                            m[r] = m_new;
                            if !first && corr != 1.0 {
                                for x in &mut ob[r * d..(r + 1) * d] {
                                    *x *= corr;
                                }
                            }
                        }
                        // ob[n x d] += s[n x kb] @ V[k0..k0+kb]
                        // SAFETY: dst n x d (row stride d) is `ob`; lhs n x kb (row stride
                        // kb) in `s`; rhs kb x d rows of V, all in bounds.
                        unsafe {
                            gemm::gemm(
                                n,
                                d,
                                kb,
                                ob.as_mut_ptr(),
                                1,
                                d as isize,
                                !first,
                                s.as_ptr(),
                                1,
                                kb as isize,
                                vh.as_ptr().add(k0 * d),
                                1,
                                d as isize,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                        first = false;
                        k0 += kb;
                    }
                    for r in 0..n {
                        let inv = 1.0 / l[r];
                        for x in &mut ob[r * d..(r + 1) * d] {
                            *x *= inv;
                        }
                    }
                });
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close() {
        for i in -8700..100 {
            let x = i as f32 / 100.0;
            let (a, b) = (exp_approx(x), x.exp());
            assert!((a - b).abs() <= 3e-7 * b.max(1e-30), "{x}: {a} vs {b}");
        }
    }

    #[test]
    fn matches_naive_attention() {
        let (bh, lq, lk, d) = (3, 130, 1100, 20);
        let gen = |name: &str, n| crate::tiny::det_values(name, n, 0.0, 2.0);
        let (q, k, v) = (
            gen("q", bh * lq * d),
            gen("k", bh * lk * d),
            gen("v", bh * lk * d),
        );
        let scale = 0.3;
        let got = attention_f32(&q, &k, &v, (bh, lq, lk, d), scale);
        let mut worst = 0f32;
        for h in 0..bh {
            for i in 0..lq {
                let qi = &q[(h * lq + i) * d..][..d];
                let s: Vec<f64> = (0..lk)
                    .map(|j| {
                        let kj = &k[(h * lk + j) * d..][..d];
                        qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 = (0..lk)
                        .map(|j| e[j] / z * v[(h * lk + j) * d + c] as f64)
                        .sum();
                    worst = worst.max((got[(h * lq + i) * d + c] as f64 - want).abs() as f32);
                }
            }
        }
        assert!(worst < 1e-5, "max abs diff {worst}");
    }
}
