//! INT8 post-training quantization calibrators.
//!
//! A quantized graph (QDQ for ONNX Runtime, or an INT8 TensorRT engine) needs a
//! fixed range for every activation tensor, chosen once, offline, from
//! representative inputs. Weights can be ranged from their own values, but
//! activations depend on the data, so we run calibration batches through the
//! float model and keep per-tensor [`TensorStats`]: the exact min/max plus a
//! histogram of |x| that stays mergeable across batches (and across worker
//! threads via [`TensorStats::merge`]) without keeping the raw values.
//!
//! Three ways to turn the statistics into a [`Range`], as offered by TensorRT
//! and ONNX Runtime's `quantize_static`:
//!
//! * [`Method::MinMax`]: never clips, but one outlier spends most of the 256
//!   levels on values that almost never occur.
//! * [`Method::Percentile`]: clips the rarest |x|; cheap and predictable.
//! * [`Method::Entropy`]: TensorRT's `EntropyCalibrator2` — picks the clipping
//!   threshold whose 128-level quantized distribution loses the least
//!   information (KL divergence) relative to the float one.
//!
//! The range is then turned into runtime parameters: [`Range::asymmetric_u8`]
//! for ONNX Runtime's CPU uint8 activations, [`Range::symmetric_i8`] for
//! TensorRT's int8 activations, and [`crate::optimize::weights::per_channel_scales`] for weights.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::weights::symmetric_scale;

/// Histogram resolution; 2048 is what TensorRT and ONNX Runtime use, and
/// what the 128..=2048 entropy search below assumes.
pub const NUM_BINS: usize = 2048;

/// Levels of the non-negative half of int8: the entropy search judges each
/// threshold by how well `QUANT_LEVELS` evenly spaced levels represent it.
const QUANT_LEVELS: usize = 128;

/// Smoothing added to empty bins before KL divergence, in *counts* as in
/// MXNet / ONNX Runtime's `smooth_distribution`, so it stays negligible next to
/// any real bin (which holds at least one value).
const SMOOTHING_EPS: f64 = 1e-4;

/// `log2` of the histogram range is kept within what an f32 |x| can need:
/// the smallest subnormal (2^-149) needs 2^-148, the largest finite f32 2^128.
const MIN_HIST_LOG2: i32 = -148;
const MAX_HIST_LOG2: i32 = 128;

/// Statistics of one activation tensor, merged over calibration batches.
///
/// The histogram covers |x| over `[0, hist_max)` in [`NUM_BINS`] equal bins,
/// where `hist_max` is always a power of two, the smallest strictly above the
/// largest |x| seen. Growing the range therefore means doubling it some number
/// of times, so old bins fold into new ones exactly (integer factor), and any
/// two statistics share a grid after growing the smaller one. The result is
/// independent of batch order and of how observations were split between
/// `observe` and `merge`: it is bit-for-bit the histogram of observing
/// everything at once. The price is up to one bit of resolution (at worst only
/// the lower half of the bins is used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TensorStatsRepr")]
pub struct TensorStats {
    /// Exact extrema of the finite values; meaningless while `count == 0`
    /// (kept at 0 rather than ±inf so the struct serializes to plain JSON).
    min: f32,
    max: f32,
    /// Finite values observed; always equals the sum of `hist`.
    count: u64,
    /// NaN and ±inf values, skipped: they are not valid calibration data and
    /// would destroy any range, but counting them makes a broken model visible.
    non_finite: u64,
    /// Exact zeros among `count` (also counted in `hist[0]`). ReLU outputs are
    /// half zeros or more, and zero is exact on every quantized grid, so the
    /// entropy search leaves them out: left in, their spike in bin 0 makes any
    /// grouping of bin 0 with its neighbours look costly, and the search
    /// always settled on its tightest threshold (a sixteenth of the maximum).
    zeros: u64,
    /// `hist_max = 2^hist_max_log2`; `None` while only zeros were seen, when
    /// no grid is needed yet (0 lands in bin 0 on every grid).
    hist_max_log2: Option<i32>,
    hist: Vec<u64>,
}

/// Unvalidated wire form; deserialization goes through it so that a corrupt
/// or hand-edited stats file is rejected instead of panicking later.
#[derive(Deserialize)]
struct TensorStatsRepr {
    min: f32,
    max: f32,
    count: u64,
    non_finite: u64,
    #[serde(default)]
    zeros: u64,
    hist_max_log2: Option<i32>,
    hist: Vec<u64>,
}

impl TryFrom<TensorStatsRepr> for TensorStats {
    type Error = String;

    fn try_from(r: TensorStatsRepr) -> Result<Self, String> {
        if r.hist.len() != NUM_BINS {
            return Err(format!(
                "histogram has {} bins, expected {NUM_BINS}",
                r.hist.len()
            ));
        }
        let sum = r
            .hist
            .iter()
            .try_fold(0u64, |acc, &c| acc.checked_add(c))
            .ok_or("histogram counts overflow u64")?;
        if sum != r.count {
            return Err(format!(
                "histogram holds {sum} values but count is {}",
                r.count
            ));
        }
        if !(r.min.is_finite() && r.max.is_finite()) || (r.count > 0 && r.min > r.max) {
            return Err(format!("invalid min/max {} / {}", r.min, r.max));
        }
        if r.zeros > r.hist[0] {
            return Err(format!(
                "{} zeros but only {} values in the first bin",
                r.zeros, r.hist[0]
            ));
        }
        match r.hist_max_log2 {
            Some(e) if !(MIN_HIST_LOG2..=MAX_HIST_LOG2).contains(&e) => {
                return Err(format!("hist_max_log2 {e} out of range"));
            }
            None if r.hist[1..].iter().any(|&c| c != 0) => {
                return Err("histogram without a range holds nonzero values".to_string());
            }
            _ => {}
        }
        Ok(TensorStats {
            min: r.min,
            max: r.max,
            count: r.count,
            non_finite: r.non_finite,
            zeros: r.zeros,
            hist_max_log2: r.hist_max_log2,
            hist: r.hist,
        })
    }
}

impl Default for TensorStats {
    fn default() -> Self {
        Self::new()
    }
}

impl TensorStats {
    pub fn new() -> Self {
        TensorStats {
            min: 0.0,
            max: 0.0,
            count: 0,
            non_finite: 0,
            zeros: 0,
            hist_max_log2: None,
            hist: vec![0; NUM_BINS],
        }
    }

    /// Adds one batch of values (any layout; only the distribution matters).
    pub fn observe(&mut self, values: &[f32]) {
        // First pass finds the batch extent so the grid grows at most once per
        // batch instead of once per new maximum.
        let mut batch_abs_max = 0.0f32;
        for &v in values {
            if !v.is_finite() {
                self.non_finite += 1;
                continue;
            }
            // `+ 0.0` turns -0.0 into 0.0 so an all-zero tensor reports {0, 0}
            // rather than a confusing "-0".
            let v = v + 0.0;
            if self.count == 0 {
                self.min = v;
                self.max = v;
            } else {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
            self.count += 1;
            self.zeros += u64::from(v == 0.0);
            batch_abs_max = batch_abs_max.max(v.abs());
        }
        if batch_abs_max > 0.0 {
            self.grow_to(log2_above(batch_abs_max));
        }
        // No grid means every value so far (this batch included) is zero.
        let scale = self.hist_max_log2.map_or(0.0, |e| pow2(NUM_BINS_LOG2 - e));
        for &v in values {
            if v.is_finite() {
                self.hist[bin_index(v.abs(), scale)] += 1;
            }
        }
    }

    /// Folds `other` in, as if its values had been observed here.
    pub fn merge(&mut self, other: &TensorStats) {
        if other.count > 0 {
            if self.count == 0 {
                self.min = other.min;
                self.max = other.max;
            } else {
                self.min = self.min.min(other.min);
                self.max = self.max.max(other.max);
            }
        }
        self.count = self.count.saturating_add(other.count);
        self.non_finite = self.non_finite.saturating_add(other.non_finite);
        self.zeros = self.zeros.saturating_add(other.zeros);
        let shift = match (self.hist_max_log2, other.hist_max_log2) {
            (_, None) => 0,
            (None, Some(e)) => {
                self.grow_to(e);
                0
            }
            (Some(mine), Some(theirs)) => {
                self.grow_to(theirs);
                // Their bins fold into our (now at least as coarse) grid.
                (mine.max(theirs) - theirs) as u32
            }
        };
        for (b, &c) in other.hist.iter().enumerate() {
            if c != 0 {
                let target = b.checked_shr(shift).unwrap_or(0);
                self.hist[target] = self.hist[target].saturating_add(c);
            }
        }
    }

    /// Smallest finite value seen (0 when nothing was observed).
    pub fn min(&self) -> f32 {
        self.min
    }

    /// Largest finite value seen (0 when nothing was observed).
    pub fn max(&self) -> f32 {
        self.max
    }

    /// Number of finite values observed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact zeros among the values.
    pub fn zeros(&self) -> u64 {
        self.zeros
    }

    /// Number of NaN / ±inf values that were skipped.
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// Width of one histogram bin: the resolution of the percentile and
    /// entropy thresholds. 0 while no nonzero value has been seen.
    pub fn bin_width(&self) -> f64 {
        self.hist_max_log2.map_or(0.0, |e| pow2(e - NUM_BINS_LOG2))
    }

    /// The calibrated range; `{0, 0}` when nothing was observed.
    ///
    /// Clipping methods derive a threshold T on |x| and return
    /// `(max(min, -T), min(max, T))`, so a one-sided tensor (post-ReLU) keeps
    /// its exact zero bound and a range never exceeds what was observed.
    pub fn range(&self, method: Method) -> Range {
        if self.count == 0 {
            return Range { lo: 0.0, hi: 0.0 };
        }
        let exact = Range {
            lo: self.min,
            hi: self.max,
        };
        let Some(e) = self.hist_max_log2 else {
            // Only zeros seen: nothing to clip.
            return exact;
        };
        let width = pow2(e - NUM_BINS_LOG2);
        let threshold_bins = match method {
            Method::MinMax => return exact,
            Method::Percentile(p) => percentile_bins(&self.hist, p),
            Method::Entropy => {
                let mut nonzero = self.hist.clone();
                nonzero[0] -= self.zeros;
                entropy_bins(&nonzero)
            }
        };
        let Some(bins) = threshold_bins else {
            return exact;
        };
        // f64 -> f32 saturates to inf above f32::MAX, which clamps to nothing.
        let t = (bins as f64 * width) as f32;
        Range {
            lo: self.min.max(-t),
            hi: self.max.min(t),
        }
    }

    /// Widens the grid to `2^e` if it is narrower, folding bins by the integer
    /// factor `2^(e - old)` so no count moves to a bin it does not belong to.
    fn grow_to(&mut self, e: i32) {
        let old = match self.hist_max_log2 {
            Some(old) if old >= e => return,
            // Without a grid only bin 0 can be nonzero, and it stays bin 0.
            None => {
                self.hist_max_log2 = Some(e);
                return;
            }
            Some(old) => old,
        };
        let shift = (e - old) as u32;
        // Targets never lie above their source (b >> s <= b), so an ascending
        // in-place sweep only adds into bins it has already emptied.
        for b in 1..NUM_BINS {
            let target = b.checked_shr(shift).unwrap_or(0);
            if target != b {
                let c = std::mem::take(&mut self.hist[b]);
                self.hist[target] += c;
            }
        }
        self.hist_max_log2 = Some(e);
    }
}

/// `log2(NUM_BINS)`: bin width is `hist_max / 2^11`.
const NUM_BINS_LOG2: i32 = 11;
const _: () = assert!(1 << NUM_BINS_LOG2 == NUM_BINS);

/// `2^k`, built from the bit pattern so it is exact (`powi` makes no such
/// promise, and the grid relies on every scaling being exact).
fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Exponent of the smallest power of two strictly above `a` (finite, > 0).
/// Strictly above, so the maximum never sits on the upper edge: a value on the
/// edge would need clamping into the last bin, and the clamp would not survive
/// a later regrid, breaking merge/observe equivalence.
fn log2_above(a: f32) -> i32 {
    // Every f32, subnormals included, is a normal f64, so the exponent field
    // is floor(log2(a)).
    let biased = ((f64::from(a).to_bits() >> 52) & 0x7ff) as i32;
    (biased - 1023 + 1).clamp(MIN_HIST_LOG2, MAX_HIST_LOG2)
}

/// Bin of `a >= 0` given `scale = NUM_BINS / hist_max`. The product is exact
/// (power-of-two scaling of an f32 in f64), so the floor is exact and the same
/// value lands in corresponding bins on every grid.
fn bin_index(a: f32, scale: f64) -> usize {
    ((f64::from(a) * scale) as usize).min(NUM_BINS - 1)
}

/// Number of bins from 0 needed to hold `p`% of the values: the threshold is
/// the upper edge of the bin where the cumulative count reaches `p`%.
fn percentile_bins(hist: &[u64], p: f64) -> Option<usize> {
    // NaN would make every comparison false; treat it as "clip nothing".
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let total: u64 = hist.iter().sum();
    let target = p / 100.0 * total as f64;
    let mut cum = 0u64;
    for (b, &c) in hist.iter().enumerate() {
        cum += c;
        // `cum > 0` so that p = 0 still yields the smallest occupied bin.
        if cum > 0 && cum as f64 >= target {
            return Some(b + 1);
        }
    }
    None
}

/// TensorRT EntropyCalibrator2: the number of bins `i` in `128..=NUM_BINS`
/// whose 128-level quantization diverges least from the clipped distribution.
///
/// The threshold is taken at the upper edge of the last kept bin, `i * width`
/// (as MXNet / ONNX Runtime do), rather than TensorRT's `(i + 0.5) * width`:
/// it is the boundary the KL term was actually evaluated at, and it makes
/// `i = NUM_BINS` mean "no clipping" exactly.
///
/// Resolution limit inherited from the algorithm: T can never be below
/// `128 * width = hist_max / 16`, so a tensor whose largest outlier is far
/// beyond its bulk is clipped to about a sixteenth of that outlier, not
/// tighter.
fn entropy_bins(hist: &[u64]) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    let start = QUANT_LEVELS.min(hist.len());
    let mut kept: u64 = hist[..start - 1].iter().sum();
    let mut p = Vec::with_capacity(hist.len());
    let mut q = Vec::with_capacity(hist.len());
    let mut best: Option<(usize, f64)> = None;
    for i in start..=hist.len() {
        kept += hist[i - 1];
        let src = &hist[..i];
        // Reference P: what the float tensor looks like after clipping at
        // bin i, i.e. with every outlier saturated into the last bin.
        p.clear();
        p.extend(src.iter().map(|&c| c as f64));
        p[i - 1] += (total - kept) as f64;
        // Candidate Q: what survives quantization to 128 levels (outliers are
        // not part of it; their loss is what P's last bin makes Q pay for).
        quantize_expand(src, QUANT_LEVELS, &mut q);
        let Some(kl) = kl_divergence(&mut p, &mut q) else {
            continue;
        };
        // Strict `<`: on ties prefer the tighter threshold (finer steps).
        if best.is_none_or(|(_, b)| kl < b) {
            best = Some((i, kl));
        }
    }
    best.map(|(i, _)| i)
}

/// Merges `src` into `levels` groups of adjacent bins and spreads each group's
/// total evenly back over the group's *nonzero* bins (TensorRT's "expand"),
/// so Q is zero exactly where the source is and a KL term never compares a
/// real bin against an artificial one. Bin `b` belongs to group
/// `b * levels / len`, which splits uneven lengths evenly (as
/// pytorch-quantization does) rather than dumping the remainder in the last
/// group.
fn quantize_expand(src: &[u64], levels: usize, out: &mut Vec<f64>) {
    let n = src.len();
    let mut sums = vec![0u64; levels];
    let mut nonzero = vec![0u64; levels];
    for (b, &c) in src.iter().enumerate() {
        let g = b * levels / n;
        sums[g] += c;
        nonzero[g] += u64::from(c != 0);
    }
    out.clear();
    out.extend(src.iter().enumerate().map(|(b, &c)| {
        let g = b * levels / n;
        if c == 0 {
            0.0
        } else {
            sums[g] as f64 / nonzero[g] as f64
        }
    }));
}

/// KL(P || Q) of two unnormalized histograms after smoothing; `None` when the
/// candidate cannot be scored (Q empty because all data lies beyond it).
fn kl_divergence(p: &mut [f64], q: &mut [f64]) -> Option<f64> {
    smooth(p)?;
    smooth(q)?;
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    let kl: f64 = p
        .iter()
        .zip(q.iter())
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            a * (a / b).ln()
        })
        .sum();
    kl.is_finite().then_some(kl)
}

/// Gives empty bins a tiny mass, taken from the nonzero ones, so KL stays
/// finite when P has mass where Q has none (the clipped outliers when the
/// threshold bin itself is empty) — a large but finite penalty, as in
/// MXNet / ONNX Runtime.
fn smooth(d: &mut [f64]) -> Option<()> {
    let zeros = d.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = d.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let take = SMOOTHING_EPS * zeros as f64 / nonzeros as f64;
    for v in d.iter_mut() {
        *v = if *v == 0.0 { SMOOTHING_EPS } else { *v - take };
    }
    // Nonzero bins hold >= 1 count (and Q's >= 1 on average per group), and
    // `take` <= 2048e-4, so this only trips on data no histogram produces.
    d.iter().all(|&v| v > 0.0).then_some(())
}

/// How an activation range is derived from its [`TensorStats`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Method {
    /// Exact observed min and max.
    MinMax,
    /// Clip |x| at this percentile (0 < p <= 100), e.g. 99.99.
    Percentile(f64),
    /// TensorRT EntropyCalibrator2 (minimum KL divergence).
    Entropy,
}

/// Percentile used when a config says just `percentile`; ONNX Runtime's
/// default as well.
pub const DEFAULT_PERCENTILE: f64 = 99.99;

impl FromStr for Method {
    type Err = String;

    /// Accepts `minmax`, `entropy`, `percentile` (= 99.99) and
    /// `percentile:P` with `0 < P <= 100`; case-insensitive.
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "minmax" => return Ok(Method::MinMax),
            "entropy" => return Ok(Method::Entropy),
            "percentile" => return Ok(Method::Percentile(DEFAULT_PERCENTILE)),
            _ => {}
        }
        if let Some(p) = lower.strip_prefix("percentile:") {
            return match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                _ => Err(format!(
                    "invalid percentile in calibration method {s:?}: expected a number in (0, 100]"
                )),
            };
        }
        Err(format!(
            "unknown calibration method {s:?}: expected minmax, percentile, percentile:P or entropy"
        ))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::MinMax => f.write_str("minmax"),
            // f64's Display is the shortest string that parses back to the
            // same value, so this round-trips exactly.
            Method::Percentile(p) => write!(f, "percentile:{p}"),
            Method::Entropy => f.write_str("entropy"),
        }
    }
}

/// A calibrated real-valued range `[lo, hi]` of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
}

impl Range {
    pub fn abs_max(&self) -> f32 {
        self.lo.abs().max(self.hi.abs())
    }

    /// uint8 asymmetric parameters `(scale, zero_point)`, as ONNX Runtime's
    /// CPU kernels expect for activations. The range is first widened to
    /// include 0 so that 0 (padding, ReLU output) is exactly representable.
    /// A degenerate range (or one too small / non-finite to give a usable
    /// scale) yields `(1.0, 0)` rather than a zero or NaN scale.
    pub fn asymmetric_u8(&self) -> (f32, u8) {
        let lo = f64::from(self.lo.min(0.0));
        let hi = f64::from(self.hi.max(0.0));
        // In f64 so that a range near ±f32::MAX does not overflow the width.
        let scale = ((hi - lo) / 255.0) as f32;
        if !(scale.is_finite() && scale > 0.0) {
            return (1.0, 0);
        }
        // Zero point from the scale actually stored, so that dequantizing
        // the zero point gives back 0 as closely as the runtime will see it.
        let zp = (-lo / f64::from(scale)).round().clamp(0.0, 255.0) as u8;
        (scale, zp)
    }

    /// int8 symmetric scale (zero point 0), as TensorRT's activations use:
    /// `abs_max / 127` ([`symmetric_scale`], shared with the weights).
    pub fn symmetric_i8(&self) -> f32 {
        symmetric_scale(self.abs_max(), 127.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::weights::per_channel_scales;

    /// SplitMix64: deterministic, dependency-free, good enough for sampling.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal via Box–Muller (1 - u keeps ln away from 0).
        fn gaussian(&mut self) -> f64 {
            let u1 = 1.0 - self.uniform();
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn stats_of(values: &[f32]) -> TensorStats {
        let mut s = TensorStats::new();
        s.observe(values);
        s
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= f32::EPSILON * a.abs().max(b.abs())
    }

    fn gaussian_with_outliers(outlier: f32) -> Vec<f32> {
        let mut rng = Rng(42);
        let mut v: Vec<f32> = (0..100_000).map(|_| rng.gaussian() as f32).collect();
        v.extend([outlier, -outlier, outlier, -outlier, outlier]);
        v
    }

    #[test]
    fn hand_checked_minmax_and_scales() {
        let s = stats_of(&[-1.0, 0.5, 2.0]);
        assert_eq!(s.count(), 3);
        assert_eq!((s.min(), s.max()), (-1.0, 2.0));
        let r = s.range(Method::MinMax);
        assert_eq!(r, Range { lo: -1.0, hi: 2.0 });
        assert_eq!(r.abs_max(), 2.0);

        let (scale, zp) = r.asymmetric_u8();
        assert!(close(scale, 3.0 / 255.0), "scale {scale}");
        // round(1 / (3/255)) = 85
        assert_eq!(zp, 85);
        assert!(close(r.symmetric_i8(), 2.0 / 127.0));

        let scales = per_channel_scales(&[1.0, -3.0, 0.5, 0.25], 2, 127.0);
        assert_eq!(scales.len(), 2);
        assert!(close(scales[0], 3.0 / 127.0));
        assert!(close(scales[1], 0.5 / 127.0));
        // The reduced range puts the largest weight on 64.
        let reduced = per_channel_scales(&[1.0, -3.0, 0.5, 0.25], 2, 64.0);
        assert!(close(reduced[0], 3.0 / 64.0));
        assert!(close(reduced[1], 0.5 / 64.0));
    }

    #[test]
    fn asymmetric_widens_to_include_zero() {
        // All-positive range: lo widened to 0, so zero point 0, scale hi/255.
        let (scale, zp) = Range { lo: 2.0, hi: 5.1 }.asymmetric_u8();
        assert!(close(scale, 5.1 / 255.0));
        assert_eq!(zp, 0);
        // All-negative range: hi widened to 0, zero point at the top.
        let (scale, zp) = Range { lo: -4.0, hi: -1.0 }.asymmetric_u8();
        assert!(close(scale, 4.0 / 255.0));
        assert_eq!(zp, 255);
    }

    #[test]
    fn per_channel_edge_cases() {
        assert!(per_channel_scales(&[1.0, 2.0], 0, 127.0).is_empty());
        // An all-zero channel must still get a usable scale.
        assert_eq!(per_channel_scales(&[0.0, 0.0, 4.0, 1.0], 2, 127.0)[0], 1.0);
        // Non-finite weights are ignored rather than producing an inf scale.
        let s = per_channel_scales(&[f32::INFINITY, -2.54], 1, 127.0);
        assert!(close(s[0], 2.54 / 127.0));
    }

    #[test]
    fn percentile_hand_checked() {
        // 1..=100: hist_max is 128, bin width 1/16, and the 50th value (50.0)
        // is where the cumulative count reaches 50%, in bin 50 * 16 = 800,
        // whose upper edge is 801 / 16.
        let values: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        let s = stats_of(&values);
        assert_eq!(s.bin_width(), 1.0 / 16.0);
        let r = s.range(Method::Percentile(50.0));
        assert_eq!(
            r,
            Range {
                lo: 1.0,
                hi: 801.0 / 16.0
            }
        );
        // 100% clips nothing.
        assert_eq!(s.range(Method::Percentile(100.0)), s.range(Method::MinMax));
    }

    #[test]
    fn percentile_keeps_relu_lower_bound() {
        let mut rng = Rng(7);
        let v: Vec<f32> = (0..10_000)
            .map(|_| rng.gaussian().max(0.0) as f32)
            .collect();
        let s = stats_of(&v);
        for m in [Method::Percentile(99.0), Method::Entropy] {
            let r = s.range(m);
            assert_eq!(r.lo, 0.0, "{m}");
            assert!(r.hi > 0.0 && r.hi <= s.max(), "{m}: {r:?}");
        }
    }

    #[test]
    fn entropy_ignores_the_zero_spike_of_relu_outputs() {
        // Half zeros, half |N(0,1)|: the spike of zeros must not pull the
        // threshold down towards the search's floor (max/16). The
        // nonzero half alone is a half-normal of 50 000 samples, too light-tailed
        // for 128 levels to gain from clipping.
        let mut rng = Rng(11);
        let v: Vec<f32> = (0..100_000)
            .map(|_| rng.gaussian().max(0.0) as f32)
            .collect();
        let s = stats_of(&v);
        assert!(s.zeros() > 45_000 && s.zeros() < 55_000, "{}", s.zeros());
        let e = s.range(Method::Entropy);
        assert_eq!(e.lo, 0.0);
        // Measured: 4.23 (the maximum: nothing worth clipping); 1.98 with the
        // zeros left in.
        assert!(e.hi > 3.0 && e.hi <= s.max(), "{e:?}, max {}", s.max());
        // The same values without the zeros give the same threshold.
        let nz: Vec<f32> = v.iter().copied().filter(|&x| x != 0.0).collect();
        assert_eq!(stats_of(&nz).range(Method::Entropy).hi, e.hi);
    }

    #[test]
    fn quantize_expand_matches_tensorrt_slide_example() {
        // From NVIDIA's "8-bit Inference with TensorRT" (GTC 2017): P quantized
        // into 2 levels is [6, 16], expanded over the nonzero bins.
        let mut q = Vec::new();
        quantize_expand(&[1, 0, 2, 3, 5, 3, 1, 7], 2, &mut q);
        assert_eq!(q, [2.0, 0.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0]);
        // Uneven split: 5 bins into 2 groups -> bins {0,1,2} and {3,4}.
        quantize_expand(&[3, 0, 3, 1, 1], 2, &mut q);
        assert_eq!(q, [3.0, 0.0, 3.0, 1.0, 1.0]);
    }

    #[test]
    fn kl_divergence_is_zero_for_equal_and_positive_otherwise() {
        let kl = kl_divergence(&mut [1.0, 2.0, 3.0], &mut [2.0, 4.0, 6.0]).unwrap();
        assert!(kl.abs() < 1e-12, "{kl}");
        let kl = kl_divergence(&mut [1.0, 0.0, 3.0], &mut [3.0, 0.0, 1.0]).unwrap();
        // KL([.25,0,.75] || [.75,0,.25]) = 0.25 ln(1/3) + 0.75 ln 3 = 0.5 ln 3
        assert!((kl - 0.5 * 3f64.ln()).abs() < 1e-3, "{kl}");
        assert!(kl_divergence(&mut [1.0], &mut [0.0]).is_none());
    }

    #[test]
    fn uniform_distribution() {
        let mut rng = Rng(1);
        let v: Vec<f32> = (0..100_000)
            .map(|_| (10.0 * rng.uniform()) as f32)
            .collect();
        let s = stats_of(&v);
        let width = s.bin_width() as f32;

        let mm = s.range(Method::MinMax);
        assert!(mm.lo >= 0.0 && mm.lo < 1e-3, "{mm:?}");
        assert!((mm.hi - 10.0).abs() < 1e-3, "{mm:?}");

        let p99 = s.range(Method::Percentile(99.0));
        assert_eq!(p99.lo, mm.lo);
        // Upper bin edge: at most one bin above the true 9.9, plus sampling
        // noise (~0.003 for 1e5 samples).
        assert!(
            p99.hi >= 9.9 - 0.01 && p99.hi <= 9.9 + width + 0.01,
            "{p99:?}, width {width}"
        );

        // Nothing to clip in a uniform distribution.
        let ent = s.range(Method::Entropy);
        assert!(ent.hi >= 9.0 && ent.hi <= mm.hi, "{ent:?}");
        assert_eq!(ent.lo, mm.lo);
    }

    #[test]
    fn gaussian_with_huge_outliers() {
        // Outliers at +-50 (50 sigma) keep the bin width at 1/32, fine enough
        // for the entropy search to resolve the bulk; see the next test for
        // +-1000, where the 128-bin floor of the search dominates.
        let s = stats_of(&gaussian_with_outliers(50.0));
        assert_eq!(s.count(), 100_005);

        let mm = s.range(Method::MinMax);
        assert_eq!(
            mm,
            Range {
                lo: -50.0,
                hi: 50.0
            }
        );

        // |x| 99.99th percentile of N(0,1) is 3.89 (a bit more here: half of
        // the clipped 0.01% are the outliers).
        let p = s.range(Method::Percentile(99.99));
        assert!(p.hi > 3.0 && p.hi < 5.0, "{p:?}");
        assert_eq!(p.lo, -p.hi);

        let e = s.range(Method::Entropy);
        assert!(e.hi > 2.0 && e.hi < 20.0, "{e:?}");
        assert_eq!(e.lo, -e.hi);
    }

    #[test]
    fn entropy_resolution_floor_with_far_outliers() {
        // With outliers at +-1000 the grid is [0, 1024) in 0.5-wide bins, and
        // the search starts at 128 bins, so T cannot go below 64: still 15x
        // below the outliers, but not the ~4 a finer histogram would allow.
        let s = stats_of(&gaussian_with_outliers(1000.0));
        assert_eq!(s.range(Method::MinMax).hi, 1000.0);
        let p = s.range(Method::Percentile(99.99));
        assert!(p.hi > 3.0 && p.hi < 5.0, "{p:?}");
        let e = s.range(Method::Entropy);
        let floor = (QUANT_LEVELS as f64 * s.bin_width()) as f32;
        assert!(e.hi >= floor && e.hi < 100.0, "{e:?}");
    }

    #[test]
    fn rebinning_and_merge_match_single_pass() {
        let mut rng = Rng(3);
        let small: Vec<f32> = (0..50_000).map(|_| rng.gaussian() as f32).collect();
        // Larger max in the second batch forces the grid to grow (several doublings).
        let large: Vec<f32> = (0..50_000)
            .map(|_| (rng.gaussian() * 20.0) as f32)
            .collect();
        let all: Vec<f32> = small.iter().chain(&large).copied().collect();
        let once = stats_of(&all);

        let mut batched = stats_of(&small);
        let fine_grid = batched.hist_max_log2;
        batched.observe(&large);
        assert!(
            batched.hist_max_log2 > fine_grid,
            "test must force a regrid"
        );

        let mut merged_into_small = stats_of(&small);
        merged_into_small.merge(&stats_of(&large));
        let mut merged_into_large = stats_of(&large);
        merged_into_large.merge(&stats_of(&small));

        let width = once.bin_width() as f32;
        for s in [&batched, &merged_into_small, &merged_into_large] {
            assert_eq!(s.count(), 100_000);
            assert_eq!(s.hist.iter().sum::<u64>(), 100_000);
            assert_eq!((s.min(), s.max()), (once.min(), once.max()));
            for p in [50.0, 99.0, 99.99] {
                let (a, b) = (
                    s.range(Method::Percentile(p)),
                    once.range(Method::Percentile(p)),
                );
                assert!((a.hi - b.hi).abs() <= width, "p{p}: {a:?} vs {b:?}");
            }
            // Stronger than the tolerance above: the power-of-two grid makes
            // the result identical, whatever the order.
            assert_eq!(s, &once);
        }
    }

    #[test]
    fn merge_with_empty_and_zero_only_stats() {
        let s = stats_of(&[-1.0, 0.5, 2.0]);
        let mut a = TensorStats::new();
        a.merge(&s);
        assert_eq!(a, s);
        let mut b = s.clone();
        b.merge(&TensorStats::default());
        assert_eq!(b, s);

        // Zeros seen before any grid exists must survive the later grid.
        let mut z = stats_of(&[0.0, 0.0]);
        z.merge(&s);
        assert_eq!(z, stats_of(&[0.0, 0.0, -1.0, 0.5, 2.0]));
        let mut z = stats_of(&[0.0, 0.0]);
        z.observe(&[-1.0, 0.5, 2.0]);
        assert_eq!(z, stats_of(&[0.0, 0.0, -1.0, 0.5, 2.0]));
    }

    #[test]
    fn non_finite_values_are_skipped_and_counted() {
        let s = stats_of(&[f32::NAN, 1.0, f32::INFINITY, -2.0, f32::NEG_INFINITY]);
        assert_eq!(s.count(), 2);
        assert_eq!(s.non_finite(), 3);
        assert_eq!(s.range(Method::MinMax), Range { lo: -2.0, hi: 1.0 });
    }

    #[test]
    fn extreme_magnitudes_do_not_panic() {
        let s = stats_of(&[f32::MAX, -f32::MAX, f32::from_bits(1), 1.0]);
        assert_eq!(s.range(Method::MinMax).hi, f32::MAX);
        for m in [Method::Percentile(50.0), Method::Entropy] {
            let r = s.range(m);
            assert!(r.lo.is_finite() && r.hi.is_finite(), "{m}: {r:?}");
        }
        let (scale, _) = s.range(Method::MinMax).asymmetric_u8();
        assert!(scale.is_finite() && scale > 0.0);
        let tiny = stats_of(&[f32::from_bits(1)]);
        assert_eq!(tiny.range(Method::MinMax).symmetric_i8(), 1.0);
    }

    #[test]
    fn method_parse_display_round_trip() {
        for m in [
            Method::MinMax,
            Method::Entropy,
            Method::Percentile(99.99),
            Method::Percentile(99.9),
            Method::Percentile(0.1 + 0.2),
        ] {
            assert_eq!(m.to_string().parse::<Method>(), Ok(m), "{m}");
        }
        assert_eq!("percentile".parse(), Ok(Method::Percentile(99.99)));
        assert_eq!("percentile:99.9".parse(), Ok(Method::Percentile(99.9)));
        assert_eq!(" MinMax ".parse(), Ok(Method::MinMax));
        assert_eq!(Method::Percentile(99.9).to_string(), "percentile:99.9");

        for bad in [
            "kl",
            "percentile:abc",
            "percentile:0",
            "percentile:101",
            "percentile:",
        ] {
            let err = bad.parse::<Method>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn degenerate_inputs() {
        let empty = TensorStats::new();
        let zeros = stats_of(&[0.0, -0.0, 0.0]);
        for s in [&empty, &zeros] {
            for m in [Method::MinMax, Method::Percentile(99.99), Method::Entropy] {
                let r = s.range(m);
                assert_eq!(r, Range { lo: 0.0, hi: 0.0 }, "{m}");
                assert!(r.lo.is_sign_positive() && r.hi.is_sign_positive());
                assert_eq!(r.asymmetric_u8(), (1.0, 0));
                assert_eq!(r.symmetric_i8(), 1.0);
            }
        }
        assert_eq!(zeros.count(), 3);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let s = stats_of(&[-1.0, 0.5, 2.0, f32::NAN]);
        let json = serde_json::to_string(&s).unwrap();
        let back: TensorStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            serde_json::from_str::<TensorStats>(
                &serde_json::to_string(&TensorStats::new()).unwrap()
            )
            .unwrap(),
            TensorStats::new()
        );

        let mut bad = serde_json::to_value(&s).unwrap();
        bad["hist"].as_array_mut().unwrap().pop();
        let err = serde_json::from_value::<TensorStats>(bad).unwrap_err();
        assert!(err.to_string().contains("bins"), "{err}");

        let mut bad = serde_json::to_value(&s).unwrap();
        bad["count"] = 4.into();
        assert!(serde_json::from_value::<TensorStats>(bad).is_err());

        let m: Method =
            serde_json::from_str(&serde_json::to_string(&Method::Percentile(99.9)).unwrap())
                .unwrap();
        assert_eq!(m, Method::Percentile(99.9));
    }
}
