//! The figures of an artifact, on the held-out frames: latency of every model timed in turn,
//! fidelity against FP32, a yardstick of what a harmless change reads, one frame drawn by both
//! models where they disagree most, and where the kernel time goes.

use std::path::{Path, PathBuf};

use super::artifact::Comparison;
use super::calibrate;
use super::fidelity::{self, Fidelity};
use super::figures::Figures;
use super::images::ImageSets;
use super::spec::{OptimizeError, OptimizeSpec, Precision, ProgressFn};
use super::workspace::temp_dir;
use crate::engine::{Engine, EngineConfig};
use crate::models::Detector;
use crate::preprocess::{Interpolation, PreprocessSpec, Preprocessor};
use crate::tensor::Output;

/// Runs summed for the kernel-time breakdown.
const PROFILED_RUNS: usize = 10;

/// The models measured besides FP32.
pub struct Candidates<'a> {
    /// The artifact's model.
    pub model: &'a Path,
    /// The fully quantized model, when the search kept layers in float.
    pub every_layer: Option<&'a Path>,
    /// An FP32 artifact that the rewrites changed (otherwise it is the source itself).
    pub rewritten: bool,
}

/// What the measurement found.
pub struct Measured {
    /// FP32 first, then each candidate.
    pub figures: Vec<Figures>,
    pub yardstick: Option<Fidelity>,
    pub comparison: Option<Comparison>,
}

/// Everything a measurement reads.
pub struct Bench<'a> {
    pub spec: &'a OptimizeSpec,
    pub pre: &'a PreprocessSpec,
    pub sets: &'a ImageSets,
    pub cpu: &'a EngineConfig,
    /// Where the comparison pictures go (the artifact's folder).
    pub dir: &'a Path,
    pub progress: ProgressFn<'a>,
}

impl Bench<'_> {
    /// Measures `fp32` (the source) and each candidate.
    pub fn measure(&self, mut fp32: Engine, c: &Candidates) -> Result<Measured, OptimizeError> {
        let spec = self.spec;
        let measured = self.labels(c);
        let mut others: Vec<Engine> = measured[1..]
            .iter()
            .map(|(_, p)| Engine::load(p, self.cpu))
            .collect::<Result<_, _>>()?;
        let held = &self.sets.held;
        // All are timed in turn, run for run: drift in the machine's speed then hits every
        // figure alike.
        let latencies = {
            let mut all: Vec<&mut Engine> = vec![&mut fp32];
            all.extend(others.iter_mut());
            fidelity::latency_interleaved(&mut all, &held[0], spec.bench_runs)?
        };
        let fp32_out = fidelity::outputs_of(&mut fp32, held)?;
        let mut figures = vec![Figures {
            precision: "fp32".into(),
            fidelity: None,
            latency_b1: latencies[0],
            best_batch: fidelity::best_batch(&mut fp32, &held[0], spec.bench_runs)?,
            size_bytes: file_size(&spec.manifest.file),
            kernels: Vec::new(),
        }];
        let yardstick = self.yardstick(&mut fp32, &fp32_out)?;
        let mut comparison = None;
        for (k, e) in others.iter_mut().enumerate() {
            let (label, path) = &measured[k + 1];
            let out = fidelity::outputs_of(e, held)?;
            figures.push(Figures {
                precision: label.clone(),
                fidelity: Some(self.fidelity(&fp32, &fp32_out, &out)?),
                latency_b1: latencies[k + 1],
                best_batch: fidelity::best_batch(e, &held[0], spec.bench_runs)?,
                size_bytes: file_size(path),
                kernels: Vec::new(),
            });
            if path == c.model {
                comparison = self.comparison(&fp32, &fp32_out, &out)?;
            }
        }
        // Profiled in sessions of their own, after the timing: the profiler slows every kernel.
        drop(others);
        drop(fp32);
        self.profile(&mut figures, &measured);
        Ok(Measured {
            figures,
            yardstick,
            comparison,
        })
    }

    /// (label, model file) of each precision measured, FP32 first.
    fn labels(&self, c: &Candidates) -> Vec<(String, PathBuf)> {
        let precision = self.spec.precision;
        let mut measured = vec![("fp32".to_string(), self.spec.manifest.file.clone())];
        if let Some(p) = c.every_layer {
            measured.push((format!("{precision} (every layer)"), p.to_path_buf()));
        }
        if precision != Precision::Fp32 {
            measured.push((precision.to_string(), c.model.to_path_buf()));
        } else if c.rewritten {
            measured.push(("fp32 (rewritten)".into(), c.model.to_path_buf()));
        }
        measured
    }

    fn fidelity(
        &self,
        fp32: &Engine,
        reference: &[Vec<Output>],
        out: &[Vec<Output>],
    ) -> Result<Fidelity, OptimizeError> {
        let m = &self.spec.manifest;
        let ids = self.sets.identities.as_deref();
        fidelity::compare_with_identities(reference, out, m.family, m, fp32.io(), ids)
    }

    /// What the figures read for a change nobody would call a loss: FP32 against itself on
    /// the same frames, resized bicubic instead of bilinear. On a few dozen frames a detector's
    /// mean over classes moves with its rarest detections, and that is the scale to read it on.
    fn yardstick(
        &self,
        fp32: &mut Engine,
        fp32_out: &[Vec<Output>],
    ) -> Result<Option<Fidelity>, OptimizeError> {
        let progress = self.progress;
        let cubic = Preprocessor::new(self.pre.clone()).with_interpolation(Interpolation::Cubic);
        let (held_cubic, _) = calibrate::tensors_with(&self.sets.heldout, cubic, &|d, t| {
            progress("held-out frames, bicubic", d, t)
        })?;
        if held_cubic.len() != self.sets.held.len() {
            return Ok(None);
        }
        let out = fidelity::outputs_of(fp32, &held_cubic)?;
        Ok(Some(self.fidelity(fp32, fp32_out, &out)?))
    }

    /// The held-out frame where the two models disagree most, drawn by each.
    fn comparison(
        &self,
        fp32: &Engine,
        fp32_out: &[Vec<Output>],
        out: &[Vec<Output>],
    ) -> Result<Option<Comparison>, OptimizeError> {
        let (spec, sets) = (self.spec, self.sets);
        // Held-out tensors and images line up only when none was skipped.
        if sets.held.len() != sets.heldout.images.len() {
            return Ok(None);
        }
        let Some((k, n)) =
            fidelity::most_disagreeing_frame(fp32_out, out, &spec.manifest, fp32.io())?
        else {
            return Ok(None);
        };
        let names = (
            "compare-fp32.jpg".to_string(),
            format!("compare-{}.jpg", spec.precision),
        );
        let frame = &sets.heldout.images[k];
        let det = crate::models::build_detector(&spec.manifest, fp32.io())?;
        let drawn = [(&fp32_out[k][..], &*names.0), (&out[k][..], &*names.1)];
        draw_comparison(frame, self.pre, det.as_ref(), drawn, self.dir)?;
        Ok(Some(Comparison {
            frame: frame.display().to_string(),
            disagreements: n,
            fp32: names.0,
            candidate: names.1,
        }))
    }

    /// Kernel time per op type. The breakdown only explains the figures, so a failure costs
    /// it alone.
    fn profile(&self, figures: &mut [Figures], measured: &[(String, PathBuf)]) {
        let held = &self.sets.held[0];
        for (f, (_, path)) in figures.iter_mut().zip(measured) {
            let profiled = temp_dir().map_err(|e| e.to_string()).and_then(|traces| {
                let mut e = Engine::load_profiled(path, self.cpu, &traces.path().join("trace"))
                    .map_err(|e| e.to_string())?;
                fidelity::kernel_times(&mut e, held, PROFILED_RUNS).map_err(|e| e.to_string())
            });
            match profiled {
                Ok(k) => f.kernels = k,
                Err(reason) => {
                    tracing::warn!(precision = %f.precision, %reason, "no kernel-time breakdown")
                }
            }
        }
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Draws each model's boxes on one held-out frame, from the outputs already computed for it:
/// only the transform back to source pixels is new, so the frame is preprocessed again for it.
fn draw_comparison(
    frame: &Path,
    pre: &PreprocessSpec,
    det: &dyn Detector,
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
        crate::picture::write_jpeg(&image, &det.decode(outputs, &t)?, &path)
            .map_err(|e| io(&path, e.to_string()))?;
    }
    Ok(())
}
