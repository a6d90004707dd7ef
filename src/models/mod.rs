//! Model families: each knows its own preprocessing and output decoding, and nothing of engines
//! or streams. A [`Manifest`] in `models/` names the file, the family, the labels and the
//! thresholds; [`build_detector`] checks a model's inputs and outputs against its family.

pub mod blazeface;
pub mod centernet;
pub mod embedder;
pub mod labels;
pub mod manifest;
pub mod scrfd;
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

/// Builds the family's decoder for a model, checking that its inputs and outputs fit.
pub fn build_detector(m: &Manifest, io: &ModelIo) -> Result<Box<dyn Detector>, ModelError> {
    let labels = match &m.labels {
        Some(p) => Some(Labels::from_file(p)?),
        None => None,
    };
    Ok(match m.family {
        Family::Ssd => Box::new(ssd::Ssd::new(m, io, labels)?),
        Family::Yolov8 => Box::new(yolov8::Yolov8::new(m, io, labels)?),
        Family::Centernet => Box::new(centernet::CenterNet::new(m, io, labels)?),
        Family::Blazeface => Box::new(blazeface::BlazeFace::new(m, io, labels)?),
        Family::Scrfd => Box::new(scrfd::Scrfd::new(m, io, labels)?),
        Family::Embedder => {
            return Err(ModelError::Io {
                model: m.file.display().to_string(),
                reason: "an embedder gives no detections for `run` (it can be optimized)".into(),
            })
        }
    })
}

/// The preprocessing a model wants: its family's, or the manifest's `[preprocess]` table.
pub fn preprocess_spec(m: &Manifest, io: &ModelIo) -> Result<PreprocessSpec, ModelError> {
    if m.family.is_detector() {
        return Ok(build_detector(m, io)?.preprocess().clone());
    }
    let err = |reason: String| ModelError::Io {
        model: m.file.display().to_string(),
        reason,
    };
    let t = m
        .preprocess
        .as_ref()
        .ok_or_else(|| err("its manifest has no [preprocess] table".into()))?;
    let input = io
        .inputs
        .first()
        .ok_or_else(|| err("has no input".into()))?;
    let nhwc = t.layout == crate::preprocess::Layout::Nhwc;
    let (h, w) = input_hw(&input.shape, nhwc);
    let [dw, dh] = m.input_size.unwrap_or([0, 0]);
    let (width, height) = (w.unwrap_or(dw), h.unwrap_or(dh));
    if width == 0 || height == 0 {
        return Err(err(format!(
            "input {input} has a dynamic size and the manifest gives no input_size"
        )));
    }
    let elem = match t.dtype.as_str() {
        "f32" => crate::tensor::ElementType::F32,
        "u8" => crate::tensor::ElementType::U8,
        other => {
            return Err(err(format!(
                "[preprocess] dtype {other:?} is not f32 or u8"
            )))
        }
    };
    Ok(PreprocessSpec {
        width,
        height,
        resize: t.resize,
        layout: t.layout,
        elem,
        mean: t.mean,
        std: t.std,
        pad: 0,
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
