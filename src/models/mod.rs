//! Model families: each knows its own preprocessing and output decoding, and nothing of engines
//! or streams. A [`Manifest`] in `models/` names the file, the family, the labels and the
//! thresholds; [`build_detector`] checks a model's inputs and outputs against its family.

pub mod labels;
pub mod manifest;
pub mod ssd;
pub mod yolov8;

pub use labels::Labels;
pub use manifest::{Family, Manifest};

use crate::detection::Detection;
use crate::preprocess::{PreprocessSpec, Transform};
use crate::tensor::{ModelIo, Output};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {model}: {reason}")]
    Io { model: String, reason: String },
    #[error("model {model}: output {output} has shape {shape:?}: {reason}")]
    OutputShape {
        model: String,
        output: String,
        shape: Vec<usize>,
        reason: String,
    },
    #[error(transparent)]
    Labels(#[from] labels::LabelsError),
}

/// A detector family: frames in (via its [`PreprocessSpec`]), boxes in source pixels out.
pub trait Detector: Send + Sync {
    fn preprocess(&self) -> &PreprocessSpec;

    /// Decodes one image's outputs; `t` maps model-input pixels back to the source frame.
    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError>;
}

/// Builds the family's decoder for a model, checking that its inputs and outputs fit.
pub fn build_detector(m: &Manifest, io: &ModelIo) -> Result<Box<dyn Detector>, ModelError> {
    let labels = match &m.labels {
        Some(p) => Some(Labels::from_file(p)?),
        None => None,
    };
    Ok(match m.family {
        Family::Ssd => Box::new(ssd::Ssd::new(m, io, labels)?),
        Family::Yolov8 => Box::new(yolov8::Yolov8::new(m, io, labels)?),
    })
}

/// Spatial size of a 4-D image input in either layout, with dynamic dimensions as `None`.
pub(crate) fn input_hw(shape: &[i64], nhwc: bool) -> (Option<u32>, Option<u32>) {
    let dim = |i: usize| shape.get(i).copied().filter(|&d| d > 0).map(|d| d as u32);
    if nhwc {
        (dim(1), dim(2))
    } else {
        (dim(2), dim(3))
    }
}
