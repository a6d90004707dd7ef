//! Hard-swish as one op, where the graph computes it in float.
//!
//! TensorFlow exports MobileNetV3's hard-swish as four element-wise nodes,
//! `(x * 1/6) * Clip(x + 3, 0, 6)`, and ONNX Runtime's CPU provider fuses none of them: each is a
//! pass over the whole tensor. ONNX's `HardSwish` (opset 14) is the same function in one pass,
//! and CenterNet's FP32 graph (20 such blocks) runs faster for it (docs/optimize-findings.md, "Figures behind the code"). In an INT8 graph
//! the hard-swishes run as QLinearAdd and QLinearMul already; this rewrite is for those left in
//! float (an FP32 artifact, layers kept in float).
//!
//! TF.js stores weights as float16, where 1/6 is 0.16662598; the rewrite reads a factor within
//! float16's rounding of 1/6 as the 1/6 it stands for (a relative change of 2.4e-4 at most).
//!
//! ```
//! use edgesight::onnx::{self, pb, Model};
//! let c = |name: &str, v: f32| onnx::tensor_from_f32(name, &[], &[v]);
//! let g = pb::GraphProto {
//!     node: vec![
//!         onnx::node("Mul", "sixth", &["x", "k6"], &["m"], vec![]),
//!         onnx::node("Add", "plus3", &["x", "k3"], &["b"], vec![]),
//!         onnx::node("Clip", "relu6", &["b", "lo", "hi"], &["r"], vec![]),
//!         onnx::node("Mul", "hswish", &["m", "r"], &["y"], vec![]),
//!     ],
//!     initializer: vec![c("k6", 1.0 / 6.0), c("k3", 3.0), c("lo", 0.0), c("hi", 6.0)],
//!     output: vec![onnx::value_info("y", onnx::DataType::Float)],
//!     ..Default::default()
//! };
//! let model = Model::from_graph(g, 13, "m.onnx");
//! let (out, fused) = edgesight::optimize::hardswish::fuse(&model).unwrap();
//! assert_eq!(fused[0].node, "hswish");
//! assert_eq!(out.graph().node.len(), 1);
//! assert_eq!(out.opset(), 14);
//! ```

use std::collections::{HashMap, HashSet};

use super::qdq::graph::{clip_bounds, scalar_constant};
use crate::onnx::{self, pb, DataType, Model};

/// Ops whose meaning changed at opset 14 beyond new types or attributes whose default keeps the
/// old behaviour; a graph holding one is not lifted from 13.
const CHANGED_AT_14: &[&str] = &["BatchNormalization"];

/// The largest relative distance from 1/6 read as 1/6: float16's rounding.
const SIXTH_TOLERANCE: f32 = 1.0 / 2048.0;

/// One fused hard-swish: the output Mul it replaced, and the factor the graph had for 1/6.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub node: String,
    pub sixth: f32,
}

impl std::fmt::Display for Fused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: float hard-swish as one HardSwish op, one pass instead of four",
            self.node
        )?;
        if self.sixth != 1.0 / 6.0 {
            write!(f, " (its factor {} read as 1/6)", self.sixth)?;
        }
        Ok(())
    }
}

/// The graph with every float hard-swish as one `HardSwish` node, and the output Mul of each
/// (the node the fused one takes the name of); `None` when there is none, or when the graph's
/// opset is below 13 or cannot be lifted to 14.
pub fn fuse(model: &Model) -> Option<(Model, Vec<Fused>)> {
    let opset = model.opset();
    let g = model.graph();
    if opset < 13 || (opset < 14 && g.node.iter().any(|n| CHANGED_AT_14.contains(&n.op_type()))) {
        return None;
    }
    let producer = onnx::producers(g);
    let readers = onnx::Readers::of(g);
    let of = |t: &str| producer.get(t).map(|&p| (p, &g.node[p]));
    let only_reader = |p: usize, reader: usize| readers.only(&g.node[p].output[0]) == Some(reader);
    let is = |t: &str, v: f32| scalar_value(g, &producer, t) == Some(v);
    let mut fused = Vec::new();
    let mut dropped: HashSet<usize> = HashSet::new();
    let mut replaced = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type() != "Mul" || n.input.len() != 2 {
            continue;
        }
        let found = (0..2).find_map(|s| {
            let (pm, scaled) = of(&n.input[s])?;
            let (pr, clip) = of(&n.input[1 - s])?;
            // x / 6 as Mul(x, 1/6) either way round, or Div(x, 6).
            let (x, sixth) = match scaled.op_type() {
                "Mul" => (0..2).find_map(|k| {
                    let c = scalar_constant(g, &producer, &scaled.input[1 - k])?;
                    ((6.0 * c - 1.0).abs() <= SIXTH_TOLERANCE).then_some((&scaled.input[k], c))
                }),
                "Div" if is(&scaled.input[1], 6.0) => Some((&scaled.input[0], 1.0 / 6.0)),
                _ => None,
            }?;
            if clip.op_type() != "Clip" || clip_bounds(g, &producer, clip) != (0.0, 6.0) {
                return None;
            }
            let (pa, add) = of(&clip.input[0])?;
            let plus3 = add.op_type() == "Add"
                && (0..2).any(|k| add.input[k] == *x && is(&add.input[1 - k], 3.0));
            let private = only_reader(pm, i) && only_reader(pr, i) && only_reader(pa, pr);
            (plus3 && private).then_some((x.clone(), sixth, [pm, pr, pa]))
        });
        if let Some((x, sixth, parts)) = found {
            dropped.extend(parts);
            replaced.push((
                i,
                onnx::node("HardSwish", n.name(), &[&x], &[&n.output[0]], vec![]),
            ));
            fused.push(Fused {
                node: n.name().to_string(),
                sixth,
            });
        }
    }
    if fused.is_empty() {
        return None;
    }
    let mut out = model.clone();
    if opset < 14 {
        for o in out.proto.opset_import.iter_mut() {
            if o.domain().is_empty() || o.domain() == "ai.onnx" {
                o.version = Some(14);
            }
        }
    }
    let og = out.graph_mut();
    let mut replaced = replaced.into_iter().peekable();
    let old = std::mem::take(&mut og.node);
    for (i, n) in old.into_iter().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        match replaced.next_if(|(j, _)| *j == i) {
            Some((_, h)) => og.node.push(h),
            None => og.node.push(n),
        }
    }
    // The constants only the old nodes read (ONNX Runtime warns of each one left).
    onnx::drop_dead_nodes(og);
    onnx::drop_unused_initializers(og);
    Some((out, fused))
}

/// A one-element constant, or one that a DequantizeLinear gives back from integers: the
/// quantizer writes the 3 of `x + 3` that way for QLinearAdd, and where the hard-swish's
/// product is kept in float the Add runs in float on it all the same.
fn scalar_value(g: &pb::GraphProto, producer: &HashMap<&str, usize>, t: &str) -> Option<f32> {
    if let Some(v) = scalar_constant(g, producer, t) {
        return Some(v);
    }
    let dq = &g.node[*producer.get(t)?];
    if dq.op_type() != "DequantizeLinear" {
        return None;
    }
    let integer = |t: &str| -> Option<f32> {
        let c = g.initializer.iter().find(|x| x.name() == t)?;
        match (DataType::try_from(c.data_type()).ok()?, c.raw_data()) {
            (DataType::Int8, [v]) => Some(f32::from(*v as i8)),
            (DataType::Uint8, [v]) => Some(f32::from(*v)),
            _ => None,
        }
    };
    let q = integer(&dq.input[0])?;
    let scale = scalar_constant(g, producer, dq.input.get(1)?)?;
    let zero = match dq.input.get(2) {
        Some(z) => integer(z)?,
        None => 0.0,
    };
    Some((q - zero) * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{pb, DataType};

    /// TF's hard-swish on `x`, its factor for 1/6 `sixth`, the graph at `opset`.
    fn block(sixth: f32, opset: i64, extra: Vec<pb::NodeProto>) -> Model {
        let c = |name: &str, v: f32| onnx::tensor_from_f32(name, &[], &[v]);
        let mut node = vec![
            onnx::node("Conv", "conv", &["in", "w"], &["x"], vec![]),
            onnx::node("Mul", "sixth", &["k6", "x"], &["m"], vec![]),
            onnx::node("Add", "plus3", &["x", "k3"], &["b"], vec![]),
            onnx::node("Clip", "relu6", &["b", "lo", "hi"], &["r"], vec![]),
            onnx::node("Mul", "hswish", &["m", "r"], &["y"], vec![]),
        ];
        node.extend(extra);
        Model::from_graph(
            pb::GraphProto {
                node,
                initializer: vec![
                    c("k6", sixth),
                    c("k3", 3.0),
                    c("lo", 0.0),
                    c("hi", 6.0),
                    onnx::tensor_from_f32("w", &[1, 1, 1, 1], &[1.0]),
                ],
                output: vec![onnx::value_info("y", DataType::Float)],
                ..Default::default()
            },
            opset,
            "hswish.onnx",
        )
    }

    /// The float16 rounding of 1/6 that TF.js exports is fused, and named in the description;
    /// the constants only the old nodes read go with them.
    #[test]
    fn float16_sixth_fuses_and_leaves_no_constants() {
        let fp16_sixth = 0.166_625_98;
        let (m, fused) = fuse(&block(fp16_sixth, 13, vec![])).unwrap();
        let g = m.graph();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Conv", "HardSwish"]);
        assert_eq!(
            (g.node[1].input[0].as_str(), g.node[1].output[0].as_str()),
            ("x", "y")
        );
        assert_eq!(m.opset(), 14);
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inits, ["w"]);
        assert!(
            fused[0]
                .to_string()
                .contains("factor 0.16662598 read as 1/6"),
            "{}",
            fused[0]
        );
        let (_, exact) = fuse(&block(1.0 / 6.0, 14, vec![])).unwrap();
        assert!(!exact[0].to_string().contains("read as"), "{}", exact[0]);
    }

    /// Where the accuracy search keeps a hard-swish's product in float, the quantizer has
    /// already written its 3 as an int8 1 at scale 3 behind a DequantizeLinear: that still
    /// reads as 3, and the dequantize goes with the nodes it fed.
    #[test]
    fn a_dequantized_three_still_fuses() {
        let mut m = block(1.0 / 6.0, 14, vec![]);
        let g = m.graph_mut();
        g.node.insert(
            0,
            onnx::node(
                "DequantizeLinear",
                "three",
                &["q3", "s3"],
                &["k3dq"],
                vec![],
            ),
        );
        g.node
            .iter_mut()
            .find(|n| n.name() == "plus3")
            .unwrap()
            .input[1] = "k3dq".into();
        g.initializer.retain(|t| t.name() != "k3");
        g.initializer.extend([
            onnx::tensor_from_i8("q3", &[], &[1]),
            onnx::tensor_from_f32("s3", &[], &[3.0]),
        ]);
        let (out, fused) = fuse(&m).unwrap();
        assert_eq!(fused.len(), 1);
        let ops: Vec<&str> = out.graph().node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Conv", "HardSwish"]);
        // A dequantized 4 is not hard-swish's 3.
        let g = m.graph_mut();
        g.initializer.retain(|t| t.name() != "s3");
        g.initializer.push(onnx::tensor_from_f32("s3", &[], &[4.0]));
        assert!(fuse(&m).is_none());
    }

    /// Anything that is not hard-swish, or whose parts something else reads, stays as it was.
    #[test]
    fn only_whole_private_hard_swish_fuses() {
        assert!(
            fuse(&block(0.2, 13, vec![])).is_none(),
            "x/5 is not hard-swish"
        );
        let peek = onnx::node("Relu", "peek", &["r"], &["r2"], vec![]);
        assert!(
            fuse(&block(1.0 / 6.0, 13, vec![peek])).is_none(),
            "relu6 read twice"
        );
        assert!(
            fuse(&block(1.0 / 6.0, 12, vec![])).is_none(),
            "opset 12 is not lifted"
        );
        let bn = onnx::node(
            "BatchNormalization",
            "bn",
            &["y", "bn_s", "bn_b", "bn_mu", "bn_v"],
            &["z"],
            vec![],
        );
        assert!(
            fuse(&block(1.0 / 6.0, 13, vec![bn.clone()])).is_none(),
            "changed at 14"
        );
        assert!(
            fuse(&block(1.0 / 6.0, 14, vec![bn])).is_some(),
            "already 14"
        );
    }
}
