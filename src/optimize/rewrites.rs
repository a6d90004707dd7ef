//! The graph rewrites for the CPU runtime that follow quantization, in order. Each computes
//! the same function (or, for the int8 layouts, the same integers), so they change no figure
//! but speed; each returns what it did, for the artifact's list of rewrites.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use edgesight::onnx::Model;
//! use edgesight::optimize::{rewrites, Precision, Target};
//! let fp32 = Model::load("models/cache/centernet-mobilenetv3.onnx".as_ref())?;
//! let (fused, done) = rewrites::for_target(fp32, Precision::Fp32, Target::Cpu, &HashMap::new());
//! for line in &done {
//!     println!("{line}"); // one line per hard-swish fused into one op
//! }
//! # Ok::<(), edgesight::onnx::OnnxError>(())
//! ```

use std::collections::HashMap;

use super::spec::{Precision, Target};
use super::{gates, hardswish, stem};
use crate::onnx::Model;

/// One rewrite: the model, and a line per change, or `None` when it found nothing to do.
type Rewrite = fn(&Model, &HashMap<String, Vec<usize>>) -> Option<(Model, Vec<String>)>;

/// Hard-swish left in float (all of it in FP32; the layers kept in float in INT8) as one op
/// each. Only after quantization: it reads TF.js's float16 1/6 as 1/6, and the accuracy search
/// must judge the quantization alone.
fn fuse_hard_swish(m: &Model, _: &HashMap<String, Vec<usize>>) -> Option<(Model, Vec<String>)> {
    hardswish::fuse(m).map(|(m, done)| (m, done.iter().map(|d| d.to_string()).collect()))
}

/// The stem convolution read over groups of pixels, for the int8 kernels.
fn group_stem(m: &Model, _: &HashMap<String, Vec<usize>>) -> Option<(Model, Vec<String>)> {
    stem::group_pixels(m, |_| false)
        .map(|(m, done)| (m, done.iter().map(|d| d.to_string()).collect()))
}

/// Per-channel gates tiled to their tensors' shapes, for the int8 kernels.
fn tile_gates(m: &Model, shapes: &HashMap<String, Vec<usize>>) -> Option<(Model, Vec<String>)> {
    gates::tile(m, shapes).map(|(m, done)| (m, done.iter().map(|d| d.to_string()).collect()))
}

/// The rewrites for float ops, on every CPU artifact.
const FLOAT_OPS: &[Rewrite] = &[fuse_hard_swish];
/// The layouts for the CPU's int8 kernels.
const INT8_LAYOUTS: &[Rewrite] = &[group_stem, tile_gates];

/// Applies `rewrites` in turn; the model and the lines of every change.
fn apply(
    rewrites: &[Rewrite],
    m: Model,
    shapes: &HashMap<String, Vec<usize>>,
) -> (Model, Vec<String>) {
    let mut done = Vec::new();
    let m = rewrites
        .iter()
        .fold(m, |m, rewrite| match rewrite(&m, shapes) {
            Some((r, lines)) => {
                done.extend(lines);
                r
            }
            None => m,
        });
    (m, done)
}

/// The rewrites for the artifact's target and precision: float ops on the CPU, then the int8
/// layouts for an INT8 CPU artifact. `shapes`: calibration's tensor shapes.
pub fn for_target(
    m: Model,
    precision: Precision,
    target: Target,
    shapes: &HashMap<String, Vec<usize>>,
) -> (Model, Vec<String>) {
    if target != Target::Cpu {
        return (m, Vec::new());
    }
    let (m, mut done) = apply(FLOAT_OPS, m, shapes);
    if precision == Precision::Int8 {
        let (m, more) = int8_layouts(m, shapes);
        done.extend(more);
        return (m, done);
    }
    (m, done)
}

/// Only the int8 layouts: for the fully quantized model measured beside the artifact.
pub fn int8_layouts(m: Model, shapes: &HashMap<String, Vec<usize>>) -> (Model, Vec<String>) {
    apply(INT8_LAYOUTS, m, shapes)
}
