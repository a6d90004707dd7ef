//! What every detector family shares: the [`Detector`] trait, its errors, the thresholds and
//! labels it keeps ([`DetectorCommon`]) and the checks of a model's inputs and outputs.

use super::labels::{self, Labels};
use super::manifest::Manifest;
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

/// What a detector family keeps besides its own output layout.
pub(crate) struct DetectorCommon {
    pub spec: PreprocessSpec,
    pub labels: Labels,
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
    /// The model file, for errors.
    pub model: String,
}

impl DetectorCommon {
    /// A detection from a box in model-input pixels.
    pub fn detection(&self, class_id: u32, score: f32, t: &Transform, b: [f32; 4]) -> Detection {
        let (x1, y1) = t.to_source(b[0], b[1]);
        let (x2, y2) = t.to_source(b[2], b[3]);
        Detection {
            class_id,
            label: self.labels.name(class_id),
            score,
            bbox: crate::detection::BBox { x1, y1, x2, y2 },
            keypoints: Vec::new(),
            track_id: None,
            name: None,
        }
    }

    /// Class-wise NMS and the manifest's cap.
    pub fn finish(&self, dets: Vec<Detection>) -> Vec<Detection> {
        crate::detection::nms_per_class(dets, self.iou_threshold, self.max_detections)
    }
}

/// What every family's constructor starts with: the model's name for its errors, and its
/// first input and output.
pub(crate) struct IoCheck {
    pub model: String,
}

impl IoCheck {
    pub fn new(m: &Manifest) -> Self {
        Self {
            model: m.file.display().to_string(),
        }
    }

    pub fn err(&self, reason: String) -> ModelError {
        ModelError::Io {
            model: self.model.clone(),
            reason,
        }
    }

    pub fn input<'a>(&self, io: &'a ModelIo) -> Result<&'a crate::tensor::TensorInfo, ModelError> {
        io.inputs
            .first()
            .ok_or_else(|| self.err("has no input".into()))
    }

    pub fn output<'a>(&self, io: &'a ModelIo) -> Result<&'a crate::tensor::TensorInfo, ModelError> {
        io.outputs
            .first()
            .ok_or_else(|| self.err("has no output".into()))
    }
}

/// A detector family: frames in (via its [`PreprocessSpec`]), boxes in source pixels out.
pub trait Detector: Send + Sync {
    fn preprocess(&self) -> &PreprocessSpec;

    /// Decodes one image's outputs; `t` maps model-input pixels back to the source frame.
    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError>;
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
