//! One source's run as a caller sees it: what is asked ([`RunSpec`]), what is reported along
//! the way ([`Progress`]), and what it ends with ([`Summary`], [`OutputPaths`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::shared::PipelineError;
use super::status::StreamState;
use super::supervisor::LiveSettings;
use crate::engine::EngineConfig;
use crate::models::Manifest;
use crate::sinks::SinkError;
use crate::source::{Source, SourceOptions};
use crate::stats::Percentiles;

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
