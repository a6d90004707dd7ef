//! INT8 quantization in the explicit Q/DQ form: `QuantizeLinear → DequantizeLinear` pairs in the
//! ONNX graph itself, which ONNX Runtime's CPU kernels fuse into integer ops (QLinearConv,
//! MatMulInteger, ...) and which TensorRT ≥ 8 builds INT8 engines from. TensorRT's implicit
//! calibrators are deprecated since 10.1, so this one graph serves both.
//!
//! - Weights: int8, symmetric, per output channel, stored quantized behind a DequantizeLinear;
//!   on ±127, or on ±64 for x86 CPUs whose int8 kernels would saturate ([`WeightRange`]).
//! - Biases of Conv/Gemm: int32 with scale `s_input * s_weight[c]`, as the fused kernels expect.
//! - Activations: per tensor; uint8 asymmetric for ONNX Runtime's CPU kernels (u8s8 is their
//!   fast path), int8 symmetric for TensorRT (it accepts nothing else).
//!
//! Mul stays float: in the graphs seen here it scales (PReLU slopes, attention), where int8 buys
//! nothing and costs accuracy.
//!
//! Ops that only move data (Reshape, Transpose, MaxPool, ...) reuse their input's scale, so the
//! runtime can drop the Q/DQ around them instead of requantizing.
//!
//! [`quantize`] runs in stages, a file each: CPU layout rewrites ([`layout_for`],
//! [`crate::optimize::peaks`]), node [`select`]ion, quantization [`params`], and emission
//! ([`emit`], with the layers' [`weights`]); [`names`] owns how the added nodes are named, and
//! [`probe`] reads the result back.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use edgesight::onnx::Model;
//! use edgesight::optimize::qdq::{self, ActivationType, Exclusions, QuantizeConfig};
//! use edgesight::optimize::weights::WeightRange;
//! let model = Model::load("models/cache/mobilefacenet.onnx".as_ref())?;
//! let ranges = HashMap::new(); // calibrated ranges by tensor: none leaves everything float
//! let (means, presets, exclude) = (HashMap::new(), HashMap::new(), Exclusions::default());
//! let cfg = QuantizeConfig {
//!     ranges: &ranges,
//!     channel_means: &means,
//!     presets: &presets,
//!     act: ActivationType::U8Asymmetric,
//!     weights: WeightRange::Full,
//!     exclude: &exclude,
//! };
//! let (int8, report) = qdq::quantize(&model, &cfg)?;
//! # Ok::<(), edgesight::onnx::OnnxError>(())
//! ```

pub mod config;
pub mod emit;
pub mod graph;
pub mod names;
pub mod params;
pub mod probe;
pub mod select;
#[cfg(test)]
mod tests;
pub mod weights;

pub use config::{ActivationType, Exclusions, QdqReport, QuantizeConfig};
pub use probe::{grid_top, neighbours, runtime_requantized, with_one_quantized_tensor};
pub use select::{bias_correction_inputs, calibration_tensors};
pub use weights::rounding_shift;

use super::{align, peaks};
use crate::onnx::{self, Model};
use names::Pair;
use weights::WeightRules;

/// The float graph as [`quantize`] lays it out before placing Q/DQ for `act`: on the CPU,
/// depthwise layers widened ([`align`]); `None` when it is the model as given. Its node names,
/// weights and channel counts are the quantized graph's.
pub fn layout_for(model: &Model, act: ActivationType) -> Option<(Model, Vec<align::Widened>)> {
    (act == ActivationType::U8Asymmetric)
        .then(|| align::widen_depthwise(model))
        .flatten()
}

/// Quantizes `model` as `cfg` asks; see [`QuantizeConfig`] for what each part holds.
pub fn quantize(
    model: &Model,
    cfg: &QuantizeConfig,
) -> Result<(Model, QdqReport), onnx::OnnxError> {
    // Two CPU-only rewrites that keep the float function. Depthwise layers widened to a channel
    // count the runtime's fast int8 kernel takes; their extra channels have a mean of zero.
    let aligned = layout_for(model, cfg.act);
    let widened_means;
    let (model, channel_means) = match &aligned {
        Some((m, widened)) => {
            widened_means = align::widen_means(cfg.channel_means, widened);
            (m, &widened_means)
        }
        None => (model, cfg.channel_means),
    };
    // Peak tests on integer logits: the CPU runtime pools and compares the integers in place.
    let rewritten = cfg
        .cpu()
        .then(|| peaks::pool_the_logits(model, |n| cfg.exclude.excludes(n)))
        .flatten();
    let model = rewritten.as_ref().map_or(model, |(m, _)| m);
    let mut rewrites: Vec<String> = aligned
        .iter()
        .flat_map(|(_, w)| w)
        .map(|w| w.to_string())
        .collect();
    rewrites.extend(
        rewritten
            .iter()
            .flat_map(|(_, t)| t)
            .map(|t| format!("{t}: peak test on the integer logits")),
    );
    let (mut out, per_channel_ok) = with_qdq_opset(model)?;
    let ix = graph::GraphIndex::of(model.graph());
    let mut report = QdqReport {
        rewrites,
        ..Default::default()
    };
    let sel = select::Selection::of(&ix, cfg, &mut report);
    let tq = params::tensor_params(&ix, &sel, cfg);
    report.compute_outputs = emit::compute_outputs(&ix, &sel, cfg);
    report.quantized_compute = report
        .compute_outputs
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let rules = WeightRules {
        per_channel_ok,
        range: cfg.weights,
    };
    let em = emit::emit_graph(&ix, &sel, &tq, cfg, channel_means, rules, &mut report);
    let og = out.graph_mut();
    og.node = em.add.nodes;
    // Nothing reads a pair whose every reader is an excluded layer, nor the dequantized copy of
    // a tensor that only an integer compare reads.
    onnx::drop_dead_nodes(og);
    // In graph order, as their pairs were emitted.
    report.quantized_tensors = og
        .node
        .iter()
        .filter(|n| n.op_type() == "QuantizeLinear")
        .filter_map(|n| Pair::of_q_node(n.name()))
        .filter(|t| em.emitted.contains(*t))
        .map(String::from)
        .collect();
    og.initializer.extend(em.add.inits);
    onnx::drop_unused_initializers(og);
    // Heatmap scores on a fixed 8-bit grid, once every tensor has its pair (CPU only).
    if let Some((scored, muls)) = cfg
        .cpu()
        .then(|| peaks::scores_on_integers(&out, |n| cfg.exclude.excludes(n)))
        .flatten()
    {
        out = scored;
        report.rewrites.extend(muls.iter().map(|m| {
            format!(
                "{m}: masked heatmap scores in uint8 on a grid of 1/255 (each moves by at most 1/510)"
            )
        }));
    }
    Ok((out, report))
}

/// A copy of `model` at an opset with QuantizeLinear, and whether it has per-channel
/// DequantizeLinear. That needs opset 13; depthwise convolutions with one scale per tensor lose
/// too much, so 11 and 12 are lifted to 13 when no op in the graph changed meaning between
/// them (these four moved attributes to inputs).
fn with_qdq_opset(model: &Model) -> Result<(Model, bool), onnx::OnnxError> {
    let opset = model.opset();
    if opset < 10 {
        return Err(onnx::OnnxError::Graph {
            path: model.path.clone(),
            reason: format!("opset {opset} has no QuantizeLinear (needs 10 or later)"),
        });
    }
    const CHANGED_AT_13: &[&str] = &["Squeeze", "Unsqueeze", "Split", "ReduceSum"];
    let liftable = (11..13).contains(&opset)
        && !model
            .graph()
            .node
            .iter()
            .any(|n| CHANGED_AT_13.contains(&n.op_type()));
    let mut out = model.clone();
    if liftable {
        for o in out.proto.opset_import.iter_mut() {
            if o.domain().is_empty() || o.domain() == "ai.onnx" {
                o.version = Some(13);
            }
        }
    }
    Ok((out, opset >= 13 || liftable))
}
