//! YOLOv8 on a real Ultralytics-layout graph: `yolov8s-random-640-dynbatch.onnx` has YOLOv8s's
//! architecture, input [B, 3, H, W] (640 trained) and output [B, 84, 8400], with random weights. It checks
//! shapes, the decode path and cost, not accuracy. The file lives only on the project's own
//! machines (`../shared/fixtures`): elsewhere these tests are ignored, and the count says so.

mod common;
use common::*;

use std::time::Instant;

use edgesight::engine::EngineConfig;
use edgesight::models::{build_detector, Manifest};
use edgesight::preprocess::Preprocessor;

#[test]
#[ignore = "needs ../shared/fixtures (the project's own machines); make test runs it there"]
fn fixture_shapes_decode_and_cost() {
    let file = yolo_fixture();
    let mut m = Manifest::find("yolov8").unwrap();
    m.file = file;
    let mut engine = edgesight::engine::Engine::load(&m.file, &EngineConfig::default()).unwrap();
    let io = engine.io().clone();
    // Dynamic batch (and, in this export, dynamic size): the manifest's 640x640 applies.
    assert_eq!(&io.inputs[0].shape[..2], &[-1, 3]);
    assert_eq!(io.outputs[0].shape, vec![-1, 84, -1]);
    let detector = build_detector(&m, &io).unwrap();

    let uri = edgesight::ingest::resolve_input(asset("assets/bus.jpg").to_str().unwrap()).unwrap();
    let mut dec = edgesight::ingest::Decoder::open(&uri, "bus".into()).unwrap();
    let frame = loop {
        if let edgesight::ingest::Next::Frame(f) =
            dec.next(std::time::Duration::from_millis(200)).unwrap()
        {
            break f;
        }
    };
    let mut pre = Preprocessor::new(detector.preprocess().clone());
    let (tensor, transform) = pre.run(frame.pixels()).unwrap();
    assert_eq!(tensor.shape(), &[1, 3, 640, 640], "letterboxed to 640");

    let t0 = Instant::now();
    let outputs = engine.run(&tensor).unwrap();
    let first = t0.elapsed();
    assert_eq!(outputs[0].data.shape(), &[1, 84, 8400]);
    let runs = 3;
    let t0 = Instant::now();
    for _ in 0..runs {
        engine.run(&tensor).unwrap();
    }
    eprintln!(
        "yolov8s fixture on CPU: first run {:.0} ms, then {:.0} ms per 640x640 frame",
        first.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3 / runs as f64
    );

    // Random weights give arbitrary boxes, but decoding must keep them sane.
    let dets = detector.decode(&outputs, &transform).unwrap();
    assert!(
        dets.len() <= 300,
        "{} detections over max_detections",
        dets.len()
    );
    for d in &dets {
        assert!(d.score >= 0.25 && d.score <= 1.0);
        assert!(d.bbox.x1 >= 0.0 && d.bbox.x2 <= 810.0 && d.bbox.x1 <= d.bbox.x2);
        assert!(d.bbox.y1 >= 0.0 && d.bbox.y2 <= 1080.0 && d.bbox.y1 <= d.bbox.y2);
    }
}

#[test]
#[ignore = "needs ../shared/fixtures (the project's own machines); make test runs it there"]
fn fixture_through_the_cli() {
    let file = yolo_fixture();
    let out = tempfile::tempdir().unwrap();
    let o = edgesight(&[
        "run",
        "assets/vtest.avi",
        "--model",
        "yolov8",
        "--model-file",
        file.to_str().unwrap(),
        "--max-frames",
        "5",
        "--no-video",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(events(out.path()).len(), 5);
    assert_eq!(summary(out.path())["model"], "yolov8");
}

/// `optimize` on the fixture, the YOLOv8s graph that carries the INT8 speed target: it
/// calibrates on street frames, quantizes every convolution and the SiLUs between them, and its
/// report measures the speed-up (the 2.5x target is read in the report and `bench`, never
/// asserted in a timed test). With random weights there are no boxes to agree on, so fidelity
/// is the outputs' cosine.
#[test]
#[ignore = "needs ../shared/fixtures (the project's own machines); make test runs it there"]
fn fixture_quantizes_through_optimize() {
    let file = yolo_fixture();
    let tmp = tempfile::tempdir().unwrap();
    let copy = |from: &str, to: &str, step: usize| {
        let dir = tmp.path().join(to);
        std::fs::create_dir_all(&dir).unwrap();
        for p in files_in(from).iter().step_by(step) {
            std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
        }
        dir
    };
    let cal = copy("calibration/street", "cal", 8);
    let held = copy("calibration/heldout/street", "held", 40);
    let out = tmp.path().join("art");
    let o = edgesight_env(
        &[
            "optimize",
            file.to_str().unwrap(),
            "--model",
            "yolov8",
            "--calibration",
            cal.to_str().unwrap(),
            "--heldout",
            held.to_str().unwrap(),
            "--runs",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("EDGESIGHT_CACHE", tmp.path().to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let a = artifact(&out);
    assert_eq!(a["calibration"]["images"].as_integer(), Some(5));
    let convs = edgesight::onnx::Model::load(&file)
        .unwrap()
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv")
        .count() as i64;
    let layers = a["quantized_layers"].as_integer().unwrap();
    assert!(layers >= convs, "{layers} quantized, {convs} convolutions");
    let int8 = int8_figures(&a);
    let cos = int8["fidelity"]["mean_cosine"].as_float().unwrap();
    assert!(cos > 0.99, "INT8 output cosine {cos}");
    // The SiLUs run on integers: ONNX Runtime fused their Q/DQ into QLinearSigmoid.
    let ops: Vec<&str> = int8["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["op"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"QLinearSigmoid") && ops.contains(&"QLinearConv"),
        "{ops:?}"
    );
    assert!(!ops.contains(&"Sigmoid"), "a SiLU left in float: {ops:?}");
}
