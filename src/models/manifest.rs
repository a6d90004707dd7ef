//! Model manifests: `models/<name>.toml`.
//!
//! ```toml
//! name = "ssd-mobilenet-v2"
//! family = "ssd"
//! file = "cache/ssd_mobilenet_v2_coco_quant_postprocess.onnx"   # relative to this file
//! labels = "cache/coco_labels.txt"
//! score_threshold = 0.5
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::preprocess::{Layout, Resize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// TFLite-style SSD with NMS in the graph: boxes, classes, scores, count.
    Ssd,
    /// Ultralytics YOLOv8/11 detection export: `[B, 4 + classes, anchors]`.
    Yolov8,
    /// CenterNet with its top-k decoding in the graph: `[1, N, 6]` = box, score, class.
    Centernet,
    /// MediaPipe BlazeFace (scores and regressors per anchor): faces with six landmarks.
    Blazeface,
    /// InsightFace SCRFD: faces with the five ArcFace landmarks (non-commercial weights).
    Scrfd,
    /// A face (or other) embedder: one vector per aligned crop (`faces`, `optimize`).
    Embedder,
}

impl Family {
    pub fn is_detector(self) -> bool {
        matches!(
            self,
            Family::Ssd | Family::Yolov8 | Family::Centernet | Family::Blazeface | Family::Scrfd
        )
    }
}

/// Preprocessing for families that take it from the manifest rather than from their code.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessTable {
    #[serde(default = "default_resize")]
    pub resize: Resize,
    pub layout: Layout,
    /// `f32` or `u8`.
    pub dtype: String,
    #[serde(default)]
    pub mean: [f32; 3],
    #[serde(default = "unit_std")]
    pub std: [f32; 3],
}

fn default_resize() -> Resize {
    Resize::Stretch
}
fn unit_std() -> [f32; 3] {
    [1.0; 3]
}

fn default_score() -> f32 {
    0.5
}
fn default_iou() -> f32 {
    0.45
}
fn default_max() -> usize {
    100
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub family: Family,
    /// The ONNX file; relative paths are resolved against the manifest's folder.
    pub file: PathBuf,
    /// A labels file; YOLOv8 exports carry their names in metadata and need none.
    pub labels: Option<PathBuf>,
    /// `[width, height]` for models whose input size is dynamic.
    pub input_size: Option<[u32; 2]>,
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    #[serde(default = "default_max")]
    pub max_detections: usize,
    /// Where the weights come from (documentation; `models/fetch.sh` holds the pins).
    pub source: Option<String>,
    pub license: Option<String>,
    /// The subfolder of `calibration/` that `optimize` calibrates this model on by default.
    pub calibration: Option<String>,
    pub preprocess: Option<PreprocessTable>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("model manifest {0}: no such file")]
    NotFound(PathBuf),
    #[error("model manifest {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("unknown model {name:?}: no manifest {path} (known: {known})")]
    Unknown {
        name: String,
        path: PathBuf,
        known: String,
    },
}

/// The folder holding the manifests: `$EDGESIGHT_MODELS`, else `./models`, else the one in the
/// source tree this binary was built from.
pub fn models_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("EDGESIGHT_MODELS") {
        return PathBuf::from(dir);
    }
    crate::bundled("models")
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|_| ManifestError::NotFound(path.to_path_buf()))?;
        let mut m: Manifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        m.file = dir.join(&m.file);
        m.labels = m.labels.map(|l| dir.join(l));
        Ok(m)
    }

    /// A model by name (`ssd-mobilenet-v2` -> `models/ssd-mobilenet-v2.toml`) or by manifest path.
    pub fn find(name_or_path: &str) -> Result<Self, ManifestError> {
        let p = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") {
            return Self::load(p);
        }
        let dir = models_dir();
        let path = dir.join(format!("{name_or_path}.toml"));
        if !path.is_file() {
            return Err(ManifestError::Unknown {
                name: name_or_path.to_string(),
                path,
                known: Self::names().join(", "),
            });
        }
        Self::load(&path)
    }

    /// The names of the manifests in `models/`, sorted.
    pub fn names() -> Vec<String> {
        let mut known: Vec<String> = std::fs::read_dir(models_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".toml").map(str::to_string)
            })
            .collect();
        known.sort();
        known
    }
}
