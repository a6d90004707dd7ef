//! `edgesight bench`: how much of the bare engine's speed the whole pipeline keeps.
//!
//! Three figures from one run on the same model and video:
//! 1. the pipeline's end-to-end throughput (decode, preprocess, infer, decode outputs, write
//!    events and annotated video), exactly as `edgesight run` does it;
//! 2. the bare engine's throughput on tensors preprocessed beforehand (inference only);
//! 3. their ratio. A well-overlapped pipeline hides decoding and pre/post-processing behind
//!    inference, so the ratio approaches 1.
//!
//! Memory is sampled as the file plays, to show that resident memory stays flat.
//!
//! Given an artifact of `edgesight optimize` (`--model-dir`), each round also times the FP32
//! model it was made from on the same frames, right after the optimized one: the speed-up the
//! optimization bought, measured where it is used.
//!
//! A shared or thermally limited CPU drifts by 10% or more over a minute, which is as much as
//! the effect being measured. So the figures are taken in rounds, each timing the bare engine,
//! the pipeline and the analytics alone back to back, and the ratios are formed within a round;
//! the report gives the median round and the spread.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Engine, EngineConfig, TensorRtOptions};
use crate::ingest::{self, Decoder, Next};
use crate::pipeline::{self, load_model, PipelineError, RunSpec};
use crate::preprocess::Preprocessor;
use crate::stats::{rss_mib, Latency, Percentiles};
use crate::tensor::Tensor;

/// Frames per block when an engine and its baseline alternate within a round.
const BLOCK: usize = 20;

/// One round's three throughputs, taken back to back.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    pub engine_fps: f64,
    pub pipeline_fps: f64,
    pub analytics_fps: f64,
    /// Resident memory when the round ended: it stays level if nothing leaks across runs.
    pub rss_mib: f64,
    /// The bare engine on the baseline model (an artifact's FP32 source), same frames.
    pub baseline_fps: Option<f64>,
}

impl Round {
    pub fn ratio(&self) -> f64 {
        self.pipeline_fps / self.engine_fps
    }

    pub fn analytics_ratio(&self) -> f64 {
        self.analytics_fps / self.engine_fps
    }

    /// How many times faster the bare engine runs than on the baseline model.
    pub fn speedup(&self) -> Option<f64> {
        self.baseline_fps.map(|b| self.engine_fps / b)
    }
}

/// The bare engine on the model an artifact was optimized from.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub model: String,
    pub engine_fps: f64,
    /// Median over rounds of the optimized engine's fps over the baseline's.
    pub speedup: f64,
    pub speedup_range: (f64, f64),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub input: String,
    pub threads: usize,
    /// Every round; the fields below are medians over them.
    pub rounds: Vec<Round>,
    pub pipeline_frames: u64,
    /// `run` as configured (with the annotated MP4 unless it was turned off).
    pub pipeline_fps: f64,
    /// The analytics alone: decode, preprocess, infer, decode outputs, events; no video encode.
    pub analytics_fps: f64,
    pub engine_runs: usize,
    pub engine_fps: f64,
    pub engine_latency: Percentiles,
    /// Median over rounds of pipeline_fps / engine_fps.
    pub ratio: f64,
    /// Lowest and highest round ratio.
    pub ratio_range: (f64, f64),
    /// analytics_fps / engine_fps: how well decoding and pre/post-processing hide behind
    /// inference.
    pub analytics_ratio: f64,
    pub analytics_ratio_range: (f64, f64),
    pub peak_rss_mib: f64,
    /// (frames done, resident MiB) through the pipeline run.
    pub rss_samples: Vec<(u64, f64)>,
    pub baseline: Option<Baseline>,
}

/// Prepares frames of the video as tensors, then runs `rounds` rounds of: the bare engine on
/// `engine_frames` of those tensors (then the `baseline` model on them, when given), the
/// pipeline on `spec`, and (when `spec` writes video) the pipeline without it. `on_round`
/// hears each round as it ends.
pub fn run(
    spec: &RunSpec,
    engine_frames: usize,
    rounds: usize,
    baseline: Option<&Path>,
    on_round: &mut dyn FnMut(usize, &Round),
) -> Result<BenchReport, PipelineError> {
    let stop = AtomicBool::new(false);
    let (mut engine, detector) = load_model(&spec.model, &spec.engine)?;
    // The baseline takes the same tensors: an artifact keeps its source's inputs. Its engine
    // gets none of the artifact's TensorRT settings (its engines were built for the artifact).
    let mut base_engine = match baseline {
        Some(path) => {
            let cfg = EngineConfig {
                tensorrt: TensorRtOptions::default(),
                ..spec.engine.clone()
            };
            Some(Engine::load(path, &cfg)?)
        }
        None => None,
    };
    // A hundred distinct frames, cycled: enough for content-dependent costs (NMS), without
    // holding hundreds of tensors in memory while the pipeline's memory is measured.
    let tensors = prepare(spec, detector.preprocess(), engine_frames.min(100))?;
    for t in tensors.iter().take(3) {
        engine.run(t)?; // warm-up: first runs allocate and pick kernels
        if let Some(b) = base_engine.as_mut() {
            b.run(t)?;
        }
    }
    let frames_per_round = engine_frames.max(1);
    // The engine, and the baseline when there is one, over the round's frames in alternating
    // blocks: whatever the machine's speed does during the round (a neighbour's work, clock
    // changes) falls on both alike. Timed one after the other, the order alone moved
    // CenterNet's speed-up by about 0.1x.
    let time_engines = |e: &mut Engine,
                        mut base: Option<&mut Engine>,
                        lat: &mut Latency|
     -> Result<(f64, Option<f64>), PipelineError> {
        let (mut spent, mut base_spent) = (Duration::ZERO, Duration::ZERO);
        let frames: Vec<&Tensor> = tensors.iter().cycle().take(frames_per_round).collect();
        for block in frames.chunks(BLOCK) {
            for t in block {
                let t0 = Instant::now();
                e.run(t)?;
                let dt = t0.elapsed();
                lat.record(dt);
                spent += dt;
            }
            if let Some(b) = base.as_deref_mut() {
                let t0 = Instant::now();
                for t in block {
                    b.run(t)?;
                }
                base_spent += t0.elapsed();
            }
        }
        let fps = |d: Duration| frames_per_round as f64 / d.as_secs_f64();
        Ok((fps(spent), base.is_some().then(|| fps(base_spent))))
    };

    let mut all = Vec::new();
    let mut lat = Latency::default();
    let mut samples = Vec::new();
    let mut frames = 0;
    for i in 0..rounds.max(1) {
        // Bare engine: the same frames, already tensors, nothing else running.
        let (engine_fps, baseline_fps) = time_engines(&mut engine, base_engine.as_mut(), &mut lat)?;

        let mut next_sample = 0u64;
        let first = i == 0;
        let summary = pipeline::run(spec, &stop, &mut |p| {
            if first && p.frames >= next_sample {
                samples.push((p.frames, rss_mib().0));
                next_sample = p.frames + p.total.map_or(50, |t| (t / 10).max(1));
            }
        })?;
        if first {
            samples.push((summary.frames, rss_mib().0));
        }
        frames = summary.frames;
        // Encoding the annotated MP4 costs CPU that inference would otherwise use; measure
        // the analytics alone as well, so the two costs are told apart.
        let analytics_fps = if spec.write_video {
            let mut a = spec.clone();
            a.write_video = false;
            a.out_dir = spec.out_dir.join("analytics-only");
            pipeline::run(&a, &stop, &mut |_| {})?.fps
        } else {
            summary.fps
        };
        let round = Round {
            engine_fps,
            pipeline_fps: summary.fps,
            analytics_fps,
            rss_mib: rss_mib().0,
            baseline_fps,
        };
        on_round(i, &round);
        all.push(round);
    }
    let range = |f: &dyn Fn(&Round) -> f64| {
        all.iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            })
    };
    let baseline = baseline.map(|path| {
        let speedup = |r: &Round| r.speedup().unwrap_or(f64::NAN);
        Baseline {
            model: path.display().to_string(),
            engine_fps: median(all.iter().filter_map(|r| r.baseline_fps).collect()),
            speedup: median(all.iter().map(speedup).collect()),
            speedup_range: range(&speedup),
        }
    });
    Ok(BenchReport {
        model: spec.model.name.clone(),
        input: crate::uri::redact(&spec.input),
        threads: spec.engine.threads,
        pipeline_frames: frames,
        pipeline_fps: median(all.iter().map(|r| r.pipeline_fps).collect()),
        engine_runs: engine_frames.max(1),
        engine_fps: median(all.iter().map(|r| r.engine_fps).collect()),
        engine_latency: lat.percentiles(),
        ratio: median(all.iter().map(Round::ratio).collect()),
        ratio_range: range(&Round::ratio),
        analytics_fps: median(all.iter().map(|r| r.analytics_fps).collect()),
        analytics_ratio: median(all.iter().map(Round::analytics_ratio).collect()),
        analytics_ratio_range: range(&Round::analytics_ratio),
        peak_rss_mib: rss_mib().1,
        rss_samples: samples,
        rounds: all,
        baseline,
    })
}

/// Up to `want` frames of the spec's input, decoded and preprocessed.
fn prepare(
    spec: &RunSpec,
    pre_spec: &crate::preprocess::PreprocessSpec,
    want: usize,
) -> Result<Vec<crate::tensor::Tensor>, PipelineError> {
    let uri = ingest::resolve_input(&spec.input)?;
    let mut dec = Decoder::open(&uri, "bench".into())?;
    let mut pre = Preprocessor::new(pre_spec.clone());
    let mut tensors = Vec::new();
    while tensors.len() < want.max(1) {
        match dec.next(Duration::from_millis(100))? {
            Next::Frame(f) => {
                let (t, _) = pre
                    .run(f.pixels())
                    .map_err(|err| PipelineError::Preprocess {
                        stream: uri.clone(),
                        err,
                    })?;
                tensors.push(t);
            }
            Next::Pending => continue,
            Next::Eos => break,
        }
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
pub mod faces;
pub mod live;
