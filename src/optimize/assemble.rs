//! The artifact's record ([`Artifact`]) from what each step of `optimize` made.

use super::artifact::{Artifact, TensorRtInfo};
use super::images::ImageSets;
use super::int8::Int8;
use super::measure::Measured;
use super::spec::{OptimizeSpec, Precision, Target};

/// What the steps made, besides the model file.
pub struct Made {
    pub source_sha: String,
    pub int8: Option<Int8>,
    pub rewrites: Vec<String>,
    pub measured: Measured,
    pub score_ceiling: Option<f64>,
    pub tensorrt: Option<TensorRtInfo>,
}

impl Made {
    pub fn into_artifact(self, spec: &OptimizeSpec, sets: &ImageSets) -> Artifact {
        let (calibration, excluded, quantized_layers, unknown_ops, sensitivity, layer_error) =
            match self.int8 {
                Some(q) => (
                    Some(q.calibration),
                    q.report.excluded,
                    q.report.quantized_layers.len(),
                    q.report.unknown_ops,
                    q.sensitivity,
                    q.layer_error,
                ),
                None => Default::default(),
            };
        Artifact {
            model: spec.manifest.clone(),
            precision: spec.precision,
            target: spec.target,
            source_model: spec.manifest.file.display().to_string(),
            source_sha256: self.source_sha,
            heldout_dir: sets.heldout.dir.display().to_string(),
            heldout_images: sets.held.len(),
            calibration,
            excluded,
            quantized_layers,
            rewrites: self.rewrites,
            unknown_ops,
            figures: self.measured.figures,
            sensitivity,
            layer_error,
            comparison: self.measured.comparison,
            yardstick: self.measured.yardstick,
            score_ceiling: self.score_ceiling,
            weight_range: (spec.precision == Precision::Int8 && spec.target == Target::Cpu)
                .then_some(spec.weight_range),
            tensorrt: self.tensorrt,
            created_by: format!("edgesight {}", env!("CARGO_PKG_VERSION")),
        }
    }
}
