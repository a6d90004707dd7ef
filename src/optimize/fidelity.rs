//! How close an optimized model stays to its FP32 original, on held-out frames.
//!
//! Detectors: agreement mAP50, FP32's detections (at the manifest's threshold) taken as the
//! truth and the optimized model's ranked down to score 0.01, so the figure isolates
//! what optimization changed from what the model gets wrong anyway. Every model: the cosine
//! between the two models' raw outputs. Embedders: verification AUC as well, where the image
//! names carry identities (`Person_Name-xxx.jpg`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::spec::OptimizeError;
use crate::detection::Detection;
use crate::engine::{Engine, EngineError};
use crate::models::{build_detector, Family, Manifest};
use crate::preprocess::Transform;
use crate::stats::{Latency, Percentiles};
use crate::tensor::{ModelIo, Output, Tensor};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fidelity {
    /// Mean over frames and outputs of the cosine between FP32 and optimized outputs.
    pub mean_cosine: f64,
    /// The worst frame's cosine (over all outputs).
    pub min_cosine: f64,
    pub per_output_cosine: BTreeMap<String, f64>,
    /// Detectors only: agreement mAP at IoU 0.5 with FP32's detections as the truth.
    pub map50: Option<f64>,
    /// Detectors only: the per-class terms of `map50`, most frequent class first. The mean
    /// weighs a class FP32 found once as much as one it found hundreds of times.
    #[serde(default)]
    pub per_class: Vec<ClassAgreement>,
    /// Detectors only: how far `map50` moves with the choice of held-out frames (5th and 95th
    /// percentiles, [`map50_interval_of`]).
    #[serde(default)]
    pub map50_interval: Option<(f64, f64)>,
    /// Embedders with identities: verification AUC of (FP32, optimized).
    pub auc: Option<(f64, f64)>,
}

/// Agreement AP50 of one class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassAgreement {
    pub label: String,
    /// FP32's detections of the class on the held-out frames.
    pub instances: usize,
    pub ap50: f64,
}

impl Fidelity {
    /// The one number the accuracy search and the targets use.
    pub fn score(&self) -> f64 {
        self.map50.unwrap_or(self.mean_cosine)
    }
}

pub fn outputs_of(engine: &mut Engine, inputs: &[Tensor]) -> Result<Vec<Vec<Output>>, EngineError> {
    inputs.iter().map(|t| engine.run(t)).collect()
}

/// Batch-1 latency over `runs` timed runs after two warm-up runs.
pub fn latency(
    engine: &mut Engine,
    input: &Tensor,
    runs: usize,
) -> Result<Percentiles, EngineError> {
    Ok(latency_interleaved(&mut [engine], input, runs)?[0])
}

/// Batch-1 latency of several engines, timed in turn, run for run, after two warm-up runs
/// each: drift in the machine's speed then hits every figure alike.
pub fn latency_interleaved(
    engines: &mut [&mut Engine],
    input: &Tensor,
    runs: usize,
) -> Result<Vec<Percentiles>, EngineError> {
    for _ in 0..2 {
        for e in engines.iter_mut() {
            e.run(input)?;
        }
    }
    let mut lat: Vec<Latency> = engines.iter().map(|_| Latency::default()).collect();
    for _ in 0..runs.max(1) {
        for (e, l) in engines.iter_mut().zip(&mut lat) {
            let t0 = Instant::now();
            e.run(input)?;
            l.record(t0.elapsed());
        }
    }
    Ok(lat.iter().map(|l| l.percentiles()).collect())
}

/// The batch size with the lowest per-image p50 latency among 2, 4 and 8, for models whose
/// batch dimension is dynamic: (batch, per-image percentiles).
pub fn best_batch(
    engine: &mut Engine,
    input: &Tensor,
    runs: usize,
) -> Result<Option<(usize, Percentiles)>, EngineError> {
    if engine.io().inputs.first().map(|i| i.shape.first().copied()) != Some(Some(-1)) {
        return Ok(None);
    }
    let mut best: Option<(usize, Percentiles)> = None;
    for b in [2usize, 4, 8] {
        let t = input.repeat_batch(b);
        let p = latency(engine, &t, (runs / b).max(3))?;
        let per = Percentiles {
            p50_ms: p.p50_ms / b as f64,
            p95_ms: p.p95_ms / b as f64,
            mean_ms: p.mean_ms / b as f64,
        };
        if best.as_ref().is_none_or(|(_, q)| per.p50_ms < q.p50_ms) {
            best = Some((b, per));
        }
    }
    Ok(best)
}

/// Mean kernel time of one op type per run, as ONNX Runtime's profiler saw it: the op names
/// are the runtime's own after its graph rewrites (QLinearConv, ReorderInput, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpTime {
    pub op: String,
    pub ms: f64,
}

/// Where a model's time goes: `runs` batch-1 runs of a model opened with
/// [`Engine::load_profiled`], summed by op type, slowest first. The trace is deleted once read.
pub fn kernel_times(
    engine: &mut Engine,
    input: &Tensor,
    runs: usize,
) -> Result<Vec<OpTime>, EngineError> {
    // The first run allocates and packs weights: it is left out of the sums.
    for _ in 0..runs.max(1) + 1 {
        engine.run(input)?;
    }
    let trace = engine.end_profiling()?;
    let read = std::fs::read_to_string(&trace);
    let _ = std::fs::remove_file(&trace);
    let bad = |reason: String| EngineError::Run {
        path: trace.clone(),
        reason: format!("profiler trace: {reason}"),
    };
    kernel_times_from_trace(&read.map_err(|e| bad(e.to_string()))?).map_err(bad)
}

/// Sums ONNX Runtime's `*_kernel_time` events by op over every `model_run` but the first, per
/// run.
pub fn kernel_times_from_trace(json: &str) -> Result<Vec<OpTime>, String> {
    let events: Vec<serde_json::Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let num = |e: &serde_json::Value, k: &str| e.get(k).and_then(|v| v.as_f64());
    let mut starts: Vec<f64> = events
        .iter()
        .filter(|e| e.get("name").and_then(|v| v.as_str()) == Some("model_run"))
        .filter_map(|e| num(e, "ts"))
        .collect();
    starts.sort_by(f64::total_cmp);
    if starts.len() < 2 {
        return Err(format!("{} model runs, want at least 2", starts.len()));
    }
    let from = starts[1];
    let runs = (starts.len() - 1) as f64;
    let mut by_op: BTreeMap<String, f64> = BTreeMap::new();
    for e in &events {
        let kernel = e.get("cat").and_then(|v| v.as_str()) == Some("Node")
            && e.get("name")
                .and_then(|v| v.as_str())
                .is_some_and(|n| n.ends_with("_kernel_time"));
        let op = e.pointer("/args/op_name").and_then(|v| v.as_str());
        if let (true, Some(op), Some(ts), Some(dur)) = (kernel, op, num(e, "ts"), num(e, "dur")) {
            if ts >= from {
                *by_op.entry(op.to_string()).or_default() += dur / 1000.0 / runs;
            }
        }
    }
    let mut v: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, ms)| OpTime { op, ms })
        .collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(v)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

pub fn flat(o: &Output) -> Vec<f32> {
    o.data.iter().copied().collect()
}

pub fn compare(
    reference: &[Vec<Output>],
    candidate: &[Vec<Output>],
    family: Family,
    manifest: &Manifest,
    io: &ModelIo,
) -> Result<Fidelity, OptimizeError> {
    compare_with_identities(reference, candidate, family, manifest, io, None)
}

/// Decoding into model-input pixels: comparing two models' boxes needs no source frame.
fn input_pixels(det: &dyn crate::models::Detector) -> Transform {
    let spec = det.preprocess();
    Transform {
        scale_x: 1.0,
        scale_y: 1.0,
        pad_x: 0.0,
        pad_y: 0.0,
        src_width: spec.width,
        src_height: spec.height,
    }
}

/// The frame where the two models' boxes differ most, at the manifest's threshold: boxes of
/// either side with no box of the same class at IoU ≥ 0.5 on the other. `(index, count)`;
/// `None` for a model that is not a detector or no frames.
pub fn most_disagreeing_frame(
    reference: &[Vec<Output>],
    candidate: &[Vec<Output>],
    manifest: &Manifest,
    io: &ModelIo,
) -> Result<Option<(usize, usize)>, OptimizeError> {
    if !manifest.family.is_detector() {
        return Ok(None);
    }
    let det = build_detector(manifest, io)?;
    let t = input_pixels(det.as_ref());
    let unmatched = |a: &[Detection], b: &[Detection]| {
        a.iter()
            .filter(|x| {
                !b.iter()
                    .any(|y| y.class_id == x.class_id && x.bbox.iou(&y.bbox) >= 0.5)
            })
            .count()
    };
    let mut best: Option<(usize, usize)> = None;
    for (i, (r, c)) in reference.iter().zip(candidate).enumerate() {
        let (a, b) = (det.decode(r, &t)?, det.decode(c, &t)?);
        let n = unmatched(&a, &b) + unmatched(&b, &a);
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((i, n));
        }
    }
    Ok(best)
}

pub fn compare_with_identities(
    reference: &[Vec<Output>],
    candidate: &[Vec<Output>],
    family: Family,
    manifest: &Manifest,
    io: &ModelIo,
    identities: Option<&[String]>,
) -> Result<Fidelity, OptimizeError> {
    let mut per_output: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut min_cos = 1.0f64;
    for (r, c) in reference.iter().zip(candidate) {
        for (ro, co) in r.iter().zip(c) {
            let cs = cosine(&flat(ro), &flat(co));
            min_cos = min_cos.min(cs);
            per_output.entry(ro.name.clone()).or_default().push(cs);
        }
    }
    let per_output_cosine: BTreeMap<String, f64> = per_output
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().sum::<f64>() / v.len().max(1) as f64))
        .collect();
    let mean_cosine =
        per_output_cosine.values().sum::<f64>() / per_output_cosine.len().max(1) as f64;

    let mut per_class = Vec::new();
    let mut map50_interval = None;
    let map50 = if family.is_detector() {
        let det = build_detector(manifest, io)?;
        // Candidates are decoded down to a low score, as COCO's mAP does: AP then measures how
        // the optimized model ranks what FP32 found, not which boxes hover at the threshold.
        let mut low = manifest.clone();
        low.score_threshold = manifest.score_threshold.min(0.01);
        let det_low = build_detector(&low, io)?;
        let t = input_pixels(det.as_ref());
        let decode = |d: &dyn crate::models::Detector,
                      outs: &[Vec<Output>]|
         -> Result<Vec<Vec<Detection>>, OptimizeError> {
            outs.iter()
                .map(|o| d.decode(o, &t).map_err(OptimizeError::from))
                .collect()
        };
        let pred = decode(det_low.as_ref(), candidate)?;
        let truth = decode(det.as_ref(), reference)?;
        per_class = agreement_ap50_per_class(&truth, &pred);
        map50_interval = map50_interval_of(&truth, &pred, BOOTSTRAP_ROUNDS);
        Some(mean_ap(&per_class, &pred))
    } else {
        None
    };
    let auc = match (family, identities) {
        (Family::Embedder, Some(ids)) if ids.len() == reference.len() => {
            let emb = |outs: &[Vec<Output>]| -> Vec<Vec<f32>> {
                outs.iter().map(|o| flat(&o[0])).collect()
            };
            let a = verification_auc(&emb(reference), ids);
            let b = verification_auc(&emb(candidate), ids);
            a.zip(b)
        }
        _ => None,
    };
    Ok(Fidelity {
        mean_cosine,
        min_cosine: min_cos,
        per_output_cosine,
        map50,
        per_class,
        map50_interval,
        auc,
    })
}

/// The mean of the per-class APs. With no class to find, agreement is perfect only when
/// nothing was found either.
fn mean_ap(per_class: &[ClassAgreement], pred: &[Vec<Detection>]) -> f64 {
    if per_class.is_empty() {
        return if pred.iter().all(Vec::is_empty) {
            1.0
        } else {
            0.0
        };
    }
    per_class.iter().map(|c| c.ap50).sum::<f64>() / per_class.len() as f64
}

/// mAP at IoU 0.5 over the classes FP32 found, FP32's detections taken as ground truth.
/// All-point interpolated AP per class, as in PASCAL VOC 2010+ and COCO.
pub fn agreement_map50(truth: &[Vec<Detection>], pred: &[Vec<Detection>]) -> f64 {
    mean_ap(&agreement_ap50_per_class(truth, pred), pred)
}

/// AP50 of every class FP32 found, most instances first.
pub fn agreement_ap50_per_class(
    truth: &[Vec<Detection>],
    pred: &[Vec<Detection>],
) -> Vec<ClassAgreement> {
    let hits = frame_hits(truth, pred);
    let frames: Vec<usize> = (0..truth.len()).collect();
    let mut out: Vec<ClassAgreement> = hits
        .iter()
        .filter_map(|c| {
            let (ap, instances) = c.ap50(&frames)?;
            Some(ClassAgreement {
                label: c.label.clone(),
                instances,
                ap50: ap,
            })
        })
        .collect();
    out.sort_by(|a, b| b.instances.cmp(&a.instances).then(a.label.cmp(&b.label)));
    out
}

/// One class's matches, frame by frame: what an AP over any choice of frames needs.
struct ClassHits {
    label: String,
    /// Per frame: FP32's instances, and (score, true positive) of each candidate box.
    frames: Vec<(usize, Vec<(f32, bool)>)>,
}

impl ClassHits {
    /// All-point interpolated AP over `frames` (repeats count again), with the instances it
    /// was measured on; `None` when those frames hold no instance.
    fn ap50(&self, frames: &[usize]) -> Option<(f64, usize)> {
        let n_truth: usize = frames.iter().map(|&f| self.frames[f].0).sum();
        if n_truth == 0 {
            return None;
        }
        let mut hits: Vec<(f32, bool)> = frames
            .iter()
            .flat_map(|&f| self.frames[f].1.iter().copied())
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut curve: Vec<(f64, f64)> = Vec::new(); // (recall, precision)
        for (_, ok) in &hits {
            if *ok {
                tp += 1
            } else {
                fp += 1
            }
            curve.push((tp as f64 / n_truth as f64, tp as f64 / (tp + fp) as f64));
        }
        // Precision envelope, then the area under the recall steps.
        let mut ap = 0.0;
        let mut prev_recall = 0.0;
        let mut envelope = vec![0.0f64; curve.len()];
        for i in (0..curve.len()).rev() {
            envelope[i] = curve[i].1.max(envelope.get(i + 1).copied().unwrap_or(0.0));
        }
        for (i, (recall, _)) in curve.iter().enumerate() {
            ap += (recall - prev_recall) * envelope[i];
            prev_recall = *recall;
        }
        Some((ap, n_truth))
    }
}

/// Matches each frame's candidates to FP32's boxes of the same class, greedily by score at
/// IoU 0.5, for every class FP32 found.
fn frame_hits(truth: &[Vec<Detection>], pred: &[Vec<Detection>]) -> Vec<ClassHits> {
    let classes: BTreeSet<u32> = truth.iter().flatten().map(|d| d.class_id).collect();
    classes
        .into_iter()
        .map(|c| {
            let frames = truth
                .iter()
                .zip(pred)
                .map(|(t, p)| {
                    let gts: Vec<&Detection> = t.iter().filter(|d| d.class_id == c).collect();
                    let mut used = vec![false; gts.len()];
                    let mut ps: Vec<&Detection> = p.iter().filter(|d| d.class_id == c).collect();
                    ps.sort_by(|a, b| b.score.total_cmp(&a.score));
                    let hits = ps
                        .into_iter()
                        .map(|d| {
                            let best = gts
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| !used[*i])
                                .map(|(i, g)| (i, d.bbox.iou(&g.bbox)))
                                .max_by(|a, b| a.1.total_cmp(&b.1));
                            match best {
                                Some((i, o)) if o >= 0.5 => {
                                    used[i] = true;
                                    (d.score, true)
                                }
                                _ => (d.score, false),
                            }
                        })
                        .collect();
                    (gts.len(), hits)
                })
                .collect();
            let label = truth
                .iter()
                .flatten()
                .find(|d| d.class_id == c)
                .map(|d| d.label.clone())
                .unwrap_or_default();
            ClassHits { label, frames }
        })
        .collect()
}

/// Draws of the held-out frames behind [`Fidelity::map50_interval`]: enough for steady 5th and
/// 95th percentiles, and well under a second.
const BOOTSTRAP_ROUNDS: usize = 1000;

/// How far agreement mAP50 moves with the choice of held-out frames: the 5th and 95th
/// percentiles of the mean over classes when the frames are drawn again, with replacement,
/// `rounds` times (a seeded bootstrap, so a report is reproducible). A class a draw misses
/// drops out of that draw's mean, as it would from a set without it. `None` without frames.
pub fn map50_interval_of(
    truth: &[Vec<Detection>],
    pred: &[Vec<Detection>],
    rounds: usize,
) -> Option<(f64, f64)> {
    let hits = frame_hits(truth, pred);
    let n = truth.len();
    if n == 0 || hits.is_empty() || rounds == 0 {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut means: Vec<f64> = (0..rounds)
        .map(|_| {
            let frames: Vec<usize> = (0..n).map(|_| rng.usize(..n)).collect();
            let aps: Vec<f64> = hits
                .iter()
                .filter_map(|c| c.ap50(&frames).map(|(ap, _)| ap))
                .collect();
            aps.iter().sum::<f64>() / aps.len().max(1) as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((rounds - 1) as f64 * q).round() as usize];
    Some((at(0.05), at(0.95)))
}

/// The identity in a face-chip file name: `John_Salley-000183.jpg` -> `John_Salley`.
pub fn identity_of(path: &std::path::Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let (id, _) = stem.split_once('-')?;
    Some(id.to_string())
}

/// Area under the ROC of cosine similarity for same- versus different-identity pairs.
pub fn verification_auc(embeddings: &[Vec<f32>], ids: &[String]) -> Option<f64> {
    use crate::faces::verify::{auc, pairs};
    let (same, diff) = pairs(ids, |i, j| cosine(&embeddings[i], &embeddings[j]));
    (!same.is_empty() && !diff.is_empty()).then(|| auc(&same, &diff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detection::BBox;

    fn det(c: u32, s: f32, x: f32) -> Detection {
        Detection {
            class_id: c,
            label: String::new(),
            score: s,
            bbox: BBox {
                x1: x,
                y1: 0.0,
                x2: x + 10.0,
                y2: 10.0,
            },
            keypoints: Vec::new(),
            track_id: None,
            name: None,
        }
    }

    /// A trace as ONNX Runtime writes it: the first run is warm-up, fences and session events
    /// are not kernels.
    #[test]
    fn kernel_times_skip_the_first_run() {
        let trace = r#"[
          {"cat":"Session","name":"session_initialization","ts":0,"dur":900},
          {"cat":"Session","name":"model_run","ts":1000,"dur":500},
          {"cat":"Node","name":"conv_kernel_time","ts":1010,"dur":400,"args":{"op_name":"Conv"}},
          {"cat":"Session","name":"model_run","ts":2000,"dur":300},
          {"cat":"Node","name":"conv_fence_before","ts":2001,"dur":5,"args":{"op_name":"Conv"}},
          {"cat":"Node","name":"conv_kernel_time","ts":2010,"dur":200,"args":{"op_name":"Conv"}},
          {"cat":"Node","name":"t_kernel_time","ts":2210,"dur":50,"args":{"op_name":"Transpose"}},
          {"cat":"Session","name":"model_run","ts":3000,"dur":300},
          {"cat":"Node","name":"conv_kernel_time","ts":3010,"dur":100,"args":{"op_name":"Conv"}},
          {"cat":"Node","name":"t_kernel_time","ts":3110,"dur":50,"args":{"op_name":"Transpose"}}
        ]"#;
        let v = kernel_times_from_trace(trace).unwrap();
        let ms: Vec<(&str, f64)> = v
            .iter()
            .map(|o| (o.op.as_str(), (o.ms * 1e6).round() / 1e6))
            .collect();
        assert_eq!(ms, [("Conv", 0.15), ("Transpose", 0.05)]);
        assert!(kernel_times_from_trace("[]").is_err());
        assert!(kernel_times_from_trace("not json").is_err());
    }

    #[test]
    fn identical_detections_agree_fully() {
        let t = vec![
            vec![det(0, 0.9, 0.0), det(1, 0.8, 50.0)],
            vec![det(0, 0.7, 20.0)],
        ];
        assert!((agreement_map50(&t, &t) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn per_class_terms_make_the_mean_and_sort_by_instances() {
        // Class 0 found twice and kept; class 1 found once and lost.
        let t = vec![vec![
            det(0, 0.9, 0.0),
            det(0, 0.8, 50.0),
            det(1, 0.7, 100.0),
        ]];
        let p = vec![vec![
            det(0, 0.9, 0.0),
            det(0, 0.8, 50.0),
            det(2, 0.7, 100.0),
        ]];
        let pc = agreement_ap50_per_class(&t, &p);
        assert_eq!(pc.len(), 2);
        assert_eq!((pc[0].instances, pc[0].ap50), (2, 1.0));
        assert_eq!((pc[1].instances, pc[1].ap50), (1, 0.0));
        assert!((agreement_map50(&t, &p) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_missed_box_halves_recall() {
        let t = vec![vec![det(0, 0.9, 0.0), det(0, 0.8, 50.0)]];
        let p = vec![vec![det(0, 0.9, 1.0)]]; // IoU 9/11 with the first: a hit
        assert!((agreement_map50(&t, &p) - 0.5).abs() < 1e-9);
        // A false positive scored above the hit: precision 1/2 at recall 1/2.
        let p = vec![vec![det(0, 0.95, 200.0), det(0, 0.9, 1.0)]];
        assert!((agreement_map50(&t, &p) - 0.25).abs() < 1e-9);
    }

    /// The interval shows how much the mean rests on single frames: a class FP32 found in
    /// one frame of ten and the candidate missed drags the mean to 0.5 in every draw holding
    /// that frame (about 65% of them) and drops out of the rest, which agree fully.
    #[test]
    fn map50_interval_spans_what_one_frame_decides() {
        let t: Vec<Vec<Detection>> = (0..10)
            .map(|f| {
                let mut d = vec![det(0, 0.9, 0.0)];
                if f == 0 {
                    d.push(det(1, 0.8, 50.0));
                }
                d
            })
            .collect();
        let p: Vec<Vec<Detection>> = (0..10).map(|_| vec![det(0, 0.9, 0.0)]).collect();
        assert!((agreement_map50(&t, &p) - 0.5).abs() < 1e-9);
        assert_eq!(map50_interval_of(&t, &p, 1000), Some((0.5, 1.0)));
        assert_eq!(map50_interval_of(&t, &t, 1000), Some((1.0, 1.0)));
        assert_eq!(map50_interval_of(&[], &[], 1000), None);
    }

    #[test]
    fn auc_separates_identities() {
        let e = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
        ];
        let ids: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(verification_auc(&e, &ids), Some(1.0));
        let swapped: Vec<String> = ["a", "b", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert!(verification_auc(&e, &swapped).unwrap() < 0.5);
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-12);
    }
}
