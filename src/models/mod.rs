//! Model families: each knows its own preprocessing and output decoding, and nothing of engines
//! or streams. A [`Manifest`] in `models/` names the file, the family, the labels and the
//! thresholds; [`build_detector`] checks a model's inputs and outputs against its family.

pub mod blazeface;
pub mod centernet;
pub mod detector;
pub mod embedder;
pub mod labels;
pub mod manifest;
pub mod scrfd;
pub mod ssd;
pub mod yolov8;

pub use detector::{Detector, ModelError};
pub use labels::Labels;
pub use manifest::{Family, Manifest};

use crate::preprocess::PreprocessSpec;
use crate::tensor::ModelIo;
use detector::input_hw;

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
