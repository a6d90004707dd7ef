//! The ingest stage of one stream: its supervisor.
//!
//! A file plays once, every frame kept: the queue blocks when full. A live stream runs
//! `connecting → playing → stalled → backoff → playing …`: a stream that errors, ends, sends
//! nothing for `stall_timeout`, or keeps sending the same timestamp (a frozen camera) has its own
//! pipeline torn down and rebuilt after an exponential backoff with jitter. Each supervisor has
//! its own timers; nothing is shared between streams, so one camera that is down never delays
//! another. A live stream never queues: the newest frame replaces an unread older one, and
//! every replaced frame is counted.
//!
//! ```
//! use std::time::Duration;
//! use edgesight::pipeline::supervisor::Backoff;
//! let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
//! let waits: Vec<Duration> = (0..7).map(|_| b.next_wait()).collect();
//! assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_millis(1500));
//! assert!(waits[6] <= Duration::from_secs(45)); // capped at 30 s, plus jitter
//! b.reset();
//! assert!(b.next_wait() <= Duration::from_millis(1500));
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;

use super::shared::{Decoded, PipelineError, StreamShared, Times};
use super::status::{StatusBoard, StreamState};
use crate::frame::PixelFormat;
use crate::ingest::{Decoder, Next};
use crate::source::Source;

/// How a live stream is watched and reconnected (`[streams.live]` in a pipeline file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// No frame, or no new timestamp, for this long is a stall.
    pub stall_timeout_s: f64,
    pub backoff_min_s: f64,
    pub backoff_max_s: f64,
    /// Give up (state `failed`) after this many failed attempts in a row; unlimited when unset.
    pub max_attempts: Option<u32>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            stall_timeout_s: 5.0,
            backoff_min_s: 1.0,
            backoff_max_s: 30.0,
            max_attempts: None,
        }
    }
}

impl LiveSettings {
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.stall_timeout_s.max(0.1))
    }
}

/// Exponential backoff with ±50 % jitter, so that cameras that fail together do not all
/// reconnect in the same instant.
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.5 + fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Where the supervisor puts frames: a blocking queue for files, a one-frame slot for live
/// streams in which the newest frame wins.
pub(crate) enum Outlet {
    Blocking(Sender<Decoded>),
    Latest {
        tx: Sender<Decoded>,
        /// A second handle on the slot, to take out the frame that a newer one replaces.
        rx: Receiver<Decoded>,
    },
}

impl Outlet {
    /// False when downstream has gone.
    fn put(&self, d: Decoded, board: &StatusBoard, stream: &str) -> bool {
        match self {
            Outlet::Blocking(tx) => tx.send(d).is_ok(),
            Outlet::Latest { tx, rx } => {
                let mut item = d;
                loop {
                    match tx.try_send(item) {
                        Ok(()) => return true,
                        Err(TrySendError::Disconnected(_)) => return false,
                        Err(TrySendError::Full(back)) => {
                            item = back;
                            if rx.try_recv().is_ok() {
                                board.dropped(stream, "latest_wins", 1);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) struct Ingest {
    pub source: Source,
    pub shared: Arc<StreamShared>,
    pub board: Arc<StatusBoard>,
    pub outlet: Outlet,
    pub max_frames: Option<u64>,
    pub live: LiveSettings,
}

impl Ingest {
    /// Runs until the stream ends, fails for good, or is stopped.
    pub fn run(self) -> Result<(), PipelineError> {
        crate::sched::background();
        if self.source.is_live() {
            self.run_live();
            Ok(())
        } else {
            self.run_file()
        }
    }

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn stopped(&self, frames: u64) -> bool {
        self.shared.stop.load(Ordering::SeqCst) || self.max_frames.is_some_and(|m| frames >= m)
    }

    fn run_file(&self) -> Result<(), PipelineError> {
        let board = &self.board;
        let mut decoder =
            match Decoder::open_source(&self.source, self.shared.name.clone(), PixelFormat::I420) {
                Ok(d) => d,
                Err(e) => {
                    board.set_state(self.name(), StreamState::Failed, Some(e.to_string()));
                    return Err(e.into());
                }
            };
        *self
            .shared
            .expected
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = decoder.total_frames();
        board.set_state(self.name(), StreamState::Playing, None);
        let mut waited = Instant::now();
        loop {
            if self.stopped(decoder.frames()) {
                return Ok(());
            }
            match decoder.next(Duration::from_millis(100)) {
                Ok(Next::Frame(frame)) => {
                    board.frame(self.name());
                    let d = decoded(frame, &self.shared, waited.elapsed());
                    if !self.outlet.put(d, board, self.name()) {
                        return Ok(()); // downstream stopped; its error is reported there
                    }
                    waited = Instant::now();
                }
                Ok(Next::Pending) => continue,
                Ok(Next::Eos) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn run_live(&self) {
        let (board, name) = (&self.board, self.name());
        let mut backoff = Backoff::new(
            Duration::from_secs_f64(self.live.backoff_min_s.max(0.0)),
            Duration::from_secs_f64(self.live.backoff_max_s.max(0.0)),
        );
        let (mut failures, mut number, mut tried) = (0u32, 0u64, false);
        loop {
            if self.stopped(number) {
                return;
            }
            board.set_state(name, StreamState::Connecting, None);
            board.attempt(name);
            if tried {
                board.reconnected(name);
            }
            tried = true;
            let ended = match Decoder::open_source(
                &self.source,
                self.shared.name.clone(),
                PixelFormat::I420,
            ) {
                Err(e) => Ended::Failed(e.to_string()),
                Ok(mut dec) => {
                    dec.continue_numbering_at(number);
                    let ended = self.pump(&mut dec, &mut backoff, &mut failures);
                    number = dec.frames();
                    ended
                }
            };
            let reason = match ended {
                Ended::Stopped => return,
                Ended::Failed(reason) => reason,
            };
            failures += 1;
            tracing::warn!(stream = %name, %reason, attempt = failures, "live stream lost");
            if self.live.max_attempts.is_some_and(|m| failures >= m) {
                board.set_state(name, StreamState::Failed, Some(reason));
                return;
            }
            board.set_state(name, StreamState::Backoff, Some(reason));
            if !self.sleep(backoff.next_wait()) {
                return;
            }
        }
    }

    /// Moves frames from a playing decoder into the outlet until the stream fails or stops.
    fn pump(&self, dec: &mut Decoder, backoff: &mut Backoff, failures: &mut u32) -> Ended {
        let (board, name) = (&self.board, self.name());
        let stall = self.live.stall_timeout();
        let started = Instant::now();
        let mut watch = StallWatch::new(stall, started);
        let mut waited = started;
        // Frames of this connection: the decoder's own count goes on from the last one.
        let mut got = 0u64;
        loop {
            if self.stopped(dec.frames()) {
                return Ended::Stopped;
            }
            let now = Instant::now();
            match dec.next(Duration::from_millis(50)) {
                Ok(Next::Frame(frame)) => {
                    got += 1;
                    if got == 1 {
                        board.set_state(name, StreamState::Playing, None);
                        backoff.reset();
                        *failures = 0;
                    }
                    if let Some(reason) = watch.frame(frame.pts.map(|p| p.nseconds()), now) {
                        return self.stalled(reason);
                    }
                    board.frame(name);
                    let d = decoded(frame, &self.shared, waited.elapsed());
                    if !self.outlet.put(d, board, name) {
                        return Ended::Stopped;
                    }
                    waited = Instant::now();
                }
                Ok(Next::Pending) => {
                    if let Some(reason) = watch.idle(now) {
                        return self.stalled(reason);
                    }
                }
                Ok(Next::Eos) => return Ended::Failed("the source ended the stream".into()),
                Err(e) => return Ended::Failed(e.to_string()),
            }
        }
    }

    fn stalled(&self, reason: String) -> Ended {
        self.board
            .set_state(self.name(), StreamState::Stalled, Some(reason.clone()));
        Ended::Failed(reason)
    }

    /// Sleeps, waking early when the stream is stopped; false if it was.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        !self.shared.stop.load(Ordering::SeqCst)
    }
}

enum Ended {
    Stopped,
    Failed(String),
}

/// Tells a stall: no frame for `timeout`, or frames whose timestamp has not moved for
/// `timeout` (a frozen camera that keeps sending its last picture).
pub struct StallWatch {
    timeout: Duration,
    last_frame: Instant,
    last_pts: Option<u64>,
    pts_moved: Instant,
    frames: u64,
}

impl StallWatch {
    pub fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            last_frame: now,
            last_pts: None,
            pts_moved: now,
            frames: 0,
        }
    }

    /// A frame with timestamp `pts` (nanoseconds) arrived at `now`; why the stream is frozen,
    /// if it is. A source without timestamps is never called frozen.
    pub fn frame(&mut self, pts: Option<u64>, now: Instant) -> Option<String> {
        self.frames += 1;
        self.last_frame = now;
        if pts.is_none() || pts != self.last_pts {
            (self.last_pts, self.pts_moved) = (pts, now);
            return None;
        }
        (now - self.pts_moved > self.timeout).then(|| {
            format!(
                "frozen: the timestamp has not moved for {:.0} s",
                self.timeout.as_secs_f64()
            )
        })
    }

    /// Nothing arrived by `now`; why the stream is stalled, if it is.
    pub fn idle(&self, now: Instant) -> Option<String> {
        (now - self.last_frame > self.timeout).then(|| {
            let what = if self.frames == 0 {
                "no frame within"
            } else {
                "no frame for"
            };
            format!("{what} {:.0} s", self.timeout.as_secs_f64())
        })
    }
}

fn decoded(frame: crate::frame::Frame, shared: &Arc<StreamShared>, decode: Duration) -> Decoded {
    Decoded {
        frame,
        key: shared.key,
        born: Instant::now(),
        times: Times {
            decode,
            ..Times::default()
        },
        batch: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_timestamp_is_a_stall_after_the_timeout() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = StallWatch::new(Duration::from_secs(2), t0);
        // A moving stream at 10 fps: never frozen.
        for i in 0..30 {
            assert_eq!(w.frame(Some(i * 100_000_000), s(i * 100)), None);
        }
        // Then the same picture again and again, frames still arriving.
        let frozen: Vec<Option<String>> = (30..60)
            .map(|i| w.frame(Some(2_900_000_000), s(i * 100)))
            .collect();
        assert!(
            frozen[..20].iter().all(Option::is_none),
            "called frozen too early"
        );
        assert!(
            frozen[25]
                .as_deref()
                .is_some_and(|r| r.starts_with("frozen")),
            "{frozen:?}"
        );
        assert_eq!(w.idle(s(5950)), None, "frames were arriving");
    }

    #[test]
    fn silence_is_a_stall_and_timestamps_absent_are_not_frozen() {
        let t0 = Instant::now();
        let mut w = StallWatch::new(Duration::from_secs(5), t0);
        assert_eq!(w.idle(t0 + Duration::from_secs(4)), None);
        assert_eq!(
            w.idle(t0 + Duration::from_secs(6)).as_deref(),
            Some("no frame within 5 s")
        );
        for i in 0..100 {
            assert_eq!(w.frame(None, t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(
            w.idle(t0 + Duration::from_secs(16)).as_deref(),
            Some("no frame for 5 s")
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let waits: Vec<f64> = (0..8).map(|_| b.next_wait().as_secs_f64()).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = (1u64 << i).min(30) as f64;
            assert!(
                *w >= 0.5 * base && *w <= 1.5 * base,
                "wait {i}: {w} (base {base})"
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(1500));
    }
}
