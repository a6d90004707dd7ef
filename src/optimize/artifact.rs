//! The artifact folder `optimize` writes and `run --model-dir` reads:
//!
//! ```text
//! model.onnx       the optimized graph (Q/DQ INT8, FP16 or the FP32 copy)
//! artifact.toml    source model hash, precision, target, calibration method and set hash,
//!                  excluded layers, the measured figures, and the model manifest to run it
//! report.md        the report, with its plots (*.svg)
//! labels.txt       the labels, when the model has a labels file
//! trt-cache/       TensorRT engines (target tensorrt), so `run` starts without a rebuild
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::figures::{Figures, LayerSensitivity};
use super::spec::{OptimizeError, Precision, Target};
use super::weights::WeightRange;
use crate::engine::{Engine, EngineConfig, Provider, TensorRtOptions};
use crate::models::Manifest;

pub const FILE: &str = "artifact.toml";
pub const MODEL: &str = "model.onnx";
pub const TRT_CACHE: &str = "trt-cache";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationInfo {
    pub method: String,
    pub dir: String,
    /// Hash over the images' names and bytes.
    pub sha256: String,
    pub images: usize,
    /// Images that did not decode.
    pub skipped: usize,
    /// The statistics came from the cache (same model, images and preprocessing).
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorRtInfo {
    pub fp16: bool,
    pub int8: bool,
    /// Relative to the artifact folder.
    pub engine_cache: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub precision: Precision,
    pub target: Target,
    pub source_model: String,
    pub source_sha256: String,
    pub heldout_dir: String,
    pub heldout_images: usize,
    pub quantized_layers: usize,
    pub excluded: Vec<String>,
    pub unknown_ops: BTreeMap<String, usize>,
    /// Graph rewrites for the target's int8 kernels, each with what it keeps or rounds.
    #[serde(default)]
    pub rewrites: Vec<String>,
    pub created_by: String,
    pub calibration: Option<CalibrationInfo>,
    pub tensorrt: Option<TensorRtInfo>,
    /// The manifest `run` uses; its `file` is `model.onnx` in this folder.
    pub model: Manifest,
    pub figures: Vec<Figures>,
    pub sensitivity: Vec<LayerSensitivity>,
    /// Cosine of each quantized node's output with FP32's, the whole model quantized.
    #[serde(default)]
    pub layer_error: Vec<LayerSensitivity>,
    /// Detectors: the held-out frame where the two models' boxes differ most, drawn by each.
    #[serde(default)]
    pub comparison: Option<Comparison>,
    /// FP32 against itself on the held-out frames resized bicubic instead of bilinear: the
    /// scale the optimized model's fidelity is read on.
    #[serde(default)]
    pub yardstick: Option<super::fidelity::Fidelity>,
    /// Detectors with a heatmap peak test, quantized: the highest score the model can give,
    /// the sigmoid of the top of its logits' grid (which the calibration images set). A
    /// threshold above it finds nothing.
    #[serde(default)]
    pub score_ceiling: Option<f64>,
    /// CPU INT8: how far the weights reach, which decides the CPUs whose int8 kernels run it
    /// as quantized ([`WeightRange`]). Artifacts from before it was recorded are full range.
    #[serde(default)]
    pub weight_range: Option<WeightRange>,
}

/// Two annotated pictures of one held-out frame, in the artifact folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The held-out image.
    pub frame: String,
    /// Boxes of either model with no box of the same class at IoU ≥ 0.5 from the other.
    pub disagreements: usize,
    /// FP32's boxes, then the optimized model's, as JPEG files.
    pub fp32: String,
    pub candidate: String,
}

impl Artifact {
    /// Writes `artifact.toml` (and the labels) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), OptimizeError> {
        let mut a = self.clone();
        a.model.file = PathBuf::from(MODEL);
        if let Some(l) = &self.model.labels {
            let dst = dir.join("labels.txt");
            std::fs::copy(l, &dst).map_err(|e| OptimizeError::Io {
                path: l.clone(),
                reason: e.to_string(),
            })?;
            a.model.labels = Some(PathBuf::from("labels.txt"));
        }
        let text = toml::to_string_pretty(&a).map_err(|e| OptimizeError::Io {
            path: dir.join(FILE),
            reason: e.to_string(),
        })?;
        let header = "# Written by `edgesight optimize`; `edgesight run --model-dir <this folder>` reads it.\n";
        std::fs::write(dir.join(FILE), format!("{header}{text}")).map_err(|e| OptimizeError::Io {
            path: dir.join(FILE),
            reason: e.to_string(),
        })
    }

    pub fn load(dir: &Path) -> Result<Self, OptimizeError> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|_| OptimizeError::Io {
            path: path.clone(),
            reason: "no such file: not an artifact folder written by `edgesight optimize`".into(),
        })?;
        let mut a: Artifact = toml::from_str(&text).map_err(|e| OptimizeError::Io {
            path: path.clone(),
            reason: e.message().to_string(),
        })?;
        a.model.file = dir.join(&a.model.file);
        a.model.labels = a.model.labels.map(|l| dir.join(l));
        Ok(a)
    }

    /// A CPU INT8 artifact with full-range weights on a CPU whose int8 kernels saturate on them.
    pub fn saturates_here(&self) -> bool {
        self.precision == Precision::Int8
            && self.target == Target::Cpu
            && self.weight_range.unwrap_or_default() == WeightRange::Full
            && super::weights::cpu_int8_saturates()
    }

    /// The engine settings the artifact was built for.
    pub fn engine_config(&self, dir: &Path, base: &EngineConfig) -> EngineConfig {
        let mut cfg = base.clone();
        if let Some(t) = &self.tensorrt {
            cfg.provider = Provider::Tensorrt;
            cfg.tensorrt = TensorRtOptions {
                fp16: t.fp16,
                int8: t.int8,
                engine_cache: Some(dir.join(&t.engine_cache)),
            };
        }
        cfg
    }
}

/// TensorRT options for a precision: INT8 engines come from the Q/DQ graph's own scales (no
/// calibration table), with FP16 allowed for the layers left in float.
pub fn tensorrt_options(precision: Precision, cache: Option<PathBuf>) -> TensorRtOptions {
    TensorRtOptions {
        fp16: matches!(precision, Precision::Fp16 | Precision::Int8),
        int8: precision == Precision::Int8,
        engine_cache: cache,
    }
}

/// Fails fast, before any calibration work, when TensorRT cannot start here.
pub fn check_tensorrt(
    model: &Path,
    precision: Precision,
    base: &EngineConfig,
) -> Result<(), OptimizeError> {
    open_tensorrt(model, tensorrt_options(precision, None), base).map(|_| ())
}

/// A session on the TensorRT provider, never falling back to the CPU.
fn open_tensorrt(
    model: &Path,
    tensorrt: TensorRtOptions,
    base: &EngineConfig,
) -> Result<Engine, OptimizeError> {
    let cfg = EngineConfig {
        provider: Provider::Tensorrt,
        fallback_to_cpu: false,
        tensorrt,
        ..base.clone()
    };
    Engine::load(model, &cfg).map_err(|e| tensorrt_missing(&e.to_string()))
}

fn tensorrt_missing(reason: &str) -> OptimizeError {
    OptimizeError::Unsupported(format!(
        "--target tensorrt: the TensorRT execution provider could not start ({reason}); it needs an \
         NVIDIA GPU, the onnxruntime-gpu library (ORT_DYLIB_PATH) and the TensorRT 10 libraries"
    ))
}

/// Builds the TensorRT engines ahead of time into `dir/trt-cache`: a session with the engine
/// cache on runs `sample` once, so later sessions (in `run`) load what it built. A graph with
/// symbolic dims gets its engine at the first run, not when the session opens, hence the run;
/// `run` at another batch size than the sample's builds once more.
pub fn build_tensorrt(
    model: &Path,
    dir: &Path,
    precision: Precision,
    base: &EngineConfig,
    sample: &crate::tensor::Tensor,
) -> Result<TensorRtInfo, OptimizeError> {
    let cache = dir.join(TRT_CACHE);
    std::fs::create_dir_all(&cache).map_err(|e| OptimizeError::Io {
        path: cache.clone(),
        reason: e.to_string(),
    })?;
    let opts = tensorrt_options(precision, Some(cache));
    open_tensorrt(model, opts.clone(), base)?
        .run(sample)
        .map_err(|e| {
            OptimizeError::Unsupported(format!(
                "--target tensorrt: building the engine for {} failed: {e}",
                model.display()
            ))
        })?;
    Ok(TensorRtInfo {
        fp16: opts.fp16,
        int8: opts.int8,
        engine_cache: TRT_CACHE.into(),
    })
}
