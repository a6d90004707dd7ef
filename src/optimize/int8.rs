//! The INT8 arm of `optimize`: calibrate, quantize, search for the layers that must stay
//! float (`--keep-accuracy`, [`super::search`]), fit weights to int8 inputs (`--reconstruct`,
//! [`super::reconstruct`]), and measure each layer's error.

use std::collections::HashMap;
use std::path::Path;

use super::artifact::CalibrationInfo;
use super::calibrate::{self, ImageSet};
use super::figures::LayerSensitivity;
use super::qdq::{self, ActivationType, Exclusions, QdqReport};
use super::quantizer::Quantizer;
use super::reconstruct::{self, LayerFit};
use super::search::{AccuracySearch, Judge};
use super::spec::{OptimizeError, OptimizeSpec, ProgressFn, Target};
use super::weights::{Presets, WeightRange};
use super::{equalize, figures};
use crate::engine::{Engine, EngineConfig};
use crate::onnx::Model;
use crate::preprocess::PreprocessSpec;
use crate::tensor::Tensor;

/// Calibration images the reconstruction fits weights on.
const RECONSTRUCT_IMAGES: usize = 32;
/// Held-out frames the per-layer error figures are measured on.
const LAYER_ERROR_IMAGES: usize = 4;

/// Activation and weight grids for the target: ONNX Runtime's CPU kernels take uint8
/// activations and the CPU's weight range; TensorRT takes int8 symmetric, full range.
pub fn grids(spec: &OptimizeSpec) -> (ActivationType, WeightRange) {
    match spec.target {
        Target::Cpu => (ActivationType::U8Asymmetric, spec.weight_range),
        Target::Tensorrt => (ActivationType::I8Symmetric, WeightRange::Full),
    }
}

/// What the INT8 arm made besides the model.
pub struct Int8 {
    /// The fully quantized model, when the accuracy search kept units in float: the report
    /// shows what they bought.
    pub every_layer: Option<Model>,
    pub report: QdqReport,
    pub sensitivity: Vec<LayerSensitivity>,
    pub layer_error: Vec<LayerSensitivity>,
    pub calibration: CalibrationInfo,
    /// Calibration's tensor shapes, for the rewrites that need them fixed.
    pub shapes: HashMap<String, Vec<usize>>,
    /// What the reconstruction did to each convolution it fitted.
    pub fitted: Vec<LayerFit>,
}

/// What the INT8 arm works with, prepared by `optimize::run`.
pub struct Context<'a> {
    pub spec: &'a OptimizeSpec,
    pub pre: &'a PreprocessSpec,
    /// The CPU engine configuration every measurement runs on.
    pub cpu: &'a EngineConfig,
    pub scratch: &'a Path,
    pub source_sha: &'a str,
    pub progress: ProgressFn<'a>,
}

/// Quantizes `src` calibrated on `set`; `fp32` is the reference the search judges against and
/// `held` the held-out frames. The quantized model, and what went into it.
pub fn quantize(
    cx: &Context,
    src: &Model,
    set: &ImageSet,
    fp32: &mut Engine,
    held: &[Tensor],
) -> Result<(Model, Int8), OptimizeError> {
    let (spec, progress) = (cx.spec, cx.progress);
    // Equalized weights compute the same function; the FP32 reference stays the original
    // model, so the figures include any drift this causes.
    let mut src = src.clone();
    if spec.equalize {
        let n = equalize::equalize(&mut src, 4);
        tracing::info!(pairs = n, "cross-layer equalization");
    }
    // Equalized weights give other activations: their statistics are cached apart.
    let model_key = format!(
        "{}{}",
        cx.source_sha,
        if spec.equalize { "+cle" } else { "" }
    );
    let cal = calibrate::calibrated(&src, &model_key, set, cx.pre, cx.cpu, cx.scratch, progress)?;
    // The reconstruction and the search both run calibration images again; a run from the
    // cache decodes them only for these.
    let decoded = match cal.decoded {
        None if spec.reconstruct || spec.keep_accuracy.is_some() => Some(
            calibrate::tensors(set, cx.pre, &|d, t| {
                progress("decoding calibration images", d, t)
            })?
            .0,
        ),
        d => d,
    };
    let decoded = decoded.unwrap_or_default();
    let (act, weights) = grids(spec);
    let quantizer = Quantizer::new(&src, &cal.stats, spec.method, act, weights);
    // The search judges rounded weights; the fit comes after it (below).
    let (mut q, mut rep) = quantizer.rounded(&spec.exclude)?;
    let mut exclude = spec.exclude.clone();
    let mut sensitivity = Vec::new();
    let mut every_layer = None;
    if let Some(target) = spec.keep_accuracy {
        let judge = Judge::new(fp32, &decoded, cx.cpu, &spec.manifest)?;
        let search = AccuracySearch {
            quantizer: &quantizer,
            judge: &judge,
            target,
            exclude: &spec.exclude,
        };
        let every = q.clone();
        let s = search.run(q, rep, progress)?;
        every_layer = s.kept_any.then_some(every);
        (exclude, q, rep, sensitivity) = (s.exclude, s.model, s.report, s.sensitivity);
    }
    let mut fitted = Vec::new();
    if spec.reconstruct {
        let inputs = &decoded[..decoded.len().min(RECONSTRUCT_IMAGES)];
        let fit = Fit {
            quantizer: &quantizer,
            cx,
            inputs,
        };
        let presets;
        (presets, fitted) = fit.presets(&exclude)?;
        (q, rep) = quantizer.quantize(&presets, &exclude)?;
        // The fully quantized model the report sets beside it gets fits of its own.
        if let Some(every) = every_layer.as_mut() {
            *every = quantizer
                .quantize(&fit.presets(&spec.exclude)?.0, &spec.exclude)?
                .0;
        }
    }
    let probe = &held[..held.len().min(LAYER_ERROR_IMAGES)];
    let layer_error =
        figures::layer_errors(&src, &q, &rep.compute_outputs, probe, cx.cpu, cx.scratch)?;
    for (op, n) in &rep.unknown_ops {
        tracing::warn!(op = %op, nodes = n, "op unknown to the quantizer: left in float");
    }
    let made = Int8 {
        every_layer,
        report: rep,
        sensitivity,
        layer_error,
        calibration: CalibrationInfo {
            method: spec.method.to_string(),
            dir: set.dir.display().to_string(),
            sha256: set.sha256.clone(),
            images: set.images.len(),
            skipped: cal.skipped,
            cached: cal.cached,
        },
        shapes: cal.stats.shapes.clone(),
        fitted,
    };
    Ok((q, made))
}

/// The reconstruction, after the search and only for the layers it left in int8: each
/// layer's fit takes back error that the layers before it bring in, and a layer the search
/// then put back in float stops bringing it, leaving the fits to overcorrect
/// (docs/optimize-findings.md).
struct Fit<'a> {
    quantizer: &'a Quantizer<'a>,
    cx: &'a Context<'a>,
    inputs: &'a [Tensor],
}

impl Fit<'_> {
    fn presets(&self, exclude: &Exclusions) -> Result<(Presets, Vec<LayerFit>), OptimizeError> {
        let src = self.quantizer.model();
        let laid = qdq::layout_for(src, self.quantizer.act()).map(|(m, _)| m);
        let with = |p: &Presets| Ok(self.quantizer.quantize(p, exclude)?.0);
        let progress = self.cx.progress;
        reconstruct::fit(
            laid.as_ref().unwrap_or(src),
            &with,
            self.quantizer.weights(),
            self.cx.spec.manifest.family.is_detector(),
            self.inputs,
            self.cx.cpu,
            self.cx.scratch,
            &|d, t| progress("fitting weights to int8 inputs", d, t),
        )
    }
}
