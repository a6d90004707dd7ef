//! The recent path of each reported track, for the annotated video: its bottom centre over the
//! last few frames, the point that zones and lines count.
//!
//! ```
//! use edgesight::detection::{BBox, Detection};
//! use edgesight::track::trails::Trails;
//! let mut d = Detection {
//!     class_id: 0, label: "person".into(), score: 0.9,
//!     bbox: BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 20.0 },
//!     keypoints: vec![], track_id: Some(7), name: None,
//! };
//! let mut trails = Trails::new(3);
//! for frame in 0..5 {
//!     d.bbox.x1 += 1.0;
//!     d.bbox.x2 += 1.0;
//!     trails.observe(frame, std::slice::from_ref(&d));
//! }
//! let t = trails.current();
//! assert_eq!(t.len(), 1);
//! assert_eq!(t[0].1, vec![[8.0, 20.0], [9.0, 20.0], [10.0, 20.0]]); // the last 3, oldest first
//! ```

use std::collections::{BTreeMap, VecDeque};

use crate::detection::Detection;

/// Frames a trail outlives its track's last sighting, so that a short occlusion keeps it.
const LINGER_FRAMES: u64 = 15;

pub struct Trails {
    len: usize,
    /// Track ID → (class, last frame seen, points).
    paths: BTreeMap<u64, (u32, u64, VecDeque<[f32; 2]>)>,
}

impl Trails {
    /// Trails of at most `len` points.
    pub fn new(len: usize) -> Self {
        Self {
            len: len.max(2),
            paths: BTreeMap::new(),
        }
    }

    /// The tracked detections of frame `frame`; untracked ones are ignored.
    pub fn observe(&mut self, frame: u64, dets: &[Detection]) {
        for d in dets {
            let Some(id) = d.track_id else { continue };
            let p = [(d.bbox.x1 + d.bbox.x2) / 2.0, d.bbox.y2];
            let entry = self
                .paths
                .entry(id)
                .or_insert_with(|| (d.class_id, frame, VecDeque::new()));
            entry.1 = frame;
            if entry.2.len() == self.len {
                entry.2.pop_front();
            }
            entry.2.push_back(p);
        }
        self.paths
            .retain(|_, (_, seen, _)| frame.saturating_sub(*seen) <= LINGER_FRAMES);
    }

    /// (class, points oldest first) of each trail still shown.
    pub fn current(&self) -> Vec<(u32, Vec<[f32; 2]>)> {
        self.paths
            .values()
            .map(|(class, _, pts)| (*class, pts.iter().copied().collect()))
            .collect()
    }
}
