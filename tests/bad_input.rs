//! Every kind of bad input gets one clear error line naming the file or field, a non-zero exit
//! and no panic; a truncated video still yields the frames before the damage.

mod common;
use common::*;

use std::path::Path;

const SSD_ONNX: &str = "models/cache/ssd_mobilenet_v2_coco_quant_postprocess.onnx";

fn run_out(args: &[&str], out: &Path) -> std::process::Output {
    let mut a = args.to_vec();
    a.extend(["--out", out.to_str().unwrap()]);
    edgesight(&a)
}

#[test]
fn missing_file() {
    let out = tempfile::tempdir().unwrap();
    let o = run_out(&["run", "assets/no-such-video.mp4"], out.path());
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("assets/no-such-video.mp4") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn file_that_is_not_video() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.mp4");
    std::fs::write(&notes, "these are meeting notes, not a video\n".repeat(50)).unwrap();
    let o = run_out(&["run", notes.to_str().unwrap()], &dir.path().join("out"));
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("notes.mp4") && e.contains("cannot be opened as video"),
        "{e}"
    );
}

#[test]
fn truncated_video_keeps_the_frames_before_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(asset("assets/vtest.avi")).unwrap();
    let cut = dir.path().join("cut.avi");
    std::fs::write(&cut, &whole[..whole.len() * 4 / 10]).unwrap();
    let out = dir.path().join("out");
    let o = run_out(&["run", cut.to_str().unwrap()], &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = error_line(&o);
    assert!(e.contains("cut.avi") && e.contains("ends early"), "{e}");

    let s = summary(&out);
    let frames = s["frames"].as_u64().unwrap();
    // 40% of the bytes hold about 40% of the 795 frames.
    assert!(
        (250..=350).contains(&frames),
        "{frames} frames before the damage"
    );
    assert!(s["stream_error"].as_str().unwrap().contains("795"));
    let ev = events(&out);
    assert_eq!(
        ev.len() as u64,
        frames,
        "every decoded frame has its record"
    );
    assert!(ev
        .iter()
        .any(|e| !e["detections"].as_array().unwrap().is_empty()));
    assert_eq!(decode_count(&out.join("annotated.mp4")).0, frames);
}

#[test]
fn model_file_missing() {
    let out = tempfile::tempdir().unwrap();
    let o = run_out(
        &[
            "run",
            "assets/bus.jpg",
            "--model-file",
            "models/nowhere.onnx",
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("models/nowhere.onnx") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn model_file_not_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("weights.onnx");
    std::fs::write(&fake, b"\x89PNG\r\n\x1a\n not a protobuf at all").unwrap();
    let o = run_out(
        &[
            "run",
            "assets/bus.jpg",
            "--model-file",
            fake.to_str().unwrap(),
        ],
        &dir.path().join("out"),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("weights.onnx") && e.contains("not a valid ONNX model"),
        "{e}"
    );
}

#[test]
fn model_outputs_that_do_not_fit_the_family() {
    asset(SSD_ONNX);
    let out = tempfile::tempdir().unwrap();
    // The SSD graph handed to the YOLOv8 decoder.
    let o = run_out(
        &[
            "run",
            "assets/bus.jpg",
            "--model",
            "yolov8",
            "--model-file",
            SSD_ONNX,
        ],
        out.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(e.contains(SSD_ONNX) && e.contains("YOLOv8 expects"), "{e}");
}

/// A graph in YOLOv8's layout (built here, see `common::yolo_graph`) run with the default
/// model's SSD decoder.
#[test]
fn yolo_graph_given_to_the_ssd_family() {
    let dir = tempfile::tempdir().unwrap();
    let yolo = common::yolo_graph::save(&dir.path().join("yolo-shaped.onnx"));
    let o = run_out(
        &[
            "run",
            "assets/bus.jpg",
            "--model-file",
            yolo.to_str().unwrap(),
        ],
        &dir.path().join("out"),
    );
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("yolo-shaped.onnx") && e.contains("do not fit the ssd family"),
        "{e}"
    );
}

#[test]
fn malformed_pipeline_toml() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.toml");
    std::fs::write(
        &p,
        "[source]\nuri = \"assets/vtest.avi\"\n[engine\nthreads = 2\n",
    )
    .unwrap();
    let o = edgesight(&["run", "--pipeline", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(e.contains("broken.toml") && e.contains("line 3"), "{e}");
}

#[test]
fn unknown_field_in_pipeline_toml() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("typo.toml");
    std::fs::write(
        &p,
        "[source]\nuri = \"assets/vtest.avi\"\n[engine]\nthreadz = 2\n",
    )
    .unwrap();
    let o = edgesight(&["run", "--pipeline", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("typo.toml") && e.contains("`threadz`") && e.contains("engine"),
        "{e}"
    );
}

#[test]
fn pipeline_file_missing() {
    let o = edgesight(&["run", "--pipeline", "pipelines/nope.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(
        e.contains("pipelines/nope.toml") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn unknown_model_name() {
    let o = edgesight(&["run", "assets/bus.jpg", "--model", "resnet9000"]);
    assert_eq!(o.status.code(), Some(1));
    let e = error_line(&o);
    assert!(e.contains("resnet9000"), "{e}");
}
