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

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ingest::{self, Decoder, Next};
use crate::pipeline::{self, load_model, PipelineError, RunSpec};
use crate::preprocess::Preprocessor;
use crate::stats::{rss_mib, Latency, Percentiles};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub input: String,
    pub threads: usize,
    pub pipeline_frames: u64,
    /// `run` as configured (with the annotated MP4 unless it was turned off).
    pub pipeline_fps: f64,
    /// The analytics alone: decode, preprocess, infer, decode outputs, events; no video encode.
    pub analytics_fps: f64,
    pub engine_runs: usize,
    pub engine_fps: f64,
    pub engine_latency: Percentiles,
    /// pipeline_fps / engine_fps
    pub ratio: f64,
    /// analytics_fps / engine_fps: how well decoding and pre/post-processing hide behind
    /// inference.
    pub analytics_ratio: f64,
    pub peak_rss_mib: f64,
    /// (frames done, resident MiB) through the pipeline run.
    pub rss_samples: Vec<(u64, f64)>,
}

/// Runs the pipeline on `spec`, then the bare engine on up to `engine_frames` of the same
/// video's frames, preprocessed up front.
pub fn run(spec: &RunSpec, engine_frames: usize) -> Result<BenchReport, PipelineError> {
    let stop = AtomicBool::new(false);
    let mut samples = Vec::new();
    let mut next_sample = 0u64;
    let summary = pipeline::run(spec, &stop, &mut |p| {
        if p.frames >= next_sample {
            samples.push((p.frames, rss_mib().0));
            next_sample = p.frames + p.total.map_or(50, |t| (t / 10).max(1));
        }
    })?;
    samples.push((summary.frames, rss_mib().0));
    let peak = rss_mib().1;
    // Encoding the annotated MP4 costs CPU that inference would otherwise use; measure the
    // analytics alone as well, so the two costs are told apart.
    let analytics_fps = if spec.write_video {
        let mut a = spec.clone();
        a.write_video = false;
        a.out_dir = spec.out_dir.join("analytics-only");
        pipeline::run(&a, &stop, &mut |_| {})?.fps
    } else {
        summary.fps
    };

    // Bare engine: the same frames, already tensors, nothing else running.
    let (mut engine, detector) = load_model(&spec.model, &spec.engine)?;
    let uri = ingest::resolve_input(&spec.input)?;
    let mut dec = Decoder::open(&uri, "bench".into())?;
    let mut pre = Preprocessor::new(detector.preprocess().clone());
    let mut tensors = Vec::new();
    let want = engine_frames.max(1).min(summary.frames.max(1) as usize);
    while tensors.len() < want {
        match dec.next(Duration::from_millis(100))? {
            Next::Frame(f) => {
                let (t, _) = pre.run(f.view()).map_err(|err| PipelineError::Preprocess {
                    stream: uri.clone(),
                    err,
                })?;
                tensors.push(t);
            }
            Next::Pending => continue,
            Next::Eos => break,
        }
    }
    drop(dec);
    for t in tensors.iter().take(3) {
        engine.run(t)?; // warm-up: first runs allocate and pick kernels
    }
    let mut lat = Latency::default();
    let started = Instant::now();
    for t in &tensors {
        let t0 = Instant::now();
        engine.run(t)?;
        lat.record(t0.elapsed());
    }
    let engine_fps = tensors.len() as f64 / started.elapsed().as_secs_f64();
    Ok(BenchReport {
        model: spec.model.name.clone(),
        input: ingest::redact(&spec.input),
        threads: spec.engine.threads,
        pipeline_frames: summary.frames,
        pipeline_fps: summary.fps,
        engine_runs: tensors.len(),
        engine_fps,
        engine_latency: lat.percentiles(),
        ratio: summary.fps / engine_fps,
        analytics_fps,
        analytics_ratio: analytics_fps / engine_fps,
        peak_rss_mib: peak,
        rss_samples: samples,
    })
}
