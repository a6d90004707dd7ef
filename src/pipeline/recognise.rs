//! The recognition stage of one stream, between tracking and the sinks: each face track's face
//! is aligned and embedded when [`Recogniser`] says so, matched against the gallery, and the
//! track named by a vote. With `face_detector` set, faces are searched inside person boxes and
//! the person's track is named.
//!
//! The gallery is polled about once a second ([`Gallery::version`], one small query) and its
//! matcher swapped whole when it changed, so an enrollment made while the stream runs counts
//! from the next frame on, and a frame is never matched against half a gallery.

use std::time::{Duration, Instant};

use crate::detection::Detection;
use crate::engine::EngineConfig;
use crate::faces::align::Landmarks;
use crate::faces::gallery::{Gallery, Matcher};
use crate::faces::recognise::{Identified, Recogniser};
use crate::faces::{Face, FaceDetector, FaceEmbedder, FacesSettings};
use crate::frame::Frame;
use crate::models::Manifest;

use super::shared::PipelineError;

/// How often the gallery's version is checked.
const GALLERY_POLL: Duration = Duration::from_secs(1);
/// The part of a person box a face is looked for in: its top, where the head is.
const HEAD_FRACTION: f32 = 0.6;

pub(crate) struct Recognition {
    stream: String,
    settings: FacesSettings,
    embedder: FaceEmbedder,
    detector: Option<FaceDetector>,
    gallery: Gallery,
    matcher: Matcher,
    version: u64,
    polled: Instant,
    recogniser: Recogniser,
}

impl Recognition {
    /// Loads the models and opens the gallery (an empty one is created if the file does not
    /// exist, so that people can be enrolled while the stream runs).
    pub fn open(s: &FacesSettings, stream: &str) -> Result<Self, PipelineError> {
        let err = |reason: String| PipelineError::Stream {
            stream: stream.to_string(),
            reason: format!("[faces] {reason}"),
        };
        let one_thread = EngineConfig {
            threads: 1,
            ..EngineConfig::default()
        };
        let (manifest, cfg) = match &s.model_dir {
            Some(dir) => {
                let art = crate::optimize::artifact::Artifact::load(dir)
                    .map_err(|e| err(e.to_string()))?;
                let cfg = art.engine_config(dir, &one_thread);
                (art.model, cfg)
            }
            None => (
                Manifest::find(&s.embedder).map_err(|e| err(e.to_string()))?,
                one_thread.clone(),
            ),
        };
        let embedder = FaceEmbedder::load(&manifest, &cfg).map_err(|e| err(e.to_string()))?;
        let detector = match &s.face_detector {
            Some(name) => {
                let m = Manifest::find(name).map_err(|e| err(e.to_string()))?;
                Some(FaceDetector::load(&m, &one_thread).map_err(|e| err(e.to_string()))?)
            }
            None => None,
        };
        let gallery = Gallery::open(&s.gallery, embedder.id()).map_err(|e| err(e.to_string()))?;
        let matcher = gallery.matcher().map_err(|e| err(e.to_string()))?;
        let version = gallery.version().map_err(|e| err(e.to_string()))?;
        Ok(Self {
            stream: stream.to_string(),
            settings: s.clone(),
            embedder,
            detector,
            gallery,
            matcher,
            version,
            polled: Instant::now(),
            recogniser: Recogniser::new(s.clone()),
        })
    }

    /// Names the tracked detections of `frame` (seen at `t` seconds) whose tracks have a name,
    /// and returns the tracks named or renamed now.
    pub fn apply(&mut self, t: f64, frame: &Frame, dets: &mut [Detection]) -> Vec<Identified> {
        self.poll_gallery();
        let faces = match &mut self.detector {
            Some(d) => faces_in_persons(d, &mut self.recogniser, t, frame, dets),
            None => Ok(faces_of_tracks(&mut self.recogniser, t, frame, dets)),
        };
        let mut faces = faces.unwrap_or_else(|e| {
            tracing::warn!(stream = %self.stream, error = %e, "face detection failed");
            Vec::new()
        });
        faces.retain(|(id, f)| {
            if let Some(why) = f.quality.refusal(&self.settings.gates()) {
                tracing::debug!(stream = %self.stream, track = id, "face skipped: {why}");
            }
            self.recogniser.wants(*id, t, &f.quality)
        });
        let mut named = Vec::new();
        if !faces.is_empty() {
            let (ids, mut only): (Vec<u64>, Vec<Face>) = faces.into_iter().unzip();
            match self.embedder.embed_faces(&mut only) {
                Ok(()) => {
                    for (id, f) in ids.iter().zip(&only) {
                        let who = self.matcher.identify(
                            &f.embedding,
                            self.settings.threshold,
                            self.settings.min_margin,
                        );
                        named.extend(self.recogniser.vote(*id, t, &f.quality, &who));
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, "face embedding failed")
                }
            }
        }
        for d in dets.iter_mut() {
            d.name = d
                .track_id
                .and_then(|id| self.recogniser.name_of(id))
                .map(String::from);
        }
        named
    }

    /// A track ended: its votes go.
    pub fn ended(&mut self, id: u64) {
        self.recogniser.ended(id);
    }

    /// (faces offered, faces embedded) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.recogniser.offered, self.recogniser.embedded)
    }

    fn poll_gallery(&mut self) {
        if self.polled.elapsed() < GALLERY_POLL {
            return;
        }
        self.polled = Instant::now();
        let reloaded = self.gallery.version().and_then(|v| {
            if v == self.version {
                return Ok(None);
            }
            Ok(Some((v, self.gallery.matcher()?)))
        });
        match reloaded {
            Ok(Some((v, m))) => {
                tracing::info!(stream = %self.stream, people = m.persons().len(), "gallery reloaded");
                self.version = v;
                self.matcher = m;
                self.recogniser.gallery_changed();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(stream = %self.stream, error = %e, "cannot read the gallery"),
        }
    }
}

/// The tracked faces of a face detector's frame that the recogniser may want, aligned (not yet
/// embedded). Most frames of a track want nothing, so size and frontality, which need no
/// pixels, rule faces out before any crop is made.
fn faces_of_tracks(
    recogniser: &mut Recogniser,
    t: f64,
    frame: &Frame,
    dets: &[Detection],
) -> Vec<(u64, Face)> {
    let tracked: Vec<Detection> = dets
        .iter()
        .filter(|d| {
            let (Some(id), Some(l)) = (d.track_id, Landmarks::from_keypoints(&d.keypoints)) else {
                return false;
            };
            let side = (d.bbox.x2 - d.bbox.x1).min(d.bbox.y2 - d.bbox.y1);
            recogniser.may_want(id, t, side, crate::faces::quality::frontal(&l))
        })
        .cloned()
        .collect();
    FaceEmbedder::align(frame, &tracked)
        .into_iter()
        .filter_map(|f| Some((f.detection.track_id?, f)))
        .collect()
}

/// The largest face in the head of each tracked person that is due for a look.
fn faces_in_persons(
    detector: &mut FaceDetector,
    recogniser: &mut Recogniser,
    t: f64,
    frame: &Frame,
    dets: &[Detection],
) -> Result<Vec<(u64, Face)>, crate::faces::FaceError> {
    let mut out = Vec::new();
    for d in dets.iter().filter(|d| d.label == "person") {
        let Some(id) = d.track_id.filter(|&id| recogniser.due(id, t)) else {
            continue;
        };
        recogniser.looked(id, t);
        let b = d.bbox;
        let head = [b.x1, b.y1, b.x2, b.y1 + (b.y2 - b.y1) * HEAD_FRACTION];
        let found = detector.detect_in(frame, head)?;
        let largest = found
            .into_iter()
            .max_by(|a, b| (a.bbox.x2 - a.bbox.x1).total_cmp(&(b.bbox.x2 - b.bbox.x1)));
        if let Some(face) = largest {
            out.extend(
                FaceEmbedder::align(frame, std::slice::from_ref(&face))
                    .into_iter()
                    .map(|f| (id, f)),
            );
        }
    }
    Ok(out)
}
