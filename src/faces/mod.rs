//! Faces: detect, align, judge and embed every face in a frame, for the enrollment CLI and the
//! pipeline's recognition stage. The detector and the embedder are ordinary model families
//! ([`crate::models::blazeface`], [`crate::models::embedder`]); this module runs them one after
//! the other on the same frame, so it is the one place that knows both.
//!
//! - [`align`]: landmarks to the ArcFace 112×112 template.
//! - [`quality`]: size, sharpness and frontality gates, and a vote's weight.
//! - [`gallery`]: the enrolled people, in SQLite.
//! - [`recognise`]: per-track identification by a weighted vote across frames.
//! - [`verify`]: ROC figures and thresholds from labelled faces.

pub mod align;
pub mod gallery;
pub mod quality;
pub mod recognise;
pub mod verify;

use std::path::Path;

use crate::detection::Detection;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::frame::Frame;
use crate::models::embedder::Embedder;
use crate::models::{build_detector, Detector, Manifest, ModelError};
use crate::preprocess::{PreprocessError, Preprocessor};
use align::Landmarks;
use gallery::EmbedderId;
use quality::Quality;

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Gallery(#[from] gallery::GalleryError),
}

/// One face found in a frame, aligned and embedded.
#[derive(Debug, Clone)]
pub struct Face {
    pub detection: Detection,
    pub landmarks: Landmarks,
    /// The aligned 112×112 RGB crop.
    pub chip: Vec<u8>,
    pub quality: Quality,
    /// Unit length.
    pub embedding: Vec<f32>,
}

/// The face detector and the embedder, loaded once.
pub struct FaceModels {
    detector: Box<dyn Detector>,
    detector_engine: Engine,
    pre: Preprocessor,
    embedder: Embedder,
    embedder_engine: Engine,
    id: EmbedderId,
}

impl FaceModels {
    /// Loads both models. The embedder's identity (its file's sha256 and the alignment version)
    /// is what the gallery checks its embeddings against.
    pub fn load(
        detector: &Manifest,
        embedder: &Manifest,
        cfg: &EngineConfig,
    ) -> Result<Self, FaceError> {
        let detector_engine = Engine::load(&detector.file, cfg)?;
        let det = build_detector(detector, detector_engine.io())?;
        let embedder_engine = Engine::load(&embedder.file, cfg)?;
        let emb = Embedder::new(embedder, embedder_engine.io())?;
        let id = EmbedderId {
            sha256: file_sha256(&embedder.file)?,
            dim: emb.dim(),
            alignment: align::ALIGNMENT_VERSION,
        };
        Ok(Self {
            pre: Preprocessor::new(det.preprocess().clone()),
            detector: det,
            detector_engine,
            embedder: emb,
            embedder_engine,
            id,
        })
    }

    pub fn embedder_id(&self) -> &EmbedderId {
        &self.id
    }

    /// The faces the detector finds in `frame`, with their landmarks.
    pub fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, FaceError> {
        let (tensor, t) = self.pre.run(frame.pixels())?;
        let out = self.detector_engine.run(&tensor)?;
        Ok(self.detector.decode(&out, &t)?)
    }

    /// Aligns, judges and embeds `dets` (faces of `frame` with landmarks); faces without
    /// usable landmarks are left out.
    pub fn describe(&mut self, frame: &Frame, dets: &[Detection]) -> Result<Vec<Face>, FaceError> {
        let mut faces = Vec::new();
        for d in dets {
            let Some(landmarks) = Landmarks::from_keypoints(&d.keypoints) else {
                continue;
            };
            let Some(chip) = align::aligned_chip_of(frame, &landmarks) else {
                continue;
            };
            let b = d.bbox;
            let side = (b.x2 - b.x1).min(b.y2 - b.y1);
            faces.push(Face {
                quality: quality::assess(side, &landmarks, &chip),
                detection: d.clone(),
                landmarks,
                chip,
                embedding: Vec::new(),
            });
        }
        let chips: Vec<&[u8]> = faces.iter().map(|f| f.chip.as_slice()).collect();
        let embeddings = self.embed(&chips)?;
        for (f, e) in faces.iter_mut().zip(embeddings) {
            f.embedding = e;
        }
        Ok(faces)
    }

    /// Every face in `frame`: [`Self::detect`] then [`Self::describe`].
    pub fn faces(&mut self, frame: &Frame) -> Result<Vec<Face>, FaceError> {
        let dets = self.detect(frame)?;
        self.describe(frame, &dets)
    }

    /// Unit embeddings of aligned crops, in one batch.
    pub fn embed(&mut self, chips: &[&[u8]]) -> Result<Vec<Vec<f32>>, FaceError> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.embedder_engine.run(&self.embedder.tensor(chips))?;
        Ok(self.embedder.decode(&out)?)
    }
}

fn file_sha256(path: &Path) -> Result<String, FaceError> {
    crate::optimize::calibrate::file_sha256(path).map_err(|e| FaceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
