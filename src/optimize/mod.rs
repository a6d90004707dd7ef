//! `edgesight optimize`: an FP32 ONNX model plus calibration images in, a faster artifact out.
//!
//! INT8 is explicit quantization ([`qdq`]): Q/DQ pairs placed in the graph from ranges that
//! [`calibrate`] measured with one of the [`calibrator`]s; for the CPU, rewrites that suit ONNX
//! Runtime's kernels follow, each documenting what it keeps ([`align`], [`peaks`], [`stem`],
//! [`gates`]). FP16 is [`fp16`]. Either way the artifact folder holds `model.onnx`,
//! `artifact.toml` (what was done, from what, with which figures) and `report.md` with its
//! plots; `edgesight run --model-dir DIR` consumes it.
//!
//! The work happens in a scratch folder next to `--out`, renamed into place only once
//! everything succeeded: a failure leaves no half-written artifact.

pub mod align;
pub mod artifact;
pub mod calibrate;
pub mod calibrator;
pub mod equalize;
pub mod fidelity;
pub mod fp16;
pub mod gates;
pub mod hardswish;
pub mod peaks;
pub mod qdq;
pub mod reconstruct;
pub mod report;
pub mod stem;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineConfig, EngineError, Provider};
use crate::models::{preprocess_spec, Manifest, ModelError};
use crate::onnx::{Model, OnnxError};
use crate::preprocess::{Interpolation, Preprocessor};
use crate::stats::Percentiles;
use crate::tensor::{Output, Tensor};
use calibrator::{Method, Range, TensorStats};

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
    pub exclude: qdq::Exclusions,
    /// Fidelity the INT8 model must keep (0..1); the most sensitive layers stay float until it
    /// does.
    pub keep_accuracy: Option<f64>,
    pub out: PathBuf,
    pub engine: EngineConfig,
    /// Timed runs per model for the latency figures.
    pub bench_runs: usize,
    /// Cross-layer equalization before calibration.
    pub equalize: bool,
    /// Convolution weights fitted to the int8 model's own inputs ([`reconstruct`]).
    pub reconstruct: bool,
    /// How far the CPU graph's int8 weights reach: the CPU that will run the artifact decides
    /// ([`qdq::WeightRange`]). TensorRT's graphs always take the full range.
    pub weight_range: qdq::WeightRange,
}

/// Progress of the long steps: (step, done, total).
pub type ProgressFn<'a> = &'a dyn Fn(&str, u64, u64);

/// The figures for one precision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    pub precision: String,
    pub fidelity: Option<fidelity::Fidelity>,
    pub latency_b1: Percentiles,
    /// The batch with the lowest per-image latency, and that latency (dynamic-batch models).
    pub best_batch: Option<(usize, Percentiles)>,
    pub size_bytes: u64,
    /// Kernel time per op type and run, from ONNX Runtime's profiler: where the time goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<fidelity::OpTime>,
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

/// What `optimize` did, as `artifact.toml` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub out: PathBuf,
    pub artifact: artifact::Artifact,
}

/// Runs summed for the kernel-time breakdown.
const PROFILED_RUNS: usize = 10;
/// Calibration images the accuracy search judges the mixed-precision candidates on.
const SEARCH_IMAGES: usize = 40;
/// The first of those, for the one-layer-at-a-time sensitivity runs (one per node).
const SENSITIVITY_IMAGES: usize = 8;
/// Calibration images the reconstruction fits weights on.
const RECONSTRUCT_IMAGES: usize = 32;
/// The most sensitive layers the search tries putting back in float.
const MAX_SEARCH_TRIALS: usize = 60;
/// The least share of the remaining gap to the target a unit must close to stay in float.
const MIN_GAIN_OF_GAP: f64 = 0.1;

/// A fidelity on the search images, and on each half of them.
#[derive(Debug, Clone, Copy)]
struct Split {
    whole: f64,
    halves: [f64; 2],
}

/// Whether a unit that takes the search's fidelity from `before` to `after` stays in float.
/// Each unit in float costs speed; one that closes less than a tenth of what is left to the
/// target buys too little for it (CenterNet's heatmap logits in float once added 0.0005 to a
/// search mAP50 of 0.877, short of 0.9). And a gain that one half of the images shows while the
/// other pays for it is a few detections trading ranks, not a layer that matters: on CenterNet,
/// taking such units ended at 0.92 on the search images and 0.86 held out; refusing them, at
/// 0.97 and 0.93, with fewer layers in float.
fn worth_keeping(before: Split, after: Split, target: f64) -> bool {
    let gain = after.whole - before.whole;
    gain > 0.0
        && gain >= MIN_GAIN_OF_GAP * (target - before.whole)
        && after.halves.iter().zip(&before.halves).all(|(a, b)| a >= b)
}

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

pub fn run(spec: &OptimizeSpec, progress: ProgressFn) -> Result<Outcome, OptimizeError> {
    check_target(spec.precision, spec.target)?;
    let src = Model::load(&spec.manifest.file)?;
    if spec.target == Target::Tensorrt {
        artifact::check_tensorrt(&spec.manifest.file, spec.precision, &spec.engine)?;
    }
    let source_sha = calibrate::file_sha256(&spec.manifest.file)?;
    // The FP32 reference, on the CPU: fidelity is measured against it whatever the target.
    let cpu = EngineConfig {
        provider: Provider::Cpu,
        ..spec.engine.clone()
    };
    let mut fp32 = Engine::load(&spec.manifest.file, &cpu)?;
    let pre = preprocess_spec(&spec.manifest, fp32.io())?;

    let parent = spec
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| OptimizeError::Io {
        path: parent.to_path_buf(),
        reason: e.to_string(),
    })?;
    let scratch = tempfile::Builder::new()
        .prefix(".optimize-")
        .tempdir_in(parent)
        .map_err(|e| OptimizeError::Io {
            path: parent.to_path_buf(),
            reason: e.to_string(),
        })?;

    // The calibration set first: a missing or empty one is the likelier mistake.
    let cal_set = match spec.precision {
        Precision::Int8 => Some(calibrate::ImageSet::open(&spec.calibration)?),
        _ => None,
    };
    // Held-out frames: fidelity and latency are measured on these, never on calibration images.
    let heldout_set = calibrate::ImageSet::open(&spec.heldout)?;
    if let Some((held, twin)) = cal_set.as_ref().and_then(|c| heldout_set.shared_with(c)) {
        return Err(OptimizeError::Calibration {
            dir: spec.heldout.clone(),
            reason: format!(
                "held-out image {} is also in the calibration set (as {}); fidelity on images \
                 that set the ranges would flatter the model",
                held.display(),
                twin.display()
            ),
        });
    }
    let (held, _) = calibrate::tensors(&heldout_set, &pre, &|d, t| {
        progress("held-out frames", d, t)
    })?;
    let identities: Option<Vec<String>> = heldout_set
        .images
        .iter()
        .map(|p| fidelity::identity_of(p))
        .collect();

    let mut cal_info = None;
    let mut sensitivity = Vec::new();
    let mut layer_error = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    let mut qreport = None;
    // The fully quantized model, when the accuracy search moved units back to float.
    let mut plain: Option<Model> = None;
    // Calibration's tensor shapes, for the rewrites that need them fixed.
    let mut shapes = HashMap::new();
    // What the reconstruction did to each convolution it fitted.
    let mut fitted = Vec::new();
    let candidate: Model = match spec.precision {
        Precision::Fp32 => src.clone(),
        Precision::Fp16 => fp16::convert(&src, &fp16::Fp16Options::default())?.0,
        Precision::Int8 => {
            // Equalized weights compute the same function; the FP32 reference stays the
            // original model, so the figures include any drift this causes.
            let mut src = src.clone();
            if spec.equalize {
                let n = equalize::equalize(&mut src, 4);
                tracing::info!(pairs = n, "cross-layer equalization");
            }
            let set = cal_set.expect("opened above for int8");
            // Equalized weights give other activations: their statistics are cached apart.
            let model_key = format!("{source_sha}{}", if spec.equalize { "+cle" } else { "" });
            let key = calibrate::cache_key(
                &model_key,
                &set.sha256,
                &pre,
                &qdq::calibration_tensors(&src),
            );
            // The decoded images are kept for the accuracy search, when they were decoded.
            let (stats, skipped, cached, decoded) = match calibrate::load_cached(&key) {
                Some(s) => {
                    for image in &s.skipped {
                        tracing::warn!(%image, "skipped: did not decode when this set was calibrated");
                    }
                    let n = s.skipped.len();
                    (s, n, true, None)
                }
                None => {
                    let (inputs, bad) = calibrate::tensors(&set, &pre, &|d, t| {
                        progress("decoding calibration images", d, t)
                    })?;
                    let mut s =
                        calibrate::collect(&src, &inputs, &cpu, scratch.path(), &|d, t| {
                            progress("calibrating", d, t)
                        })?;
                    s.skipped.clone_from(&bad);
                    calibrate::store_cached(&key, &s);
                    (s, bad.len(), false, Some(inputs))
                }
            };
            let ranges = ranges_of(&stats.tensors, spec.method);
            shapes.clone_from(&stats.shapes);
            let (act, weights) = match spec.target {
                Target::Cpu => (qdq::ActivationType::U8Asymmetric, spec.weight_range),
                Target::Tensorrt => (qdq::ActivationType::I8Symmetric, qdq::WeightRange::Full),
            };
            let mut exclude = spec.exclude.clone();
            // The reconstruction and the search both run calibration images again; a run from
            // the cache decodes them only for these.
            let decoded = match decoded {
                None if spec.reconstruct || spec.keep_accuracy.is_some() => Some(
                    calibrate::tensors(&set, &pre, &|d, t| {
                        progress("decoding calibration images", d, t)
                    })?
                    .0,
                ),
                d => d,
            };
            let quantize = |presets: &reconstruct::Presets, exclude: &qdq::Exclusions| {
                qdq::quantize(
                    &src,
                    &ranges,
                    &stats.channel_means,
                    presets,
                    act,
                    weights,
                    exclude,
                )
            };
            // The search judges rounded weights; the fit comes after it (below).
            let rounded = reconstruct::Presets::new();
            let (mut q, mut rep) = quantize(&rounded, &exclude)?;
            if let Some(target_fid) = spec.keep_accuracy {
                let every_layer = q.clone();
                // The search judges on calibration images, never on the held-out frames the
                // report measures: a choice made on those frames would flatter its own figure.
                let search = decoded.as_deref().expect("decoded above for the search");
                let search: Vec<Tensor> = search.iter().take(SEARCH_IMAGES).cloned().collect();
                let probe: Vec<Tensor> = search.iter().take(SENSITIVITY_IMAGES).cloned().collect();
                let fp32_probe = fidelity::outputs_of(&mut fp32, &probe)?;
                let fp32_search = fidelity::outputs_of(&mut fp32, &search)?;
                // Candidates are written apart from the artifact's folder, and gone with it.
                let trials = temp_dir()?;
                let outputs = |m: &Model, tag: &str, inputs: &[Tensor]| {
                    let p = trials.path().join(format!("{tag}.onnx"));
                    m.save(&p)?;
                    let mut e = Engine::load(&p, &cpu)?;
                    Ok::<_, OptimizeError>(fidelity::outputs_of(&mut e, inputs)?)
                };
                let fidelity_of = |reference: &[Vec<Output>], out: &[Vec<Output>]| {
                    Ok::<f64, OptimizeError>(
                        fidelity::compare(
                            reference,
                            out,
                            spec.manifest.family,
                            &spec.manifest,
                            fp32.io(),
                        )?
                        .score(),
                    )
                };
                let score = |m: &Model, tag: &str, inputs: &[Tensor], reference: &[Vec<Output>]| {
                    fidelity_of(reference, &outputs(m, tag, inputs)?)
                };
                // On the search images, and on each half of them.
                let split = |m: &Model| {
                    let out = outputs(m, "mixed", &search)?;
                    let (r, h) = (&fp32_search, out.len() / 2);
                    Ok::<Split, OptimizeError>(Split {
                        whole: fidelity_of(r, &out)?,
                        halves: [
                            fidelity_of(&r[..h], &out[..h])?,
                            fidelity_of(&r[h..], &out[h..])?,
                        ],
                    })
                };
                // Sensitivity, of two kinds of unit. Each computing node (weighted layers, adds,
                // activations) quantized on its own: its weights and the activations around it,
                // which alone can cost more than the target allows. And each activation's
                // rounding on its own, in the float model: a tensor whose channels span very
                // different ranges (CenterNet's first hard-swish, read by a depthwise kernel of
                // weight 70) loses more than any node, and only keeping its writer and readers
                // in float keeps it in float.
                let layers = rep.quantized_compute.clone();
                let tensors = rep.quantized_tensors.clone();
                let total = (layers.len() + tensors.len()) as u64;
                let all_nodes: Vec<String> = src.graph().node.iter().map(qdq::node_label).collect();
                // What each unit keeps in float, by index into `sensitivity`.
                let mut keeps: Vec<Vec<String>> = Vec::new();
                for (i, layer) in layers.iter().enumerate() {
                    let mut only = exclude.clone();
                    only.names
                        .extend(all_nodes.iter().filter(|n| *n != layer).cloned());
                    let (m, _) = quantize(&rounded, &only)?;
                    sensitivity.push(LayerSensitivity {
                        layer: layer.clone(),
                        fidelity: score(&m, "probe", &probe, &fp32_probe)?,
                        kept_in_float: false,
                    });
                    keeps.push(vec![layer.clone()]);
                    progress("layer sensitivity", i as u64 + 1, total);
                }
                for (i, t) in tensors.iter().enumerate() {
                    if let Some(m) = qdq::with_one_quantized_tensor(&src, &q, t) {
                        sensitivity.push(LayerSensitivity {
                            layer: format!("activation {t}"),
                            fidelity: score(&m, "probe", &probe, &fp32_probe)?,
                            kept_in_float: false,
                        });
                        keeps.push(qdq::neighbours(&src, t));
                    }
                    progress("layer sensitivity", (layers.len() + i) as u64 + 1, total);
                }
                let mut order: Vec<usize> = (0..sensitivity.len()).collect();
                order.sort_by(|&a, &b| sensitivity[a].fidelity.total_cmp(&sensitivity[b].fidelity));
                let mut now = split(&q)?;
                // Units put back in float, in the order the search kept them.
                let mut kept: Vec<usize> = Vec::new();
                // Greedy, most sensitive first, and a unit goes back to float only if that
                // helps the whole model: errors of neighbouring layers partly cancel, so a
                // layer that hurts alone need not hurt in company.
                for (i, &u) in order.iter().take(MAX_SEARCH_TRIALS).enumerate() {
                    if now.whole >= target_fid {
                        break;
                    }
                    let mut trial = exclude.clone();
                    trial.names.extend(keeps[u].iter().cloned());
                    if trial.names.len() == exclude.names.len() {
                        continue;
                    }
                    let (tq, trep) = quantize(&rounded, &trial)?;
                    let then = split(&tq)?;
                    progress("mixed precision", i as u64 + 1, MAX_SEARCH_TRIALS as u64);
                    if worth_keeping(now, then, target_fid) {
                        tracing::info!(unit = %sensitivity[u].layer, fidelity = then.whole, "kept in float");
                        sensitivity[u].kept_in_float = true;
                        kept.push(u);
                        (exclude, q, rep, now) = (trial, tq, trep, then);
                    }
                }
                let mut fid = now.whole;
                // Backward: a unit kept early may no longer be needed once later ones are in
                // float (their errors overlapped). Each goes back to int8 if the whole model
                // holds the target without it, or, short of the target, loses nothing.
                for &u in kept.clone().iter().rev() {
                    let mut trial = spec.exclude.clone();
                    for &k in kept.iter().filter(|&&k| k != u) {
                        trial.names.extend(keeps[k].iter().cloned());
                    }
                    // Covered by the other kept units: nothing to try.
                    if keeps[u].iter().all(|n| trial.names.contains(n)) {
                        continue;
                    }
                    let (tq, trep) = quantize(&rounded, &trial)?;
                    let tfid = score(&tq, "mixed", &search, &fp32_search)?;
                    if tfid >= target_fid.min(fid) {
                        tracing::info!(unit = %sensitivity[u].layer, fidelity = tfid, "back to int8");
                        sensitivity[u].kept_in_float = false;
                        kept.retain(|&k| k != u);
                        (q, rep, fid) = (tq, trep, tfid);
                    }
                }
                // The report shows what the kept units bought, on the held-out frames.
                if !kept.is_empty() {
                    plain = Some(every_layer);
                }
                if fid < target_fid {
                    tracing::warn!(
                        fidelity = fid,
                        target = target_fid,
                        "fidelity target not reached even with every sensitive layer in float"
                    );
                }
            }
            // The fit comes after the search, to the layers the search left in int8: each
            // layer's fit takes back error that the layers before it bring in, and a layer
            // the search then put back in float stops bringing it, leaving the fits to
            // overcorrect: searched on fitted weights, CenterNet came out less accurate and
            // slower than the search alone (docs/optimize-findings.md).
            if spec.reconstruct {
                let inputs = decoded.as_deref().unwrap_or_default();
                let inputs = &inputs[..inputs.len().min(RECONSTRUCT_IMAGES)];
                let laid = qdq::layout_for(&src, act).map(|(m, _)| m);
                let fit = |exclude: &qdq::Exclusions| {
                    let with = |p: &reconstruct::Presets| Ok(quantize(p, exclude)?.0);
                    reconstruct::fit(
                        laid.as_ref().unwrap_or(&src),
                        &with,
                        weights,
                        spec.manifest.family.is_detector(),
                        inputs,
                        &cpu,
                        scratch.path(),
                        &|d, t| progress("fitting weights to int8 inputs", d, t),
                    )
                };
                let presets;
                (presets, fitted) = fit(&exclude)?;
                (q, rep) = quantize(&presets, &exclude)?;
                // The fully quantized model the report sets beside it gets fits of its own.
                if let Some(every) = plain.as_mut() {
                    *every = quantize(&fit(&spec.exclude)?.0, &spec.exclude)?.0;
                }
            }
            let probe: Vec<Tensor> = held.iter().take(4).cloned().collect();
            layer_error = fidelity::layer_errors(
                &src,
                &q,
                &rep.compute_outputs,
                &probe,
                &cpu,
                scratch.path(),
            )?;
            excluded = rep.excluded.clone();
            for (op, n) in &rep.unknown_ops {
                tracing::warn!(op = %op, nodes = n, "op unknown to the quantizer: left in float");
            }
            cal_info = Some(artifact::CalibrationInfo {
                method: spec.method.to_string(),
                dir: set.dir.display().to_string(),
                sha256: set.sha256.clone(),
                images: set.images.len(),
                skipped,
                cached,
            });
            qreport = Some(rep);
            q
        }
    };

    // Hard-swish left in float (all of it in FP32; the layers kept in float in INT8) as one op
    // each, on the CPU. Only now: it reads TF.js's float16 1/6 as 1/6, and the accuracy search
    // must judge the quantization alone. The held-out figures below include it.
    let mut rewrites = qreport
        .as_ref()
        .map(|r| r.rewrites.clone())
        .unwrap_or_default();
    if let Some(r) = &qreport {
        rewrites.extend(reconstruct::summary(&fitted, &r.quantized_layers));
    }
    let float_ops = spec.target == Target::Cpu;
    let candidate = match float_ops.then(|| hardswish::fuse(&candidate)).flatten() {
        Some((m, fused)) => {
            rewrites.extend(fused.iter().map(|f| f.to_string()));
            m
        }
        None => candidate,
    };
    // Two layouts for the CPU's int8 kernels: the stem convolution read over groups of pixels,
    // and per-channel gates tiled to their tensors' shapes. The same integers, so they change
    // no figure but speed.
    let int8_cpu = spec.target == Target::Cpu && spec.precision == Precision::Int8;
    let for_the_cpu = |m: Model| -> (Model, Vec<String>) {
        if !int8_cpu {
            return (m, Vec::new());
        }
        let mut done = Vec::new();
        let m = match stem::group_pixels(&m, |_| false) {
            Some((g, grouped)) => {
                done.extend(grouped.iter().map(|d| d.to_string()));
                g
            }
            None => m,
        };
        let m = match gates::tile(&m, &shapes) {
            Some((g, tiled)) => {
                done.extend(tiled.iter().map(|t| t.to_string()));
                g
            }
            None => m,
        };
        (m, done)
    };
    let (candidate, done) = for_the_cpu(candidate);
    rewrites.extend(done);
    let plain = plain.map(|m| for_the_cpu(m).0);
    let rewritten_fp32 = spec.precision == Precision::Fp32 && !rewrites.is_empty();
    let model_path = scratch.path().join("model.onnx");
    // A percentile range fits the background logits; the top of the grid is the best score
    // the calibration images gave, and no score can pass it (CenterNet on the street
    // frames: 0.72, where FP32 scores a person in `bus.jpg` 0.77).
    let score_ceiling = score_ceiling(&src, &candidate);
    if let Some(c) = score_ceiling.filter(|&c| c < SCORE_CEILING_WARNING) {
        tracing::warn!(
            ceiling = format!("{c:.3}"),
            "int8 scores cannot pass this: the highest heatmap logit in the calibration images"
        );
    }
    let requantized = qdq::runtime_requantized(&candidate);
    if !requantized.is_empty() {
        tracing::warn!(
            layers = ?requantized,
            "ONNX Runtime will give these float layers per-tensor int8 weights of its own"
        );
    }
    candidate.save(&model_path)?;
    // Measured but not part of the artifact: it lives in a folder of its own.
    let plain_dir = temp_dir()?;
    let plain_path = plain_dir.path().join("every-layer.onnx");
    if let Some(m) = &plain {
        m.save(&plain_path)?;
    }
    // (label, model file) of each precision measured, FP32 first.
    let mut measured: Vec<(String, &Path)> = vec![("fp32".into(), spec.manifest.file.as_path())];
    if plain.is_some() {
        measured.push((
            format!("{} (every layer)", spec.precision),
            plain_path.as_path(),
        ));
    }
    if spec.precision != Precision::Fp32 {
        measured.push((spec.precision.to_string(), model_path.as_path()));
    } else if rewritten_fp32 {
        measured.push(("fp32 (rewritten)".into(), model_path.as_path()));
    }
    let mut others: Vec<Engine> = measured[1..]
        .iter()
        .map(|(_, p)| Engine::load(p, &cpu))
        .collect::<Result<_, _>>()?;
    // All are timed in turn, run for run: drift in the machine's speed then hits every figure
    // alike.
    let latencies = {
        let mut all: Vec<&mut Engine> = vec![&mut fp32];
        all.extend(others.iter_mut());
        fidelity::latency_interleaved(&mut all, &held[0], spec.bench_runs)?
    };
    let fp32_out = fidelity::outputs_of(&mut fp32, &held)?;
    let mut figures = vec![Figures {
        precision: "fp32".into(),
        fidelity: None,
        latency_b1: latencies[0],
        best_batch: fidelity::best_batch(&mut fp32, &held[0], spec.bench_runs)?,
        size_bytes: std::fs::metadata(&spec.manifest.file)
            .map(|m| m.len())
            .unwrap_or(0),
        kernels: Vec::new(),
    }];
    // What the figures read for a change nobody would call a loss: FP32 against itself on the
    // same frames, resized bicubic instead of bilinear. On a few dozen frames a detector's mean
    // over classes moves with its rarest detections, and that is the scale to read it on.
    let cubic = Preprocessor::new(pre.clone()).with_interpolation(Interpolation::Cubic);
    let (held_cubic, _) = calibrate::tensors_with(&heldout_set, cubic, &|d, t| {
        progress("held-out frames, bicubic", d, t)
    })?;
    let yardstick = if held_cubic.len() == held.len() {
        Some(fidelity::compare_with_identities(
            &fp32_out,
            &fidelity::outputs_of(&mut fp32, &held_cubic)?,
            spec.manifest.family,
            &spec.manifest,
            fp32.io(),
            identities.as_deref(),
        )?)
    } else {
        None
    };
    let mut comparison = None;
    for (k, e) in others.iter_mut().enumerate() {
        let (label, path) = &measured[k + 1];
        let out = fidelity::outputs_of(e, &held)?;
        let fid = fidelity::compare_with_identities(
            &fp32_out,
            &out,
            spec.manifest.family,
            &spec.manifest,
            fp32.io(),
            identities.as_deref(),
        )?;
        figures.push(Figures {
            precision: label.clone(),
            fidelity: Some(fid),
            latency_b1: latencies[k + 1],
            best_batch: fidelity::best_batch(e, &held[0], spec.bench_runs)?,
            size_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            kernels: Vec::new(),
        });
        if *path != model_path.as_path() {
            continue;
        }
        // Held-out tensors and images line up only when none was skipped.
        let aligned = held.len() == heldout_set.images.len();
        if let Some((k, n)) =
            fidelity::most_disagreeing_frame(&fp32_out, &out, &spec.manifest, fp32.io())?
                .filter(|_| aligned)
        {
            let names = (
                "compare-fp32.jpg".to_string(),
                format!("compare-{}.jpg", spec.precision),
            );
            let frame = &heldout_set.images[k];
            comparison = Some(artifact::Comparison {
                frame: frame.display().to_string(),
                disagreements: n,
                fp32: names.0.clone(),
                candidate: names.1.clone(),
            });
            let det = crate::models::build_detector(&spec.manifest, fp32.io())?;
            let drawn = [(&fp32_out[k][..], &*names.0), (&out[k][..], &*names.1)];
            draw_comparison(frame, &pre, det.as_ref(), drawn, scratch.path())?;
        }
    }
    // Profiled in sessions of their own, after the timing: the profiler slows every kernel.
    // The breakdown only explains the figures above, so a failure costs it alone.
    drop(others);
    drop(fp32);
    for (f, (_, path)) in figures.iter_mut().zip(&measured) {
        let profiled = temp_dir().map_err(|e| e.to_string()).and_then(|traces| {
            let mut e = Engine::load_profiled(path, &cpu, &traces.path().join("trace"))
                .map_err(|e| e.to_string())?;
            fidelity::kernel_times(&mut e, &held[0], PROFILED_RUNS).map_err(|e| e.to_string())
        });
        match profiled {
            Ok(k) => f.kernels = k,
            Err(reason) => {
                tracing::warn!(precision = %f.precision, %reason, "no kernel-time breakdown")
            }
        }
    }

    let tensorrt = if spec.target == Target::Tensorrt {
        Some(artifact::build_tensorrt(
            &model_path,
            scratch.path(),
            spec.precision,
            &spec.engine,
            &held[0],
        )?)
    } else {
        None
    };

    let art = artifact::Artifact {
        model: spec.manifest.clone(),
        precision: spec.precision,
        target: spec.target,
        source_model: spec.manifest.file.display().to_string(),
        source_sha256: source_sha,
        heldout_dir: heldout_set.dir.display().to_string(),
        heldout_images: held.len(),
        calibration: cal_info,
        excluded,
        quantized_layers: qreport
            .as_ref()
            .map(|r| r.quantized_layers.len())
            .unwrap_or(0),
        rewrites,
        unknown_ops: qreport.map(|r| r.unknown_ops).unwrap_or_default(),
        figures,
        sensitivity,
        layer_error,
        comparison,
        yardstick,
        score_ceiling,
        weight_range: (spec.precision == Precision::Int8 && spec.target == Target::Cpu)
            .then_some(spec.weight_range),
        tensorrt,
        created_by: format!("edgesight {}", env!("CARGO_PKG_VERSION")),
    };
    art.write(scratch.path())?;
    report::write(&art, scratch.path())?;

    // Everything is in place: swap the finished folder in.
    if spec.out.exists() {
        std::fs::remove_dir_all(&spec.out).map_err(|e| OptimizeError::Io {
            path: spec.out.clone(),
            reason: e.to_string(),
        })?;
    }
    let done = scratch.keep();
    std::fs::rename(&done, &spec.out).map_err(|e| OptimizeError::Io {
        path: spec.out.clone(),
        reason: e.to_string(),
    })?;
    Ok(Outcome {
        out: spec.out.clone(),
        artifact: art,
    })
}

/// A temporary folder for files that must not land in the artifact.
fn temp_dir() -> Result<tempfile::TempDir, OptimizeError> {
    tempfile::tempdir().map_err(|e| OptimizeError::Io {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })
}

/// Draws each model's boxes on one held-out frame, from the outputs already computed for it:
/// only the transform back to source pixels is new, so the frame is preprocessed again for it.
fn draw_comparison(
    frame: &Path,
    pre: &crate::preprocess::PreprocessSpec,
    det: &dyn crate::models::Detector,
    drawn: [(&[Output], &str); 2],
    dir: &Path,
) -> Result<(), OptimizeError> {
    let io = |path: &Path, reason: String| OptimizeError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let image = calibrate::decode_image(frame).map_err(|e| io(frame, e))?;
    let (_, t) = Preprocessor::new(pre.clone())
        .run(image.pixels())
        .map_err(|e| io(frame, e.to_string()))?;
    for (outputs, name) in drawn {
        let path = dir.join(name);
        crate::sinks::video::write_jpeg(&image, &det.decode(outputs, &t)?, &path)
            .map_err(|e| io(&path, e.to_string()))?;
    }
    Ok(())
}

/// A score ceiling below this is worth a warning: a pipeline's threshold may sit above it.
const SCORE_CEILING_WARNING: f64 = 0.9;

/// The highest score `quantized` can give through the heatmaps of `float` (its source): the
/// sigmoid of the top of each heatmap's logit grid, the lowest of them. `None` for a graph
/// with no heatmap peak test, or whose logits stayed float.
pub fn score_ceiling(float: &Model, quantized: &Model) -> Option<f64> {
    peaks::heatmap_logits(float)
        .iter()
        .filter_map(|t| qdq::grid_top(quantized, t))
        .map(|top| 1.0 / (1.0 + (-top).exp()))
        .reduce(f64::min)
}

pub fn ranges_of(stats: &HashMap<String, TensorStats>, method: Method) -> HashMap<String, Range> {
    stats
        .iter()
        .map(|(k, s)| (k.clone(), s.range(method)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-checked against the search's own runs.
    #[test]
    fn a_unit_must_close_a_tenth_of_the_gap_on_both_halves() {
        let s = |whole, a, b| Split {
            whole,
            halves: [a, b],
        };
        // CenterNet at 0.9: the heatmap logits bought 0.0005 of the 0.023 left.
        assert!(!worth_keeping(
            s(0.8765, 0.87, 0.88),
            s(0.8770, 0.871, 0.881),
            0.9
        ));
        // The first block's hard-swish bought 0.10 of 0.19.
        assert!(worth_keeping(s(0.713, 0.7, 0.72), s(0.813, 0.8, 0.83), 0.9));
        // MobileFaceNet at 0.99: 0.002 of 0.011 left is worth it.
        assert!(worth_keeping(
            s(0.979, 0.978, 0.98),
            s(0.981, 0.98, 0.982),
            0.99
        ));
        // Enough on the whole, but one half pays for the other.
        assert!(!worth_keeping(s(0.8, 0.8, 0.8), s(0.85, 0.95, 0.79), 0.9));
        // No rise never counts.
        assert!(!worth_keeping(s(0.8, 0.8, 0.8), s(0.8, 0.8, 0.8), 0.9));
    }
}
