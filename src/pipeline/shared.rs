//! What the stages of one stream pass along and share: the frame with its timings as it moves
//! downstream, the stream's stop flag and first failure, and the pipeline's error type.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::detection::Detection;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::frame::Frame;
use crate::ingest::IngestError;
use crate::models::{build_detector, Detector, Manifest, ModelError};
use crate::preprocess::PreprocessError;
use crate::sinks::SinkError;
use crate::source::SourceError;

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

/// Loads the model and checks that it fits its family.
pub fn load_model(
    model: &Manifest,
    engine: &EngineConfig,
) -> Result<(Engine, Box<dyn Detector>), PipelineError> {
    let engine = Engine::load(&model.file, engine)?;
    let detector = build_detector(model, engine.io())?;
    Ok((engine, detector))
}
