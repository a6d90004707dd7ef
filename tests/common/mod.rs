//! Shared helpers for the integration tests: they drive the real `edgesight` binary on the real
//! sample media and model that `scripts/setup.sh` installs (`make test` runs it first).
#![allow(dead_code)]

pub mod live;
pub mod mqtt;
pub mod optimize;
pub mod yolo_graph;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use edgesight::ingest::{resolve_input, Decoder, Next};
use gstreamer as gst;
use gstreamer::prelude::*;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shape-true YOLOv8s export with random weights, found only on the project's own machines
/// beside the checkout; the one test that needs the real architecture is `#[ignore]`d, and
/// `make test` runs it when it is there. Everything else YOLO runs on [`yolo_graph`].
pub const YOLO_FIXTURE: &str = "../shared/fixtures/yolov8s-random-640-dynbatch.onnx";

pub fn yolo_fixture() -> PathBuf {
    let p = root().join(YOLO_FIXTURE);
    assert!(
        p.is_file(),
        "{} is missing: this test needs the project's fixtures",
        p.display()
    );
    p
}

/// A file that setup provides; a clear message when it is missing.
pub fn asset(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run `bash scripts/setup.sh` (make test does)",
        p.display()
    );
    p
}

/// The files in `rel` (relative to the repository), sorted by name; a clear message when the
/// folder is missing.
pub fn files_in(rel: &str) -> Vec<PathBuf> {
    let dir = root().join(rel);
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/setup.sh`", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    all.sort();
    all
}

/// The `artifact.toml` that `optimize` wrote into `dir`.
pub fn artifact(dir: &Path) -> toml::Value {
    let text = std::fs::read_to_string(dir.join("artifact.toml")).expect("artifact.toml");
    toml::from_str(&text).expect("artifact.toml parses")
}

/// The graph rewrites an artifact names, one line each.
pub fn rewrites(a: &toml::Value) -> Vec<String> {
    a["rewrites"]
        .as_array()
        .expect("rewrites")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

/// An artifact's figures for its int8 model.
pub fn int8_figures(a: &toml::Value) -> toml::Value {
    a["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["precision"].as_str() == Some("int8"))
        .expect("int8 figures")
        .clone()
}

pub fn edgesight(args: &[&str]) -> Output {
    edgesight_env(args, &[])
}

pub fn edgesight_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgesight"));
    cmd.args(args).current_dir(root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("edgesight binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `error: ...` line the CLI prints, after checking there is exactly one and no panic.
pub fn error_line(o: &Output) -> String {
    let err = stderr(o);
    assert!(!err.contains("panicked"), "panic:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got:\n{err}");
    lines[0].to_string()
}

pub fn events(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl exists");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

pub fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json exists");
    serde_json::from_str(&text).expect("summary is JSON")
}

/// Runs a `gst-launch` description (one that writes a test file) until its end of stream.
pub fn launch_to_eos(description: &str, timeout_s: u64) {
    gst::init().unwrap();
    let p = gst::parse::launch(description).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(timeout_s),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    p.set_state(gst::State::Null).unwrap();
}

/// Decodes a video file again through GStreamer: (frames, width, height).
pub fn decode_count(path: &Path) -> (u64, u32, u32) {
    let uri = resolve_input(path.to_str().unwrap()).unwrap();
    let mut dec = Decoder::open(&uri, "check".into()).expect("the file opens as video");
    let size = dec.size();
    loop {
        match dec.next(Duration::from_millis(200)).expect("decodes") {
            Next::Frame(_) | Next::Pending => continue,
            Next::Eos => return (dec.frames(), size.0, size.1),
        }
    }
}

/// Frame `n` of a video, as packed RGB.
pub fn rgb_frame(path: &Path, n: u64) -> ndarray::Array3<u8> {
    let uri = resolve_input(path.to_str().unwrap()).unwrap();
    let mut dec = Decoder::open_as(&uri, "check".into(), edgesight::frame::PixelFormat::Rgb)
        .expect("the file opens as video");
    loop {
        match dec.next(Duration::from_millis(200)).expect("decodes") {
            Next::Frame(f) if f.number == n => return f.rgb().expect("RGB frame").to_owned(),
            Next::Frame(_) | Next::Pending => continue,
            Next::Eos => panic!("{} has no frame {n}", path.display()),
        }
    }
}

/// The first frame of a photo or video, decoded as RGB.
pub fn first_rgb_frame(path: &Path) -> edgesight::frame::Frame {
    let uri = resolve_input(path.to_str().unwrap()).unwrap();
    let mut dec = Decoder::open_as(&uri, "check".into(), edgesight::frame::PixelFormat::Rgb)
        .expect("the file opens");
    loop {
        match dec.next(Duration::from_millis(500)).expect("decodes") {
            Next::Frame(f) => return f,
            Next::Pending => continue,
            Next::Eos => panic!("{} has no frame", path.display()),
        }
    }
}

/// `(x1, y1, x2, y2)` of a detection.
pub fn bbox(d: &serde_json::Value) -> (f64, f64, f64, f64) {
    let b = &d["box"];
    let f = |k: &str| b[k].as_f64().expect("box coordinate");
    (f("x1"), f("y1"), f("x2"), f("y2"))
}
