//! Quantization parameters: a scale and zero point per activation tensor, from its calibrated
//! range, inherited through data movement, scaled through `x * c`, kept inside a fused Clip, and
//! shared by a Concat's inputs.

use std::collections::HashMap;

use super::config::{ActivationType, QuantizeConfig};
use super::graph::{clip_bounds, GraphIndex};
use super::select::{data_inputs, Selection, FUSED_ACTIVATION, SHARES_INPUT_RANGE};
use crate::optimize::calibrator::Range;

#[derive(Clone, Copy)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

pub fn qparams(r: &Range, act: ActivationType) -> QParams {
    match act {
        ActivationType::U8Asymmetric => {
            let (scale, zp) = r.asymmetric_u8();
            QParams {
                scale,
                zero_point: zp as i32,
            }
        }
        ActivationType::I8Symmetric => QParams {
            scale: r.symmetric_i8(),
            zero_point: 0,
        },
    }
}

/// A fused Clip's parameters: the calibrated range kept inside the clip bounds, with the
/// scale rounded down until `255 * scale` (as ONNX Runtime computes it in f32) does not pass
/// the upper bound, so that the runtime sees the Clip as redundant and drops it.
fn clip_qparams(r: &Range, (lo, hi): (f32, f32), act: ActivationType) -> QParams {
    let clamped = Range {
        lo: r.lo.max(lo),
        hi: r.hi.min(hi),
    };
    let mut q = qparams(&clamped, act);
    if act == ActivationType::U8Asymmetric && lo == 0.0 && q.zero_point == 0 {
        while q.scale * 255.0 > hi && q.scale > f32::MIN_POSITIVE {
            q.scale = f32::from_bits(q.scale.to_bits() - 1);
        }
    }
    q
}

/// The parameters of every tensor that gets a Q/DQ pair, by tensor name.
pub fn tensor_params(
    ix: &GraphIndex,
    sel: &Selection,
    cfg: &QuantizeConfig,
) -> HashMap<String, QParams> {
    let mut tq = calibrated(ix, sel, cfg);
    share_concat_grids(ix, sel, &mut tq);
    tq
}

/// Per tensor, from calibration. Data-movement ops inherit their input's parameters and are
/// quantized only where their input already is: they compute nothing worth int8.
fn calibrated(ix: &GraphIndex, sel: &Selection, cfg: &QuantizeConfig) -> HashMap<String, QParams> {
    let (g, ranges, act) = (ix.graph, cfg.ranges, cfg.act);
    let (fused, feeds_output) = (&sel.fused, &sel.feeds_output);
    let constant = |t: &str| ix.constant(t);
    let mut tq: HashMap<String, QParams> = HashMap::new();
    let calibrated = |t: &str| ranges.get(t).map(|r| qparams(r, act));
    for (i, (n, &on)) in g.node.iter().zip(&sel.active).enumerate() {
        if let Some(&c) = sel.folded.get(&i) {
            let x = n.input.iter().find(|t| !constant(t));
            if let Some(q) = x.and_then(|x| tq.get(x)) {
                let q = QParams {
                    scale: q.scale * c,
                    zero_point: q.zero_point,
                };
                tq.insert(n.output[0].clone(), q);
            }
            continue;
        }
        if !on {
            continue;
        }
        let moves = SHARES_INPUT_RANGE.contains(&n.op_type());
        if !moves {
            for i in data_inputs(n, &ix.inits) {
                if fused.contains(n.input[i].as_str()) || constant(&n.input[i]) {
                    continue;
                }
                let t = &n.input[i];
                if !tq.contains_key(t) {
                    if let Some(q) = calibrated(t) {
                        tq.insert(t.clone(), q);
                    }
                }
            }
        }
        let Some(o) = n.output.first() else { continue };
        if feeds_output.contains(o.as_str()) || fused.contains(o.as_str()) {
            continue;
        }
        let q = if moves {
            tq.get(&n.input[0]).map(|q| QParams {
                scale: q.scale,
                zero_point: q.zero_point,
            })
        } else if n.op_type() == "Clip" {
            ranges
                .get(o)
                .map(|r| clip_qparams(r, clip_bounds(g, &ix.producer, n), act))
        } else {
            calibrated(o)
        };
        if let Some(q) = q {
            tq.insert(o.clone(), q);
        }
    }
    tq
}

/// A Concat whose inputs carry its output's parameters only copies bytes (ONNX Runtime's
/// QLinearConcat builds no requantization table for them; TensorRT elides such a concat),
/// and those inputs are rounded once, not twice. Only inputs the Concat alone reads, written
/// by an op that computes: data movement keeps its input's grid so that the runtime drops
/// it, and a folded Relu/Clip needs its own Q inside its bounds.
fn share_concat_grids(ix: &GraphIndex, sel: &Selection, tq: &mut HashMap<String, QParams>) {
    let g = ix.graph;
    let active = &sel.active;
    for (n, &on) in g.node.iter().zip(active) {
        if !on || n.op_type() != "Concat" {
            continue;
        }
        let Some(&out_q) = sel.carrier(g, &n.output[0]).and_then(|o| tq.get(o)) else {
            continue;
        };
        for t in &n.input {
            let sole =
                ix.consumers.get(t.as_str()) == Some(&1) && !ix.graph_outputs.contains(t.as_str());
            let computes = ix.producer.get(t.as_str()).is_some_and(|&p| {
                let op = g.node[p].op_type();
                active[p] && !SHARES_INPUT_RANGE.contains(&op) && !FUSED_ACTIVATION.contains(&op)
            });
            if sole && computes && tq.contains_key(t) {
                tq.insert(t.clone(), out_q);
            }
        }
    }
}
