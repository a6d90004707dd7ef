//! `edgesight optimize` on detectors: CenterNet (street frames) and BlazeFace (faces). One
//! CenterNet INT8 artifact is built per run of this file and each test reads one property of
//! it; tests that need a quantized graph but no measurements call the optimizer's steps.

mod common;
use common::optimize::*;
use common::*;

use std::path::{Path, PathBuf};

use edgesight::onnx::Model;

/// BlazeFace's convolutions that write its outputs stay rounded under `--reconstruct`: its
/// score logits run far negative, and a squared-error fit over every anchor spent itself on
/// the background and turned the faces' logits into noise. Left rounded, the faces FP32 finds
/// survive much as they do in plain INT8 (figures for both CPUs in docs/optimize-findings.md).
#[test]
fn reconstruct_leaves_blazeface_output_layers_rounded() {
    let bf = "models/cache/blazeface-back-256.onnx";
    asset(bf);
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("bf-rec");
    optimize_ok(&[bf, "--reconstruct", "--runs", "3"], &art, &shared_cache());
    let a = artifact(&art);
    let map = int8_figures(&a)["fidelity"]["map50"].as_float().unwrap();
    assert!(map > 0.8, "reconstructed BlazeFace agreement mAP50 {map}");
    let line = reconstruct_line_of(&a);
    // Two score heads and two box heads.
    assert!(
        line.contains("the 4 that write the graph's outputs left rounded"),
        "{line}"
    );
    // Its one 1x1 layer at 8x8: 64 patches an image, on four fitting photos, for 97 weights.
    assert!(
        line.contains("with too few patches per weight for a fit left rounded"),
        "{line}"
    );
}

/// CenterNet's INT8 artifact that the tests below read.
fn cn_int8() -> PathBuf {
    asset(CN);
    shared_artifact("cn-int8", &[CN, "--precision", "int8", "--runs", "3"])
}

/// A detector's INT8 report breaks agreement down by class, most frequent first, and the mean
/// is the mean of the terms. People walk through every held-out street frame, and INT8 keeps
/// them even where the mean over rare classes falls.
#[test]
fn centernet_agreement_is_broken_down_by_class() {
    let art = cn_int8();
    let f = int8_figures(&artifact(&art));
    let fid = &f["fidelity"];
    let per_class = fid["per_class"].as_array().expect("per-class agreement");
    assert!(per_class.len() >= 3, "{per_class:?}");
    let n: Vec<i64> = per_class
        .iter()
        .map(|c| c["instances"].as_integer().unwrap())
        .collect();
    assert!(n.windows(2).all(|w| w[0] >= w[1]), "{n:?}");
    let mean = per_class
        .iter()
        .map(|c| c["ap50"].as_float().unwrap())
        .sum::<f64>()
        / per_class.len() as f64;
    assert!((mean - fid["map50"].as_float().unwrap()).abs() < 1e-9);
    assert_eq!(per_class[0]["label"].as_str(), Some("person"));
    assert!(n[0] >= 100, "{n:?}");
    let person = per_class[0]["ap50"].as_float().unwrap();
    assert!(person >= 0.9, "person AP50 {person}");
    let report = std::fs::read_to_string(art.join("report.md")).unwrap();
    assert!(report.contains("| person | "), "{report}");
}

/// No int8 score passes the top of the heatmap logits' grid, and the artifact says where that
/// is: under the best score FP32 gives a person in bus.jpg.
#[test]
fn centernet_score_ceiling_bounds_int8_scores() {
    let art = cn_int8();
    let src = asset(CN);
    let float = Model::load(&src).unwrap();
    let logits = edgesight::optimize::peaks::heatmap_logits(&float);
    assert_eq!(logits.len(), 1, "{logits:?}");
    let model = art.join("model.onnx");
    let ceiling = artifact(&art)["score_ceiling"]
        .as_float()
        .expect("a score ceiling");
    let q = Model::load(&model).unwrap();
    assert_eq!(
        edgesight::optimize::ceiling::score_ceiling(&float, &q),
        Some(ceiling)
    );
    assert!(ceiling > 0.5 && ceiling < 0.9, "{ceiling}");
    let best = |path: &Path| {
        centernet_rows(path, &["assets/bus.jpg"])[0]
            .chunks(6)
            .map(|r| r[4])
            .fold(0.0f32, f32::max) as f64
    };
    let (fp32_best, int8_best) = (best(&src), best(&model));
    // Scores sit on a grid of 1/255, half a step from the sigmoid.
    assert!(
        int8_best <= ceiling + 0.5 / 255.0,
        "{int8_best} > {ceiling}"
    );
    assert!(fp32_best > ceiling, "FP32's best {fp32_best}");
    let report = std::fs::read_to_string(art.join("report.md")).unwrap();
    assert!(report.contains("score can pass"), "{report}");
}

/// How much the mean rests on these frames: an interval over redrawn frames, shown beside it,
/// and a floor under the whole quantizer that a regression in any rewrite or range breaks.
#[test]
fn centernet_agreement_has_an_interval_and_a_floor() {
    let art = cn_int8();
    let fid = &int8_figures(&artifact(&art))["fidelity"];
    let map = fid["map50"].as_float().unwrap();
    let iv: Vec<f64> = fid["map50_interval"]
        .as_array()
        .expect("an interval")
        .iter()
        .map(|v| v.as_float().unwrap())
        .collect();
    assert!(
        iv[0] <= map && map <= iv[1] && iv[1] - iv[0] > 0.05,
        "{map} {iv:?}"
    );
    let report = std::fs::read_to_string(art.join("report.md")).unwrap();
    let shown = format!("| {map:.4} ({:.2}–{:.2}) |", iv[0], iv[1]);
    assert!(report.contains(&shown), "{shown} in {report}");
    assert!(map > 0.5, "plain INT8 agreement mAP50 {map}");
    assert!(
        report.contains("Weighted by FP32's detections instead: 0.9"),
        "{report}"
    );
}

/// The scale to read agreement on: FP32 against itself, resized bicubic instead of bilinear.
/// A harmless change, yet the rare classes move it below 1.
#[test]
fn centernet_yardstick_is_stated() {
    let art = cn_int8();
    let y = artifact(&art)["yardstick"]["map50"]
        .as_float()
        .expect("a yardstick");
    assert!(y > 0.9 && y < 1.0, "yardstick {y}");
    let report = std::fs::read_to_string(art.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("reads agreement mAP50 {y:.4}")),
        "{report}"
    );
}

/// The held-out frame where the boxes differ most, drawn by each model, as JPEGs the report
/// shows.
#[test]
fn centernet_comparison_pictures_are_in_the_report() {
    let art = cn_int8();
    let a = artifact(&art);
    let c = &a["comparison"];
    let frame = c["frame"].as_str().expect("a comparison frame");
    assert!(frame.contains("heldout"), "{frame}");
    let report = std::fs::read_to_string(art.join("report.md")).unwrap();
    for key in ["fp32", "candidate"] {
        let name = c[key].as_str().unwrap();
        let bytes = std::fs::read(art.join(name)).unwrap();
        assert_eq!(&bytes[..2], &[0xFF, 0xD8], "{name} is a JPEG");
        assert!(
            report.contains(&format!("]({name})")),
            "{name} in the report"
        );
    }
}

/// Every CPU rewrite is named in the artifact and the report: the widened depthwise layer, the
/// peak test on the integer logits (its pool moved onto them), the stem over pixel groups, the
/// nine gates tiled and the masked scores on a fixed grid.
#[test]
fn centernet_cpu_rewrites_are_named() {
    let art = cn_int8();
    let rewrites = rewrites(&artifact(&art));
    let has = |prefix: &str| rewrites.iter().any(|r| r.starts_with(prefix));
    assert!(has("Conv__505: depthwise, 72 → 80"), "{rewrites:?}");
    assert!(has("tower_0/Equal: peak test"), "{rewrites:?}");
    assert!(has("tower_0/mul_1: masked heatmap scores"), "{rewrites:?}");
    let stem = "tower_0/MobilenetV3/Conv/BatchNorm/FusedBatchNorm_BiasAdd__5: stem convolution";
    assert!(has(stem), "{rewrites:?}");
    let tiled = rewrites.iter().filter(|r| r.contains("gate tiled to"));
    assert_eq!(tiled.count(), 9, "{rewrites:?}");
    let report = std::fs::read_to_string(art.join("report.md")).unwrap();
    assert!(report.contains("- `tower_0/Equal`: peak test"), "{report}");
    let m = Model::load(&art.join("model.onnx")).unwrap();
    let moved = node(&m, "tower_0/max_pooling2d/MaxPool__on_logits");
    assert!(moved.input[0].contains("centernet_cls_output"), "{moved:?}");
}

/// The peak test on the integer logits finds exactly the detections that the exported test
/// (sigmoid, then a float MaxPool; kept here by excluding the pool) finds: the same 100 peaks
/// and boxes, scores at most half a step of 1/255 apart and on that grid. Both graphs come from
/// the optimizer's steps, with the same calibration.
#[test]
fn integer_peak_test_finds_the_exported_peaks() {
    use edgesight::optimize::qdq::Exclusions;
    let tmp = tempfile::tempdir().unwrap();
    let src = Model::load(&asset(CN)).unwrap();
    let cal: Vec<String> = images_in("calibration/street", 8);
    let cal: Vec<&str> = cal.iter().map(String::as_str).collect();
    let inputs = family_inputs(&asset(CN), "centernet", &cal);
    let pool = "tower_0/max_pooling2d/MaxPool";
    let exported = Exclusions {
        names: [pool.to_string()].into(),
        ..Default::default()
    };
    let save = |m: &Model, name: &str| {
        let p = tmp.path().join(name);
        m.save(&p).unwrap();
        p
    };
    let stats = calibrated_on(&src, &inputs, tmp.path());
    let (on_logits, lines) = quantized_for_cpu(&src, &stats, &Exclusions::default());
    assert!(lines.iter().any(|l| l.contains("peak test")), "{lines:?}");
    let (kept, _) = quantized_for_cpu(&src, &stats, &exported);
    node(&kept, pool);
    let images = [
        "assets/bus.jpg",
        "calibration/heldout/street/vtest-0010.jpg",
    ];
    let a = centernet_rows(&save(&on_logits, "a.onnx"), &images);
    let b = centernet_rows(&save(&kept, "b.onnx"), &images);
    assert!(
        a[0].chunks(6).next().unwrap()[4] > 0.5,
        "a confident first peak"
    );
    // Sorted by box, since scores that round alike may trade places in TopK.
    let by_box = |rows: &[f32]| {
        let mut r: Vec<Vec<f32>> = rows.chunks(6).map(<[f32]>::to_vec).collect();
        r.sort_by(|x, y| {
            let key = |v: &Vec<f32>| [v[0], v[1], v[2], v[3], v[5]];
            key(x).partial_cmp(&key(y)).unwrap()
        });
        r
    };
    for (on_grid, float) in a.iter().zip(&b) {
        for (x, y) in by_box(on_grid).iter().zip(by_box(float)) {
            assert_eq!(
                [x[0], x[1], x[2], x[3], x[5]],
                [y[0], y[1], y[2], y[3], y[5]]
            );
            assert!(
                (x[4] - y[4]).abs() <= 0.5 / 255.0 + 1e-6,
                "{x:?} against {y:?}"
            );
            assert!(
                (x[4] * 255.0 - (x[4] * 255.0).round()).abs() < 1e-3,
                "{x:?} on the grid"
            );
        }
    }
}

/// Weights fitted to the int8 model's own inputs, layer by layer, bring CenterNet closer to
/// FP32 on held-out street frames than rounding to nearest does. The fit runs as
/// `optimize --reconstruct` runs it (after the same calibration, through the same rewrites),
/// on fewer images and without the measurements; most convolutions gain, and since CenterNet
/// decodes inside its graph, none writes an output.
#[test]
fn reconstruct_brings_centernet_int8_closer_to_fp32() {
    use edgesight::engine::{Engine, EngineConfig};
    use edgesight::optimize::qdq::{self, Exclusions};
    use edgesight::optimize::weights::{Presets, WeightRange};
    use edgesight::optimize::{calibrate, fidelity, quantizer::Quantizer, reconstruct, rewrites};
    use edgesight::optimize::{Precision, Target};
    let tmp = tempfile::tempdir().unwrap();
    let file = asset(CN);
    let src = Model::load(&file).unwrap();
    let cfg = EngineConfig::default();
    let names = |dir: &str, n: usize| images_in(dir, n);
    let cal_names = names("calibration/street", 16);
    let cal_refs: Vec<&str> = cal_names.iter().map(String::as_str).collect();
    let cal = family_inputs(&file, "centernet", &cal_refs);
    let stats = calibrate::collect(&src, &cal, &cfg, tmp.path(), &|_, _| {}).unwrap();
    let act = qdq::ActivationType::U8Asymmetric;
    let range = WeightRange::for_this_cpu();
    let method = "percentile:99.99".parse().unwrap();
    let q = Quantizer::new(&src, &stats, method, act, range);
    let none = Exclusions::default();
    let (rounded, _) = q.rounded(&none).unwrap();
    let laid = qdq::layout_for(&src, act).map(|(m, _)| m);
    let with = |p: &Presets| Ok(q.quantize(p, &none)?.0);
    let (presets, fits) = reconstruct::fit(
        laid.as_ref().unwrap_or(&src),
        &with,
        range,
        true,
        &cal[..4],
        &cfg,
        tmp.path(),
        &|_, _| {},
    )
    .unwrap();
    let (fitted, report) = q.quantize(&presets, &none).unwrap();
    let line = reconstruct::summary(&fits, &report.quantized_layers).expect("a fit line");
    let fitted_n: usize = line["reconstruction: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((40..=89).contains(&fitted_n), "{line}");
    assert!(line.contains("of 89 int8 convolutions"), "{line}");
    assert!(!line.contains("write the graph's outputs"), "{line}");

    let held_names = names("calibration/heldout/street", 24);
    let held_refs: Vec<&str> = held_names.iter().map(String::as_str).collect();
    let held = family_inputs(&file, "centernet", &held_refs);
    let mut fp32 = Engine::load(&file, &cfg).unwrap();
    let reference = fidelity::outputs_of(&mut fp32, &held).unwrap();
    let manifest = edgesight::models::Manifest::find("centernet").unwrap();
    let agreement = |m: Model, name: &str| {
        let (m, _) = rewrites::for_target(m, Precision::Int8, Target::Cpu, &stats.shapes);
        let p = tmp.path().join(name);
        m.save(&p).unwrap();
        let out = fidelity::outputs_of(&mut Engine::load(&p, &cfg).unwrap(), &held).unwrap();
        let f = fidelity::compare(&reference, &out, manifest.family, &manifest, fp32.io());
        f.unwrap().map50.unwrap()
    };
    let (plain, fit) = (
        agreement(rounded, "rounded.onnx"),
        agreement(fitted, "fitted.onnx"),
    );
    eprintln!(
        "agreement mAP50 on {} held-out frames: fitted {fit:.4}, rounded {plain:.4}",
        held.len()
    );
    assert!(fit > plain + 0.05, "fitted {fit}, rounded {plain}");
}
