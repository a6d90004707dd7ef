//! Helpers for the `optimize` tests: the CLI with a cache of its own, artifacts built once per
//! test binary and shared by the tests that read them, and the optimizer's steps called
//! directly where a test needs a quantized graph but none of the measurements.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::*;
use edgesight::onnx::{pb, Model};

pub const MFN: &str = "models/cache/mobilefacenet.onnx";

pub fn optimize(args: &[&str], cache: &Path) -> std::process::Output {
    let mut a = vec!["optimize"];
    a.extend(args);
    edgesight_env(&a, &[("EDGESIGHT_CACHE", cache.to_str().unwrap())])
}

/// `optimize ARGS --out OUT` must succeed; its stderr.
pub fn optimize_ok(args: &[&str], out: &Path, cache: &Path) -> String {
    let mut a = args.to_vec();
    a.extend(["--out", out.to_str().unwrap()]);
    let o = optimize(&a, cache);
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

pub fn node<'a>(m: &'a Model, name: &str) -> &'a pb::NodeProto {
    m.graph()
        .node
        .iter()
        .find(|n| n.name() == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

pub fn assert_no_artifact(out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    if let Some(parent) = out.parent() {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".optimize-"),
                "scratch folder {name} left behind"
            );
        }
    }
}

pub fn fails(args: &[&str], out: &Path, cache: &Path, want: &[&str]) {
    let mut a = args.to_vec();
    a.extend(["--out", out.to_str().unwrap()]);
    let o = optimize(&a, cache);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = error_line(&o);
    for w in want {
        assert!(e.contains(w), "{e:?} lacks {w:?}");
    }
    assert_no_artifact(out);
}

/// CenterNet's output rows (x1, y1, x2, y2, score, class; 100 per image) for each image, from
/// the model at `path`, through the family's own preprocessing.
pub fn centernet_rows(path: &Path, images: &[&str]) -> Vec<Vec<f32>> {
    use edgesight::engine::{Engine, EngineConfig};
    let mut e = Engine::load(path, &EngineConfig::default()).unwrap();
    family_inputs(path, "centernet", images)
        .iter()
        .map(|t| e.run(t).unwrap()[0].data.iter().copied().collect())
        .collect()
}

/// The artifact's `reconstruction: ...` rewrite line.
pub fn reconstruct_line_of(a: &toml::Value) -> String {
    let rewrites = rewrites(a);
    rewrites
        .iter()
        .find(|r| r.starts_with("reconstruction: "))
        .unwrap_or_else(|| panic!("{rewrites:?}"))
        .clone()
}

/// The labels `run --model-dir ART` reports on bus.jpg, its output in `out`.
pub fn bus_labels(art: &Path, out: &Path) -> Vec<String> {
    let o = edgesight(&[
        "run",
        "assets/bus.jpg",
        "--model-dir",
        art.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    events(out)[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap().to_string())
        .collect()
}

/// Images as the small graphs built in these tests read them: 32x32, NCHW, float in 0..1.
pub fn pixels_32x32_nchw() -> edgesight::preprocess::Preprocessor {
    use edgesight::preprocess::{Layout, PreprocessSpec, Preprocessor, Resize};
    Preprocessor::new(PreprocessSpec {
        width: 32,
        height: 32,
        resize: Resize::Stretch,
        layout: Layout::Nchw,
        elem: edgesight::tensor::ElementType::F32,
        mean: [0.0; 3],
        std: [255.0; 3],
        pad: 114,
    })
}

/// Preprocessed tensors of `images` for the model at `file`, through the manifest `family`'s
/// own preprocessing.
pub fn family_inputs(file: &Path, family: &str, images: &[&str]) -> Vec<edgesight::tensor::Tensor> {
    use edgesight::engine::{Engine, EngineConfig};
    let e = Engine::load(file, &EngineConfig::default()).unwrap();
    let m = edgesight::models::Manifest::find(family).unwrap();
    let spec = edgesight::models::preprocess_spec(&m, e.io()).unwrap();
    let mut p = edgesight::preprocess::Preprocessor::new(spec);
    images
        .iter()
        .map(|f| {
            let img = edgesight::optimize::calibrate::decode_image(&asset(f)).unwrap();
            p.run(img.pixels()).unwrap().0
        })
        .collect()
}

/// `model` quantized for the CPU with min-max ranges calibrated on `inputs`, as `optimize`
/// quantizes before its last rewrites, and calibration's tensor shapes.
pub fn quantized_on(
    model: &Model,
    inputs: &[edgesight::tensor::Tensor],
    scratch: &Path,
) -> (Model, std::collections::HashMap<String, Vec<usize>>) {
    let range = edgesight::optimize::weights::WeightRange::for_this_cpu();
    quantized_with_range(model, inputs, scratch, range)
}

/// [`quantized_on`] with the weights on `range`'s grid.
pub fn quantized_with_range(
    model: &Model,
    inputs: &[edgesight::tensor::Tensor],
    scratch: &Path,
    range: edgesight::optimize::weights::WeightRange,
) -> (Model, std::collections::HashMap<String, Vec<usize>>) {
    use edgesight::engine::EngineConfig;
    use edgesight::optimize::{calibrate, calibrator::Method, qdq, quantizer::Quantizer};
    let cfg = EngineConfig::default();
    let stats = calibrate::collect(model, inputs, &cfg, scratch, &|_, _| {}).unwrap();
    let act = qdq::ActivationType::U8Asymmetric;
    let quantizer = Quantizer::new(model, &stats, Method::MinMax, act, range);
    let (q, _) = quantizer.rounded(&qdq::Exclusions::default()).unwrap();
    (q, stats.shapes)
}

/// Every output of `a` and `b` on `inputs`, compared bit for bit.
pub fn same_outputs(a: &Model, b: &Model, inputs: &[edgesight::tensor::Tensor], scratch: &Path) {
    use edgesight::engine::{Engine, EngineConfig};
    let load = |m: &Model, name: &str| {
        let p = scratch.join(name);
        m.save(&p).unwrap();
        Engine::load(&p, &EngineConfig::default()).unwrap()
    };
    let (mut ea, mut eb) = (load(a, "a.onnx"), load(b, "b.onnx"));
    for t in inputs {
        let (oa, ob) = (ea.run(t).unwrap(), eb.run(t).unwrap());
        assert_eq!(oa.len(), ob.len());
        for (x, y) in oa.iter().zip(&ob) {
            assert_eq!(x.data.shape(), y.data.shape(), "{}", x.name);
            let differ = x.data.iter().zip(y.data.iter()).filter(|(p, q)| p != q);
            assert_eq!(differ.count(), 0, "{} differs", x.name);
        }
    }
}

/// CenterNet, as the tests name it.
pub const CN: &str = "models/cache/centernet-mobilenetv3.onnx";
/// BlazeFace, as the tests name it.
pub const BF: &str = "models/cache/blazeface-back-256.onnx";

/// This test binary's folder for shared artifacts and their calibration cache, emptied when the
/// binary first asks for it (cargo runs one test binary at a time).
fn shared_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A folder of this name in the shared folder, created when missing.
pub fn shared_folder(name: &str) -> PathBuf {
    let dir = shared_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The calibration cache the shared artifacts use: one model's statistics serve every
/// artifact of it in this binary.
pub fn shared_cache() -> PathBuf {
    shared_dir().join("cache")
}

/// The artifact `optimize ARGS` makes, built by the first test that asks for `name` and shared
/// by the rest (which wait for it); a failed build fails every test that asks.
pub fn shared_artifact(name: &str, args: &[&str]) -> PathBuf {
    type Built = Arc<OnceLock<Result<PathBuf, String>>>;
    static BUILT: Mutex<Vec<(String, Built)>> = Mutex::new(Vec::new());
    let cell: Built = {
        let mut all = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        match all.iter().find(|(n, _)| n == name) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Built::default();
                all.push((name.to_string(), c.clone()));
                c
            }
        }
    };
    let built = cell.get_or_init(|| {
        let out = shared_dir().join(name);
        let mut a = args.to_vec();
        a.extend(["--out", out.to_str().unwrap()]);
        let o = optimize(&a, &shared_cache());
        if o.status.success() {
            Ok(out)
        } else {
            Err(stderr(&o))
        }
    });
    built.clone().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Calibration statistics of `model` over `inputs`, as `optimize` collects them.
pub fn calibrated_on(
    model: &Model,
    inputs: &[edgesight::tensor::Tensor],
    scratch: &Path,
) -> edgesight::optimize::calibrate::Statistics {
    use edgesight::engine::EngineConfig;
    let cfg = EngineConfig::default();
    edgesight::optimize::calibrate::collect(model, inputs, &cfg, scratch, &|_, _| {}).unwrap()
}

/// `model` quantized for this CPU as `optimize` quantizes it (percentile ranges from `stats`,
/// then the CPU rewrites), with `exclude` kept in float, and none of the measurements; the
/// graph and its rewrites.
pub fn quantized_for_cpu(
    model: &Model,
    stats: &edgesight::optimize::calibrate::Statistics,
    exclude: &edgesight::optimize::qdq::Exclusions,
) -> (Model, Vec<String>) {
    use edgesight::optimize::weights::WeightRange;
    use edgesight::optimize::{qdq, quantizer::Quantizer, rewrites};
    use edgesight::optimize::{Precision, Target};
    let method = "percentile:99.99".parse().unwrap();
    let act = qdq::ActivationType::U8Asymmetric;
    let q = Quantizer::new(model, stats, method, act, WeightRange::for_this_cpu());
    let (m, report) = q.rounded(exclude).unwrap();
    let (m, done) = rewrites::for_target(m, Precision::Int8, Target::Cpu, &stats.shapes);
    let mut lines = report.rewrites;
    lines.extend(done);
    (m, lines)
}

/// Images of a calibration folder, sorted, the first `n`.
pub fn images_in(rel: &str, n: usize) -> Vec<String> {
    files_in(rel)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .take(n)
        .map(|p| p.display().to_string())
        .collect()
}
