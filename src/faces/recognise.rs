//! Recognition per track, not per frame: a track's face is embedded when the track is new, then
//! again only for a clearly better face or every `recheck_s` (to catch an ID switch), up to
//! `max_attempts`. Each attempt votes for a name (or for `unknown`) with the weight of its face's
//! quality, and the track takes the name with the most weight; a tie names nobody.
//!
//! ```
//! use edgesight::faces::quality::Quality;
//! use edgesight::faces::gallery::Identity;
//! use edgesight::faces::recognise::Recogniser;
//! use edgesight::faces::FacesSettings;
//! let mut r = Recogniser::new(FacesSettings::default());
//! let q = Quality { side: 100.0, sharpness: 80.0, frontal: 0.9 };
//! assert!(r.wants(7, 0.0, &q));
//! let ann = Identity { name: Some("ann".into()), best: Some(("ann".into(), 0.7)), second: Some(0.1), margin: 0.6 };
//! let named = r.vote(7, 0.0, &q, &ann).unwrap();
//! assert_eq!((named.track_id, named.name.as_str()), (7, "ann"));
//! assert!(!r.wants(7, 0.1, &q)); // the same face a moment later is not embedded again
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::gallery::Identity;
use super::quality::Quality;
use super::FacesSettings;

/// A track's name changed: the `identified` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identified {
    pub track_id: u64,
    pub name: String,
    /// The best similarity any vote for this name had.
    pub score: f32,
    /// That vote's margin over the second-best person.
    pub margin: f32,
    /// Attempts that voted for this name, of all attempts so far.
    pub votes: u32,
    pub attempts: u32,
}

/// (total weight, votes, best score, that vote's margin) of one name.
type Tally = (f32, u32, f32, f32);

#[derive(Default)]
struct Votes {
    /// Name (None: unknown) → its tally.
    by_name: BTreeMap<Option<String>, Tally>,
    attempts: u32,
    last_at: f64,
    /// When the track was last looked at for a face, found or not.
    last_look: f64,
    best_weight: f32,
    name: Option<String>,
}

impl Votes {
    /// The name with the most weight, if it is a person and leads everyone else.
    fn leader(&self) -> Option<(&String, &Tally)> {
        let mut ranked: Vec<_> = self.by_name.iter().collect();
        ranked.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let (name, v) = ranked.first()?;
        let tie = ranked.get(1).is_some_and(|s| s.1 .0 >= v.0 - 1e-6);
        match (name, tie) {
            (Some(n), false) => Some((n, v)),
            _ => None,
        }
    }
}

/// One stream's recognition state: the votes of each live track.
pub struct Recogniser {
    settings: FacesSettings,
    tracks: HashMap<u64, Votes>,
    /// Faces offered and faces embedded, for the saving against embedding every frame.
    pub offered: u64,
    pub embedded: u64,
}

impl Recogniser {
    pub fn new(settings: FacesSettings) -> Self {
        Self {
            settings,
            tracks: HashMap::new(),
            offered: 0,
            embedded: 0,
        }
    }

    pub fn settings(&self) -> &FacesSettings {
        &self.settings
    }

    /// Whether track `id` is due for another look at `t`: never tried, unnamed and last tried
    /// a while ago, or due for its recheck. For searching faces inside person boxes, where
    /// finding the face is itself the cost.
    pub fn due(&self, id: u64, t: f64) -> bool {
        let Some(v) = self.tracks.get(&id) else {
            return true;
        };
        let wait = if v.name.is_some() {
            self.settings.recheck_s
        } else {
            self.settings.recheck_s / 10.0
        };
        v.attempts < self.settings.max_attempts && t - v.last_look >= wait
    }

    /// Track `id` was looked at for a face at `t` (found or not): [`Self::due`] waits again.
    pub fn looked(&mut self, id: u64, t: f64) {
        self.tracks.entry(id).or_default().last_look = t;
    }

    /// Whether track `id`'s face of quality `q`, seen at `t` seconds, should be embedded now.
    pub fn wants(&mut self, id: u64, t: f64, q: &Quality) -> bool {
        self.offered += 1;
        if q.refusal(&self.settings.gates()).is_some() {
            return false;
        }
        let Some(v) = self.tracks.get(&id) else {
            return true;
        };
        v.attempts < self.settings.max_attempts
            && (q.weight() > v.best_weight * self.settings.better_by
                || t - v.last_at >= self.settings.recheck_s)
    }

    /// Whether a face of track `id` with box side `side` and frontality `frontal` could be
    /// wanted at `t` whatever its sharpness: aligning it (a warp and a Laplacian) is worth
    /// doing only then. A face ruled out here counts as offered, as [`Self::wants`] would.
    pub fn may_want(&mut self, id: u64, t: f64, side: f32, frontal: f32) -> bool {
        let sharpest = Quality {
            side,
            sharpness: f64::INFINITY,
            frontal,
        };
        let gates = self.settings.gates();
        let possible = side >= gates.min_side
            && frontal >= gates.min_frontal
            && self.tracks.get(&id).is_none_or(|v| {
                v.attempts < self.settings.max_attempts
                    && (sharpest.weight() > v.best_weight * self.settings.better_by
                        || t - v.last_at >= self.settings.recheck_s)
            });
        if !possible {
            self.offered += 1;
        }
        possible
    }

    /// Counts one attempt's vote; returns the event when the track's name changes.
    pub fn vote(&mut self, id: u64, t: f64, q: &Quality, who: &Identity) -> Option<Identified> {
        self.embedded += 1;
        let v = self.tracks.entry(id).or_default();
        v.attempts += 1;
        v.last_at = t;
        v.last_look = t;
        v.best_weight = v.best_weight.max(q.weight());
        let (score, margin) = (who.best.as_ref().map_or(0.0, |b| b.1), who.margin);
        let e = v
            .by_name
            .entry(who.name.clone())
            .or_insert((0.0, 0, -1.0, 0.0));
        e.0 += q.weight().max(1e-3);
        e.1 += 1;
        if score > e.2 {
            (e.2, e.3) = (score, margin);
        }
        let leader = v.leader().map(|(n, s)| (n.clone(), *s));
        let name = leader.as_ref().map(|(n, _)| n.clone());
        if name == v.name {
            return None;
        }
        v.name = name;
        let (name, (_, votes, score, margin)) = leader?;
        Some(Identified {
            track_id: id,
            name,
            score,
            margin,
            votes,
            attempts: v.attempts,
        })
    }

    /// The name track `id` has now.
    pub fn name_of(&self, id: u64) -> Option<&str> {
        self.tracks.get(&id).and_then(|v| v.name.as_deref())
    }

    /// The gallery changed: votes for `unknown` were cast against the old one, so they go, and
    /// every track is due for a look at once. A person enrolled while their track runs is
    /// named at its next face.
    pub fn gallery_changed(&mut self) {
        for v in self.tracks.values_mut() {
            v.by_name.remove(&None);
            v.last_at = f64::NEG_INFINITY;
            v.last_look = f64::NEG_INFINITY;
            v.best_weight = 0.0;
            v.attempts = v.attempts.min(self.settings.max_attempts.saturating_sub(1));
        }
    }

    /// The track ended: its votes go.
    pub fn ended(&mut self, id: u64) {
        self.tracks.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(side: f32) -> Quality {
        Quality {
            side,
            sharpness: 100.0,
            frontal: 1.0,
        }
    }

    fn who(name: Option<&str>, score: f32) -> Identity {
        Identity {
            name: name.map(String::from),
            best: Some(("x".into(), score)),
            second: Some(0.0),
            margin: score,
        }
    }

    #[test]
    fn rechecks_only_for_a_better_face_or_after_a_while() {
        let mut r = Recogniser::new(FacesSettings::default());
        assert!(r.wants(1, 0.0, &q(60.0)));
        r.vote(1, 0.0, &q(60.0), &who(Some("ann"), 0.6));
        assert!(!r.wants(1, 0.5, &q(60.0)));
        assert!(r.wants(1, 0.5, &q(100.0)), "a much bigger face");
        assert!(r.wants(1, 3.5, &q(60.0)), "the recheck interval passed");
        assert!(!r.wants(1, 9.0, &q(20.0)), "too small to use at all");
        assert_eq!((r.offered, r.embedded), (5, 1));
    }

    #[test]
    fn the_heavier_name_wins_and_a_tie_names_nobody() {
        let mut r = Recogniser::new(FacesSettings::default());
        let ev = r.vote(1, 0.0, &q(60.0), &who(Some("ann"), 0.6)).unwrap();
        assert_eq!(ev.name, "ann");
        // An equal vote for bob: a tie, so the name goes (no event: nobody is named).
        assert!(r.vote(1, 4.0, &q(60.0), &who(Some("bob"), 0.6)).is_none());
        assert_eq!(r.name_of(1), None);
        let ev = r.vote(1, 8.0, &q(100.0), &who(Some("bob"), 0.7)).unwrap();
        assert_eq!((ev.name.as_str(), ev.votes, ev.attempts), ("bob", 2, 3));
        // Unknown votes outweigh: no name.
        r.vote(1, 12.0, &q(112.0), &who(None, 0.1));
        r.vote(1, 16.0, &q(112.0), &who(None, 0.1));
        assert_eq!(r.name_of(1), None);
    }

    #[test]
    fn a_gallery_change_forgets_unknown_votes_and_looks_again() {
        let mut r = Recogniser::new(FacesSettings::default());
        for i in 0..3 {
            r.vote(1, i as f64 * 4.0, &q(60.0), &who(None, 0.2));
        }
        assert!(!r.wants(1, 8.5, &q(60.0)));
        r.gallery_changed();
        assert!(r.wants(1, 8.5, &q(60.0)), "due at once");
        let ev = r.vote(1, 8.5, &q(60.0), &who(Some("ann"), 0.7)).unwrap();
        assert_eq!(
            ev.name, "ann",
            "one vote names the track: the unknown votes went"
        );
    }

    /// The cheap check never rules out a face that `wants` would take.
    #[test]
    fn may_want_agrees_with_wants_on_what_it_rules_out() {
        let mut r = Recogniser::new(FacesSettings::default());
        r.vote(1, 0.0, &q(60.0), &who(Some("ann"), 0.6));
        for (t, side) in [
            (0.5, 60.0),
            (0.5, 100.0),
            (3.5, 60.0),
            (0.5, 20.0),
            (0.1, 112.0),
        ] {
            let face = q(side);
            let cheap = r.may_want(1, t, side, face.frontal);
            let full = r.wants(1, t, &face);
            assert!(
                cheap || !full,
                "t {t}, side {side}: ruled out a wanted face"
            );
        }
        assert!(
            !r.may_want(1, 0.5, 60.0, 1.0),
            "the same face a moment later"
        );
        assert!(r.may_want(2, 0.0, 60.0, 1.0), "a new track");
    }

    #[test]
    fn attempts_are_capped() {
        let s = FacesSettings {
            max_attempts: 2,
            ..Default::default()
        };
        let mut r = Recogniser::new(s);
        for i in 0..2 {
            r.vote(1, i as f64 * 10.0, &q(60.0), &who(Some("ann"), 0.6));
        }
        assert!(!r.wants(1, 100.0, &q(112.0)));
    }
}
