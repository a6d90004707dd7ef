//! What `optimize` is asked for ([`OptimizeSpec`]), in which precision for which target, and
//! how it fails ([`OptimizeError`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::calibrator::Method;
use super::qdq::config::Exclusions;
use super::weights::WeightRange;
use crate::engine::{EngineConfig, EngineError};
use crate::models::{Manifest, ModelError};
use crate::onnx::OnnxError;

#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("calibration folder {dir}: {reason}")]
    Calibration { dir: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Cpu,
    Tensorrt,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Cpu => "cpu",
            Target::Tensorrt => "tensorrt",
        })
    }
}

/// Everything `optimize` needs, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct OptimizeSpec {
    pub manifest: Manifest,
    pub precision: Precision,
    pub target: Target,
    pub calibration: PathBuf,
    pub heldout: PathBuf,
    pub method: Method,
    pub exclude: Exclusions,
    /// Fidelity the INT8 model must keep (0..1); the most sensitive layers stay float until it
    /// does.
    pub keep_accuracy: Option<f64>,
    pub out: PathBuf,
    pub engine: EngineConfig,
    /// Timed runs per model for the latency figures.
    pub bench_runs: usize,
    /// Cross-layer equalization before calibration.
    pub equalize: bool,
    /// Convolution weights fitted to the int8 model's own inputs ([`super::reconstruct`]).
    pub reconstruct: bool,
    /// How far the CPU graph's int8 weights reach: the CPU that will run the artifact decides
    /// ([`WeightRange`]). TensorRT's graphs always take the full range.
    pub weight_range: WeightRange,
}

/// Progress of the long steps: (step, done, total).
pub type ProgressFn<'a> = &'a dyn Fn(&str, u64, u64);

/// Which precisions a target can run.
pub fn check_target(precision: Precision, target: Target) -> Result<(), OptimizeError> {
    match (precision, target) {
        (Precision::Fp16, Target::Cpu) => Err(OptimizeError::Unsupported(
            "precision fp16 is not available on --target cpu: ONNX Runtime's CPU provider has no \
             float16 kernels for most ops here; use --target tensorrt (GPU) or --precision int8"
                .into(),
        )),
        _ => Ok(()),
    }
}
