//! Tracking through the real pipeline: SSD on `vtest.avi`, track IDs in the events and the track
//! lifecycle in `tracks.jsonl`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{asset, edgesight};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tracks_have_one_new_and_one_end_and_ids_match_the_events() {
    let out = tempfile::tempdir().unwrap();
    let vtest = asset("assets/vtest.avi");
    let r = edgesight(&[
        "run",
        vtest.to_str().unwrap(),
        "--max-frames",
        "300",
        "--no-video",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let tracks = lines(&out.path().join("tracks.jsonl"));
    // id -> (first frame, last frame, label) from new and end events.
    let mut new: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    let mut end: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for t in &tracks {
        let id = t["track_id"].as_u64().unwrap();
        match t["event"].as_str().unwrap() {
            "new" => {
                let prev = new.insert(
                    id,
                    (
                        t["frame"].as_u64().unwrap(),
                        t["label"].as_str().unwrap().into(),
                    ),
                );
                assert!(prev.is_none(), "track {id} announced twice");
            }
            "end" => {
                assert!(new.contains_key(&id), "track {id} ended before it began");
                let prev = end.insert(
                    id,
                    (
                        t["first_frame"].as_u64().unwrap(),
                        t["last_frame"].as_u64().unwrap(),
                    ),
                );
                assert!(prev.is_none(), "track {id} ended twice");
                assert!(t["duration_s"].as_f64().unwrap() >= 0.0);
            }
            "update" => assert!(new.contains_key(&id) && !end.contains_key(&id)),
            other => panic!("unknown event {other}"),
        }
    }
    assert!(!new.is_empty());
    assert_eq!(
        new.keys().collect::<Vec<_>>(),
        end.keys().collect::<Vec<_>>(),
        "every track ends with the stream"
    );
    // IDs count from 1 and are never reused.
    assert_eq!(
        new.keys().copied().collect::<Vec<_>>(),
        (1..=new.len() as u64).collect::<Vec<_>>()
    );

    // Every ID in the events belongs to a reported track of the same label, within its life.
    let mut seen_in_frames: BTreeMap<u64, usize> = BTreeMap::new();
    for e in lines(&out.path().join("events.jsonl")) {
        let frame = e["frame"].as_u64().unwrap();
        let mut ids_here = Vec::new();
        for d in e["detections"].as_array().unwrap() {
            if let Some(id) = d["track_id"].as_u64() {
                let (first, last) = end[&id];
                assert!(
                    first <= frame && frame <= last,
                    "track {id} at frame {frame} outside {first}..{last}"
                );
                assert_eq!(d["label"].as_str().unwrap(), new[&id].1);
                assert!(!ids_here.contains(&id), "track {id} twice in frame {frame}");
                ids_here.push(id);
                *seen_in_frames.entry(id).or_default() += 1;
            }
        }
    }
    // Pedestrians cross the scene over many seconds: some keep one ID for a long stretch.
    let longest = seen_in_frames.values().max().copied().unwrap_or(0);
    assert!(
        longest >= 100,
        "no track lasted 100 frames (longest {longest})"
    );
}

#[test]
fn no_track_leaves_no_ids_and_no_tracks_file() {
    let out = tempfile::tempdir().unwrap();
    let r = edgesight(&[
        "run",
        asset("assets/vtest.avi").to_str().unwrap(),
        "--max-frames",
        "20",
        "--no-video",
        "--no-track",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!out.path().join("tracks.jsonl").exists());
    let text = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    assert!(text.contains("person") && !text.contains("track_id"));
}

#[test]
fn tracker_parameters_out_of_range_name_the_stream_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[tracker]\nlost_ttl_s = -1.0\n\n[[streams]]\nname = \"door\"\nuri = \"test://ball\"\n",
    )
    .unwrap();
    let r = edgesight(&["run", "--pipeline", f.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("stream door") && err.contains("lost_ttl_s"),
        "{err}"
    );
}

/// Four pedestrians of `vtest.avi`, boxed by hand (by eye, on the decoded frames 60, 90 and 120,
/// in source pixels): the two walking side by side up the road, the man in grey walking away,
/// and the man in jeans standing near the sign.
/// A hand box: (frame, [x1, y1, x2, y2]).
type HandBox = (u64, [f32; 4]);

const PEOPLE: [(&str, [HandBox; 3]); 4] = [
    (
        "red jacket",
        [
            (60, [466.0, 203.0, 502.0, 293.0]),
            (90, [461.0, 160.0, 491.0, 236.0]),
            (120, [560.0, 127.0, 586.0, 193.0]),
        ],
    ),
    (
        "black coat",
        [
            (60, [503.0, 200.0, 533.0, 285.0]),
            (90, [488.0, 162.0, 519.0, 234.0]),
            (120, [586.0, 137.0, 610.0, 197.0]),
        ],
    ),
    (
        "grey jacket",
        [
            (60, [615.0, 232.0, 652.0, 342.0]),
            (90, [571.0, 172.0, 598.0, 261.0]),
            (120, [650.0, 130.0, 678.0, 205.0]),
        ],
    ),
    (
        "jeans",
        [
            (60, [378.0, 180.0, 401.0, 259.0]),
            (90, [373.0, 178.0, 405.0, 258.0]),
            (120, [375.0, 180.0, 404.0, 262.0]),
        ],
    ),
];

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = iw * ih;
    i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)
}

/// Each labelled person is found and tracked at each labelled frame, the four never share an
/// ID, and the ID is kept from one labelled frame to the next in at least half of the eight
/// steps. 4 of 8 were kept on 2026-12-06 (AVX-512 VNNI CPU; the two walking side by side are
/// sometimes one box, which costs them their IDs); the floor of 3 leaves room for another CPU's
/// rounding of the quantized SSD. Issue 21 goes on from here.
#[test]
fn hand_labelled_pedestrians_keep_their_ids() {
    let out = tempfile::tempdir().unwrap();
    let r = edgesight(&[
        "run",
        asset("assets/vtest.avi").to_str().unwrap(),
        "--max-frames",
        "130",
        "--no-video",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let events = lines(&out.path().join("events.jsonl"));
    let id_at = |frame: u64, hand: [f32; 4]| -> Option<u64> {
        let (best, id) = events[frame as usize]["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["label"] == "person")
            .map(|d| {
                let b = &d["box"];
                let bx = ["x1", "y1", "x2", "y2"].map(|k| b[k].as_f64().unwrap() as f32);
                (iou(hand, bx), d["track_id"].as_u64())
            })
            .fold((0.0, None), |acc, x| if x.0 > acc.0 { x } else { acc });
        assert!(
            best >= 0.3,
            "frame {frame}: nobody detected at {hand:?} (best IoU {best})"
        );
        id
    };
    let mut kept = 0;
    for frame_i in 0..3 {
        let ids: Vec<u64> = PEOPLE
            .iter()
            .map(|(who, boxes)| {
                id_at(boxes[frame_i].0, boxes[frame_i].1)
                    .unwrap_or_else(|| panic!("{who} untracked"))
            })
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "two people share a track: {ids:?}");
    }
    for (_, boxes) in PEOPLE {
        for w in boxes.windows(2) {
            kept += usize::from(id_at(w[0].0, w[0].1) == id_at(w[1].0, w[1].1));
        }
    }
    println!("IDs kept in {kept} of 8 steps");
    assert!(kept >= 3, "IDs kept in {kept} of 8 steps");
}

fn pipeline(dir: &Path, body: &str) -> std::path::PathBuf {
    let f = dir.join("p.toml");
    std::fs::write(&f, body).unwrap();
    f
}

/// The whole clip with a zone over the road and a line down the middle of the frame, run once
/// and shared by the tests that read it.
fn counted_clip() -> &'static Path {
    static OUT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    OUT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let vtest = asset("assets/vtest.avi");
        let f = pipeline(
            dir.path(),
            &format!(
                "[source]\nuri = \"{}\"\nname = \"vtest\"\n\n\
                 [output]\ndir = \"{}\"\nvideo = false\n\n\
                 [[zones]]\nname = \"road\"\npoints = [[0.0, 0.3], [1.0, 0.3], [1.0, 0.65], [0.0, 0.65]]\nlabels = [\"person\"]\n\n\
                 [[lines]]\nname = \"middle\"\nfrom = [0.5, 0.0]\nto = [0.5, 1.0]\nlabels = [\"person\"]\n",
                vtest.display(),
                dir.path().join("out").display()
            ),
        );
        let r = edgesight(&["run", "--pipeline", f.to_str().unwrap()]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        dir
    })
    .path()
}

/// Every entry into the road zone is followed by one exit of the same track (tracks that end
/// inside leave with the stream), dwell times are positive, and the summary agrees.
#[test]
fn zone_entries_and_exits_pair_up() {
    let out = counted_clip().join("out");
    let mut inside: BTreeMap<u64, u64> = BTreeMap::new(); // track -> frame it entered
    let mut entries = 0u64;
    for e in lines(&out.join("tracks.jsonl")) {
        let id = e["track_id"].as_u64().unwrap();
        match e["event"].as_str().unwrap() {
            "zone_enter" => {
                assert_eq!(e["label"], "person");
                assert!(
                    inside.insert(id, e["frame"].as_u64().unwrap()).is_none(),
                    "{id} entered twice"
                );
                entries += 1;
            }
            "zone_leave" => {
                let entered = inside
                    .remove(&id)
                    .unwrap_or_else(|| panic!("{id} left without entering"));
                assert!(e["frame"].as_u64().unwrap() >= entered);
                assert!(e["dwell_s"].as_f64().unwrap() > 0.0, "{e}");
            }
            _ => {}
        }
    }
    assert!(
        inside.is_empty(),
        "tracks still inside at the end: {inside:?}"
    );
    assert!(
        entries >= 5,
        "only {entries} entries: people walk along the road all the time"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        s["counts"]["zones"]["road"]["entered"]["person"].as_u64(),
        Some(entries)
    );
    assert_eq!(
        s["counts"]["zones"]["road"]["left"]["person"].as_u64(),
        Some(entries)
    );
}

/// Crossings of the vertical line at x = 384 in `vtest.avi`, counted by eye, frame by frame,
/// without any detector: (frame where the feet cross, `true` for left to right). Left to right
/// is `in` for a line drawn from the top down. Two of them (612 and 629) are a woman whose feet
/// leave the frame at the bottom edge; see `docs/tracking.md`.
const HAND_CROSSINGS: [(u64, bool); 32] = [
    (21, true),
    (59, false),
    (104, true),
    (158, false),
    (179, false),
    (220, false),
    (254, false),
    (278, false),
    (288, false),
    (311, true),
    (332, true),
    (347, true),
    (350, true),
    (361, false),
    (463, true),
    (488, false),
    (529, false),
    (533, false),
    (564, false),
    (591, true),
    (612, true),
    (629, false),
    (639, false),
    (678, true),
    (689, false),
    (701, true),
    (706, false),
    (745, true),
    (750, false),
    (773, false),
    (783, true),
    (790, true),
];

/// The line's crossings match the hand count: most crossings counted by eye have a tracked
/// crossing in the same direction within half a second, few tracked crossings have none, and
/// each direction's total is within a third of the hand count. Each track counts once per
/// direction, however it jitters on the line.
#[test]
fn the_counting_line_agrees_with_a_hand_count() {
    let out = counted_clip().join("out");
    let mut tracked: Vec<(u64, bool)> = Vec::new();
    let mut once: BTreeMap<(u64, String), u32> = BTreeMap::new();
    for e in lines(&out.join("tracks.jsonl")) {
        if e["event"] == "line_cross" {
            let dir = e["direction"].as_str().unwrap().to_string();
            tracked.push((e["frame"].as_u64().unwrap(), dir == "in"));
            *once
                .entry((e["track_id"].as_u64().unwrap(), dir))
                .or_default() += 1;
        }
    }
    assert!(
        once.values().all(|&n| n == 1),
        "a track counted twice in one direction"
    );
    const WITHIN: u64 = 5; // frames: half a second at 10 fps
    let mut unused = tracked.clone();
    let mut matched = 0;
    for &(frame, ltr) in &HAND_CROSSINGS {
        if let Some(i) = unused
            .iter()
            .position(|&(f, d)| d == ltr && f.abs_diff(frame) <= WITHIN)
        {
            unused.swap_remove(i);
            matched += 1;
        }
    }
    let recall = matched as f64 / HAND_CROSSINGS.len() as f64;
    let precision = matched as f64 / tracked.len().max(1) as f64;
    println!("line: recall {recall:.2}, precision {precision:.2}");
    assert!(
        recall >= 0.7 && precision >= 0.85,
        "{matched} of {} hand crossings found, {} tracked crossings: {tracked:?}",
        HAND_CROSSINGS.len(),
        tracked.len()
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for (dir, ltr) in [("in", true), ("out", false)] {
        let hand = HAND_CROSSINGS.iter().filter(|c| c.1 == ltr).count() as f64;
        let got = s["counts"]["lines"]["middle"][dir]["person"]
            .as_u64()
            .unwrap_or(0) as f64;
        assert_eq!(got as usize, tracked.iter().filter(|c| c.1 == ltr).count());
        assert!(
            (got - hand).abs() <= hand / 3.0,
            "{dir}: {got} crossings against {hand} counted by hand"
        );
    }
}

#[test]
fn bad_zones_and_lines_name_the_stream_and_the_shape() {
    let dir = tempfile::tempdir().unwrap();
    for (shape, want) in [
        ("[[streams.zones]]\nname = \"z\"\npoints = [[0.1, 0.1], [0.5, 0.5]]\n", "zone z: a polygon needs 3 points"),
        ("[[streams.zones]]\nname = \"z\"\npoints = [[0.0, 0.0], [0.5, 0.5], [0.5, 0.0], [0.0, 0.5]]\n", "zone z: the polygon crosses itself"),
        ("[[streams.lines]]\nname = \"l\"\nfrom = [0.2, 0.2]\nto = [0.2, 0.2]\n", "line l: from and to are the same point"),
        ("[[streams.zones]]\nname = \"z\"\npoints = [[0.1, 0.1], [0.5, 0.1], [0.3, 0.5]]\nlabels = [\"unicorn\"]\n", "zone z: the model has no class \"unicorn\""),
        ("[[streams.lines]]\nname = \"l\"\nfrom = [10.0, 10.0]\nto = [5000.0, 10.0]\n", "line l: point [5000.0, 10.0] lies outside the 640x480 frame"),
    ] {
        let f = pipeline(
            dir.path(),
            &format!(
                "[metrics]\nenabled = false\n\n[output]\ndir = \"{}\"\nvideo = false\n\n\
                 [[streams]]\nname = \"door\"\nuri = \"test://ball?width=640&height=480\"\nmax_frames = 30\n{shape}",
                dir.path().join("out").display()
            ),
        );
        let r = edgesight(&["run", "--pipeline", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{want}: {err}");
        assert!(err.contains("door") && err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// People who came into view of `vtest.avi`, counted by eye: the 3 people in the first frame
/// and the 18 entries into the frame after it (19 to 23, depending on two tiny far figures and
/// two look-alikes; see `docs/benchmarks.md`).
const HAND_VISITS: u64 = 21;

/// With CenterNet, the number of person tracks over the whole clip is close to the number of
/// visits a person counts by eye: most walkers keep one ID from entry to exit. (With SSD, the
/// default, IDs fragment about four times as much; `docs/benchmarks.md` says why.)
#[test]
fn centernet_person_tracks_are_close_to_the_visits_counted_by_eye() {
    let out = tempfile::tempdir().unwrap();
    let r = edgesight(&[
        "run",
        asset("assets/vtest.avi").to_str().unwrap(),
        "--model",
        "centernet",
        "--no-video",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    let tracks = s["tracks_by_label"]["person"].as_u64().unwrap();
    println!("{tracks} person tracks, {HAND_VISITS} visits counted by eye");
    assert!(
        (HAND_VISITS * 3 / 4..=HAND_VISITS * 2).contains(&tracks),
        "{tracks} person tracks for {HAND_VISITS} visits"
    );
}
