//! Peak picking on the integer logits.
//!
//! CenterNet-style detectors find objects as local maxima of a class heatmap:
//! `keep = Equal(h, MaxPool3x3(h))` with `h = Sigmoid(logits)`, then `h * keep` goes to TopK.
//! Sigmoid is strictly increasing, so the max commutes with it and equality survives it:
//! `Equal(h, MaxPool(h))` is `Equal(logits, MaxPool(logits))`. Written that way, an INT8 graph
//! pools the logits' own integers and compares integers (both tensors sit on one grid), in the
//! layout the integer convolution wrote them. Left as exported, the CPU runtime dequantizes the
//! 80x128x128 heatmap, takes the sigmoid, transposes it twice and reorders it for a float
//! MaxPool: a tenth of CenterNet's kernel time (docs/optimize-findings.md, "Figures behind the code"), and the rewritten graph gives the
//! same detections bit for bit.
//!
//! The one difference from the float graph: where two logits both exceed ~17, float32 rounds
//! both sigmoids to 1.0 and the exported graph keeps both as peaks; the rewrite keeps the
//! larger. Scores are untouched: the Mul still reads the sigmoid.
//!
//! The second rewrite, [`scores_on_integers`], takes the rest of the heatmap off float: the
//! masked scores `Sigmoid(logits) * Cast(keep)` that go to TopK. The sigmoid of 8-bit logits
//! takes at most 256 values; on the fixed grid of 1/255 it runs as a table lookup, and the mask
//! multiplies integers. Where the product goes to TopK through shape-only ops, TopK ranks the
//! integers (the scale is positive, so the order is the scores') and only the k values it keeps
//! are dequantized. Scores move by at most 1/510, the same peaks are found, and scores that now
//! round alike may trade places in TopK's order.
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
//! let model = Model::from_graph(g, 13, "m.onnx");
//! let (out, tests) = edgesight::optimize::peaks::pool_the_logits(&model, |_| false).unwrap();
//! assert_eq!(tests, ["peak"]);
//! let pool = out.graph().node.iter().find(|n| n.op_type() == "MaxPool").unwrap();
//! assert_eq!(pool.input[0], "logits");
//! ```

use std::collections::HashMap;

use super::qdq::names::Pair;
use crate::onnx::{self, pb, DataType, Model};

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
        let Some((logits, pool, perm)) =
            peak_test_at(g, &producer, n).filter(|(_, pool, _)| !skip(pool))
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

/// The logits under every heatmap peak test of a float graph: the tensors whose sigmoid is
/// both pooled and compared, as [`pool_the_logits`] finds them.
pub fn heatmap_logits(model: &Model) -> Vec<String> {
    let g = model.graph();
    let producer = onnx::producers(g);
    let mut out: Vec<String> = Vec::new();
    for (logits, _, _) in g.node.iter().filter_map(|n| peak_test_at(g, &producer, n)) {
        if !out.iter().any(|o| o == logits) {
            out.push(logits.to_string());
        }
    }
    out
}

/// [`peak_test`] of an Equal node, its inputs taken either way round; `None` for any other node.
fn peak_test_at<'g>(
    g: &'g pb::GraphProto,
    producer: &HashMap<&str, usize>,
    n: &'g pb::NodeProto,
) -> Option<(&'g str, &'g pb::NodeProto, Option<Vec<i64>>)> {
    if n.op_type() != "Equal" || n.input.len() != 2 {
        return None;
    }
    let a = through_transposes(g, producer, &n.input[0]);
    let b = through_transposes(g, producer, &n.input[1]);
    peak_test(g, producer, &a, &b).or_else(|| peak_test(g, producer, &b, &a))
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

/// The fixed grid of scores in [0, 1]: 255 steps, zero at integer 0.
const SCORE_SCALE: f32 = 1.0 / 255.0;

/// One masked heatmap: `Mul(P(Sigmoid(DQ(logits))), Cast(keep))`, P a chain of Transposes.
struct MaskedScores {
    sigmoid: usize,
    /// The node that reads the sigmoid (the first Transpose, or the Mul).
    first_reader: usize,
    mul: usize,
    /// The Mul's input slots: the moved scores, and the cast mask.
    score_slot: usize,
    cast: usize,
    /// Tensors that change from float to uint8: the Transposes' outputs and the mask.
    retyped: Vec<String>,
    /// The TopK the product reaches through shape-only ops (their indices), when it does: it
    /// then ranks the integers, and only the k values it keeps are dequantized.
    to_topk: Option<(Vec<usize>, usize)>,
}

/// The shape-only nodes from `t` to the TopK that ranks it, and that TopK, when nothing else
/// reads `t` or anything on the way.
fn path_to_topk<'g>(
    g: &'g pb::GraphProto,
    readers: &onnx::Readers<'_>,
    mut t: &'g str,
) -> Option<(Vec<usize>, usize)> {
    let mut chain = Vec::new();
    loop {
        let r = readers.only(t)?;
        let n = &g.node[r];
        if n.input.first().map(String::as_str) != Some(t) {
            return None;
        }
        match n.op_type() {
            "TopK" => return Some((chain, r)),
            op if onnx::SHAPE_ONLY.contains(&op) => {
                chain.push(r);
                t = &n.output[0];
            }
            _ => return None,
        }
    }
}

/// The masked heatmaps of a quantized graph that [`scores_on_integers`] can move onto integers.
fn masked_score_sites(model: &Model, skip: impl Fn(&pb::NodeProto) -> bool) -> Vec<MaskedScores> {
    let g = model.graph();
    let producer = onnx::producers(g);
    let readers = onnx::Readers::of(g);
    let types = onnx::infer_elem_types(model);
    let of = |t: &str| producer.get(t).map(|&p| (p, &g.node[p]));
    let mut sites = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type() != "Mul" || n.input.len() != 2 || skip(n) {
            continue;
        }
        let site = (0..2).find_map(|score_slot| {
            let (cast, c) = of(&n.input[1 - score_slot])?;
            let bool_mask = c.op_type() == "Cast"
                && onnx::get_attr_int(c, "to") == Some(DataType::Float as i64)
                && types.get(c.input[0].as_str()) == Some(&(DataType::Bool as i32))
                && readers.only(&c.output[0]) == Some(i);
            if !bool_mask {
                return None;
            }
            let mut retyped = vec![c.output[0].clone()];
            let (mut t, mut reader) = (n.input[score_slot].as_str(), i);
            loop {
                if readers.only(t) != Some(reader) {
                    return None;
                }
                let (p, pn) = of(t)?;
                match pn.op_type() {
                    "Transpose" => {
                        retyped.push(t.to_string());
                        (t, reader) = (pn.input[0].as_str(), p);
                    }
                    "Sigmoid" if !skip(pn) => {
                        let (_, dq) = of(&pn.input[0])?;
                        return (dq.op_type() == "DequantizeLinear").then_some(MaskedScores {
                            sigmoid: p,
                            first_reader: reader,
                            mul: i,
                            score_slot,
                            cast,
                            retyped,
                            to_topk: path_to_topk(g, &readers, &n.output[0]),
                        });
                    }
                    _ => return None,
                }
            }
        });
        sites.extend(site);
    }
    sites
}

/// The graph with every masked heatmap computed on integers, and the Mul nodes that were;
/// `None` when it has none. For a quantized graph (the logits come from a
/// DequantizeLinear), CPU only: the sigmoid gets a Q/DQ pair on the fixed grid of 1/255 (ONNX
/// Runtime fuses it into a table lookup), the Transposes move uint8, the boolean mask is cast
/// to uint8 instead of float and the Mul of the two runs as an integer multiply onto the same
/// grid; a TopK the product reaches through shape-only ops ranks those integers. On CenterNet
/// this replaces a dequantize, a float sigmoid, a cast and a multiply over 80x128x128 values.
/// A Mul or Sigmoid that `skip` names (an excluded layer) is left alone.
pub fn scores_on_integers(
    model: &Model,
    skip: impl Fn(&pb::NodeProto) -> bool,
) -> Option<(Model, Vec<String>)> {
    let sites = masked_score_sites(model, skip);
    if sites.is_empty() {
        return None;
    }
    let mut out = model.clone();
    let og = out.graph_mut();
    let old = std::mem::take(&mut og.node);
    let mut names = Vec::new();
    let mut after: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut before: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut nodes = old.clone();
    let mut retyped = Vec::new();
    for s in sites {
        let scores = old[s.sigmoid].output[0].clone();
        let (scale, zp) = (
            format!("{scores}__score_scale"),
            format!("{scores}__score_zp"),
        );
        og.initializer
            .push(onnx::tensor_from_f32(&scale, &[], &[SCORE_SCALE]));
        og.initializer.push(onnx::tensor_from_u8(&zp, &[], &[0]));
        let q = format!("{scores}__score_q");
        after.entry(s.sigmoid).or_default().push(onnx::node(
            "QuantizeLinear",
            &format!("{scores}__score_Q"),
            &[&scores, &scale, &zp],
            &[&q],
            vec![],
        ));
        for t in nodes[s.first_reader]
            .input
            .iter_mut()
            .filter(|t| **t == scores)
        {
            *t = q.clone();
        }
        // The Mul reads the moved integers back as scores, and the mask as 0 or 1.
        let moved = nodes[s.mul].input[s.score_slot].clone();
        let mask = old[s.cast].output[0].clone();
        let mask_scale = format!("{mask}__mask_scale");
        og.initializer
            .push(onnx::tensor_from_f32(&mask_scale, &[], &[1.0]));
        let cast = &mut nodes[s.cast];
        cast.attribute.retain(|a| a.name() != "to");
        cast.attribute
            .push(onnx::attr_int("to", DataType::Uint8 as i64));
        after.entry(s.cast).or_default().push(onnx::node(
            "DequantizeLinear",
            &format!("{mask}__mask_DQ"),
            &[&mask, &mask_scale, &zp],
            &[&format!("{mask}__mask_dq")],
            vec![],
        ));
        let (moved_q, moved_dq) = if s.first_reader == s.mul {
            (q.clone(), format!("{scores}__score_dq"))
        } else {
            (moved.clone(), format!("{moved}__score_dq"))
        };
        before.entry(s.mul).or_default().push(onnx::node(
            "DequantizeLinear",
            &Pair(&moved_dq).dq_node(),
            &[&moved_q, &scale, &zp],
            &[&moved_dq],
            vec![],
        ));
        let mul = &mut nodes[s.mul];
        mul.input[s.score_slot] = moved_dq;
        mul.input[1 - s.score_slot] = format!("{mask}__mask_dq");
        // The product lands on the scores' grid: an integer multiply by 0 or 1, exactly.
        let product = mul.output[0].clone();
        let masked = format!("{product}__masked");
        mul.output[0] = masked.clone();
        let masked_q = format!("{masked}_q");
        after.entry(s.mul).or_default().push(onnx::node(
            "QuantizeLinear",
            &format!("{product}__masked_Q"),
            &[&masked, &scale, &zp],
            &[&masked_q],
            vec![],
        ));
        match &s.to_topk {
            // The scale is positive, so the integers rank as the scores do: TopK takes them,
            // and only the k values it keeps go back to float, under their old name.
            Some((chain, topk)) => {
                let first = chain.first().unwrap_or(topk);
                nodes[*first].input[0] = masked_q;
                retyped.push(product.clone());
                retyped.extend(chain.iter().map(|&c| old[c].output[0].clone()));
                let values = old[*topk].output[0].clone();
                let values_q = Pair(&values).quantized();
                nodes[*topk].output[0] = values_q.clone();
                after.entry(*topk).or_default().push(onnx::node(
                    "DequantizeLinear",
                    &Pair(&values).dq_node(),
                    &[&values_q, &scale, &zp],
                    &[&values],
                    vec![],
                ));
            }
            None => after.entry(s.mul).or_default().push(onnx::node(
                "DequantizeLinear",
                &format!("{product}__masked_DQ"),
                &[&masked_q, &scale, &zp],
                &[&product],
                vec![],
            )),
        }
        names.push(old[s.mul].name().to_string());
        retyped.extend(s.retyped);
    }
    for (i, n) in nodes.into_iter().enumerate() {
        og.node.extend(before.remove(&i).unwrap_or_default());
        og.node.push(n);
        og.node.extend(after.remove(&i).unwrap_or_default());
    }
    // Shapes recorded for the float tensors would now contradict their type.
    og.value_info
        .retain(|v| !retyped.iter().any(|t| t == v.name()));
    Some((out, names))
}
