//! `edgesight optimize` as a user meets it on bad input, and what its artifacts do for `run`,
//! `bench` and `inspect`: each failure names the file or folder, exits 1 and leaves nothing
//! half-written.

mod common;
use common::optimize::*;
use common::*;

use std::path::{Path, PathBuf};

use edgesight::onnx::{self, pb, Model};

#[test]
fn model_that_is_not_onnx() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("resnet.onnx");
    std::fs::write(&fake, "name,score\nresnet,0.9\n").unwrap();
    let want = ["resnet.onnx", "not a valid ONNX model"];
    let fake = fake.to_str().unwrap();
    fails(
        &[fake, "--model", "mobilefacenet"],
        &tmp.path().join("art"),
        tmp.path(),
        &want,
    );
    // Without --model too, where no manifest names the file.
    fails(&[fake], &tmp.path().join("art"), tmp.path(), &want);
}

#[test]
fn empty_or_missing_calibration_folder() {
    asset(MFN);
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("heldout")).unwrap();
    std::fs::copy(
        asset("calibration/heldout/face-chips/John_Salley-000183_02159543.jpg"),
        empty.join("heldout/a.jpg"),
    )
    .unwrap();
    fails(
        &[MFN, "--calibration", empty.to_str().unwrap()],
        &tmp.path().join("art"),
        tmp.path(),
        &["calibration folder", "empty", "no images"],
    );
    let missing = tmp.path().join("nowhere");
    fails(
        &[MFN, "--calibration", missing.to_str().unwrap()],
        &tmp.path().join("art"),
        tmp.path(),
        &["nowhere", "no such folder"],
    );
}

/// A held-out set that shares an image with the calibration set, even under another name, is
/// refused: its fidelity would be measured on what set the ranges.
#[test]
fn heldout_images_that_calibrate_are_refused() {
    asset(MFN);
    let tmp = tempfile::tempdir().unwrap();
    let (cal, held) = (tmp.path().join("cal"), tmp.path().join("held"));
    let all = chips(&cal, 6, 0);
    chips(&held, 0, 0);
    std::fs::copy(&all[3], held.join("renamed.jpg")).unwrap();
    std::fs::copy(&all[8], held.join(all[8].file_name().unwrap())).unwrap();
    let args = [MFN, "--calibration", cal.to_str().unwrap()];
    let args = [&args[..], &["--heldout", held.to_str().unwrap()]].concat();
    let twin = all[3].file_name().unwrap().to_str().unwrap();
    let want = ["renamed.jpg", "also in the calibration set", twin];
    fails(&args, &tmp.path().join("art"), tmp.path(), &want);
}

/// Copies `n` real face chips into `dir`, then adds `bad` files that are not images.
fn chips(dir: &Path, n: usize, bad: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let all = files_in("calibration/face-chips");
    for p in all.iter().take(n) {
        std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
    }
    for i in 0..bad {
        std::fs::write(
            dir.join(format!("broken-{i}.jpg")),
            b"\xff\xd8\xff not really a jpeg",
        )
        .unwrap();
    }
    all
}

#[test]
fn images_that_fail_to_decode_are_skipped_and_counted() {
    asset(MFN);
    let tmp = tempfile::tempdir().unwrap();
    let cal = tmp.path().join("cal");
    chips(&cal, 12, 1);
    let out = tmp.path().join("art");
    let args = [
        MFN,
        "--calibration",
        cal.to_str().unwrap(),
        "--heldout",
        "calibration/heldout/face-chips",
        "--runs",
        "2",
    ];
    let err = optimize_ok(&args, &out, tmp.path());
    let a = artifact(&out);
    assert_eq!(a["calibration"]["images"].as_integer(), Some(13));
    assert_eq!(a["calibration"]["skipped"].as_integer(), Some(1));
    assert!(err.contains("broken-0.jpg"), "the skipped image is named");

    // A second run takes the statistics from the cache and still counts and names the image.
    let out_again = tmp.path().join("art-again");
    let err = optimize_ok(&args, &out_again, tmp.path());
    let a = artifact(&out_again);
    assert_eq!(a["calibration"]["cached"].as_bool(), Some(true));
    assert_eq!(a["calibration"]["skipped"].as_integer(), Some(1));
    assert!(err.contains("broken-0.jpg"), "named from the cache too");

    // Past the threshold (20% here) it is an error.
    let cal2 = tmp.path().join("cal2");
    chips(&cal2, 3, 3);
    fails(
        &[
            MFN,
            "--calibration",
            cal2.to_str().unwrap(),
            "--heldout",
            "calibration/heldout/face-chips",
        ],
        &tmp.path().join("art2"),
        tmp.path(),
        &["cal2", "3 of 6 images do not decode"],
    );
}

#[test]
fn precision_the_target_cannot_do() {
    asset(MFN);
    let tmp = tempfile::tempdir().unwrap();
    fails(
        &[MFN, "--precision", "fp16", "--target", "cpu"],
        &tmp.path().join("art"),
        tmp.path(),
        &["fp16", "--target cpu"],
    );
}

/// TensorRT cannot exist on these machines: the path is configured, and fails clearly here,
/// before any calibration work.
#[test]
fn tensorrt_target_without_tensorrt_fails_clearly() {
    asset(MFN);
    let tmp = tempfile::tempdir().unwrap();
    fails(
        &[MFN, "--target", "tensorrt"],
        &tmp.path().join("art"),
        tmp.path(),
        &[
            "--target tensorrt",
            "TensorRT execution provider could not start",
            "TensorRT 10",
        ],
    );
}

/// A graph with an op the quantizer does not know: that op stays float, with a warning, and the
/// rest is quantized.
#[test]
fn unknown_ops_stay_float_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    // Conv -> Celu -> Conv on a 3x32x32 input: Celu is an op the quantizer has no rule for.
    let mut seed = 7u32;
    let mut rnd = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    let w1 = onnx::tensor_from_f32("w1", &[8, 3, 3, 3], &rnd(8 * 27));
    let w2 = onnx::tensor_from_f32("w2", &[4, 8, 1, 1], &rnd(32));
    let graph = pb::GraphProto {
        name: Some("celu".into()),
        node: vec![
            onnx::node("Conv", "conv1", &["x", "w1"], &["a"], vec![]),
            onnx::node("Celu", "celu", &["a"], &["b"], vec![]),
            onnx::node("Conv", "conv2", &["b", "w2"], &["y"], vec![]),
        ],
        initializer: vec![w1, w2],
        input: vec![onnx::value_info_shaped(
            "x",
            onnx::DataType::Float,
            &[1, 3, 32, 32],
        )],
        output: vec![onnx::value_info("y", onnx::DataType::Float)],
        ..Default::default()
    };
    let file = tmp.path().join("celu.onnx");
    Model::from_graph(graph, 13, &file).save(&file).unwrap();
    let manifest = tmp.path().join("celu.toml");
    std::fs::write(
        &manifest,
        "name = \"celu\"\nfamily = \"embedder\"\nfile = \"celu.onnx\"\ninput_size = [32, 32]\n\
         [preprocess]\nlayout = \"nchw\"\ndtype = \"f32\"\nmean = [127.5, 127.5, 127.5]\nstd = [128, 128, 128]\n",
    )
    .unwrap();
    let cal = tmp.path().join("cal");
    let all = chips(&cal, 6, 0);
    chips(&cal.join("heldout"), 0, 0);
    for p in &all[6..10] {
        std::fs::copy(p, cal.join("heldout").join(p.file_name().unwrap())).unwrap();
    }
    let out = tmp.path().join("art");
    let err = optimize_ok(
        &[
            file.to_str().unwrap(),
            "--model",
            manifest.to_str().unwrap(),
            "--calibration",
            cal.to_str().unwrap(),
            "--runs",
            "2",
        ],
        &out,
        tmp.path(),
    );
    assert!(
        err.contains("left in float") && err.contains("Celu"),
        "{err}"
    );
    let a = artifact(&out);
    assert_eq!(a["unknown_ops"]["Celu"].as_integer(), Some(1));
    assert_eq!(a["quantized_layers"].as_integer(), Some(2));
    let m = Model::load(&out.join("model.onnx")).unwrap();
    let celu = node(&m, "celu");
    // Celu computes in float (on the dequantized conv1 output), and nothing quantizes it as an op.
    assert!(celu.input[0].ends_with("__dq"));
    let fid = int8_figures(&a)["fidelity"]["mean_cosine"]
        .as_float()
        .unwrap();
    assert!(fid > 0.99, "{fid}");
}

/// `optimize inspect` prints what a user checks before optimizing: inputs and outputs with
/// their shapes, opsets, parameter counts and the ops by count. Checked on MobileFaceNet
/// against its ONNX contents.
#[test]
fn inspect_prints_inputs_outputs_ops_and_parameters() {
    let out = edgesight(&["optimize", "inspect", asset(MFN).to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "input      input: f32[N, 112, 112, 3]",
        "output     embeddings: f32[N, 192]",
        "ai.onnx 13",
        "parameters 1292998 in 139 initializers",
        "nodes      233",
        "52  Conv",
        "33  Relu",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let json = edgesight(&[
        "optimize",
        "inspect",
        "--json",
        asset(MFN).to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["params"].as_u64(), Some(1_292_998), "{v}");
    assert_eq!(v["ops"]["Conv"].as_u64(), Some(52), "{v}");
    assert_eq!(v["inputs"][0].as_str(), Some("input: f32[N, 112, 112, 3]"));
}

/// An FP32 "artifact" of the SSD model runs through `run --model-dir`, labels included.
#[test]
fn run_consumes_an_artifact_folder() {
    asset("models/cache/ssd_mobilenet_v2_coco_quant_postprocess.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("ssd-fp32");
    optimize_ok(
        &[
            "models/cache/ssd_mobilenet_v2_coco_quant_postprocess.onnx",
            "--precision",
            "fp32",
            "--runs",
            "3",
        ],
        &art,
        tmp.path(),
    );
    assert!(art.join("labels.txt").is_file());
    let out = tmp.path().join("run");
    let labels = bus_labels(&art, &out);
    assert!(
        labels.iter().any(|l| l == "bus") && labels.iter().any(|l| l == "person"),
        "{labels:?}"
    );
    assert!(summary(&out)["model_file"]
        .as_str()
        .unwrap()
        .ends_with("model.onnx"));
}

// ---- bad input: a clear error, a non-zero exit, and no half-written artifact ----------------

/// `bench --model-dir` times an artifact against the FP32 model it came from, round by round
/// on the same frames; with the source changed since `optimize`, it times the artifact alone
/// and says why.
#[test]
fn bench_times_an_artifact_against_its_source() {
    let bf = "models/cache/blazeface-back-256.onnx";
    asset(bf);
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("bf-int8");
    optimize_ok(
        &[bf, "--precision", "int8", "--runs", "3"],
        &art,
        tmp.path(),
    );
    let bench = |name: &str| {
        let json = tmp.path().join(format!("{name}.json"));
        let o = edgesight(&[
            "bench",
            "--model-dir",
            art.to_str().unwrap(),
            "--rounds",
            "2",
            "--engine-frames",
            "10",
            "--max-frames",
            "10",
            "--no-video",
            "--out",
            tmp.path().join(name).to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(&json).unwrap();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        (o, report)
    };
    let (o, r) = bench("with-source");
    let b = &r["baseline"];
    assert_eq!(b["model"].as_str(), Some(bf), "{r}");
    // The speedup is each round's artifact over its source, on the same frames: the range
    // spans the rounds' own ratios and the median lies in it.
    let speedup = b["speedup"].as_f64().unwrap();
    let per_round: Vec<f64> = r["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["engine_fps"].as_f64().unwrap() / x["baseline_fps"].as_f64().unwrap())
        .collect();
    let (lo, hi) = (
        b["speedup_range"][0].as_f64().unwrap(),
        b["speedup_range"][1].as_f64().unwrap(),
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(
        close(lo, per_round.iter().copied().fold(f64::INFINITY, f64::min)),
        "{b} {per_round:?}"
    );
    assert!(
        close(
            hi,
            per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        ),
        "{b} {per_round:?}"
    );
    assert!(lo <= speedup && speedup <= hi, "{b}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("vs. the source"), "{out}");

    // The source no longer matches the artifact's record of it.
    let toml_path = art.join("artifact.toml");
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let a: toml::Value = toml::from_str(&text).unwrap();
    let sha = a["source_sha256"].as_str().unwrap();
    std::fs::write(&toml_path, text.replace(sha, &"0".repeat(64))).unwrap();
    let (o, r) = bench("changed-source");
    assert!(r["baseline"].is_null(), "{r}");
    assert!(
        stderr(&o).contains("source model is missing or changed"),
        "{}",
        stderr(&o)
    );

    // The artifact was quantized for this CPU, and says so. Told it is full range, it is
    // warned of exactly where the int8 kernels saturate on such weights.
    use edgesight::optimize::weights::{cpu_int8_saturates, WeightRange};
    let range = WeightRange::for_this_cpu().to_string();
    assert_eq!(
        artifact(&art)["weight_range"].as_str(),
        Some(range.as_str())
    );
    let saturates = "this CPU has no VNNI";
    assert!(!stderr(&o).contains(saturates), "{}", stderr(&o));
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let full = text.replace(
        &format!("weight_range = \"{range}\""),
        "weight_range = \"full\"",
    );
    std::fs::write(&toml_path, full).unwrap();
    let (o, _) = bench("full-range");
    assert_eq!(
        stderr(&o).contains(saturates),
        cpu_int8_saturates(),
        "{}",
        stderr(&o)
    );
}

/// An FP32 artifact of CenterNet runs its 20 hard-swishes as single HardSwish ops (ONNX Runtime
/// fuses none of TF's four-node form), agrees with the source, and `run` uses it.
#[test]
fn fp32_artifact_fuses_hard_swish() {
    let cn = "models/cache/centernet-mobilenetv3.onnx";
    asset(cn);
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("cn-fp32");
    optimize_ok(
        &[cn, "--precision", "fp32", "--runs", "3"],
        &art,
        &shared_cache(),
    );
    let m = Model::load(&art.join("model.onnx")).unwrap();
    let n = |op: &str| m.graph().node.iter().filter(|n| n.op_type() == op).count();
    assert_eq!(n("HardSwish"), 20);
    assert_eq!(m.opset(), 14);
    let a = artifact(&art);
    let figures = a["figures"].as_array().unwrap();
    let labels: Vec<&str> = figures
        .iter()
        .map(|f| f["precision"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["fp32", "fp32 (rewritten)"]);
    let map = figures[1]["fidelity"]["map50"].as_float().unwrap();
    assert!(
        map >= 0.99,
        "the rewritten graph finds what the source finds: {map}"
    );
    let rewrites = rewrites(&a);
    assert_eq!(rewrites.len(), 20, "{rewrites:?}");
    assert!(rewrites[0].contains("read as 1/6"), "{rewrites:?}");

    let labels = bus_labels(&art, &tmp.path().join("run"));
    assert!(
        labels.iter().any(|l| l == "bus") && labels.iter().any(|l| l == "person"),
        "{labels:?}"
    );
}
