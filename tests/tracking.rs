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
