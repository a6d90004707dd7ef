//! `edgesight optimize`: an FP32 ONNX model plus calibration images in, a faster artifact out.
//!
//! INT8 is explicit quantization ([`qdq`]): Q/DQ pairs placed in the graph from ranges that
//! [`calibrate`] measured with one of the [`calibrator`]s; for the CPU, rewrites that suit ONNX
//! Runtime's kernels follow, each documenting what it keeps ([`align`], [`peaks`], [`stem`],
//! [`gates`]). FP16 is [`fp16`]. Either way the artifact folder holds `model.onnx`,
//! `artifact.toml` (what was done, from what, with which figures) and `report.md` with its
//! plots; `edgesight run --model-dir DIR` consumes it.
//!
//! [`run`] is a sequence of steps, a file each: [`workspace`] (a scratch folder next to
//! `--out`, renamed into place only once everything succeeded), [`images`], the INT8 arm
//! ([`int8`]: [`calibrate::calibrated`], [`quantizer`], [`search`], [`reconstruct`]),
//! [`rewrites`], [`ceiling`], [`measure`], then [`assemble`], [`artifact`] and [`report`].
//! Tests and tools can call any step on its own.

pub mod align;
pub mod artifact;
pub mod assemble;
pub mod calibrate;
pub mod calibrator;
pub mod ceiling;
pub mod equalize;
pub mod fidelity;
pub mod figures;
pub mod fp16;
pub mod gates;
pub mod hardswish;
pub mod images;
pub mod int8;
pub mod measure;
pub mod peaks;
pub mod qdq;
pub mod quantizer;
pub mod reconstruct;
pub mod report;
pub mod rewrites;
pub mod search;
pub mod spec;
pub mod stem;
pub mod weights;
pub mod workspace;

use std::collections::HashMap;
use std::path::PathBuf;

pub use spec::{check_target, OptimizeError, OptimizeSpec, Precision, ProgressFn, Target};

use crate::engine::{Engine, EngineConfig, Provider};
use crate::models::preprocess_spec;
use crate::onnx::Model;
use artifact::Artifact;
use images::ImageSets;
use measure::{Bench, Candidates};
use workspace::{temp_dir, Workspace};

/// What `optimize` did, as `artifact.toml` records it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub out: PathBuf,
    pub artifact: Artifact,
}

/// Turns `spec`'s model into an artifact folder at `spec.out`: the image sets, the model in
/// its precision (calibrated and quantized for INT8), the rewrites for the target, the
/// measurements, then the artifact, swapped into place only once all of it succeeded.
pub fn run(spec: &OptimizeSpec, progress: ProgressFn) -> Result<Outcome, OptimizeError> {
    check_target(spec.precision, spec.target)?;
    let src = Model::load(&spec.manifest.file)?;
    if spec.target == Target::Tensorrt {
        artifact::check_tensorrt(&spec.manifest.file, spec.precision, &spec.engine)?;
    }
    let source_sha = calibrate::file_sha256(&spec.manifest.file)?;
    // The FP32 reference, on the CPU: fidelity is measured against it whatever the target.
    let cpu = EngineConfig {
        provider: Provider::Cpu,
        ..spec.engine.clone()
    };
    let mut fp32 = Engine::load(&spec.manifest.file, &cpu)?;
    let pre = preprocess_spec(&spec.manifest, fp32.io())?;
    let ws = Workspace::open(&spec.out)?;
    let sets = ImageSets::open(spec, &pre, progress)?;

    let (candidate, mut int8) = match spec.precision {
        Precision::Fp32 => (src.clone(), None),
        Precision::Fp16 => (fp16::convert(&src, &fp16::Fp16Options::default())?.0, None),
        Precision::Int8 => {
            let cx = int8::Context {
                spec,
                pre: &pre,
                cpu: &cpu,
                scratch: ws.path(),
                source_sha: &source_sha,
                progress,
            };
            let set = sets.calibration.as_ref().expect("opened for int8");
            let (model, q) = int8::quantize(&cx, &src, set, &mut fp32, &sets.held)?;
            (model, Some(q))
        }
    };
    let every_layer = int8.as_mut().and_then(|q| q.every_layer.take());
    let mut rewrites = int8.as_ref().map_or_else(Vec::new, |q| {
        let mut r = q.report.rewrites.clone();
        r.extend(reconstruct::summary(&q.fitted, &q.report.quantized_layers));
        r
    });
    let no_shapes = HashMap::new();
    let shapes = int8.as_ref().map_or(&no_shapes, |q| &q.shapes);
    let (candidate, done) = rewrites::for_target(candidate, spec.precision, spec.target, shapes);
    rewrites.extend(done);
    let score_ceiling = ceiling::check(&src, &candidate);

    let model_path = ws.path().join(artifact::MODEL);
    candidate.save(&model_path)?;
    // Measured but not part of the artifact: it lives in a folder of its own.
    let every_dir = temp_dir()?;
    let every_path = every_dir.path().join("every-layer.onnx");
    let measure_every_layer = every_layer.is_some();
    if let Some(m) = every_layer {
        let m = match spec.target {
            Target::Cpu => rewrites::int8_layouts(m, shapes).0,
            Target::Tensorrt => m,
        };
        m.save(&every_path)?;
    }
    let bench = Bench {
        spec,
        pre: &pre,
        sets: &sets,
        cpu: &cpu,
        dir: ws.path(),
        progress,
    };
    let candidates = Candidates {
        model: &model_path,
        every_layer: measure_every_layer.then_some(every_path.as_path()),
        rewritten: spec.precision == Precision::Fp32 && !rewrites.is_empty(),
    };
    let measured = bench.measure(fp32, &candidates)?;
    let tensorrt = match spec.target {
        Target::Tensorrt => Some(artifact::build_tensorrt(
            &model_path,
            ws.path(),
            spec.precision,
            &spec.engine,
            &sets.held[0],
        )?),
        Target::Cpu => None,
    };
    let art = assemble::Made {
        source_sha,
        int8,
        rewrites,
        measured,
        score_ceiling,
        tensorrt,
    }
    .into_artifact(spec, &sets);
    art.write(ws.path())?;
    report::write(&art, ws.path())?;
    let out = ws.commit()?;
    Ok(Outcome { out, artifact: art })
}
