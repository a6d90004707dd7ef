//! The accuracy search (`--keep-accuracy`): which units go back to float until the INT8 model
//! keeps the asked fidelity. A unit is a computing node, or an activation whose rounding alone
//! costs more than any node (kept in float by keeping its writer and readers in float).
//!
//! Sensitivity first, each unit quantized alone; then forward, most sensitive first, keeping a
//! unit only where it helps the whole model; then backward, returning to int8 each kept unit
//! that later ones made unnecessary. The search judges on calibration images, never on the
//! held-out frames the report measures: a choice made on those frames would flatter its own
//! figure.

use super::fidelity;
use super::figures::LayerSensitivity;
use super::qdq::{self, Exclusions, QdqReport};
use super::quantizer::Quantizer;
use super::spec::{OptimizeError, ProgressFn};
use super::workspace::temp_dir;
use crate::engine::{Engine, EngineConfig};
use crate::models::Manifest;
use crate::onnx::graph::node_label;
use crate::onnx::Model;
use crate::tensor::{ModelIo, Output, Tensor};

/// Calibration images the search judges the mixed-precision candidates on.
pub const SEARCH_IMAGES: usize = 40;
/// The first of those, for the one-unit-at-a-time sensitivity runs (one per unit).
pub const SENSITIVITY_IMAGES: usize = 8;
/// The most sensitive units the search tries putting back in float.
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
/// target buys too little for it. And a gain that one half of the images shows while the other
/// pays for it is a few detections trading ranks, not a layer that matters: refusing such
/// units held more of the fidelity on held-out frames with fewer layers in float
/// (docs/optimize-findings.md, "Figures behind the code").
fn worth_keeping(before: Split, after: Split, target: f64) -> bool {
    let gain = after.whole - before.whole;
    gain > 0.0
        && gain >= MIN_GAIN_OF_GAP * (target - before.whole)
        && after.halves.iter().zip(&before.halves).all(|(a, b)| a >= b)
}

/// Scores candidate models against FP32 on the search images.
pub struct Judge<'a> {
    /// Candidates are written apart from the artifact's folder, and gone with it.
    trials: tempfile::TempDir,
    engine: &'a EngineConfig,
    manifest: &'a Manifest,
    io: ModelIo,
    probe: Vec<Tensor>,
    search: Vec<Tensor>,
    fp32_probe: Vec<Vec<Output>>,
    fp32_search: Vec<Vec<Output>>,
}

impl<'a> Judge<'a> {
    /// `images`: decoded calibration images, the first [`SEARCH_IMAGES`] of which are used.
    pub fn new(
        fp32: &mut Engine,
        images: &[Tensor],
        engine: &'a EngineConfig,
        manifest: &'a Manifest,
    ) -> Result<Self, OptimizeError> {
        let search: Vec<Tensor> = images.iter().take(SEARCH_IMAGES).cloned().collect();
        let probe: Vec<Tensor> = search.iter().take(SENSITIVITY_IMAGES).cloned().collect();
        Ok(Judge {
            trials: temp_dir()?,
            engine,
            manifest,
            io: fp32.io().clone(),
            fp32_probe: fidelity::outputs_of(fp32, &probe)?,
            fp32_search: fidelity::outputs_of(fp32, &search)?,
            probe,
            search,
        })
    }

    fn outputs(
        &self,
        m: &Model,
        tag: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Vec<Output>>, OptimizeError> {
        let p = self.trials.path().join(format!("{tag}.onnx"));
        m.save(&p)?;
        let mut e = Engine::load(&p, self.engine)?;
        Ok(fidelity::outputs_of(&mut e, inputs)?)
    }

    fn fidelity(
        &self,
        reference: &[Vec<Output>],
        out: &[Vec<Output>],
    ) -> Result<f64, OptimizeError> {
        let f = fidelity::compare(
            reference,
            out,
            self.manifest.family,
            self.manifest,
            &self.io,
        )?;
        Ok(f.score())
    }

    /// On the few sensitivity images.
    fn on_probe(&self, m: &Model) -> Result<f64, OptimizeError> {
        self.fidelity(&self.fp32_probe, &self.outputs(m, "probe", &self.probe)?)
    }

    /// On all the search images.
    fn on_search(&self, m: &Model) -> Result<f64, OptimizeError> {
        self.fidelity(&self.fp32_search, &self.outputs(m, "mixed", &self.search)?)
    }

    /// On the search images, and on each half of them.
    fn split(&self, m: &Model) -> Result<Split, OptimizeError> {
        let out = self.outputs(m, "mixed", &self.search)?;
        let (r, h) = (&self.fp32_search, out.len() / 2);
        Ok(Split {
            whole: self.fidelity(r, &out)?,
            halves: [
                self.fidelity(&r[..h], &out[..h])?,
                self.fidelity(&r[h..], &out[h..])?,
            ],
        })
    }
}

/// Where the search ended.
pub struct Searched {
    /// What the search left in float (the reconstruction fits the rest).
    pub exclude: Exclusions,
    pub model: Model,
    pub report: QdqReport,
    pub sensitivity: Vec<LayerSensitivity>,
    /// Whether any unit stayed in float.
    pub kept_any: bool,
}

/// One search, over the units of one quantization.
pub struct AccuracySearch<'a> {
    pub quantizer: &'a Quantizer<'a>,
    pub judge: &'a Judge<'a>,
    pub target: f64,
    /// What the user left in float: the search only adds to it.
    pub exclude: &'a Exclusions,
}

impl AccuracySearch<'_> {
    /// From the fully quantized `model`, which `report` describes.
    pub fn run(
        &self,
        model: Model,
        report: QdqReport,
        progress: ProgressFn,
    ) -> Result<Searched, OptimizeError> {
        let (mut sensitivity, keeps) = self.sensitivity(&model, &report, progress)?;
        let mut at = Searched {
            exclude: self.exclude.clone(),
            model,
            report,
            sensitivity: Vec::new(),
            kept_any: false,
        };
        let kept = self.forward(&mut at, &mut sensitivity, &keeps, progress)?;
        let kept = self.backward(&mut at, &mut sensitivity, &keeps, kept)?;
        at.sensitivity = sensitivity;
        at.kept_any = !kept.is_empty();
        Ok(at)
    }

    /// Each unit's fidelity alone, and what keeping it in float puts in float, by index. Each
    /// computing node (weighted layers, adds, activations) quantized on its own: its weights and
    /// the activations around it, which alone can cost more than the target allows. And each
    /// activation's rounding on its own, in the float model: a tensor whose channels span very
    /// different ranges loses more than any node, and only keeping its writer and readers in
    /// float keeps it in float.
    fn sensitivity(
        &self,
        q: &Model,
        rep: &QdqReport,
        progress: ProgressFn,
    ) -> Result<(Vec<LayerSensitivity>, Vec<Vec<String>>), OptimizeError> {
        let src = self.quantizer.model();
        let (layers, tensors) = (&rep.quantized_compute, &rep.quantized_tensors);
        let total = (layers.len() + tensors.len()) as u64;
        let all_nodes: Vec<String> = src.graph().node.iter().map(node_label).collect();
        let (mut sensitivity, mut keeps) = (Vec::new(), Vec::new());
        for (i, layer) in layers.iter().enumerate() {
            let mut only = self.exclude.clone();
            only.names
                .extend(all_nodes.iter().filter(|n| *n != layer).cloned());
            let (m, _) = self.quantizer.rounded(&only)?;
            sensitivity.push(LayerSensitivity {
                layer: layer.clone(),
                fidelity: self.judge.on_probe(&m)?,
                kept_in_float: false,
            });
            keeps.push(vec![layer.clone()]);
            progress("layer sensitivity", i as u64 + 1, total);
        }
        for (i, t) in tensors.iter().enumerate() {
            if let Some(m) = qdq::with_one_quantized_tensor(src, q, t) {
                sensitivity.push(LayerSensitivity {
                    layer: format!("activation {t}"),
                    fidelity: self.judge.on_probe(&m)?,
                    kept_in_float: false,
                });
                keeps.push(qdq::neighbours(src, t));
            }
            progress("layer sensitivity", (layers.len() + i) as u64 + 1, total);
        }
        Ok((sensitivity, keeps))
    }

    /// Greedy, most sensitive first, and a unit goes back to float only if that helps the
    /// whole model: errors of neighbouring layers partly cancel, so a layer that hurts alone
    /// need not hurt in company. The units kept, in the order kept, and the fidelity reached.
    fn forward(
        &self,
        at: &mut Searched,
        sensitivity: &mut [LayerSensitivity],
        keeps: &[Vec<String>],
        progress: ProgressFn,
    ) -> Result<(Vec<usize>, f64), OptimizeError> {
        let mut order: Vec<usize> = (0..sensitivity.len()).collect();
        order.sort_by(|&a, &b| sensitivity[a].fidelity.total_cmp(&sensitivity[b].fidelity));
        let mut now = self.judge.split(&at.model)?;
        let mut kept = Vec::new();
        for (i, &u) in order.iter().take(MAX_SEARCH_TRIALS).enumerate() {
            if now.whole >= self.target {
                break;
            }
            let mut trial = at.exclude.clone();
            trial.names.extend(keeps[u].iter().cloned());
            if trial.names.len() == at.exclude.names.len() {
                continue;
            }
            let (tq, trep) = self.quantizer.rounded(&trial)?;
            let then = self.judge.split(&tq)?;
            progress("mixed precision", i as u64 + 1, MAX_SEARCH_TRIALS as u64);
            if worth_keeping(now, then, self.target) {
                tracing::info!(unit = %sensitivity[u].layer, fidelity = then.whole, "kept in float");
                sensitivity[u].kept_in_float = true;
                kept.push(u);
                (at.exclude, at.model, at.report, now) = (trial, tq, trep, then);
            }
        }
        Ok((kept, now.whole))
    }

    /// A unit kept early may no longer be needed once later ones are in float (their errors
    /// overlapped). Each goes back to int8 if the whole model holds the target without it, or,
    /// short of the target, loses nothing. The exclusions, model and report follow, so that
    /// the reconstruction fits exactly the layers the search left in int8.
    fn backward(
        &self,
        at: &mut Searched,
        sensitivity: &mut [LayerSensitivity],
        keeps: &[Vec<String>],
        (mut kept, mut fid): (Vec<usize>, f64),
    ) -> Result<Vec<usize>, OptimizeError> {
        for &u in kept.clone().iter().rev() {
            let mut trial = self.exclude.clone();
            for &k in kept.iter().filter(|&&k| k != u) {
                trial.names.extend(keeps[k].iter().cloned());
            }
            // Covered by the other kept units: nothing to try.
            if keeps[u].iter().all(|n| trial.names.contains(n)) {
                continue;
            }
            let (tq, trep) = self.quantizer.rounded(&trial)?;
            let tfid = self.judge.on_search(&tq)?;
            if tfid >= self.target.min(fid) {
                tracing::info!(unit = %sensitivity[u].layer, fidelity = tfid, "back to int8");
                sensitivity[u].kept_in_float = false;
                kept.retain(|&k| k != u);
                (at.exclude, at.model, at.report, fid) = (trial, tq, trep, tfid);
            }
        }
        if fid < self.target {
            tracing::warn!(
                fidelity = fid,
                target = self.target,
                "fidelity target not reached even with every sensitive layer in float"
            );
        }
        Ok(kept)
    }
}
