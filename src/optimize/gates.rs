//! Per-channel gates multiplied element by element, so the integer multiply uses every thread.
//!
//! Squeeze-and-excite blocks (MobileNetV3's, CenterNet's head) scale a `[N, C, H, W]` tensor by
//! a `[N, C, 1, 1]` gate. ONNX Runtime runs that product as a QLinearMul that broadcasts, and
//! its broadcasting loop goes one row of C values at a time on one thread. Tiled to the full
//! shape first (the gate's integers repeated, a copy of C·H·W bytes), the same multiply runs
//! element by element, split across the threads, in less than half the time with the copy
//! (docs/optimize-findings.md, "Figures behind the code"). The integers are the same.
//!
//! The rewrite works on a quantized graph, for the CPU, where calibration recorded both shapes
//! and the graph's inputs have fixed sizes past the batch (the repeats are constants).
//!
//! ```
//! use std::collections::HashMap;
//! use edgesight::onnx::{self, pb, DataType, Model};
//! let f = |n: &str| onnx::tensor_from_f32(n, &[], &[0.1]);
//! let z = |n: &str| onnx::tensor_from_u8(n, &[], &[0]);
//! let g = pb::GraphProto {
//!     node: vec![
//!         onnx::node("QuantizeLinear", "xq", &["x", "s", "z"], &["x_q"], vec![]),
//!         onnx::node("DequantizeLinear", "xdq", &["x_q", "s", "z"], &["x_dq"], vec![]),
//!         onnx::node("QuantizeLinear", "gq", &["gate", "s", "z"], &["gate_q"], vec![]),
//!         onnx::node("DequantizeLinear", "gdq", &["gate_q", "s", "z"], &["gate_dq"], vec![]),
//!         onnx::node("Mul", "se", &["x_dq", "gate_dq"], &["y"], vec![]),
//!         onnx::node("QuantizeLinear", "yq", &["y", "s", "z"], &["y_q"], vec![]),
//!     ],
//!     initializer: vec![f("s"), z("z")],
//!     input: vec![
//!         onnx::value_info_shaped("x", DataType::Float, &[1, 8, 4, 4]),
//!         onnx::value_info_shaped("gate", DataType::Float, &[1, 8, 1, 1]),
//!     ],
//!     output: vec![onnx::value_info("y_q", DataType::Uint8)],
//!     ..Default::default()
//! };
//! let model = Model::from_graph(g, 13, "m.onnx");
//! let shapes = HashMap::from([("x".to_string(), vec![1, 8, 4, 4]), ("gate".to_string(), vec![1, 8, 1, 1])]);
//! let (out, tiled) = edgesight::optimize::gates::tile(&model, &shapes).unwrap();
//! assert_eq!(tiled[0].shape, [1, 8, 4, 4]);
//! let tile = out.graph().node.iter().find(|n| n.op_type() == "Tile").unwrap();
//! assert_eq!(tile.input[0], "gate_q");
//! ```

use std::collections::HashMap;

use crate::onnx::{self, pb, Dim, Model};

/// One gate tiled to its tensor's shape.
#[derive(Debug, Clone)]
pub struct Tiled {
    pub mul: String,
    pub shape: Vec<usize>,
}

impl std::fmt::Display for Tiled {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        write!(
            f,
            "{}: per-channel gate tiled to {}, so the integer multiply runs element by element on every thread (the same integers)",
            self.mul,
            dims.join("x")
        )
    }
}

/// The graph with every broadcast per-channel gate tiled to its tensor's shape, and what was
/// tiled; `None` when nothing was. `shapes` holds calibration's shapes of the float tensors.
pub fn tile(model: &Model, shapes: &HashMap<String, Vec<usize>>) -> Option<(Model, Vec<Tiled>)> {
    let g = model.graph();
    // Repeats are constants: only where no size past the batch can change at run time.
    let fixed = g.input.iter().all(|v| {
        onnx::value_info_dims(v)
            .is_some_and(|d| d.iter().skip(1).all(|d| matches!(d, Dim::Fixed(_))))
    });
    if !fixed {
        return None;
    }
    let producer = onnx::producers(g);
    let of = |t: &str| producer.get(t).map(|&p| &g.node[p]);
    // The float tensor a dequantized input carries: DQ(Q(t)).
    let carried = |t: &str| -> Option<(&pb::NodeProto, &str)> {
        let dq = of(t).filter(|n| n.op_type() == "DequantizeLinear")?;
        let q = of(&dq.input[0]).filter(|n| n.op_type() == "QuantizeLinear")?;
        Some((dq, q.input[0].as_str()))
    };
    let mut plans = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type() != "Mul" || n.input.len() != 2 {
            continue;
        }
        let (Some((_, a)), Some((_, b))) = (carried(&n.input[0]), carried(&n.input[1])) else {
            continue;
        };
        let (Some(sa), Some(sb)) = (shapes.get(a), shapes.get(b)) else {
            continue;
        };
        let gate_of = |big: &[usize], gate: &[usize]| {
            big.len() == 4
                && gate.len() == 4
                && gate[..2] == big[..2]
                && gate[2..] == [1, 1]
                && big[2] * big[3] > 1
        };
        let slot = if gate_of(sa, sb) {
            1
        } else if gate_of(sb, sa) {
            0
        } else {
            continue;
        };
        let big = if slot == 1 { sa } else { sb };
        plans.push((i, slot, big.clone()));
    }
    if plans.is_empty() {
        return None;
    }
    let mut out = model.clone();
    let og = out.graph_mut();
    let mut before: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut tiled = Vec::new();
    for (i, slot, shape) in plans {
        let mul = og.node[i].name().to_string();
        let (dq, _) = carried(&og.node[i].input[slot]).expect("checked above");
        let base = format!("{mul}__tiled");
        let reps = format!("{base}_repeats");
        let gate_q = format!("{base}_q");
        og.initializer.push(onnx::tensor_from_i64(
            &reps,
            &[4],
            &[1, 1, shape[2] as i64, shape[3] as i64],
        ));
        let mut new_dq = dq.clone();
        new_dq.name = Some(format!("{base}_DQ"));
        new_dq.input[0] = gate_q.clone();
        new_dq.output = vec![format!("{base}_dq")];
        before.entry(i).or_default().extend([
            onnx::node(
                "Tile",
                &format!("{base}_T"),
                &[&dq.input[0], &reps],
                &[&gate_q],
                vec![],
            ),
            new_dq,
        ]);
        tiled.push(Tiled { mul, shape });
        og.node[i].input[slot] = format!("{base}_dq");
    }
    let old = std::mem::take(&mut og.node);
    for (i, n) in old.into_iter().enumerate() {
        og.node.extend(before.remove(&i).unwrap_or_default());
        og.node.push(n);
    }
    onnx::drop_dead_nodes(og);
    Some((out, tiled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::DataType;

    /// `x * gate`, both through Q/DQ, with the given input shapes.
    fn gated(x: &[i64], gate: &[i64]) -> Model {
        let f = |n: &str| onnx::tensor_from_f32(n, &[], &[0.1]);
        let z = |n: &str| onnx::tensor_from_u8(n, &[], &[0]);
        let node = |op, name, i: &[&str], o: &[&str]| onnx::node(op, name, i, o, vec![]);
        let g = pb::GraphProto {
            node: vec![
                node("QuantizeLinear", "xq", &["x", "s", "z"], &["x_q"]),
                node("DequantizeLinear", "xdq", &["x_q", "s", "z"], &["x_dq"]),
                node("QuantizeLinear", "gq", &["gate", "s", "z"], &["gate_q"]),
                node(
                    "DequantizeLinear",
                    "gdq",
                    &["gate_q", "s", "z"],
                    &["gate_dq"],
                ),
                node("Mul", "se", &["gate_dq", "x_dq"], &["y"]),
            ],
            initializer: vec![f("s"), z("z")],
            input: vec![
                onnx::value_info_shaped("x", DataType::Float, x),
                onnx::value_info_shaped("gate", DataType::Float, gate),
            ],
            output: vec![onnx::value_info("y", DataType::Float)],
            ..Default::default()
        };
        Model::from_graph(g, 13, "gated.onnx")
    }

    /// Dimension `dim` of input `x` made the symbol `name`.
    fn symbolic(x: &mut pb::ValueInfoProto, dim: usize, name: &str) {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            x.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            let d = &mut t.shape.as_mut().unwrap().dim[dim];
            d.value = Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                name.into(),
            ));
        }
    }

    fn shapes(x: &[usize], gate: &[usize]) -> HashMap<String, Vec<usize>> {
        HashMap::from([("x".into(), x.to_vec()), ("gate".into(), gate.to_vec())])
    }

    /// The gate may be either input of the Mul; its repeats are the tensor's height and width,
    /// and the Mul reads the tiled copy.
    #[test]
    fn gate_in_either_slot_is_tiled() {
        let m = gated(&[1, 8, 4, 6], &[1, 8, 1, 1]);
        let (out, tiled) = tile(&m, &shapes(&[1, 8, 4, 6], &[1, 8, 1, 1])).unwrap();
        assert_eq!(tiled[0].mul, "se");
        let g = out.graph();
        let t = g.node.iter().find(|n| n.op_type() == "Tile").unwrap();
        let reps = g
            .initializer
            .iter()
            .find(|i| i.name() == t.input[1])
            .unwrap();
        let reps: Vec<i64> = reps
            .raw_data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(reps, [1, 1, 4, 6]);
        let mul = g.node.iter().find(|n| n.name() == "se").unwrap();
        assert_eq!(mul.input, ["se__tiled_dq", "x_dq"]);
        assert!(
            !g.node.iter().any(|n| n.name() == "gdq"),
            "the old dequantize has no reader left"
        );
    }

    /// Nothing to tile: two tensors of one shape, a gate with no recorded shape, or an input
    /// whose height can change at run time (the repeats would be wrong).
    #[test]
    fn only_fixed_broadcasts_are_tiled() {
        let m = gated(&[1, 8, 4, 6], &[1, 8, 1, 1]);
        assert!(tile(&m, &shapes(&[1, 8, 4, 6], &[1, 8, 4, 6])).is_none());
        assert!(tile(&m, &HashMap::new()).is_none());
        let mut dynamic = m.clone();
        symbolic(&mut dynamic.graph_mut().input[0], 2, "h");
        assert!(tile(&dynamic, &shapes(&[1, 8, 4, 6], &[1, 8, 1, 1])).is_none());
        // A symbolic batch is fine.
        let mut batch = m.clone();
        for x in batch.graph_mut().input.iter_mut() {
            symbolic(x, 0, "n");
        }
        assert!(tile(&batch, &shapes(&[1, 8, 4, 6], &[1, 8, 1, 1])).is_some());
    }
}
