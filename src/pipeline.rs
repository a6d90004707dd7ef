//! The pipeline: ingest → preprocess → infer → decode → sinks, each stage on its own thread,
//! joined by bounded crossbeam channels.
//!
//! Bounded queues give back-pressure: a file source waits for the slowest stage instead of
//! dropping frames, and memory stays flat however long the file. Shutdown flows downstream:
//! the source stops (end of stream, `max_frames`, or the `stop` flag set by Ctrl-C), each stage
//! drains its queue and exits when its input closes, and the sinks finalize their files last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;

use crate::detection::Detection;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::frame::Frame;
use crate::ingest::{self, Decoder, IngestError, Next};
use crate::models::{build_detector, Detector, Manifest, ModelError};
use crate::preprocess::{PreprocessError, Preprocessor, Transform};
use crate::sinks::{events::JsonlSink, video::AnnotatedVideo, Sink, SinkError};
use crate::stats::{rss_mib, Latency, Percentiles};
use crate::tensor::{Output, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("stream {stream}: {err}")]
    Preprocess {
        stream: String,
        #[source]
        err: PreprocessError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("output folder {path}: {reason}")]
    OutDir { path: PathBuf, reason: String },
    #[error("a pipeline stage panicked: {0}")]
    Panic(String),
}

/// Everything one run needs, already resolved (no config files here).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// A file path or a URI.
    pub input: String,
    /// Stream name in events; defaults to the file name.
    pub stream_name: Option<String>,
    pub model: Manifest,
    pub engine: EngineConfig,
    pub out_dir: PathBuf,
    pub write_video: bool,
    pub write_events: bool,
    /// Capacity of each inter-stage queue.
    pub queue_depth: usize,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
}

impl RunSpec {
    pub fn new(input: impl Into<String>, model: Manifest, out_dir: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            stream_name: None,
            model,
            engine: EngineConfig::default(),
            out_dir: out_dir.into(),
            write_video: true,
            write_events: true,
            queue_depth: 4,
            max_frames: None,
        }
    }
}

/// Per-frame timings gathered as the frame moves downstream.
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    decode: Duration,
    preprocess: Duration,
    infer: Duration,
    postprocess: Duration,
}

struct Decoded {
    frame: Frame,
    born: Instant,
    times: Times,
}

struct Prepared {
    d: Decoded,
    tensor: Tensor,
    transform: Transform,
}

struct Inferred {
    d: Decoded,
    outputs: Vec<Output>,
    transform: Transform,
}

struct Detected {
    d: Decoded,
    detections: Vec<Detection>,
}

/// What the progress callback sees after each frame reaches the sinks.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub frames: u64,
    pub total: Option<u64>,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputPaths {
    pub events: Option<PathBuf>,
    pub video: Option<PathBuf>,
    pub summary: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub source: String,
    pub stream: String,
    pub model: String,
    pub model_file: PathBuf,
    pub provider: String,
    pub frames: u64,
    /// Frames the container announced, when it did.
    pub expected_frames: Option<u64>,
    pub wall_s: f64,
    pub fps: f64,
    pub detections: u64,
    pub detections_by_label: BTreeMap<String, u64>,
    /// Per-stage latency; `end_to_end` is decode to sink for one frame.
    pub latency: BTreeMap<String, Percentiles>,
    pub peak_rss_mib: f64,
    /// True when Ctrl-C (or `stop`) ended the run early.
    pub interrupted: bool,
    /// Set when decoding failed part-way (a truncated file); the frames before it were kept.
    pub stream_error: Option<String>,
    pub outputs: OutputPaths,
}

impl Summary {
    pub fn write(&self, path: &Path) -> Result<(), SinkError> {
        let json = serde_json::to_string_pretty(self).expect("summary serializes");
        std::fs::write(path, json + "\n").map_err(|e| SinkError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Loads the model and checks that it fits its family.
pub fn load_model(
    model: &Manifest,
    engine: &EngineConfig,
) -> Result<(Engine, Box<dyn Detector>), PipelineError> {
    let engine = Engine::load(&model.file, engine)?;
    let detector = build_detector(model, engine.io())?;
    Ok((engine, detector))
}

/// Runs one source to the end (or until `stop`), writing the outputs into `spec.out_dir`.
pub fn run(
    spec: &RunSpec,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, PipelineError> {
    // Check the cheap things first, so a typo fails before a model loads.
    let uri = ingest::resolve_input(&spec.input)?;
    let (engine, detector) = load_model(&spec.model, &spec.engine)?;
    let stream: Arc<str> = spec
        .stream_name
        .clone()
        .unwrap_or_else(|| ingest::stream_name(&uri))
        .into();
    let decoder = Decoder::open(&uri, stream.clone())?;

    std::fs::create_dir_all(&spec.out_dir).map_err(|e| PipelineError::OutDir {
        path: spec.out_dir.clone(),
        reason: e.to_string(),
    })?;
    let outputs = OutputPaths {
        events: spec.write_events.then(|| spec.out_dir.join("events.jsonl")),
        video: spec.write_video.then(|| spec.out_dir.join("annotated.mp4")),
        summary: spec.out_dir.join("summary.json"),
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(p) = &outputs.events {
        sinks.push(Box::new(JsonlSink::create(p)?));
    }
    if let Some(p) = &outputs.video {
        sinks.push(Box::new(AnnotatedVideo::create(p, decoder.fps())?));
    }

    let expected = decoder.total_frames().map(|t| match spec.max_frames {
        Some(m) => t.min(m),
        None => t,
    });
    let source = decoder.display_name().to_string();
    let provider = format!("{:?}", engine.provider()).to_lowercase();
    let started = Instant::now();
    let detector: &dyn Detector = detector.as_ref();
    let depth = spec.queue_depth.max(1);

    let (tx_dec, rx_dec) = bounded::<Decoded>(depth);
    let (tx_pre, rx_pre) = bounded::<Prepared>(depth);
    let (tx_inf, rx_inf) = bounded::<Inferred>(depth);
    let (tx_det, rx_det) = bounded::<Detected>(depth);

    let (ingest_result, stage_results, sinks_out) = std::thread::scope(|s| {
        let ingest = spawn_named(s, "ingest", move || {
            ingest_stage(decoder, tx_dec, stop, spec.max_frames)
        });
        let stages = [
            spawn_named(s, "preprocess", move || {
                preprocess_stage(detector, rx_dec, tx_pre)
            }),
            spawn_named(s, "infer", move || infer_stage(engine, rx_pre, tx_inf)),
            spawn_named(s, "postprocess", move || {
                decode_stage(detector, rx_inf, tx_det)
            }),
        ];
        // Sinks get their own (background) thread; the caller's thread only reports progress,
        // so its priority is left as it was.
        let (tx_prog, rx_prog) = crossbeam_channel::unbounded::<u64>();
        let sinks = spawn_named(s, "sinks", move || sink_stage(sinks, rx_det, tx_prog));
        for frames in rx_prog.iter() {
            on_progress(&Progress {
                frames,
                total: expected,
                elapsed: started.elapsed(),
            });
        }
        let sinks_out = join(sinks);
        let ingest_result = join(ingest);
        let stage_results: Vec<Result<(), PipelineError>> = stages.into_iter().map(join).collect();
        (ingest_result, stage_results, sinks_out)
    });

    for r in stage_results {
        r?;
    }
    let SinkTally {
        lat,
        by_label,
        frames,
        total_dets,
    } = sinks_out?;
    let stream_error = match ingest_result {
        Ok(()) => None,
        // The frames before the damage went through; report it, keep the results.
        Err(PipelineError::Ingest(e @ IngestError::Stream { .. })) if frames > 0 => {
            tracing::warn!(error = %e, "stream ended early");
            Some(e.to_string())
        }
        Err(e) => return Err(e),
    };
    let wall = started.elapsed().as_secs_f64();
    let summary = Summary {
        source,
        stream: stream.to_string(),
        model: spec.model.name.clone(),
        model_file: spec.model.file.clone(),
        provider,
        frames,
        expected_frames: expected,
        wall_s: wall,
        fps: if wall > 0.0 {
            frames as f64 / wall
        } else {
            0.0
        },
        detections: total_dets,
        detections_by_label: by_label,
        latency: lat
            .iter()
            .map(|(k, v)| (k.to_string(), v.percentiles()))
            .collect(),
        peak_rss_mib: rss_mib().1,
        interrupted: stop.load(Ordering::SeqCst),
        stream_error,
        outputs,
    };
    summary.write(&summary.outputs.summary)?;
    Ok(summary)
}

/// A scoped thread with a name, so `top -H` (and the priority tests) can tell stages apart.
fn spawn_named<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(s, f)
        .expect("the OS can start a thread")
}

/// What the sinks saw: per-stage latencies and detection counts.
#[derive(Default)]
struct SinkTally {
    lat: BTreeMap<&'static str, Latency>,
    by_label: BTreeMap<String, u64>,
    frames: u64,
    total_dets: u64,
}

fn sink_stage(
    mut sinks: Vec<Box<dyn Sink>>,
    rx: Receiver<Detected>,
    progress: Sender<u64>,
) -> Result<SinkTally, PipelineError> {
    crate::sched::background();
    let mut tally = SinkTally::default();
    let mut result: Result<(), PipelineError> = Ok(());
    for det in rx.iter() {
        let t = Instant::now();
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.write(&det.d.frame, &det.detections) {
                result = Err(e.into());
            }
        }
        if result.is_err() {
            break;
        }
        let times = det.d.times;
        for (name, d) in [
            ("decode", times.decode),
            ("preprocess", times.preprocess),
            ("infer", times.infer),
            ("postprocess", times.postprocess),
            ("sink", t.elapsed()),
            ("end_to_end", det.d.born.elapsed()),
        ] {
            tally.lat.entry(name).or_default().record(d);
        }
        for d in &det.detections {
            *tally.by_label.entry(d.label.clone()).or_default() += 1;
        }
        tally.total_dets += det.detections.len() as u64;
        tally.frames += 1;
        let _ = progress.send(tally.frames);
    }
    drop(rx);
    // Finalize every sink even if one failed, so each file is as complete as it can be.
    for sink in sinks {
        let r = sink.finish();
        if result.is_ok() {
            result = r.map_err(Into::into);
        }
    }
    result.map(|()| tally)
}

fn join<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, PipelineError>>,
) -> Result<T, PipelineError> {
    h.join().unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(PipelineError::Panic(msg))
    })
}

fn ingest_stage(
    mut decoder: Decoder,
    tx: Sender<Decoded>,
    stop: &AtomicBool,
    max_frames: Option<u64>,
) -> Result<(), PipelineError> {
    crate::sched::background();
    let mut waited = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) || max_frames.is_some_and(|m| decoder.frames() >= m) {
            return Ok(());
        }
        match decoder.next(Duration::from_millis(100))? {
            Next::Frame(frame) => {
                let times = Times {
                    decode: waited.elapsed(),
                    ..Times::default()
                };
                let born = Instant::now();
                if tx.send(Decoded { frame, born, times }).is_err() {
                    return Ok(()); // downstream stopped; its error is reported there
                }
                waited = Instant::now();
            }
            Next::Pending => continue,
            Next::Eos => return Ok(()),
        }
    }
}

fn preprocess_stage(
    detector: &dyn Detector,
    rx: Receiver<Decoded>,
    tx: Sender<Prepared>,
) -> Result<(), PipelineError> {
    crate::sched::background();
    let mut pre = Preprocessor::new(detector.preprocess().clone());
    for mut d in rx {
        let t = Instant::now();
        let (tensor, transform) =
            pre.run(d.frame.pixels())
                .map_err(|err| PipelineError::Preprocess {
                    stream: d.frame.stream.to_string(),
                    err,
                })?;
        d.times.preprocess = t.elapsed();
        if tx
            .send(Prepared {
                d,
                tensor,
                transform,
            })
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

fn infer_stage(
    mut engine: Engine,
    rx: Receiver<Prepared>,
    tx: Sender<Inferred>,
) -> Result<(), PipelineError> {
    for mut p in rx {
        let t = Instant::now();
        let outputs = engine.run(&p.tensor)?;
        p.d.times.infer = t.elapsed();
        let msg = Inferred {
            d: p.d,
            outputs,
            transform: p.transform,
        };
        if tx.send(msg).is_err() {
            break;
        }
    }
    Ok(())
}

fn decode_stage(
    detector: &dyn Detector,
    rx: Receiver<Inferred>,
    tx: Sender<Detected>,
) -> Result<(), PipelineError> {
    crate::sched::background();
    for mut i in rx {
        let t = Instant::now();
        let detections = detector.decode(&i.outputs, &i.transform)?;
        i.d.times.postprocess = t.elapsed();
        if tx.send(Detected { d: i.d, detections }).is_err() {
            break;
        }
    }
    Ok(())
}
