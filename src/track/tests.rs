//! Synthetic trajectories: known boxes move, cross, hide and vanish.

use super::*;

fn det(class_id: u32, x: f32, y: f32, score: f32) -> Detection {
    Detection {
        class_id,
        label: if class_id == 1 { "person" } else { "car" }.into(),
        score,
        bbox: BBox {
            x1: x,
            y1: y,
            x2: x + 40.0,
            y2: y + 100.0,
        },
        keypoints: vec![],
        track_id: None,
        name: None,
    }
}

/// Runs frames at 10 fps; each frame's detections come from `scene(frame)`. The track IDs seen,
/// per frame, in the order `scene` gave the detections.
fn run(
    tracker: &mut Tracker,
    frames: u64,
    scene: impl Fn(u64) -> Vec<Detection>,
) -> Vec<Vec<Option<u64>>> {
    (0..frames)
        .map(|f| {
            let mut dets = scene(f);
            tracker.update(f as f64 / 10.0, f, &mut dets);
            dets.iter().map(|d| d.track_id).collect()
        })
        .collect()
}

#[test]
fn id_survives_a_short_occlusion() {
    let mut t = Tracker::new(TrackerSettings::default());
    // Walks right at 50 px/s; hidden from frame 20 to 27 (0.8 s).
    let ids = run(&mut t, 50, |f| {
        if (20..28).contains(&f) {
            vec![]
        } else {
            vec![det(1, 100.0 + 5.0 * f as f32, 100.0, 0.9)]
        }
    });
    assert_eq!(ids[10], vec![Some(1)]);
    assert_eq!(ids[40], vec![Some(1)], "a new ID after the occlusion");
}

#[test]
fn crossing_objects_keep_their_own_ids() {
    let mut t = Tracker::new(TrackerSettings::default());
    // A walks right, B walks left, a little lower; they pass each other around frame 20.
    let ids = run(&mut t, 40, |f| {
        let f = f as f32;
        vec![
            det(1, 100.0 + 10.0 * f, 100.0, 0.9),
            det(1, 500.0 - 10.0 * f, 115.0, 0.85),
        ]
    });
    let (a, b) = (ids[5][0], ids[5][1]);
    assert!(a.is_some() && b.is_some() && a != b);
    for (f, frame) in ids.iter().enumerate().skip(5) {
        assert_eq!(frame, &vec![a, b], "frame {f}");
    }
}

#[test]
fn a_track_lost_longer_than_the_ttl_ends_and_its_id_is_not_reused() {
    let s = TrackerSettings::default();
    let mut t = Tracker::new(s.clone());
    let ids = run(&mut t, 60, |f| {
        if !(10..40).contains(&f) {
            vec![det(1, 100.0, 100.0, 0.9)]
        } else {
            vec![] // gone for 3 s, longer than lost_ttl_s
        }
    });
    let events = t.drain_events();
    let ends: Vec<&TrackEvent> = events
        .iter()
        .filter(|e| matches!(e, TrackEvent::End { .. }))
        .collect();
    assert_eq!(ends.len(), 1, "{events:?}");
    if let TrackEvent::End {
        track_id,
        first_frame,
        last_frame,
        duration_s,
        ..
    } = ends[0]
    {
        assert_eq!((*track_id, *first_frame, *last_frame), (1, 0, 9));
        assert!((duration_s - 0.9).abs() < 1e-6);
    }
    assert_eq!(ids[5], vec![Some(1)]);
    assert_eq!(
        ids[50],
        vec![Some(2)],
        "the object came back as a new track"
    );
}

#[test]
fn frames_without_detections_still_age_lost_tracks() {
    let mut t = Tracker::new(TrackerSettings::default());
    run(&mut t, 10, |_| vec![det(1, 100.0, 100.0, 0.9)]);
    t.drain_events();
    // Only empty frames follow.
    for f in 10..40 {
        t.update(f as f64 / 10.0, f, &mut []);
    }
    assert!(t
        .drain_events()
        .iter()
        .any(|e| matches!(e, TrackEvent::End { track_id: 1, .. })));
    assert_eq!(t.live_tracks(), 0);
}

#[test]
fn a_person_track_never_takes_a_car_box() {
    let mut t = Tracker::new(TrackerSettings::default());
    let ids = run(&mut t, 20, |f| {
        let class = if f < 10 { 1 } else { 2 };
        vec![det(class, 100.0 + f as f32, 100.0, 0.9)]
    });
    assert_eq!(ids[9], vec![Some(1)]);
    assert_eq!(ids[19], vec![Some(2)], "the car took the person's track");
}

#[test]
fn low_score_detections_keep_a_track_but_never_start_one() {
    let mut t = Tracker::new(TrackerSettings::default());
    let ids = run(&mut t, 20, |f| {
        let score = if f < 8 { 0.9 } else { 0.3 };
        vec![
            det(1, 100.0 + 2.0 * f as f32, 100.0, score),
            det(2, 600.0, 300.0, 0.3),
        ]
    });
    assert_eq!(ids[19][0], Some(1), "the faint person lost its track");
    assert!(
        ids.iter().all(|f| f[1].is_none()),
        "a faint car started a track"
    );
}

#[test]
fn the_removed_list_stays_bounded_over_a_million_frames() {
    let s = TrackerSettings {
        lost_ttl_s: 0.05,
        max_removed: 64,
        min_hits: 1,
        ..TrackerSettings::default()
    };
    let mut t = Tracker::new(s);
    for f in 0..1_000_000u64 {
        // A new object every 5 frames, each seen for 2 frames, somewhere else each time.
        let mut dets = if f % 5 < 2 {
            vec![det(1, (f / 5 % 50) as f32 * 13.0, 100.0, 0.9)]
        } else {
            vec![]
        };
        t.update(f as f64 / 100.0, f, &mut dets);
        if f % 10_000 == 0 {
            t.drain_events();
        }
    }
    assert!(t.removed() <= 64, "{}", t.removed());
    assert!(t.live_tracks() <= 2, "{}", t.live_tracks());
}

#[test]
fn two_streams_never_share_an_id_space() {
    let mut a = Tracker::new(TrackerSettings::default());
    let mut b = Tracker::new(TrackerSettings::default());
    let ia = run(&mut a, 5, |_| vec![det(1, 10.0, 10.0, 0.9)]);
    let ib = run(&mut b, 5, |_| {
        vec![det(1, 300.0, 10.0, 0.9), det(2, 10.0, 300.0, 0.9)]
    });
    assert_eq!(ia[4], vec![Some(1)]);
    assert_eq!(ib[4], vec![Some(1), Some(2)]);
}

#[test]
fn new_comes_after_min_hits_and_updates_are_spaced() {
    let mut t = Tracker::new(TrackerSettings::default());
    let ids = run(&mut t, 31, |f| vec![det(1, 100.0 + f as f32, 100.0, 0.9)]);
    assert_eq!(ids[1], vec![None], "reported before min_hits");
    assert_eq!(ids[2], vec![Some(1)]);
    let ev = t.drain_events();
    assert!(matches!(ev[0], TrackEvent::New { frame: 2, .. }), "{ev:?}");
    let updates = ev
        .iter()
        .filter(|e| matches!(e, TrackEvent::Update { .. }))
        .count();
    assert_eq!(updates, 2, "one update a second over 2.8 s: {ev:?}");
}

#[test]
fn out_of_range_settings_name_the_field() {
    for (s, field) in [
        (
            TrackerSettings {
                high_score: 1.5,
                ..Default::default()
            },
            "high_score",
        ),
        (
            TrackerSettings {
                min_hits: 0,
                ..Default::default()
            },
            "min_hits",
        ),
        (
            TrackerSettings {
                lost_ttl_s: -1.0,
                ..Default::default()
            },
            "lost_ttl_s",
        ),
        (
            TrackerSettings {
                low_score: 0.9,
                ..Default::default()
            },
            "low_score",
        ),
    ] {
        let e = s.check().unwrap_err();
        assert!(e.contains(field), "{e}");
    }
    assert!(TrackerSettings::default().check().is_ok());
}

/// A walker hidden for half a second who slows down behind the obstacle: the prediction runs on
/// ahead of where they reappear, so plain IoU loses them; the buffered match finds them again.
#[test]
fn a_hidden_walker_who_slowed_is_found_again_with_the_buffer() {
    let scene = |f: u64| -> Vec<Detection> {
        match f {
            0..10 => vec![det(1, 100.0 + 12.0 * f as f32, 50.0, 0.9)],
            10..15 => vec![],
            _ => vec![det(1, 208.0 + 7.0 * (f - 9) as f32, 50.0, 0.9)],
        }
    };
    let last = |s: TrackerSettings| {
        let mut t = Tracker::new(s);
        run(&mut t, 25, scene)[24][0]
    };
    assert_eq!(last(TrackerSettings::default()), Some(1));
    let plain = TrackerSettings {
        lost_buffer: 0.0,
        ..TrackerSettings::default()
    };
    assert_eq!(
        last(plain),
        Some(2),
        "without the buffer the walker gets a new ID"
    );
}
