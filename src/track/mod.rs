//! Tracking: each object keeps one ID while it stays in view. ByteTrack (Zhang et al., 2022):
//! a Kalman filter per track ([`kalman`]), high-score detections matched first to every live
//! track, then low-score ones to the tracks still unmatched, by IoU with linear assignment
//! ([`assign`]). Class-aware: a track only ever takes boxes of its own class.
//!
//! Time is in seconds, not frames: a lost track ends after `lost_ttl_s` however many frames a
//! live stream dropped meanwhile, and a frame with no detections still ages the lost tracks.
//! IDs count from 1 in each tracker (one per stream) and are never reused. Ended tracks are
//! reported once and forgotten; only the last `max_removed` are remembered, so memory stays
//! bounded however long the stream.
//!
//! ```
//! use edgesight::detection::{BBox, Detection};
//! use edgesight::track::{Tracker, TrackerSettings};
//! let person = |x: f32| Detection {
//!     class_id: 1, label: "person".into(), score: 0.9,
//!     bbox: BBox { x1: x, y1: 100.0, x2: x + 40.0, y2: 200.0 },
//!     keypoints: vec![], track_id: None, name: None,
//! };
//! let mut t = Tracker::new(TrackerSettings::default());
//! let mut ids = Vec::new();
//! for i in 0..10 {
//!     let mut dets = vec![person(100.0 + 5.0 * i as f32)];
//!     t.update(i as f64 / 10.0, i, &mut dets);
//!     ids.push(dets[0].track_id);
//! }
//! // Reported from its third frame (`min_hits`), then always the same ID.
//! assert!(ids[..2].iter().all(Option::is_none));
//! assert!(ids[2..].iter().all(|id| *id == Some(1)));
//! ```

pub mod assign;
pub mod kalman;
pub mod trails;
pub mod zones;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::detection::{BBox, Detection};
use kalman::BoxFilter;

/// `[tracker]` in a pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerSettings {
    pub enabled: bool,
    /// Detections at or above this score are matched first, and may start tracks.
    pub high_score: f32,
    /// Detections between this and `high_score` only keep existing tracks alive.
    pub low_score: f32,
    /// A new track needs a detection at least this sure.
    pub new_track_score: f32,
    /// IoU a high-score detection needs with a track's predicted box.
    pub match_iou: f32,
    /// IoU a low-score detection needs.
    pub low_match_iou: f32,
    /// A lost track and a detection are compared with both boxes grown by this fraction of
    /// their size on each side, so that a track whose object was hidden for a while finds it
    /// again although its predicted box drifted. 0 turns it off.
    pub lost_buffer: f32,
    /// Frames a track must be seen in before it is reported (`new`).
    pub min_hits: u32,
    /// A track unseen for this long ends.
    pub lost_ttl_s: f64,
    /// `update` events of a track come at most this often.
    pub update_interval_s: f64,
    /// Ended tracks remembered.
    pub max_removed: usize,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            high_score: 0.5,
            low_score: 0.1,
            new_track_score: 0.6,
            match_iou: 0.2,
            low_match_iou: 0.5,
            lost_buffer: 0.3,
            min_hits: 3,
            lost_ttl_s: 2.0,
            update_interval_s: 1.0,
            max_removed: 256,
        }
    }
}

impl TrackerSettings {
    /// Every parameter in its range, or the name of the first that is not.
    pub fn check(&self) -> Result<(), String> {
        let unit = |name: &str, v: f32| {
            (0.0..=1.0)
                .contains(&v)
                .then_some(())
                .ok_or(format!("{name} = {v}: must lie between 0 and 1"))
        };
        for (name, v) in [
            ("high_score", self.high_score),
            ("low_score", self.low_score),
            ("new_track_score", self.new_track_score),
            ("match_iou", self.match_iou),
            ("low_match_iou", self.low_match_iou),
        ] {
            unit(name, v)?;
        }
        if !(0.0..=2.0).contains(&self.lost_buffer) {
            return Err(format!(
                "lost_buffer = {}: must lie between 0 and 2",
                self.lost_buffer
            ));
        }
        if self.low_score > self.high_score {
            return Err("low_score must not exceed high_score".into());
        }
        if self.min_hits == 0 {
            return Err("min_hits must be at least 1".into());
        }
        if !(self.lost_ttl_s > 0.0 && self.lost_ttl_s.is_finite()) {
            return Err(format!(
                "lost_ttl_s = {}: must be positive",
                self.lost_ttl_s
            ));
        }
        if self.update_interval_s.is_nan() || self.update_interval_s < 0.0 {
            return Err("update_interval_s must not be negative".into());
        }
        Ok(())
    }
}

/// What happened to a track, for `tracks.jsonl` and MQTT.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TrackEvent {
    New {
        track_id: u64,
        label: String,
        frame: u64,
        score: f32,
        #[serde(rename = "box")]
        bbox: BBox,
    },
    Update {
        track_id: u64,
        label: String,
        frame: u64,
        score: f32,
        #[serde(rename = "box")]
        bbox: BBox,
    },
    End {
        track_id: u64,
        label: String,
        first_frame: u64,
        last_frame: u64,
        duration_s: f64,
        best_score: f32,
        best_box: BBox,
    },
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    class_id: u32,
    label: String,
    filter: BoxFilter,
    hits: u32,
    reported: bool,
    first_frame: u64,
    first_t: f64,
    last_frame: u64,
    last_seen: f64,
    last_update_event: f64,
    best_score: f32,
    best_box: BBox,
    /// Matched in the latest frame.
    tracked: bool,
}

impl Track {
    fn predicted(&self) -> BBox {
        to_box(self.filter.mean())
    }
}

/// `b` grown by `f` of its width and height on each side.
fn expand(b: &BBox, f: f32) -> BBox {
    let (dw, dh) = ((b.x2 - b.x1) * f, (b.y2 - b.y1) * f);
    BBox {
        x1: b.x1 - dw,
        y1: b.y1 - dh,
        x2: b.x2 + dw,
        y2: b.y2 + dh,
    }
}

/// One stream's tracker.
pub struct Tracker {
    s: TrackerSettings,
    tracks: Vec<Track>,
    removed: VecDeque<u64>,
    next_id: u64,
    last_t: Option<f64>,
    events: Vec<TrackEvent>,
}

impl Tracker {
    pub fn new(s: TrackerSettings) -> Self {
        Self {
            s,
            tracks: Vec::new(),
            removed: VecDeque::new(),
            next_id: 1,
            last_t: None,
            events: Vec::new(),
        }
    }

    /// Tracks of the frame at time `t` (seconds): sets `track_id` on the detections that belong
    /// to a reported track. Detections below `low_score` are left alone.
    pub fn update(&mut self, t: f64, frame: u64, dets: &mut [Detection]) {
        let dt = self.last_t.map_or(0.0, |l| (t - l).max(0.0)) as f32;
        self.last_t = Some(t);
        for tr in &mut self.tracks {
            tr.filter.predict(dt);
        }
        let (high, low): (Vec<usize>, Vec<usize>) = (0..dets.len())
            .filter(|&i| dets[i].score >= self.s.low_score)
            .partition(|&i| dets[i].score >= self.s.high_score);
        // First pass: sure detections against every track, lost ones included.
        let all: Vec<usize> = (0..self.tracks.len()).collect();
        let (matched, unmatched_tracks, unmatched_high) =
            self.associate(&all, &high, dets, self.s.match_iou);
        for &(ti, di) in &matched {
            self.hit(ti, t, frame, &mut dets[di]);
        }
        // Second pass: unsure detections only keep tracks that were tracked a frame ago.
        let was_tracked: Vec<usize> = unmatched_tracks
            .iter()
            .copied()
            .filter(|&ti| self.tracks[ti].tracked)
            .collect();
        let (matched_low, _, _) = self.associate(&was_tracked, &low, dets, self.s.low_match_iou);
        for &(ti, di) in &matched_low {
            self.hit(ti, t, frame, &mut dets[di]);
        }
        let hit: Vec<usize> = matched.iter().chain(&matched_low).map(|m| m.0).collect();
        for (ti, tr) in self.tracks.iter_mut().enumerate() {
            if !hit.contains(&ti) {
                tr.tracked = false;
            }
        }
        for di in unmatched_high {
            if dets[di].score >= self.s.new_track_score {
                self.start(t, frame, &mut dets[di]);
            }
        }
        self.expire(t);
    }

    /// Matches `tracks` (indices) with `cands` (detection indices) of the same class by IoU.
    fn associate(
        &self,
        tracks: &[usize],
        cands: &[usize],
        dets: &[Detection],
        gate: f32,
    ) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
        let scores: Vec<Vec<f32>> = tracks
            .iter()
            .map(|&ti| {
                let tr = &self.tracks[ti];
                let pred = tr.predicted();
                // A lost track's prediction drifts while its object is hidden: match it with
                // boxes grown on every side (buffered IoU, Yang et al. 2023, "C-BIoU").
                let buffer = if tr.tracked { 0.0 } else { self.s.lost_buffer };
                cands
                    .iter()
                    .map(|&di| {
                        let d = &dets[di];
                        if d.class_id == tr.class_id {
                            expand(&pred, buffer).iou(&expand(&d.bbox, buffer))
                        } else {
                            -1.0
                        }
                    })
                    .collect()
            })
            .collect();
        let pairs: Vec<(usize, usize)> = assign::assign(&scores, gate)
            .into_iter()
            .map(|(r, c)| (tracks[r], cands[c]))
            .collect();
        let unmatched_t = tracks
            .iter()
            .copied()
            .filter(|t| !pairs.iter().any(|p| p.0 == *t))
            .collect();
        let unmatched_d = cands
            .iter()
            .copied()
            .filter(|d| !pairs.iter().any(|p| p.1 == *d))
            .collect();
        (pairs, unmatched_t, unmatched_d)
    }

    fn hit(&mut self, ti: usize, t: f64, frame: u64, det: &mut Detection) {
        let interval = self.s.update_interval_s;
        // An ID is given when a track is first reported, so that the IDs a stream shows count
        // 1, 2, 3 … with no gaps for tentative tracks that never made it.
        let report = !self.tracks[ti].reported && self.tracks[ti].hits + 1 >= self.s.min_hits;
        if report {
            self.tracks[ti].id = self.next_id;
            self.next_id += 1;
        }
        let tr = &mut self.tracks[ti];
        tr.filter.update(to_measure(&det.bbox));
        tr.hits += 1;
        tr.tracked = true;
        tr.last_frame = frame;
        tr.last_seen = t;
        if det.score > tr.best_score {
            tr.best_score = det.score;
            tr.best_box = det.bbox;
        }
        if report {
            tr.reported = true;
            tr.last_update_event = t;
            self.events.push(TrackEvent::New {
                track_id: tr.id,
                label: tr.label.clone(),
                frame,
                score: det.score,
                bbox: det.bbox,
            });
        } else if tr.reported && t - tr.last_update_event >= interval {
            tr.last_update_event = t;
            self.events.push(TrackEvent::Update {
                track_id: tr.id,
                label: tr.label.clone(),
                frame,
                score: det.score,
                bbox: det.bbox,
            });
        }
        if tr.reported {
            det.track_id = Some(tr.id);
        }
    }

    fn start(&mut self, t: f64, frame: u64, det: &mut Detection) {
        self.tracks.push(Track {
            id: 0,
            class_id: det.class_id,
            label: det.label.clone(),
            filter: BoxFilter::new(to_measure(&det.bbox)),
            hits: 0,
            reported: false,
            first_frame: frame,
            first_t: t,
            last_frame: frame,
            last_seen: t,
            last_update_event: t,
            best_score: 0.0,
            best_box: det.bbox,
            tracked: true,
        });
        let ti = self.tracks.len() - 1;
        self.hit(ti, t, frame, det);
    }

    /// Ends the tracks unseen for `lost_ttl_s`; a track never reported just goes.
    fn expire(&mut self, t: f64) {
        let ttl = self.s.lost_ttl_s;
        let (gone, kept): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|tr| t - tr.last_seen > ttl || (!tr.reported && !tr.tracked));
        self.tracks = kept;
        for tr in gone {
            self.end(tr);
        }
    }

    fn end(&mut self, tr: Track) {
        if tr.reported {
            self.events.push(TrackEvent::End {
                track_id: tr.id,
                label: tr.label,
                first_frame: tr.first_frame,
                last_frame: tr.last_frame,
                duration_s: tr.last_seen - tr.first_t,
                best_score: tr.best_score,
                best_box: tr.best_box,
            });
            self.removed.push_back(tr.id);
            while self.removed.len() > self.s.max_removed {
                self.removed.pop_front();
            }
        }
    }

    /// Ends every track (the stream ended).
    pub fn finish(&mut self) {
        for tr in std::mem::take(&mut self.tracks) {
            self.end(tr);
        }
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> Vec<TrackEvent> {
        std::mem::take(&mut self.events)
    }

    /// Tracks alive now (reported or not).
    pub fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Ended tracks remembered (at most `max_removed`).
    pub fn removed(&self) -> usize {
        self.removed.len()
    }
}

fn to_measure(b: &BBox) -> [f32; 4] {
    let w = (b.x2 - b.x1).max(1e-3);
    let h = (b.y2 - b.y1).max(1e-3);
    [(b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0, w / h, h]
}

fn to_box(m: [f32; 4]) -> BBox {
    let [cx, cy, a, h] = m;
    let w = a * h;
    BBox {
        x1: cx - w / 2.0,
        y1: cy - h / 2.0,
        x2: cx + w / 2.0,
        y2: cy + h / 2.0,
    }
}

#[cfg(test)]
mod tests;
