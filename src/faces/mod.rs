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
pub mod crop;
pub mod gallery;
pub mod quality;
pub mod recognise;
pub mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detection::Detection;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::frame::Frame;
use crate::models::embedder::Embedder;
use crate::models::{build_detector, Detector, Manifest, ModelError};
use crate::preprocess::{PreprocessError, Preprocessor};
use align::Landmarks;
use gallery::EmbedderId;
use quality::{Quality, QualityGates};

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

/// `[faces]` of a pipeline file: recognition of the faces a stream's tracks show.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacesSettings {
    /// The gallery (SQLite) that `edgesight faces enroll` fills; reloaded when it changes.
    pub gallery: PathBuf,
    /// The embedder's manifest.
    pub embedder: String,
    /// An embedder artifact folder from `edgesight optimize` (e.g. INT8), instead.
    pub model_dir: Option<PathBuf>,
    /// For a person detector (SSD, CenterNet, YOLO): look for faces inside person boxes with
    /// this face detector, and name the person's track. Unset: the stream's own model must
    /// be a face detector with landmarks (BlazeFace).
    pub face_detector: Option<String>,
    /// Cosine similarity a face needs with a person's nearest embedding.
    pub threshold: f32,
    /// How far the best person must lead the second-best.
    pub min_margin: f32,
    /// Seconds between rechecks of a track that has a face, to catch an ID switch.
    pub recheck_s: f64,
    /// A face this many times heavier ([`Quality::weight`]) than the track's best so far is
    /// embedded at once.
    pub better_by: f32,
    /// Embeddings per track at most.
    pub max_attempts: u32,
    /// Quality gates: the face box's shorter side in pixels, the crop's sharpness (variance
    /// of the Laplacian), and how frontal it is (0 to 1).
    pub min_side: f32,
    pub min_sharpness: f64,
    pub min_frontal: f32,
}

impl Default for FacesSettings {
    fn default() -> Self {
        let g = QualityGates::default();
        Self {
            gallery: PathBuf::from("faces.db"),
            embedder: "mobilefacenet".into(),
            model_dir: None,
            face_detector: None,
            threshold: gallery::DEFAULT_THRESHOLD,
            min_margin: gallery::DEFAULT_MARGIN,
            recheck_s: 3.0,
            better_by: 1.3,
            max_attempts: 20,
            min_side: g.min_side,
            min_sharpness: g.min_sharpness,
            min_frontal: g.min_frontal,
        }
    }
}

impl FacesSettings {
    pub fn gates(&self) -> QualityGates {
        QualityGates {
            min_side: self.min_side,
            min_sharpness: self.min_sharpness,
            min_frontal: self.min_frontal,
        }
    }

    /// Every field in its range, or the first that is not, named.
    pub fn check(&self) -> Result<(), String> {
        let bad = |f: &str, v: String| Err(format!("[faces] {f} = {v}: out of range"));
        if !(-1.0..=1.0).contains(&self.threshold) {
            return bad("threshold", self.threshold.to_string());
        }
        if !(0.0..=2.0).contains(&self.min_margin) {
            return bad("min_margin", self.min_margin.to_string());
        }
        if !(self.recheck_s > 0.0 && self.recheck_s.is_finite()) {
            return bad("recheck_s", self.recheck_s.to_string());
        }
        if self.better_by.is_nan() || self.better_by < 1.0 {
            return bad("better_by", self.better_by.to_string());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "0".into());
        }
        if self.min_side.is_nan()
            || self.min_side < 0.0
            || self.min_sharpness.is_nan()
            || self.min_sharpness < 0.0
        {
            return bad("min_side/min_sharpness", "negative".into());
        }
        if !(0.0..=1.0).contains(&self.min_frontal) {
            return bad("min_frontal", self.min_frontal.to_string());
        }
        Ok(())
    }
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

impl Face {
    /// A detected face and its aligned crop, judged, not yet embedded.
    fn new(d: &Detection, landmarks: Landmarks, chip: Vec<u8>) -> Self {
        let b = d.bbox;
        Self {
            quality: quality::assess((b.x2 - b.x1).min(b.y2 - b.y1), &landmarks, &chip),
            detection: d.clone(),
            landmarks,
            chip,
            embedding: Vec::new(),
        }
    }
}

/// A face detector with landmarks (BlazeFace), on whole frames or on regions of them.
pub struct FaceDetector {
    detector: Box<dyn Detector>,
    engine: Engine,
    pre: Preprocessor,
}

impl FaceDetector {
    pub fn load(m: &Manifest, cfg: &EngineConfig) -> Result<Self, FaceError> {
        let engine = Engine::load(&m.file, cfg)?;
        let detector = build_detector(m, engine.io())?;
        Ok(Self {
            pre: Preprocessor::new(detector.preprocess().clone()),
            detector,
            engine,
        })
    }

    /// The faces in `frame`, with their landmarks.
    pub fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, FaceError> {
        let (tensor, t) = self.pre.run(frame.pixels())?;
        let out = self.engine.run(&tensor)?;
        Ok(self.detector.decode(&out, &t)?)
    }

    /// The faces in a packed RGB image.
    pub fn detect_rgb(
        &mut self,
        rgb: ndarray::ArrayView3<u8>,
    ) -> Result<Vec<Detection>, FaceError> {
        let (tensor, t) = self.pre.run(rgb)?;
        let out = self.engine.run(&tensor)?;
        Ok(self.detector.decode(&out, &t)?)
    }

    /// The faces inside `region` of `frame` (x1, y1, x2, y2 in source pixels), in source
    /// pixels: the region is cropped to RGB and detected on alone, so that a small face in a
    /// large frame fills more of the detector's input.
    pub fn detect_in(
        &mut self,
        frame: &Frame,
        region: [f32; 4],
    ) -> Result<Vec<Detection>, FaceError> {
        let Some((rgb, (x0, y0), (w, h))) = crop::rgb_region(frame, region) else {
            return Ok(Vec::new());
        };
        let view = ndarray::ArrayView3::from_shape((h, w, 3), &rgb).expect("packed crop");
        let mut dets = self.detect_rgb(view)?;
        for d in &mut dets {
            let (dx, dy) = (x0 as f32, y0 as f32);
            d.bbox.x1 += dx;
            d.bbox.x2 += dx;
            d.bbox.y1 += dy;
            d.bbox.y2 += dy;
            for k in &mut d.keypoints {
                k.x += dx;
                k.y += dy;
            }
        }
        Ok(dets)
    }
}

/// The embedder, and the identity the gallery checks its embeddings against: the model file's
/// sha256 and the alignment version.
pub struct FaceEmbedder {
    embedder: Embedder,
    engine: Engine,
    id: EmbedderId,
}

impl FaceEmbedder {
    pub fn load(m: &Manifest, cfg: &EngineConfig) -> Result<Self, FaceError> {
        let engine = Engine::load(&m.file, cfg)?;
        let embedder = Embedder::new(m, engine.io())?;
        let id = EmbedderId {
            sha256: file_sha256(&m.file)?,
            dim: embedder.dim(),
            alignment: align::ALIGNMENT_VERSION,
        };
        Ok(Self {
            embedder,
            engine,
            id,
        })
    }

    pub fn id(&self) -> &EmbedderId {
        &self.id
    }

    /// Aligns and judges `dets` (faces of `frame` with landmarks), without embedding them;
    /// faces without usable landmarks are left out.
    pub fn align(frame: &Frame, dets: &[Detection]) -> Vec<Face> {
        dets.iter()
            .filter_map(|d| {
                let landmarks = Landmarks::from_keypoints(&d.keypoints)?;
                let chip = align::aligned_chip_of(frame, &landmarks)?;
                Some(Face::new(d, landmarks, chip))
            })
            .collect()
    }

    /// [`Self::align`] on a packed RGB image of `height` rows of `width` pixels; `four` fits
    /// four points (BlazeFace's set) even where the detector gives five.
    pub fn align_rgb(
        rgb: &[u8],
        (width, height): (u32, u32),
        dets: &[Detection],
        four: bool,
    ) -> Vec<Face> {
        let size = (width, height, width as usize * 3);
        dets.iter()
            .filter_map(|d| {
                let mut landmarks = Landmarks::from_keypoints(&d.keypoints)?;
                if four {
                    landmarks = landmarks.to_four();
                }
                let chip = align::aligned_chip(rgb, size, &landmarks)?;
                Some(Face::new(d, landmarks, chip))
            })
            .collect()
    }

    /// Embeds `faces` in one batch.
    pub fn embed_faces(&mut self, faces: &mut [Face]) -> Result<(), FaceError> {
        let chips: Vec<&[u8]> = faces.iter().map(|f| f.chip.as_slice()).collect();
        let embeddings = self.embed(&chips)?;
        for (f, e) in faces.iter_mut().zip(embeddings) {
            f.embedding = e;
        }
        Ok(())
    }

    /// Unit embeddings of aligned crops, in one batch.
    pub fn embed(&mut self, chips: &[&[u8]]) -> Result<Vec<Vec<f32>>, FaceError> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.engine.run(&self.embedder.tensor(chips))?;
        Ok(self.embedder.decode(&out)?)
    }
}

/// Both models, for the CLI: every face of a photo, aligned and embedded.
pub struct FaceModels {
    pub detector: FaceDetector,
    pub embedder: FaceEmbedder,
}

impl FaceModels {
    pub fn load(
        detector: &Manifest,
        embedder: &Manifest,
        cfg: &EngineConfig,
    ) -> Result<Self, FaceError> {
        Ok(Self {
            detector: FaceDetector::load(detector, cfg)?,
            embedder: FaceEmbedder::load(embedder, cfg)?,
        })
    }

    pub fn embedder_id(&self) -> &EmbedderId {
        self.embedder.id()
    }

    pub fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, FaceError> {
        self.detector.detect(frame)
    }

    /// Aligns, judges and embeds `dets`.
    pub fn describe(&mut self, frame: &Frame, dets: &[Detection]) -> Result<Vec<Face>, FaceError> {
        let mut faces = FaceEmbedder::align(frame, dets);
        self.embedder.embed_faces(&mut faces)?;
        Ok(faces)
    }

    /// Every face in `frame`.
    pub fn faces(&mut self, frame: &Frame) -> Result<Vec<Face>, FaceError> {
        let dets = self.detect(frame)?;
        self.describe(frame, &dets)
    }
}

fn file_sha256(path: &Path) -> Result<String, FaceError> {
    crate::optimize::calibrate::file_sha256(path).map_err(|e| FaceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
