//! `edgesight run` on the bundled `vtest.avi` (people walking in a street, 768x576, 795 frames)
//! with the real SSD MobileNetV2: one record per frame, people found where they walk, and an
//! annotated MP4 that plays back with every frame.

mod common;
use common::*;

#[test]
fn vtest_people_events_and_annotated_video() {
    asset("assets/vtest.avi");
    let out = tempfile::tempdir().unwrap();
    let o = edgesight(&[
        "run",
        "assets/vtest.avi",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "run failed:\n{}", stderr(&o));

    let s = summary(out.path());
    assert_eq!(s["frames"], 795, "every frame of vtest.avi is decoded");
    assert_eq!(s["expected_frames"], 795);
    assert_eq!(s["interrupted"], false);
    assert!(s["stream_error"].is_null());
    for stage in [
        "decode",
        "preprocess",
        "infer",
        "postprocess",
        "sink",
        "end_to_end",
    ] {
        let p = &s["latency"][stage];
        assert!(
            p["p50_ms"].as_f64().unwrap() <= p["p95_ms"].as_f64().unwrap(),
            "{stage}: {p}"
        );
    }
    assert!(s["latency"]["infer"]["p50_ms"].as_f64().unwrap() > 0.0);

    // One record per decoded frame, in order, with rising timestamps.
    let ev = events(out.path());
    assert_eq!(ev.len(), 795);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["frame"], i as u64);
        assert_eq!(e["stream"], "vtest.avi");
        assert_eq!(
            (e["width"].as_u64(), e["height"].as_u64()),
            (Some(768), Some(576))
        );
    }
    let pts: Vec<u64> = ev.iter().map(|e| e["pts_ns"].as_u64().unwrap()).collect();
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "pts rise");
    assert_eq!(pts[10] - pts[9], 100_000_000, "10 fps");

    // People walk through every part of the clip.
    let mut with_people = 0;
    let mut people = 0;
    let mut upright = 0;
    for e in &ev {
        let mut n = 0;
        for d in e["detections"].as_array().unwrap() {
            let (x1, y1, x2, y2) = bbox(d);
            assert!(
                0.0 <= x1 && x1 < x2 && x2 <= 768.0,
                "box inside the frame: {d}"
            );
            assert!(
                0.0 <= y1 && y1 < y2 && y2 <= 576.0,
                "box inside the frame: {d}"
            );
            let score = d["score"].as_f64().unwrap();
            assert!(
                (0.5..=1.0).contains(&score),
                "score above the threshold: {d}"
            );
            if d["label"] == "person" {
                n += 1;
                upright += (y2 - y1 > x2 - x1) as usize;
            }
        }
        with_people += (n > 0) as usize;
        people += n;
    }
    assert!(with_people >= 755, "people in {with_people} of 795 frames");
    let mean = people as f64 / 795.0;
    assert!((3.0..=8.0).contains(&mean), "{mean:.1} people per frame");
    // Pedestrians are taller than wide: boxes with x and y swapped would fail this.
    assert!(
        upright as f64 >= 0.9 * people as f64,
        "{upright} of {people} person boxes upright"
    );

    // The annotated MP4 is finalized and plays back whole.
    let video = out.path().join("annotated.mp4");
    assert_eq!(decode_count(&video), (795, 768, 576));

    // The boxes are drawn where the events say: a person's box edge is red (255, 56, 56) in
    // the annotated video, and it was not in the source. (Drawn on I420 planes, so a wrong
    // chroma placement or colour matrix shows up here.)
    let n = 200;
    let person = ev[n]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "person" && bbox(d).0 >= 4.0 && bbox(d).3 - bbox(d).1 >= 40.0)
        .expect("a person in frame 200");
    let (x1, y1, _, y2) = bbox(person);
    let redness = |img: &ndarray::Array3<u8>| {
        let (mut sum, mut k) = (0.0, 0.0);
        for y in (y1 as usize + 4)..(y2 as usize - 4) {
            for x in (x1 as usize)..(x1 as usize + 2) {
                sum += img[[y, x, 0]] as f64 - img[[y, x, 1]] as f64;
                k += 1.0;
            }
        }
        sum / k
    };
    let drawn = redness(&rgb_frame(&video, n as u64));
    let source = redness(&rgb_frame(&asset("assets/vtest.avi"), n as u64));
    assert!(
        drawn > 100.0 && drawn > source + 80.0,
        "left edge of {person}: R-G {drawn:.0} annotated, {source:.0} in the source"
    );
}

#[test]
fn pipeline_file_with_environment_overrides() {
    asset("assets/vtest.avi");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let o = edgesight_env(
        &["run", "--pipeline", "pipelines/file.toml"],
        &[
            ("EDGESIGHT__SOURCE__MAX_FRAMES", "40"),
            ("EDGESIGHT__OUTPUT__DIR", dir),
            ("EDGESIGHT__OUTPUT__VIDEO", "false"),
        ],
    );
    assert!(o.status.success(), "run failed:\n{}", stderr(&o));
    let ev = events(out.path());
    assert_eq!(ev.len(), 40);
    assert_eq!(
        ev[0]["stream"], "vtest",
        "stream name from the pipeline file"
    );
    assert!(ev
        .iter()
        .all(|e| !e["detections"].as_array().unwrap().is_empty()));
    assert!(
        !out.path().join("annotated.mp4").exists(),
        "video turned off"
    );
    assert_eq!(summary(out.path())["frames"], 40);
}
