//! One stream as the runner starts it: its source, model, sinks and settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::job::RunSpec;
use super::supervisor::LiveSettings;
use crate::models::Manifest;
use crate::source::Source;

/// One stream, resolved.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub name: String,
    pub source: Source,
    pub model: Manifest,
    pub out_dir: PathBuf,
    pub write_video: bool,
    pub write_events: bool,
    pub max_frames: Option<u64>,
    pub live: LiveSettings,
    pub segment: Duration,
    /// Serve the annotated video at `rtsp://…/<name>` on this server.
    pub rtsp: Option<Arc<crate::rtsp::RtspServer>>,
    pub tracker: crate::track::TrackerSettings,
    pub zones: Vec<crate::track::zones::ZoneSpec>,
    pub lines: Vec<crate::track::zones::LineSpec>,
    pub faces: Option<crate::faces::FacesSettings>,
}

impl StreamSpec {
    pub fn from_run_spec(spec: &RunSpec, source: Source, name: String) -> Self {
        Self {
            name,
            source,
            model: spec.model.clone(),
            out_dir: spec.out_dir.clone(),
            write_video: spec.write_video,
            write_events: spec.write_events,
            max_frames: spec.max_frames,
            live: spec.live.clone(),
            segment: spec.segment,
            rtsp: None,
            tracker: spec.tracker.clone(),
            zones: spec.zones.clone(),
            lines: spec.lines.clone(),
            faces: spec.faces.clone(),
        }
    }
}
