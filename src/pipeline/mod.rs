//! The pipeline: ingest → preprocess → infer → decode → sinks, for one stream or many.
//!
//! ```text
//!  stream "a": supervisor ─▶ queue ─▶ preprocess ─┐                           ┌─▶ sinks "a"
//!  stream "b": supervisor ─▶ queue ─▶ preprocess ─┼─▶ batcher ▶ infer ×N ▶ postprocess ─┼─▶ sinks "b"
//!  stream "c": supervisor ─▶ queue ─▶ preprocess ─┘     (one per model)               └─▶ sinks "c"
//! ```
//!
//! Each stream has its own supervisor ([`supervisor`]), preprocessing and sinks, on threads of
//! their own; streams that use the same model share its inference stage ([`batch`]). A file's
//! queues block, so nothing is dropped and memory stays flat however long the file; a live
//! stream's queue holds one frame and the newest wins. Shutdown flows downstream: a stream's
//! source stops (end of file, `max_frames`, Ctrl-C, a reload), its preprocessing sends an end
//! mark after its last frame, and its sinks finalize their files once that mark has passed
//! inference. [`run`] drives one stream to the end; [`runner::Runner`] runs many, and adds or
//! removes them while the others go on.

pub mod batch;
mod recognise;
pub mod runner;
pub mod status;
mod stream;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::detection::Detection;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::frame::Frame;
use crate::ingest::IngestError;
use crate::models::{build_detector, Detector, Manifest, ModelError};
use crate::preprocess::PreprocessError;
use crate::sinks::SinkError;
use crate::source::{Source, SourceError, SourceOptions};
use crate::stats::Percentiles;

pub use batch::BatchSettings;
pub use runner::{Runner, RunnerSpec};
pub use status::{Observer, StatusBoard, StreamState, StreamStatus};
pub use supervisor::LiveSettings;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
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
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
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
    /// RTSP transport, latency and credentials; camera mode.
    pub source: SourceOptions,
    /// How a live source is watched and reconnected.
    pub live: LiveSettings,
    /// A live stream's annotated video is cut into files of this length.
    pub segment: Duration,
    /// Serve the annotated video over RTSP when the service runs an RTSP server.
    pub rtsp_out: bool,
    /// Object tracking (IDs on detections, `tracks.jsonl`).
    pub tracker: crate::track::TrackerSettings,
    /// Zones and counting lines over the tracks.
    pub zones: Vec<crate::track::zones::ZoneSpec>,
    pub lines: Vec<crate::track::zones::LineSpec>,
    /// Face recognition of the tracks (`[faces]`).
    pub faces: Option<crate::faces::FacesSettings>,
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
            source: SourceOptions::default(),
            live: LiveSettings::default(),
            segment: Duration::from_secs(600),
            rtsp_out: true,
            tracker: crate::track::TrackerSettings::default(),
            zones: Vec::new(),
            lines: Vec::new(),
            faces: None,
        }
    }

    /// The parsed source and the stream's name.
    pub fn resolve(&self) -> Result<(Source, String), PipelineError> {
        let mut source = Source::parse(&self.input, &self.source)?;
        source.check()?;
        source.probe_live();
        let name = self
            .stream_name
            .clone()
            .unwrap_or_else(|| source.default_name());
        Ok((source, name))
    }
}

/// Per-frame timings gathered as the frame moves downstream.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Times {
    pub decode: Duration,
    pub preprocess: Duration,
    pub infer: Duration,
    pub postprocess: Duration,
}

/// Identifies one running instance of a stream: a stream restarted by a reload is a new one,
/// so results of the old instance can never reach the new one's sinks.
pub(crate) type StreamKey = u64;

pub(crate) struct Decoded {
    pub frame: Frame,
    pub key: StreamKey,
    /// When the frame left the decoder: capture-to-event latency counts from here.
    pub born: Instant,
    pub times: Times,
    /// Frames in the inference run this frame was part of.
    pub batch: usize,
}

pub(crate) struct Detected {
    pub d: Decoded,
    pub detections: Vec<Detection>,
}

/// What a stream's threads share.
pub(crate) struct StreamShared {
    pub key: StreamKey,
    pub name: Arc<str>,
    pub live: bool,
    pub stop: AtomicBool,
    pub dropped: AtomicU64,
    /// The container's frame count, once the file has opened.
    pub expected: Mutex<Option<u64>>,
    /// The first failure of a stage that serves many streams (inference, decoding).
    pub error: Mutex<Option<PipelineError>>,
}

impl StreamShared {
    /// Records a stage's failure and stops the stream; the first failure is the one reported.
    pub fn fail(&self, e: PipelineError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
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
    /// Track lifecycle events, when tracking is on.
    pub tracks: Option<PathBuf>,
    /// The annotated video; for a live stream, the first of its segments.
    pub video: Option<PathBuf>,
    pub summary: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The source, credentials hidden.
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
    /// Frames a live stream dropped because newer ones replaced them, or its sinks were busy.
    pub dropped_frames: u64,
    /// How the stream ended: `finished`, `stopped` or `failed`, and why.
    pub state: StreamState,
    pub reason: Option<String>,
    /// Reconnections of a live stream.
    pub reconnects: u64,
    /// Frames that ran in a batch with other frames.
    pub batched_frames: u64,
    /// The 99th percentile of capture (leaving the decoder) to event, in milliseconds.
    pub end_to_end_p99_ms: f64,
    /// Tracks reported (`new` events), by label.
    pub tracks_by_label: BTreeMap<String, u64>,
    /// Zones' entries and exits and lines' crossings, by label, when any are configured.
    pub counts: Option<serde_json::Value>,
    /// Face recognition, when `[faces]` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faces: Option<FacesSummary>,
    pub outputs: OutputPaths,
}

/// What face recognition did over a stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FacesSummary {
    /// Faces of tracks offered to the recogniser, one per track per frame.
    pub faces_seen: u64,
    /// Faces embedded: the rest were skipped (no better face, not due for a recheck).
    pub embedded: u64,
    /// `identified` events, by name.
    pub identified: BTreeMap<String, u64>,
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
///
/// A file that breaks part-way still gives a summary, with `stream_error` set and every frame
/// before the damage kept; any other failure is an error.
pub fn run(
    spec: &RunSpec,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, PipelineError> {
    let (source, name) = spec.resolve()?;
    let runner_spec = RunnerSpec {
        engine: spec.engine.clone(),
        batch: BatchSettings::default(),
        queue_depth: spec.queue_depth,
    };
    let mut runner = Runner::new(runner_spec, StatusBoard::new(Vec::new()));
    let (progress_tx, progress_rx) = crossbeam_channel::unbounded();
    let stream = runner::StreamSpec::from_run_spec(spec, source, name);
    runner.add(stream, Some(progress_tx))?;
    loop {
        if stop.load(Ordering::SeqCst) {
            runner.stop_all();
        }
        match progress_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(p) => on_progress(&p),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut outcomes = runner.finish();
    let outcome = outcomes.pop().expect("one stream was added");
    let mut summary = outcome.result?;
    summary.interrupted = stop.load(Ordering::SeqCst);
    summary.write(&summary.outputs.summary)?;
    Ok(summary)
}
