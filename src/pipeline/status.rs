//! What each stream is doing, for people (logs, `/healthz`, MQTT status) and machines
//! (Prometheus): the supervisor's state machine and the counters that go with it.
//!
//! The pipeline reports through [`Observer`]s and knows nothing of what listens: metrics and
//! MQTT are observers that [`crate::service`] plugs in.
//!
//! ```
//! use edgesight::pipeline::status::{StatusBoard, StreamState};
//! let board = StatusBoard::new(vec![]);
//! board.set_state("cam1", StreamState::Connecting, None);
//! board.set_state("cam1", StreamState::Backoff, Some("401 Unauthorized".into()));
//! let s = board.get("cam1").unwrap();
//! assert_eq!(s.state, StreamState::Backoff);
//! assert_eq!(s.reason.as_deref(), Some("401 Unauthorized"));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// `connecting → playing → stalled → backoff → playing … | failed`; files go
/// `playing → finished`, and a stream stopped by the user or a reload ends `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Connecting,
    Playing,
    Stalled,
    Backoff,
    Failed,
    Stopped,
    Finished,
}

impl StreamState {
    pub const ALL: [StreamState; 7] = [
        Self::Connecting,
        Self::Playing,
        Self::Stalled,
        Self::Backoff,
        Self::Failed,
        Self::Stopped,
        Self::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Playing => "playing",
            Self::Stalled => "stalled",
            Self::Backoff => "backoff",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Finished => "finished",
        }
    }

    /// The stream will do nothing more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Failed | Self::Stopped | Self::Finished)
    }
}

/// One stream's status, as MQTT's retained `status` topic and `/healthz` show it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub state: StreamState,
    /// Unix time (seconds) of the last state change.
    pub since: f64,
    /// Why the stream left `playing` (the source's own error, redacted), if it did.
    pub reason: Option<String>,
    /// Connection attempts since the last decoded frame.
    pub attempts: u32,
    pub reconnects: u64,
    pub frames: u64,
    pub dropped: u64,
    /// Milliseconds since the last frame arrived; null before the first.
    pub last_frame_age_ms: Option<u64>,
    #[serde(skip)]
    last_frame: Option<Instant>,
}

impl StreamStatus {
    fn new(state: StreamState) -> Self {
        Self {
            state,
            since: unix_now(),
            reason: None,
            attempts: 0,
            reconnects: 0,
            frames: 0,
            dropped: 0,
            last_frame_age_ms: None,
            last_frame: None,
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Listens to the pipeline. Every method has a default that ignores the call.
pub trait Observer: Send + Sync {
    fn state(&self, _stream: &str, _status: &StreamStatus) {}
    fn frame(&self, _stream: &str, _stage: &'static str) {}
    fn dropped(&self, _stream: &str, _reason: &'static str, _n: u64) {}
    fn reconnect(&self, _stream: &str) {}
    fn latency(&self, _stage: &'static str, _d: Duration) {}
    fn capture_to_event(&self, _stream: &str, _d: Duration) {}
    fn batch(&self, _n: usize) {}
    fn queue_depth(&self, _queue: &str, _n: usize) {}
    /// Whether [`Observer::event`] wants each frame's record (serializing it costs).
    fn wants_events(&self) -> bool {
        false
    }
    /// One `events.jsonl` record, already serialized.
    fn event(&self, _stream: &str, _json: &[u8]) {}
    /// One `tracks.jsonl` record, already serialized.
    fn track_event(&self, _stream: &str, _json: &[u8]) {}
    /// Objects of `label` in `zone` now.
    fn zone_objects(&self, _stream: &str, _zone: &str, _label: &str, _n: u64) {}
    /// A track crossed `line` in `direction` (`in` or `out`).
    fn line_crossing(&self, _stream: &str, _line: &str, _label: &str, _direction: &str) {}
    /// The stream is gone (removed by a reload): its series may go.
    fn removed(&self, _stream: &str) {}
}

/// Every stream's status, shared by the supervisors, the sinks and the status endpoints.
pub struct StatusBoard {
    streams: Mutex<BTreeMap<String, StreamStatus>>,
    observers: Vec<Arc<dyn Observer>>,
}

impl StatusBoard {
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(BTreeMap::new()),
            observers,
        })
    }

    pub fn observers(&self) -> &[Arc<dyn Observer>] {
        &self.observers
    }

    fn with<R>(&self, stream: &str, f: impl FnOnce(&mut StreamStatus) -> R) -> R {
        let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let s = map
            .entry(stream.to_string())
            .or_insert_with(|| StreamStatus::new(StreamState::Connecting));
        f(s)
    }

    /// Moves a stream to `state`; a reason is kept until the stream plays again.
    pub fn set_state(&self, stream: &str, state: StreamState, reason: Option<String>) {
        let snapshot = self.with(stream, |s| {
            if s.state != state {
                s.since = unix_now();
            }
            s.state = state;
            if state == StreamState::Playing {
                s.reason = None;
                s.attempts = 0;
            } else if reason.is_some() {
                s.reason = reason;
            }
            s.clone()
        });
        self.notify(stream, &snapshot);
    }

    pub fn attempt(&self, stream: &str) {
        self.with(stream, |s| s.attempts += 1);
    }

    pub fn reconnected(&self, stream: &str) {
        self.with(stream, |s| s.reconnects += 1);
        for o in &self.observers {
            o.reconnect(stream);
        }
    }

    pub fn frame(&self, stream: &str) {
        self.with(stream, |s| {
            s.frames += 1;
            s.last_frame = Some(Instant::now());
        });
        for o in &self.observers {
            o.frame(stream, "ingest");
        }
    }

    pub fn dropped(&self, stream: &str, reason: &'static str, n: u64) {
        self.with(stream, |s| s.dropped += n);
        for o in &self.observers {
            o.dropped(stream, reason, n);
        }
    }

    /// The stream leaves the board (a reload removed it).
    pub fn remove(&self, stream: &str) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(stream);
        for o in &self.observers {
            o.removed(stream);
        }
    }

    pub fn get(&self, stream: &str) -> Option<StreamStatus> {
        let map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        map.get(stream).map(with_age)
    }

    /// Every stream, with ages as of now.
    pub fn snapshot(&self) -> BTreeMap<String, StreamStatus> {
        let map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), with_age(v))).collect()
    }

    fn notify(&self, stream: &str, s: &StreamStatus) {
        let s = with_age(s);
        for o in &self.observers {
            o.state(stream, &s);
        }
    }
}

fn with_age(s: &StreamStatus) -> StreamStatus {
    let mut s = s.clone();
    s.last_frame_age_ms = s.last_frame.map(|t| t.elapsed().as_millis() as u64);
    s
}
