//! Checks on the finished graph that a user should hear about: a score no int8 heatmap can
//! reach, and float layers that ONNX Runtime would quantize on its own.
//!
//! ```no_run
//! use edgesight::onnx::Model;
//! use edgesight::optimize::ceiling::score_ceiling;
//! let float = Model::load("models/cache/centernet-mobilenetv3.onnx".as_ref())?;
//! let int8 = Model::load("out/optimize/centernet-int8-cpu/model.onnx".as_ref())?;
//! if let Some(top) = score_ceiling(&float, &int8) {
//!     println!("no score above {top:.3}: keep the threshold below it");
//! }
//! # Ok::<(), edgesight::onnx::OnnxError>(())
//! ```

use super::{peaks, qdq};
use crate::onnx::Model;

/// A score ceiling below this is worth a warning: a pipeline's threshold may sit above it.
const SCORE_CEILING_WARNING: f64 = 0.9;

/// The highest score `quantized` can give through the heatmaps of `float` (its source): the
/// sigmoid of the top of each heatmap's logit grid, the lowest of them. `None` for a graph
/// with no heatmap peak test, or whose logits stayed float.
pub fn score_ceiling(float: &Model, quantized: &Model) -> Option<f64> {
    peaks::heatmap_logits(float)
        .iter()
        .filter_map(|t| qdq::grid_top(quantized, t))
        .map(|top| 1.0 / (1.0 + (-top).exp()))
        .reduce(f64::min)
}

/// Warns about what the candidate cannot do; its score ceiling, for the artifact.
pub fn check(src: &Model, candidate: &Model) -> Option<f64> {
    // A percentile range fits the background logits; the top of the grid is the best score
    // the calibration images gave, and no score can pass it.
    let ceiling = score_ceiling(src, candidate);
    if let Some(c) = ceiling.filter(|&c| c < SCORE_CEILING_WARNING) {
        tracing::warn!(
            ceiling = format!("{c:.3}"),
            "int8 scores cannot pass this: the highest heatmap logit in the calibration images"
        );
    }
    let requantized = qdq::runtime_requantized(candidate);
    if !requantized.is_empty() {
        tracing::warn!(
            layers = ?requantized,
            "ONNX Runtime will give these float layers per-tensor int8 weights of its own"
        );
    }
    ceiling
}
