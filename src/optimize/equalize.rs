//! Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019).
//!
//! After batch-norm folding, a depthwise convolution's output channels can differ in range by
//! 30× or more. One per-tensor activation scale then leaves the small channels a few levels
//! each. For `Conv A → ReLU → Conv B`, scaling A's output channel `c` by `1/s_c` and B's
//! matching input channel by `s_c` changes nothing in float (ReLU commutes with positive
//! scales), and `s_c = sqrt(r_A(c) / r_B(c))` gives both weight tensors the same per-channel
//! range, which evens out the activation between them too.

use std::collections::HashMap;

use crate::onnx::{self, pb, Model};

struct Pair {
    a: usize,
    b: usize,
    /// B is depthwise: its input channel `c` is its output channel `c` (weight axis 0).
    b_depthwise: bool,
}

fn pairs(g: &pb::GraphProto) -> Vec<Pair> {
    let readers = onnx::Readers::of(g);
    let only = |t: &str| readers.only(t);
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name(), t)).collect();
    // A weight (or bias) another node also reads cannot be rescaled for this pair alone.
    let private = |t: &str| readers.of_tensor(t).len() == 1 && inits.contains_key(t);
    let group = |n: &pb::NodeProto| onnx::get_attr_int(n, "group").unwrap_or(1);
    let mut out = Vec::new();
    for (ai, a) in g.node.iter().enumerate() {
        if a.op_type() != "Conv" || a.input.len() < 2 || !private(&a.input[1]) {
            continue;
        }
        if a.input.len() > 2 && !private(&a.input[2]) {
            continue;
        }
        let Some(mut next) = only(&a.output[0]) else {
            continue;
        };
        let mut feed = a.output[0].as_str();
        if g.node[next].op_type() == "Relu" {
            feed = g.node[next].output[0].as_str();
            let Some(b) = only(feed) else { continue };
            next = b;
        }
        let b = &g.node[next];
        if b.op_type() != "Conv" || b.input[0] != feed || b.input.len() < 2 {
            continue;
        }
        if !private(&b.input[1]) {
            continue;
        }
        let oa = inits[a.input[1].as_str()].dims[0];
        let wb = &inits[b.input[1].as_str()].dims;
        let gb = group(b);
        let b_depthwise = gb > 1 && gb == oa && wb[1] == 1 && wb[0] == oa;
        if !(b_depthwise || gb == 1 && wb[1] == oa) {
            continue;
        }
        out.push(Pair {
            a: ai,
            b: next,
            b_depthwise,
        });
    }
    out
}

/// Equalizes every `Conv → [ReLU] → Conv` pair, `rounds` times over. Returns the pair count.
pub fn equalize(model: &mut Model, rounds: usize) -> usize {
    let found = pairs(model.graph());
    let names: Vec<(String, Option<String>, String, bool)> = {
        let g = model.graph();
        found
            .iter()
            .map(|p| {
                let a = &g.node[p.a];
                let b = &g.node[p.b];
                (
                    a.input[1].clone(),
                    a.input.get(2).filter(|s| !s.is_empty()).cloned(),
                    b.input[1].clone(),
                    p.b_depthwise,
                )
            })
            .collect()
    };
    let g = model.graph_mut();
    let idx: HashMap<String, usize> = g
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    for _ in 0..rounds {
        for (wa_name, ba_name, wb_name, b_dw) in &names {
            let (Some(mut wa), Some(mut wb)) = (
                onnx::tensor_f32(&g.initializer[idx[wa_name]]),
                onnx::tensor_f32(&g.initializer[idx[wb_name]]),
            ) else {
                continue;
            };
            let da = g.initializer[idx[wa_name]].dims.clone();
            let db = g.initializer[idx[wb_name]].dims.clone();
            let c_n = da[0] as usize;
            let per_a = wa.len() / c_n;
            let range_a: Vec<f32> = (0..c_n)
                .map(|c| {
                    wa[c * per_a..(c + 1) * per_a]
                        .iter()
                        .fold(0.0f32, |m, v| m.max(v.abs()))
                })
                .collect();
            // B's weights that read input channel c.
            let (ob, ib) = (db[0] as usize, db[1] as usize);
            let k = wb.len() / (ob * ib);
            let b_index = |c: usize| -> Vec<usize> {
                if *b_dw {
                    (c * k..(c + 1) * k).collect()
                } else {
                    (0..ob)
                        .flat_map(|o| (0..k).map(move |j| (o * ib + c) * k + j))
                        .collect()
                }
            };
            let mut scale = vec![1.0f32; c_n];
            for (c, sc) in scale.iter_mut().enumerate() {
                let ix = b_index(c);
                let rb = ix.iter().fold(0.0f32, |m, &i| m.max(wb[i].abs()));
                let ra = range_a[c];
                if ra <= 0.0 || rb <= 0.0 {
                    continue;
                }
                *sc = (ra / rb).sqrt();
                for v in &mut wa[c * per_a..(c + 1) * per_a] {
                    *v /= *sc;
                }
                for i in ix {
                    wb[i] *= *sc;
                }
            }
            if let Some(bn) = ba_name {
                let t = &g.initializer[idx[bn]];
                if let Some(bv) = onnx::tensor_f32(t) {
                    let bv: Vec<f32> = bv.iter().zip(&scale).map(|(b, s)| b / s).collect();
                    g.initializer[idx[bn]] = onnx::tensor_from_f32(t.name(), &t.dims.clone(), &bv);
                }
            }
            let ta = &g.initializer[idx[wa_name]];
            g.initializer[idx[wa_name]] = onnx::tensor_from_f32(ta.name(), &da, &wa);
            let tb = &g.initializer[idx[wb_name]];
            g.initializer[idx[wb_name]] = onnx::tensor_from_f32(tb.name(), &db, &wb);
        }
    }
    names.len()
}
