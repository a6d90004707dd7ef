//! Int8 weight vocabulary shared by the quantizer ([`super::qdq`]) and the reconstruction
//! ([`super::reconstruct`]): how far weights reach on the target CPU, which layers the runtime
//! runs on its depthwise kernel, per-channel scales, and a layer's fitted weights that replace
//! rounding ([`Preset`]).
//!
//! ```
//! use edgesight::optimize::weights::{per_channel_scales, WeightRange};
//! let scales = per_channel_scales(&[0.5, -1.0, 2.0, 0.25], 2, WeightRange::Full.qmax(false));
//! assert_eq!(scales, [1.0 / 127.0, 2.0 / 127.0]);
//! ```

use std::collections::HashMap;

use crate::onnx::{self, pb};

/// How far int8 weights reach. ONNX Runtime's x86 int8 kernels without VNNI (AVX2, and AVX-512
/// without VNNI) multiply uint8 activations by int8 weights with `vpmaddubsw`, which adds each
/// pair of products into an int16 and saturates: 2 × 255 × 127 does not fit, 2 × 255 × 64
/// does. On such a CPU a full-range model silently computes something else, far off its own
/// Q/DQ arithmetic (docs/optimize-findings.md, "Figures behind the code"). Depthwise convolutions run on a
/// kernel that widens to 16 bits first, so they keep the full range either way. VNNI, ARM and
/// TensorRT kernels accumulate in 32 bits and take the full range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightRange {
    /// ±127.
    #[default]
    Full,
    /// ±64 (ONNX Runtime's `reduce_range`), depthwise convolutions aside.
    Reduced,
}

impl WeightRange {
    /// The largest int8 weight magnitude of a layer.
    pub fn qmax(self, depthwise: bool) -> f32 {
        match self {
            WeightRange::Reduced if !depthwise => 64.0,
            _ => 127.0,
        }
    }

    /// What ONNX Runtime's CPU kernels on this machine need.
    pub fn for_this_cpu() -> Self {
        if cpu_int8_saturates() {
            WeightRange::Reduced
        } else {
            WeightRange::Full
        }
    }
}

impl std::fmt::Display for WeightRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightRange::Full => "full",
            WeightRange::Reduced => "reduced",
        })
    }
}

/// Whether this CPU's int8 kernels add pairs of uint8 × int8 products in 16 bits (x86 without
/// VNNI, see [`WeightRange`]).
pub fn cpu_int8_saturates() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A convolution with one input and one output channel per group: ONNX Runtime runs it on its
/// depthwise kernel, which does not saturate ([`WeightRange`]).
pub fn is_depthwise(n: &pb::NodeProto, weight_dims: &[i64]) -> bool {
    let group = onnx::get_attr_int(n, "group").unwrap_or(1);
    n.op_type() == "Conv"
        && weight_dims.len() == 4
        && weight_dims[1] == 1
        && group > 1
        && weight_dims[0] == group
}

/// Symmetric per-channel int8 scales for a weight tensor laid out with
/// `channels` rows along axis 0 (for Conv `[O, I, kH, kW]`): the slice is
/// channel-major, each channel a contiguous chunk of `len / channels`. Each
/// channel's largest weight lands on `qmax` (127, or 64 where the runtime's
/// kernels would saturate: [`WeightRange`]).
///
/// Non-finite weights are ignored, as in calibration's statistics. Should
/// `len` not be a multiple of `channels` (a caller bug), channel `c` covers
/// `[c * len / channels, (c + 1) * len / channels)` so every weight is still
/// accounted for instead of panicking; `channels == 0` gives an empty vector.
pub fn per_channel_scales(weights: &[f32], channels: usize, qmax: f32) -> Vec<f32> {
    let n = weights.len() as u128;
    let bound = |c: usize| (c as u128 * n / channels as u128) as usize;
    (0..channels)
        .map(|c| abs_max_scale(weights[bound(c)..bound(c + 1)].iter(), qmax))
        .collect()
}

/// The same for a `[rows, columns]` matrix whose output channels are its columns (a MatMul's
/// `[K, N]` weight, a Gemm's without `transB`).
pub fn per_column_scales(weights: &[f32], rows: usize, columns: usize, qmax: f32) -> Vec<f32> {
    (0..columns)
        .map(|j| abs_max_scale((0..rows).map(|i| &weights[i * columns + j]), qmax))
        .collect()
}

/// The scale that puts the largest finite magnitude among `weights` on `qmax`.
fn abs_max_scale<'a>(weights: impl Iterator<Item = &'a f32>, qmax: f32) -> f32 {
    let abs_max = weights
        .filter(|w| w.is_finite())
        .fold(0.0f32, |m, w| m.max(w.abs()));
    symmetric_scale(abs_max, qmax)
}

/// The scale that puts `abs_max` on `qmax`, or 1.0 when that would be 0 or not finite (an
/// all-zero tensor), so that a scale is always safe to divide by.
pub fn symmetric_scale(abs_max: f32, qmax: f32) -> f32 {
    let scale = abs_max / qmax;
    if scale.is_finite() && scale > 0.0 {
        scale
    } else {
        1.0
    }
}

/// Int8 weights, their per-channel scales and the float bias of one layer, by node label:
/// what the quantizer writes instead of rounding to nearest ([`super::reconstruct`] fits them).
#[derive(Debug, Clone)]
pub struct Preset {
    /// In the weight's own layout.
    pub q: Vec<i8>,
    /// One per output channel.
    pub scales: Vec<f32>,
    pub bias: Vec<f32>,
}

pub type Presets = HashMap<String, Preset>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The column form and the row form agree on a transposed matrix, and both ignore a
    /// non-finite weight.
    #[test]
    fn columns_and_rows_give_the_same_scales() {
        let rows = [1.0, -3.0, f32::INFINITY, 0.5, 2.0, -0.25];
        // The same matrix, 3 x 2, column-major as rows of length 3.
        let cols = [1.0, f32::INFINITY, 2.0, -3.0, 0.5, -0.25];
        assert_eq!(
            per_column_scales(&rows, 3, 2, 127.0),
            per_channel_scales(&cols, 2, 127.0)
        );
        assert_eq!(
            per_column_scales(&rows, 3, 2, 64.0),
            [2.0 / 64.0, 3.0 / 64.0]
        );
        assert_eq!(per_column_scales(&[0.0; 4], 2, 2, 127.0), [1.0, 1.0]);
    }
}
