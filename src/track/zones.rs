//! Zones and counting lines over tracked objects.
//!
//! An object is where the bottom centre of its box is (its feet, as Frigate counts): it is in a
//! polygon zone when that point is, after `inertia` frames in a row agree, so a box that
//! flickers on the border does not enter and leave every frame. A directed line `from → to`
//! counts a track `in` when its bottom-centre path crosses from the line's right to its left
//! (seen along `from → to`), `out` the other way; each track counts at most once per direction,
//! however it jitters on the line. Coordinates are source pixels, or fractions of the frame
//! when every one lies in 0..=1.
//!
//! ```
//! use edgesight::track::zones::{Counter, LineSpec, ZoneSpec};
//! let door = LineSpec { name: "door".into(), from: [0.5, 0.0], to: [0.5, 1.0], labels: vec![] };
//! let mut c = Counter::new(vec![], vec![door]).unwrap();
//! c.resolve(100, 100).unwrap();
//! // Track 7 walks from left to right across x = 50.
//! for (f, x) in [(0, 40.0), (1, 48.0), (2, 53.0), (3, 60.0)] {
//!     c.observe(f as f64 * 0.1, f, &[(7, "person".into(), [x, 90.0])]);
//! }
//! let ev = c.drain_events();
//! assert_eq!(ev.len(), 1);
//! // Along from → to (downwards), the walker went from the line's right to its left.
//! assert_eq!(c.line_counts("door").unwrap().get("in").and_then(|m| m.get("person")), Some(&1));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// `[[streams.zones]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub name: String,
    /// The polygon's corners, in order.
    pub points: Vec<[f32; 2]>,
    /// Classes counted; empty: every class.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Frames in a row before an object counts as in (or out).
    #[serde(default = "default_inertia")]
    pub inertia: u32,
}

/// `[[streams.lines]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    pub name: String,
    pub from: [f32; 2],
    pub to: [f32; 2],
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_inertia() -> u32 {
    3
}

/// A zone or line event, for `tracks.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CountEvent {
    ZoneEnter {
        zone: String,
        track_id: u64,
        label: String,
        frame: u64,
    },
    ZoneLeave {
        zone: String,
        track_id: u64,
        label: String,
        frame: u64,
        dwell_s: f64,
    },
    LineCross {
        line: String,
        track_id: u64,
        label: String,
        frame: u64,
        direction: &'static str,
    },
}

type P = [f32; 2];

fn is_fraction(points: &[P]) -> bool {
    points
        .iter()
        .all(|p| (0.0..=1.0).contains(&p[0]) && (0.0..=1.0).contains(&p[1]))
}

fn cross(o: P, a: P, b: P) -> f32 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Whether segments `p1 p2` and `q1 q2` cross at a point inside both.
fn segments_cross(p1: P, p2: P, q1: P, q2: P) -> bool {
    let d1 = cross(q1, q2, p1);
    let d2 = cross(q1, q2, p2);
    let d3 = cross(p1, p2, q1);
    let d4 = cross(p1, p2, q2);
    ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
}

fn inside(poly: &[P], p: P) -> bool {
    let mut odd = false;
    let n = poly.len();
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + n - 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                odd = !odd;
            }
        }
    }
    odd
}

impl ZoneSpec {
    /// The zone's shape is usable: 3 corners or more, edges that do not cross, coordinates
    /// that are fractions or non-negative pixels.
    pub fn check(&self) -> Result<(), String> {
        let at = |r: String| format!("zone {}: {r}", self.name);
        if self.points.len() < 3 {
            return Err(at(format!(
                "a polygon needs 3 points or more, got {}",
                self.points.len()
            )));
        }
        if self
            .points
            .iter()
            .flatten()
            .any(|v| !v.is_finite() || *v < 0.0)
        {
            return Err(at("coordinates must be non-negative numbers".into()));
        }
        let n = self.points.len();
        for i in 0..n {
            for j in i + 1..n {
                let adjacent = j == i + 1 || (i == 0 && j == n - 1);
                let (a, b) = (self.points[i], self.points[(i + 1) % n]);
                let (c, d) = (self.points[j], self.points[(j + 1) % n]);
                if !adjacent && segments_cross(a, b, c, d) {
                    return Err(at(format!(
                        "the polygon crosses itself (edges {i} and {j})"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl LineSpec {
    pub fn check(&self) -> Result<(), String> {
        let at = |r: &str| format!("line {}: {r}", self.name);
        if [self.from, self.to]
            .iter()
            .flatten()
            .any(|v| !v.is_finite() || *v < 0.0)
        {
            return Err(at("coordinates must be non-negative numbers"));
        }
        if self.from == self.to {
            return Err(at("from and to are the same point: a line needs a length"));
        }
        Ok(())
    }
}

/// One object seen in a frame: (track ID, label, bottom centre in source pixels).
pub type Seen = (u64, String, P);

struct Zone {
    spec: ZoneSpec,
    poly: Vec<P>,
    /// Per track: (inside, frames in a row the other way, entered at, label).
    state: HashMap<u64, (bool, u32, f64, String)>,
    entered: BTreeMap<String, u64>,
    left: BTreeMap<String, u64>,
}

struct Line {
    spec: LineSpec,
    a: P,
    b: P,
    last: HashMap<u64, P>,
    counted: HashSet<(u64, bool)>,
    counts: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

/// One stream's zones and lines.
pub struct Counter {
    zones: Vec<Zone>,
    lines: Vec<Line>,
    events: Vec<CountEvent>,
}

impl Counter {
    pub fn new(zones: Vec<ZoneSpec>, lines: Vec<LineSpec>) -> Result<Self, String> {
        for z in &zones {
            z.check()?;
        }
        for l in &lines {
            l.check()?;
        }
        Ok(Self {
            zones: zones
                .into_iter()
                .map(|spec| Zone {
                    poly: spec.points.clone(),
                    spec,
                    state: HashMap::new(),
                    entered: BTreeMap::new(),
                    left: BTreeMap::new(),
                })
                .collect(),
            lines: lines
                .into_iter()
                .map(|spec| Line {
                    a: spec.from,
                    b: spec.to,
                    spec,
                    last: HashMap::new(),
                    counted: HashSet::new(),
                    counts: BTreeMap::new(),
                })
                .collect(),
            events: Vec::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.lines.is_empty()
    }

    /// Turns fractions into pixels of a `width` x `height` frame, and checks that pixel
    /// coordinates lie inside it.
    pub fn resolve(&mut self, width: u32, height: u32) -> Result<(), String> {
        let (w, h) = (width as f32, height as f32);
        let fit = |what: String, pts: &mut [P]| {
            if is_fraction(pts) {
                for p in pts.iter_mut() {
                    *p = [p[0] * w, p[1] * h];
                }
                Ok(())
            } else if let Some(p) = pts.iter().find(|p| p[0] > w || p[1] > h) {
                Err(format!(
                    "{what}: point {p:?} lies outside the {width}x{height} frame"
                ))
            } else {
                Ok(())
            }
        };
        for z in &mut self.zones {
            let mut pts = z.spec.points.clone();
            fit(format!("zone {}", z.spec.name), &mut pts)?;
            z.poly = pts;
        }
        for l in &mut self.lines {
            let mut pts = [l.spec.from, l.spec.to];
            fit(format!("line {}", l.spec.name), &mut pts)?;
            (l.a, l.b) = (pts[0], pts[1]);
        }
        Ok(())
    }

    /// The tracked objects of one frame at time `t` (seconds).
    pub fn observe(&mut self, t: f64, frame: u64, seen: &[Seen]) {
        for z in &mut self.zones {
            z.observe(t, frame, seen, &mut self.events);
        }
        for l in &mut self.lines {
            l.observe(frame, seen, &mut self.events);
        }
    }

    /// A track ended: it leaves every zone it was in, and its state goes.
    pub fn ended(&mut self, t: f64, frame: u64, track_id: u64) {
        for z in &mut self.zones {
            if let Some((true, _, since, label)) = z.state.remove(&track_id) {
                *z.left.entry(label.clone()).or_default() += 1;
                self.events.push(CountEvent::ZoneLeave {
                    zone: z.spec.name.clone(),
                    track_id,
                    label,
                    frame,
                    dwell_s: (t - since).max(0.0),
                });
            }
        }
        for l in &mut self.lines {
            l.last.remove(&track_id);
            l.counted.retain(|(id, _)| *id != track_id);
        }
    }

    pub fn drain_events(&mut self) -> Vec<CountEvent> {
        std::mem::take(&mut self.events)
    }

    /// Objects in each zone now, by label: `zone -> label -> count`.
    pub fn occupancy(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.zones
            .iter()
            .map(|z| {
                let mut by: BTreeMap<String, u64> = BTreeMap::new();
                for (inside, _, _, label) in z.state.values() {
                    if *inside {
                        *by.entry(label.clone()).or_default() += 1;
                    }
                }
                (z.spec.name.clone(), by)
            })
            .collect()
    }

    /// `direction -> label -> crossings` of a line.
    pub fn line_counts(
        &self,
        name: &str,
    ) -> Option<&BTreeMap<&'static str, BTreeMap<String, u64>>> {
        self.lines
            .iter()
            .find(|l| l.spec.name == name)
            .map(|l| &l.counts)
    }

    /// Each zone and line in pixels, with its live counts as a caption: `(points, closed,
    /// caption)`. Zones show who is inside now; lines their crossings so far.
    pub fn marks(&self) -> Vec<(Vec<P>, bool, String)> {
        let by_label = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(l, n)| format!("{n} {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let occupancy = self.occupancy();
        let mut out = Vec::new();
        for z in &self.zones {
            let now = occupancy
                .get(&z.spec.name)
                .map(by_label)
                .unwrap_or_default();
            let now = if now.is_empty() { "empty".into() } else { now };
            out.push((z.poly.clone(), true, format!("{}: {now}", z.spec.name)));
        }
        for l in &self.lines {
            let total = |d: &str| l.counts.get(d).map_or(0, |m| m.values().sum::<u64>());
            let caption = format!("{}: in {} out {}", l.spec.name, total("in"), total("out"));
            out.push((vec![l.a, l.b], false, caption));
        }
        out
    }

    /// Totals for the summary: zones' entries and exits, lines' crossings, by label.
    pub fn totals(&self) -> serde_json::Value {
        let zones: BTreeMap<&str, serde_json::Value> = self
            .zones
            .iter()
            .map(|z| {
                (
                    z.spec.name.as_str(),
                    serde_json::json!({"entered": z.entered, "left": z.left}),
                )
            })
            .collect();
        let lines: BTreeMap<&str, serde_json::Value> = self
            .lines
            .iter()
            .map(|l| (l.spec.name.as_str(), serde_json::json!(l.counts)))
            .collect();
        serde_json::json!({"zones": zones, "lines": lines})
    }
}

fn counted(labels: &[String], label: &str) -> bool {
    labels.is_empty() || labels.iter().any(|l| l == label)
}

impl Zone {
    fn observe(&mut self, t: f64, frame: u64, seen: &[Seen], events: &mut Vec<CountEvent>) {
        for (id, label, p) in seen {
            if !counted(&self.spec.labels, label) {
                continue;
            }
            let now_in = inside(&self.poly, *p);
            let st = self
                .state
                .entry(*id)
                .or_insert((false, 0, t, label.clone()));
            if now_in == st.0 {
                st.1 = 0;
                continue;
            }
            st.1 += 1;
            if st.1 < self.spec.inertia.max(1) {
                continue;
            }
            *st = (now_in, 0, if now_in { t } else { st.2 }, label.clone());
            let zone = self.spec.name.clone();
            if now_in {
                *self.entered.entry(label.clone()).or_default() += 1;
                events.push(CountEvent::ZoneEnter {
                    zone,
                    track_id: *id,
                    label: label.clone(),
                    frame,
                });
            } else {
                *self.left.entry(label.clone()).or_default() += 1;
                events.push(CountEvent::ZoneLeave {
                    zone,
                    track_id: *id,
                    label: label.clone(),
                    frame,
                    dwell_s: (t - st.2).max(0.0),
                });
            }
        }
    }
}

impl Line {
    fn observe(&mut self, frame: u64, seen: &[Seen], events: &mut Vec<CountEvent>) {
        for (id, label, p) in seen {
            if !counted(&self.spec.labels, label) {
                continue;
            }
            let Some(prev) = self.last.insert(*id, *p) else {
                continue;
            };
            if !segments_cross(prev, *p, self.a, self.b) {
                continue;
            }
            // Moving to the left of a → b (image coordinates: y down) is `in`.
            let to_left = cross(self.a, self.b, *p) < 0.0;
            if !self.counted.insert((*id, to_left)) {
                continue;
            }
            let direction = if to_left { "in" } else { "out" };
            *self
                .counts
                .entry(direction)
                .or_default()
                .entry(label.clone())
                .or_default() += 1;
            events.push(CountEvent::LineCross {
                line: self.spec.name.clone(),
                track_id: *id,
                label: label.clone(),
                frame,
                direction,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(points: Vec<P>) -> ZoneSpec {
        ZoneSpec {
            name: "bay".into(),
            points,
            labels: vec![],
            inertia: 2,
        }
    }

    #[test]
    fn bad_shapes_are_refused_with_their_name() {
        let e = zone(vec![[0.0, 0.0], [1.0, 1.0]]).check().unwrap_err();
        assert!(e.contains("zone bay") && e.contains("3 points"), "{e}");
        // A bow tie: edges 0 and 2 cross.
        let e = zone(vec![[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]])
            .check()
            .unwrap_err();
        assert!(e.contains("crosses itself"), "{e}");
        let l = LineSpec {
            name: "door".into(),
            from: [5.0, 5.0],
            to: [5.0, 5.0],
            labels: vec![],
        };
        assert!(l.check().unwrap_err().contains("line door"));
        let mut c = Counter::new(
            vec![zone(vec![[0.0, 0.0], [900.0, 0.0], [0.0, 10.0]])],
            vec![],
        )
        .unwrap();
        let e = c.resolve(640, 480).unwrap_err();
        assert!(e.contains("outside the 640x480 frame"), "{e}");
    }

    #[test]
    fn enter_and_leave_pair_up_with_a_positive_dwell_and_inertia_absorbs_flicker() {
        let mut c = Counter::new(
            vec![zone(vec![[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]])],
            vec![],
        )
        .unwrap();
        c.resolve(100, 100).unwrap();
        // In from frame 3, one flickering frame out at 6, out for good from 10.
        let xs = [
            10.0, 20.0, 40.0, 60.0, 70.0, 70.0, 40.0, 70.0, 70.0, 70.0, 20.0, 10.0, 10.0,
        ];
        for (f, x) in xs.iter().enumerate() {
            c.observe(f as f64 * 0.1, f as u64, &[(1, "car".into(), [*x, 80.0])]);
        }
        let ev = c.drain_events();
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(
            matches!(&ev[0], CountEvent::ZoneEnter { frame: 4, .. }),
            "{ev:?}"
        );
        match &ev[1] {
            CountEvent::ZoneLeave {
                dwell_s, frame: 11, ..
            } => assert!(*dwell_s > 0.5),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.occupancy()["bay"].get("car"), None);
    }

    #[test]
    fn a_track_that_jitters_on_the_line_counts_once_per_direction() {
        let door = LineSpec {
            name: "door".into(),
            from: [50.0, 0.0],
            to: [50.0, 100.0],
            labels: vec!["person".into()],
        };
        let mut c = Counter::new(vec![], vec![door]).unwrap();
        c.resolve(100, 100).unwrap();
        let xs = [40.0, 49.0, 51.0, 49.0, 51.0, 49.0, 60.0];
        for (f, x) in xs.iter().enumerate() {
            c.observe(
                0.0,
                f as u64,
                &[
                    (3, "person".into(), [*x, 50.0]),
                    (4, "car".into(), [*x, 50.0]),
                ],
            );
        }
        let counts = c.line_counts("door").unwrap();
        assert_eq!(counts["out"]["person"], 1);
        assert_eq!(counts["in"]["person"], 1);
        assert!(
            !counts["out"].contains_key("car"),
            "cars are not counted on this line"
        );
    }

    #[test]
    fn an_ended_track_leaves_its_zone() {
        let mut c = Counter::new(
            vec![zone(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])],
            vec![],
        )
        .unwrap();
        c.resolve(100, 100).unwrap();
        for f in 0..5 {
            c.observe(f as f64, f, &[(9, "person".into(), [50.0, 50.0])]);
        }
        assert_eq!(c.occupancy()["bay"]["person"], 1);
        c.ended(6.0, 6, 9);
        let ev = c.drain_events();
        assert!(
            matches!(ev.last(), Some(CountEvent::ZoneLeave { track_id: 9, .. })),
            "{ev:?}"
        );
        assert!(c.occupancy()["bay"].is_empty());
    }
}
