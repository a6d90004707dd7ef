//! A still image is a one-frame source: `bus.jpg` (810x1080) shows a bus and four people.

mod common;
use common::*;

#[test]
fn bus_jpg_finds_the_bus_and_people() {
    asset("assets/bus.jpg");
    let out = tempfile::tempdir().unwrap();
    let o = edgesight(&[
        "run",
        "assets/bus.jpg",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "run failed:\n{}", stderr(&o));
    let ev = events(out.path());
    assert_eq!(ev.len(), 1);
    let dets = ev[0]["detections"].as_array().unwrap();
    let bus: Vec<_> = dets.iter().filter(|d| d["label"] == "bus").collect();
    let people: Vec<_> = dets.iter().filter(|d| d["label"] == "person").collect();
    assert_eq!(bus.len(), 1, "{dets:?}");
    assert!(people.len() >= 2, "{dets:?}");
    // The bus fills the middle band of the picture, across its whole width.
    let (x1, y1, x2, y2) = bbox(bus[0]);
    assert!(x1 < 100.0 && x2 > 700.0 && y1 > 150.0 && y1 < 300.0 && y2 > 650.0 && y2 < 850.0);
    // The people stand in front of it, feet near the bottom.
    for p in &people {
        let (x1, _, x2, y2) = bbox(p);
        assert!(x2 - x1 < 250.0 && y2 > 700.0, "{p}");
    }
    assert_eq!(decode_count(&out.path().join("annotated.mp4")).0, 1);
}
