//! Peak picking on the integer logits.
//!
//! CenterNet-style detectors find objects as local maxima of a class heatmap:
//! `keep = Equal(h, MaxPool3x3(h))` with `h = Sigmoid(logits)`, then `h * keep` goes to TopK.
//! Sigmoid is strictly increasing, so the max commutes with it and equality survives it:
//! `Equal(h, MaxPool(h))` is `Equal(logits, MaxPool(logits))`. Written that way, an INT8 graph
//! pools the logits' own integers and compares integers (both tensors sit on one grid), in the
//! layout the integer convolution wrote them. Left as exported, the CPU runtime dequantizes the
//! 80x128x128 heatmap, takes the sigmoid, transposes it twice and reorders it for a float
//! MaxPool: on CenterNet that costs 2 ms of 21 ms of kernels, and the rewritten graph gives
//! the same detections bit for bit.
//!
//! The one difference from the float graph: where two logits both exceed ~17, float32 rounds
//! both sigmoids to 1.0 and the exported graph keeps both as peaks; the rewrite keeps the
//! larger. Scores are untouched (the Mul still reads the sigmoid).
//!
//! ```
//! use edgesight::onnx::{self, pb, Model};
//! let node = |op, name, i: &[&str], o: &[&str]| onnx::node(op, name, i, o, vec![]);
//! let g = pb::GraphProto {
//!     node: vec![
//!         node("Sigmoid", "s", &["logits"], &["h"]),
//!         node("MaxPool", "pool", &["h"], &["hmax"]),
//!         node("Equal", "peak", &["h", "hmax"], &["keep"]),
//!     ],
//!     output: vec![onnx::value_info("keep", onnx::DataType::Bool)],
//!     ..Default::default()
//! };
//! let model = Model { proto: pb::ModelProto { graph: Some(g), ..Default::default() }, path: "m.onnx".into() };
//! let (out, tests) = edgesight::optimize::peaks::pool_the_logits(&model, |_| false).unwrap();
//! assert_eq!(tests, ["peak"]);
//! let pool = out.graph().node.iter().find(|n| n.op_type() == "MaxPool").unwrap();
//! assert_eq!(pool.input[0], "logits");
//! ```

use std::collections::HashMap;

use crate::onnx::{self, pb, Model};

/// The graph with every heatmap peak test rewritten onto the logits, and the Equal nodes that
/// were; `None` when it has none. A peak test whose MaxPool `skip` names (an excluded layer) is
/// left as it is.
pub fn pool_the_logits(
    model: &Model,
    skip: impl Fn(&pb::NodeProto) -> bool,
) -> Option<(Model, Vec<String>)> {
    let g = model.graph();
    let producer = onnx::producers(g);
    let mut replace: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut tests = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type() != "Equal" || n.input.len() != 2 {
            continue;
        }
        let a = through_transposes(g, &producer, &n.input[0]);
        let b = through_transposes(g, &producer, &n.input[1]);
        let Some((logits, pool, perm)) = peak_test(g, &producer, &a, &b)
            .or_else(|| peak_test(g, &producer, &b, &a))
            .filter(|(_, pool, _)| !skip(pool))
        else {
            continue;
        };
        let pooled = format!("{logits}__pooled");
        let mut nodes = vec![pb::NodeProto {
            name: Some(format!("{}__on_logits", pool.name())),
            input: vec![logits.to_string()],
            output: vec![pooled.clone()],
            ..pool.clone()
        }];
        let keep = n.output[0].as_str();
        match perm {
            None => nodes.push(onnx::node(
                "Equal",
                n.name(),
                &[logits, &pooled],
                &[keep],
                vec![],
            )),
            // Equal(P(h), P(max)) is P(Equal(h, max)): compare where the pool wrote, then move.
            Some(p) => {
                let unmoved = format!("{keep}__unmoved");
                nodes.push(onnx::node(
                    "Equal",
                    n.name(),
                    &[logits, &pooled],
                    &[&unmoved],
                    vec![],
                ));
                nodes.push(onnx::node(
                    "Transpose",
                    &format!("{}__perm", n.name()),
                    &[&unmoved],
                    &[keep],
                    vec![onnx::attr_ints("perm", &p)],
                ));
            }
        }
        replace.insert(i, nodes);
        tests.push(n.name().to_string());
    }
    if replace.is_empty() {
        return None;
    }
    let mut out = model.clone();
    let og = out.graph_mut();
    let old = std::mem::take(&mut og.node);
    for (i, n) in old.into_iter().enumerate() {
        match replace.remove(&i) {
            Some(nodes) => og.node.extend(nodes),
            None => og.node.push(n),
        }
    }
    // The exported pool and its Transposes, now read by nothing.
    onnx::drop_dead_nodes(og);
    Some((out, tests))
}

/// A tensor seen through the Transposes that moved it: the tensor they started from and the
/// permutation all of them make together (`None`: not moved).
struct Moved<'g> {
    base: &'g str,
    perm: Option<Vec<i64>>,
}

fn through_transposes<'g>(
    g: &'g pb::GraphProto,
    producer: &HashMap<&str, usize>,
    t: &'g str,
) -> Moved<'g> {
    let mut base = t;
    let mut perm: Option<Vec<i64>> = None;
    while let Some(n) = producer.get(base).map(|&p| &g.node[p]) {
        let Some(p) = n
            .attribute
            .iter()
            .find(|a| a.name() == "perm")
            .map(|a| a.ints.clone())
            .filter(|_| n.op_type() == "Transpose")
        else {
            break;
        };
        // Output axis i of the outer move reads axis p[i] of what this Transpose wrote.
        perm = Some(match perm {
            None => p,
            Some(outer) => outer.iter().map(|&i| p[i as usize]).collect(),
        });
        base = n.input[0].as_str();
    }
    let identity = |p: &Vec<i64>| p.iter().enumerate().all(|(i, &v)| v == i as i64);
    Moved {
        base,
        perm: perm.filter(|p| !identity(p)),
    }
}

/// `h` and `pooled` as [`through_transposes`] sees an Equal's inputs: when they are
/// `P(Sigmoid(logits))` and `P(MaxPool(Sigmoid(logits)))` (the same P, none between the
/// sigmoid and the pool), the logits, that MaxPool and P.
fn peak_test<'g>(
    g: &'g pb::GraphProto,
    producer: &HashMap<&str, usize>,
    h: &Moved<'g>,
    pooled: &Moved<'g>,
) -> Option<(&'g str, &'g pb::NodeProto, Option<Vec<i64>>)> {
    let sigmoid = &g.node[*producer.get(h.base)?];
    let pool = &g.node[*producer.get(pooled.base)?];
    if sigmoid.op_type() != "Sigmoid" || pool.op_type() != "MaxPool" || h.perm != pooled.perm {
        return None;
    }
    // A MaxPool asked for its argmax indices does more than pick peaks.
    if pool.output.len() > 1 && !pool.output[1].is_empty() {
        return None;
    }
    let input = through_transposes(g, producer, &pool.input[0]);
    (input.base == h.base && input.perm.is_none())
        .then(|| (sigmoid.input[0].as_str(), pool, h.perm.clone()))
}
