//! The figures `optimize` measures and records: per precision ([`Figures`]) and per layer
//! ([`LayerSensitivity`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fidelity::{cosine, flat, Fidelity, OpTime};
use super::spec::OptimizeError;
use crate::engine::Engine;
use crate::stats::Percentiles;
use crate::tensor::Tensor;

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

/// Per-layer output error: the cosine between each named tensor in the reference and in the
/// fully quantized candidate, over `inputs`. One run of each model, with the tensors added as
/// outputs, so it is cheap enough for every report (the accuracy search's one-layer-at-a-time
/// sensitivity costs a run per layer).
pub fn layer_errors(
    reference: &crate::onnx::Model,
    candidate: &crate::onnx::Model,
    tensors: &[(String, String)],
    inputs: &[Tensor],
    engine: &crate::engine::EngineConfig,
    scratch: &std::path::Path,
) -> Result<Vec<LayerSensitivity>, OptimizeError> {
    let names: Vec<String> = tensors.iter().map(|(_, t)| t.clone()).collect();
    let collect = |m: &crate::onnx::Model,
                   tag: &str|
     -> Result<BTreeMap<String, Vec<Vec<f32>>>, OptimizeError> {
        let path = scratch.join(format!("layers-{tag}.onnx"));
        crate::onnx::graph::with_extra_outputs(m, &names).save(&path)?;
        let mut e = Engine::load(&path, engine)?;
        let mut out: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
        for t in inputs {
            for o in e.run(t)? {
                if names.contains(&o.name) {
                    out.entry(o.name.clone()).or_default().push(flat(&o));
                }
            }
        }
        let _ = std::fs::remove_file(&path);
        Ok(out)
    };
    let a = collect(reference, "fp32")?;
    let b = collect(candidate, "candidate")?;
    Ok(tensors
        .iter()
        .filter_map(|(layer, t)| {
            let (x, y) = (a.get(t)?, b.get(t)?);
            let c: Vec<f64> = x.iter().zip(y).map(|(p, q)| cosine(p, q)).collect();
            Some(LayerSensitivity {
                layer: layer.clone(),
                fidelity: c.iter().sum::<f64>() / c.len().max(1) as f64,
                kept_in_float: false,
            })
        })
        .collect())
}
