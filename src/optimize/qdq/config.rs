//! What a quantization is asked for ([`QuantizeConfig`]) and what it reports ([`QdqReport`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::onnx::pb;
use crate::optimize::calibrator::Range;
use crate::optimize::weights::{Presets, WeightRange};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationType {
    /// ONNX Runtime CPU.
    U8Asymmetric,
    /// TensorRT.
    I8Symmetric,
}

#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    /// Node names left in float.
    pub names: BTreeSet<String>,
    /// Op types left in float.
    pub ops: BTreeSet<String>,
}

impl Exclusions {
    pub fn excludes(&self, n: &pb::NodeProto) -> bool {
        self.names.contains(n.name()) || self.ops.contains(n.op_type())
    }
}

/// What the quantizer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QdqReport {
    /// Weighted layers now in int8.
    pub quantized_layers: Vec<String>,
    /// Activation tensors with a Q/DQ pair.
    pub quantized_tensors: Vec<String>,
    /// Every node that computes in int8, data movement aside: the candidates of the accuracy
    /// search.
    pub quantized_compute: Vec<String>,
    /// (node, its output tensor) for the same nodes, for per-layer error figures.
    pub compute_outputs: Vec<(String, String)>,
    /// Layers the user (or the accuracy search) kept in float.
    pub excluded: Vec<String>,
    /// Op types the quantizer does not know, left in float: (op, count).
    pub unknown_ops: BTreeMap<String, usize>,
    /// Rewrites for the CPU runtime's int8 kernels, each with what it keeps or rounds.
    pub rewrites: Vec<String>,
}

/// Everything [`super::quantize`] needs besides the model.
#[derive(Debug, Clone, Copy)]
pub struct QuantizeConfig<'a> {
    /// The calibrated range of each tensor named by [`super::calibration_tensors`]; a tensor
    /// without one stays float.
    pub ranges: &'a HashMap<String, Range>,
    /// Per-channel means of the tensors named by [`super::bias_correction_inputs`]; a layer
    /// whose input has none keeps its bias as it was.
    pub channel_means: &'a HashMap<String, Vec<f32>>,
    /// Layers (by node label) that take their int8 weights, scales and bias from here instead
    /// of rounding ([`crate::optimize::reconstruct`]).
    pub presets: &'a Presets,
    pub act: ActivationType,
    pub weights: WeightRange,
    pub exclude: &'a Exclusions,
}

impl QuantizeConfig<'_> {
    /// ONNX Runtime's CPU kernels: the integer rewrites apply.
    pub fn cpu(&self) -> bool {
        self.act == ActivationType::U8Asymmetric
    }
}
