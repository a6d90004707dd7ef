//! The figures `optimize` measures and records: per precision ([`Figures`]) and per layer
//! ([`LayerSensitivity`]).

use serde::{Deserialize, Serialize};

use super::fidelity::{Fidelity, OpTime};
use crate::stats::Percentiles;

/// The figures for one precision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub precision: String,
    pub fidelity: Option<Fidelity>,
    pub latency_b1: Percentiles,
    /// The batch with the lowest per-image latency, and that latency (dynamic-batch models).
    pub best_batch: Option<(usize, Percentiles)>,
    pub size_bytes: u64,
    /// Kernel time per op type and run, from ONNX Runtime's profiler: where the time goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<OpTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSensitivity {
    /// A node's name, or `activation <tensor>`.
    pub layer: String,
    /// Fidelity with only this node quantized, or only this activation rounded.
    pub fidelity: f64,
    /// The accuracy search put this unit back in float.
    #[serde(default)]
    pub kept_in_float: bool,
}
