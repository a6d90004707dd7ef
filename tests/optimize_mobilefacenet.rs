//! `edgesight optimize` on MobileFaceNet, a small float face embedder calibrated on face chips
//! and measured on held-out chips of the same people. Each artifact is built once per run of
//! this file, and each test reads one property of it.

mod common;
use common::optimize::*;
use common::*;

use std::path::PathBuf;

use edgesight::onnx::{self, Model};

/// MobileFaceNet with `--keep-accuracy 0.99 --reconstruct`: the search's choices, and the fit
/// that follows them, read by the two tests below. Calibrated on a third of the face chips,
/// across their people: the search and the fit run a session per candidate and per layer on
/// every calibration image, and choose the same way on fewer.
fn mfn_mixed() -> PathBuf {
    asset(MFN);
    let few = shared_folder("few-chips");
    for (_, p) in files_in("calibration/face-chips")
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
    {
        std::fs::copy(p, few.join(p.file_name().unwrap())).unwrap();
    }
    let heldout = root().join("calibration/heldout/face-chips");
    let args = [
        MFN,
        "--keep-accuracy",
        "0.99",
        "--reconstruct",
        "--runs",
        "3",
        "--calibration",
        few.to_str().unwrap(),
        "--heldout",
        heldout.to_str().unwrap(),
    ];
    shared_artifact("mfn-mixed", &args)
}

/// The artifact's excluded layers and the units of its sensitivity list.
fn search_of(a: &toml::Value) -> (Vec<String>, Vec<toml::Value>) {
    let excluded = a["excluded"].as_array().unwrap();
    let excluded = excluded.iter().map(|e| e.as_str().unwrap().to_string());
    let sens = a["sensitivity"].as_array().unwrap().clone();
    (excluded.collect(), sens)
}

/// Whether keeping `e` in float keeps unit `u` in float: a node unit by its name, an
/// activation by its writer and readers.
fn covers(m: &Model, u: &str, e: &str) -> bool {
    match u.strip_prefix("activation ") {
        Some(t) => m
            .graph()
            .node
            .iter()
            .any(|n| n.name() == e && n.input.iter().chain(&n.output).any(|i| i == t)),
        None => e == u,
    }
}

/// One sensitivity figure per computing node (52 Conv and 45 Add; the PReLUs' Relus share
/// their input with an Abs and stay float, no candidates) and one per quantized activation,
/// rounded alone.
#[test]
fn search_measures_every_node_and_activation_alone() {
    let (_, sens) = search_of(&artifact(&mfn_mixed()));
    let activations = sens
        .iter()
        .filter(|s| s["layer"].as_str().unwrap().starts_with("activation "))
        .count();
    assert_eq!(
        sens.len() - activations,
        97,
        "one figure per computing node"
    );
    assert!(
        activations >= 97,
        "one per quantized activation: {activations}"
    );
    assert!(mfn_mixed().join("sensitivity.svg").is_file());
}

/// Plain INT8 falls short of 0.99 here: the most sensitive unit goes back to float, and not
/// much else does.
#[test]
fn search_keeps_the_most_sensitive_unit_in_float() {
    let out = mfn_mixed();
    let (excluded, sens) = search_of(&artifact(&out));
    assert!(!excluded.is_empty() && excluded.len() <= 30, "{excluded:?}");
    let worst = sens
        .iter()
        .min_by(|x, y| {
            x["fidelity"]
                .as_float()
                .unwrap()
                .total_cmp(&y["fidelity"].as_float().unwrap())
        })
        .unwrap()["layer"]
        .as_str()
        .unwrap()
        .to_string();
    let m = Model::load(&out.join("model.onnx")).unwrap();
    assert!(
        excluded.iter().any(|e| covers(&m, &worst, e)),
        "the most sensitive unit, {worst}, is kept in float: {excluded:?}"
    );
}

/// The units marked as kept are exactly those the artifact keeps in float.
#[test]
fn kept_units_are_exactly_the_excluded_layers() {
    let out = mfn_mixed();
    let (excluded, sens) = search_of(&artifact(&out));
    let m = Model::load(&out.join("model.onnx")).unwrap();
    let marked: Vec<&str> = sens
        .iter()
        .filter(|s| s["kept_in_float"].as_bool() == Some(true))
        .map(|s| s["layer"].as_str().unwrap())
        .collect();
    assert!(!marked.is_empty());
    for u in &marked {
        assert!(
            excluded.iter().any(|e| covers(&m, u, e)),
            "{u} is marked as kept but not excluded: {excluded:?}"
        );
    }
    for e in &excluded {
        assert!(
            marked.iter().any(|u| covers(&m, u, e)),
            "{e} is excluded by no kept unit: {marked:?}"
        );
    }
}

/// The excluded layers kept their float weights in the saved graph.
#[test]
fn excluded_layers_keep_float_weights() {
    let out = mfn_mixed();
    let (excluded, _) = search_of(&artifact(&out));
    let m = Model::load(&out.join("model.onnx")).unwrap();
    for e in &excluded {
        let n = node(&m, e);
        assert!(
            n.input.iter().all(|i| !i.contains("__wdq")),
            "{} still quantized",
            n.name()
        );
    }
}

/// The report measures the model before the search too, on the same held-out frames: what
/// the units kept in float bought.
#[test]
fn search_reaches_the_target_and_reports_what_it_bought() {
    let out = mfn_mixed();
    let a = artifact(&out);
    let fid = int8_figures(&a)["fidelity"]["mean_cosine"]
        .as_float()
        .unwrap();
    assert!(fid >= 0.985, "held-out fidelity {fid}");
    let figures = a["figures"].as_array().unwrap();
    let labels: Vec<&str> = figures
        .iter()
        .map(|f| f["precision"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["fp32", "int8 (every layer)", "int8"]);
    let plain = figures[1]["fidelity"]["mean_cosine"].as_float().unwrap();
    assert!(plain < fid, "every layer {plain}, mixed {fid}");
    assert!(!figures[1]["kernels"].as_array().unwrap().is_empty());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| int8 (every layer) |"), "{report}");
}

/// Nothing of the search (candidates, traces) is left in the artifact.
#[test]
fn nothing_of_the_search_is_left_in_the_artifact() {
    let mut files: Vec<String> = std::fs::read_dir(mfn_mixed())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "artifact.toml",
            "kernels.svg",
            "latency.svg",
            "layer-error.svg",
            "model.onnx",
            "report.md",
            "sensitivity.svg"
        ]
    );
}

/// Layers excluded by name or op type stay float.
#[test]
fn excluded_layers_stay_float() {
    asset(MFN);
    let src = Model::load(&root().join(MFN)).unwrap();
    let first_conv = src
        .graph()
        .node
        .iter()
        .find(|n| n.op_type() == "Conv")
        .unwrap()
        .name()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mfn-ex");
    optimize_ok(
        &[
            MFN,
            "--exclude",
            &first_conv,
            "--exclude-op",
            "Add",
            "--runs",
            "3",
        ],
        &out,
        &shared_cache(),
    );
    let m = Model::load(&out.join("model.onnx")).unwrap();
    let conv = node(&m, &first_conv);
    let w = m
        .graph()
        .initializer
        .iter()
        .find(|t| t.name() == conv.input[1])
        .expect("the excluded Conv reads its weight straight from an initializer");
    assert_eq!(w.data_type(), onnx::DataType::Float as i32);
    // Nor does ONNX Runtime quantize it on its own at load.
    let requantized = edgesight::optimize::qdq::runtime_requantized(&m);
    assert!(requantized.is_empty(), "{requantized:?}");
    for n in m.graph().node.iter().filter(|n| n.op_type() == "Add") {
        assert!(
            n.input.iter().all(|i| !i.ends_with("__dq")),
            "Add {} reads dequantized inputs",
            n.name()
        );
    }
    let a = artifact(&out);
    assert_eq!(a["quantized_layers"].as_integer(), Some(51));
    let ex: Vec<&str> = a["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(ex.contains(&first_conv.as_str()));
    assert_eq!(ex.len(), 1 + 45, "the Conv and all 45 Adds");
}

/// With `--keep-accuracy`, the search chooses on rounded weights and the fit follows, to the
/// layers left in int8: the units in float keep their float weights, the fit counts only the
/// int8 convolutions, and the fully quantized model beside it gets fits of its own.
#[test]
fn reconstruct_follows_the_accuracy_search() {
    let out = mfn_mixed();
    let a = artifact(&out);
    let excluded: Vec<&str> = a["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        !excluded.is_empty(),
        "plain INT8 is 0.979: the search keeps some"
    );
    let m = Model::load(&out.join("model.onnx")).unwrap();
    let src = Model::load(&asset(MFN)).unwrap();
    // The fit names the convolutions left in int8: MobileFaceNet's 52, less those in float.
    let in_float = src
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv" && excluded.contains(&n.name()))
        .count();
    assert!(
        in_float > 0,
        "the search keeps a convolution in float: {excluded:?}"
    );
    let line = reconstruct_line_of(&a);
    assert!(
        line.contains(&format!("of {} int8 convolutions", 52 - in_float)),
        "{line} {excluded:?}"
    );
    // A convolution kept in float reads its original weights.
    let inits = |m: &Model, name: &str| {
        m.graph()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .and_then(onnx::tensor_f32)
    };
    for e in &excluded {
        let n = node(&m, e);
        if n.op_type() == "Conv" {
            let w = &n.input[1];
            assert!(inits(&src, w).is_some(), "{e} reads {w}");
            assert_eq!(inits(&m, w), inits(&src, w), "{e}'s weights changed");
        }
    }
    let fid = int8_figures(&a)["fidelity"]["mean_cosine"]
        .as_float()
        .unwrap();
    assert!(fid >= 0.985, "held-out fidelity {fid}");
    let figures = a["figures"].as_array().unwrap();
    assert_eq!(figures[1]["precision"].as_str(), Some("int8 (every layer)"));
    let plain = figures[1]["fidelity"]["mean_cosine"].as_float().unwrap();
    assert!(plain < fid, "every layer {plain}, mixed {fid}");
}

/// The INT8 artifact of MobileFaceNet (percentile ranges) that the tests below read.
fn mfn_int8() -> PathBuf {
    asset(MFN);
    shared_artifact("mfn-int8", &[MFN, "--method", "percentile", "--runs", "5"])
}

#[test]
fn mfn_artifact_holds_model_record_report_and_plots() {
    let out = mfn_int8();
    for f in [
        "model.onnx",
        "artifact.toml",
        "report.md",
        "latency.svg",
        "layer-error.svg",
        "kernels.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} in the artifact");
    }
    let a = artifact(&out);
    assert_eq!(a["precision"].as_str(), Some("int8"));
    // The profiler's traces are cleaned away.
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "json")));
    assert!(
        a.get("comparison").is_none(),
        "no boxes to compare for an embedder"
    );
    let sha = edgesight::optimize::calibrate::file_sha256(&root().join(MFN)).unwrap();
    assert_eq!(a["source_sha256"].as_str(), Some(sha.as_str()));
}

/// FP32 against itself with a bicubic resize stays far closer than INT8 does, so the cosine
/// target measures a real loss; the report states the yardstick.
#[test]
fn mfn_yardstick_is_stated_and_closer_than_int8() {
    let out = mfn_int8();
    let a = artifact(&out);
    let y = a["yardstick"]["mean_cosine"]
        .as_float()
        .expect("a yardstick");
    let int8 = int8_figures(&a)["fidelity"]["mean_cosine"]
        .as_float()
        .unwrap();
    assert!(y > int8 && y < 1.0, "yardstick cosine {y}, int8 {int8}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("reads mean cosine {y:.5}")),
        "{report}"
    );
}

/// The weights reach as far as this CPU's int8 kernels take, depthwise layers ±127, and each
/// kind of layer reaches its grid's edge.
#[test]
fn mfn_weights_reach_the_edge_of_this_cpus_grid() {
    use edgesight::optimize::weights::{is_depthwise, WeightRange};
    let out = mfn_int8();
    let a = artifact(&out);
    let range = WeightRange::for_this_cpu();
    assert_eq!(a["weight_range"].as_str(), Some(range.to_string().as_str()));
    let stated = match range {
        WeightRange::Reduced => "Weights on **±64**",
        WeightRange::Full => "Weights on **±127**",
    };
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(stated), "{report}");
    let m = Model::load(&out.join("model.onnx")).unwrap();
    let g = m.graph();
    let producer = |t: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == t));
    let mut reach = std::collections::BTreeMap::new();
    for n in g.node.iter().filter(|n| n.op_type() == "Conv") {
        let Some(dq) = producer(&n.input[1]).filter(|d| d.op_type() == "DequantizeLinear") else {
            continue;
        };
        let w = g
            .initializer
            .iter()
            .find(|t| t.name() == dq.input[0])
            .unwrap();
        let top = w
            .raw_data()
            .iter()
            .map(|&b| i32::from(b as i8).abs())
            .max()
            .unwrap();
        let e = reach.entry(is_depthwise(n, &w.dims)).or_insert(0);
        *e = top.max(*e);
    }
    let edge = |dw: bool| range.qmax(dw) as i32;
    assert_eq!(reach.get(&false), Some(&edge(false)), "{reach:?}");
    assert_eq!(reach.get(&true), Some(&edge(true)), "{reach:?}");
}

/// Where the time goes, from ONNX Runtime's profiler: float convolutions in FP32, integer
/// ones in INT8. One Conv stays float in the runtime: the last, whose output (the embedding)
/// gets no Q.
#[test]
fn mfn_kernel_times_show_integer_convolutions() {
    let out = mfn_int8();
    let a = artifact(&out);
    let kernels = |f: &toml::Value| -> Vec<(String, f64)> {
        f["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let op = k["op"].as_str().unwrap().to_string();
                (op, k["ms"].as_float().unwrap())
            })
            .collect()
    };
    let fp32_k = kernels(&a["figures"].as_array().unwrap()[0]);
    let int8_k = kernels(&int8_figures(&a));
    let ms = |k: &[(String, f64)], op: &str| {
        k.iter()
            .find(|(o, _)| o == op)
            .map(|(_, ms)| *ms)
            .unwrap_or(0.0)
    };
    assert!(
        ms(&fp32_k, "Conv") > 0.0 && ms(&fp32_k, "QLinearConv") == 0.0,
        "{fp32_k:?}"
    );
    assert!(
        ms(&int8_k, "QLinearConv") > 10.0 * ms(&int8_k, "Conv"),
        "{int8_k:?}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Where the time goes") && report.contains("| QLinearConv | – |"));
}

/// The figures the report tabulates: latency at batch 1 and at the best batch (the model's
/// batch is symbolic), each as the report prints it, and the size, which int8 weights cut to
/// under half.
#[test]
fn mfn_figures_give_latency_best_batch_and_size() {
    let out = mfn_int8();
    let a = artifact(&out);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let figures = a["figures"].as_array().unwrap();
    for f in figures {
        let b1 = &f["latency_b1"];
        let (p50, p95) = (
            b1["p50_ms"].as_float().unwrap(),
            b1["p95_ms"].as_float().unwrap(),
        );
        assert!(
            report.contains(&format!("| {p50:.2} | {p95:.2} |")),
            "{p50:.2} in {report}"
        );
        let best = f["best_batch"].as_array().expect("a best batch");
        let b = best[0].as_integer().unwrap();
        assert!([2, 4, 8].contains(&b), "{best:?}");
        let per_image = best[1]["p50_ms"].as_float().unwrap();
        assert!(
            report.contains(&format!("| {b}: {per_image:.2} |")),
            "{best:?} in {report}"
        );
    }
    let size = |f: &toml::Value| f["size_bytes"].as_integer().unwrap();
    let fp32_size = std::fs::metadata(root().join(MFN)).unwrap().len() as i64;
    assert_eq!(size(&figures[0]), fp32_size);
    assert!(size(&int8_figures(&a)) * 2 < fp32_size, "{figures:?}");
}

#[test]
fn mfn_calibration_is_recorded() {
    let a = artifact(&mfn_int8());
    let cal = &a["calibration"];
    assert_eq!(cal["method"].as_str(), Some("percentile:99.99"));
    assert_eq!(cal["images"].as_integer(), Some(29));
    assert_eq!(cal["skipped"].as_integer(), Some(0));
    assert_eq!(cal["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        a["quantized_layers"].as_integer(),
        Some(52),
        "every Conv in int8"
    );
}

/// Per-layer output error: one figure per quantized node, the error growing with depth.
#[test]
fn mfn_layer_error_grows_with_depth() {
    let a = artifact(&mfn_int8());
    let le = a["layer_error"].as_array().unwrap();
    assert!(le.len() >= 52, "{} layer figures", le.len());
    let first = le[0]["fidelity"].as_float().unwrap();
    let worst = le
        .iter()
        .map(|l| l["fidelity"].as_float().unwrap())
        .fold(1.0, f64::min);
    assert!(
        first > 0.99 && worst < first,
        "first {first}, worst {worst}"
    );
}

/// The held-out chips' embeddings stay close to FP32's, and INT8 still tells the people apart
/// (docs/optimize-findings.md has the measured figures).
#[test]
fn mfn_int8_stays_close_to_fp32() {
    let a = artifact(&mfn_int8());
    let fid = &int8_figures(&a)["fidelity"];
    let mean = fid["mean_cosine"].as_float().unwrap();
    assert!(mean > 0.97 && mean < 1.0, "mean cosine {mean}");
    assert!(fid["min_cosine"].as_float().unwrap() > 0.94);
    let auc = fid["auc"].as_array().unwrap();
    assert!(
        auc[1].as_float().unwrap() > 0.95,
        "INT8 still tells the people apart: {auc:?}"
    );
}

/// The graph really is int8: weights behind DequantizeLinear, a smaller file.
#[test]
fn mfn_graph_is_int8() {
    let out = mfn_int8();
    let m = Model::load(&out.join("model.onnx")).unwrap();
    let ops = m.inspect().ops;
    assert!(
        ops.get("QuantizeLinear").copied().unwrap_or(0) > 50,
        "{ops:?}"
    );
    let int8_weights = m
        .graph()
        .initializer
        .iter()
        .filter(|t| t.data_type() == onnx::DataType::Int8 as i32 && t.dims.len() == 4)
        .count();
    assert_eq!(int8_weights, 52);
    let size = std::fs::metadata(out.join("model.onnx")).unwrap().len();
    assert!(size * 2 < std::fs::metadata(root().join(MFN)).unwrap().len());
}

/// The statistics are cached: another calibrator needs no new calibration run.
#[test]
fn another_calibrator_reuses_the_cached_statistics() {
    mfn_int8();
    let a2 = artifact(&shared_artifact(
        "mfn-minmax",
        &[MFN, "--method", "minmax", "--runs", "3"],
    ));
    assert_eq!(a2["calibration"]["cached"].as_bool(), Some(true));
    assert_eq!(a2["calibration"]["method"].as_str(), Some("minmax"));
}
