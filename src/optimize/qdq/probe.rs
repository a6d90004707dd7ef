//! Readers of a quantized graph: one tensor's rounding copied into the float model (the
//! accuracy search's sensitivity), the nodes around a tensor, the top of a pair's grid (the
//! score ceiling), and the float layers ONNX Runtime would quantize on its own.

use std::collections::HashMap;

use super::names::Pair;
use crate::onnx::graph::node_label;
use crate::onnx::{self, pb, DataType, Model};

/// The float Conv/Gemm layers of a Q/DQ graph that ONNX Runtime would quantize itself: its
/// `WeightBiasQuantization` pass (1.20 and later, on by default) takes a Conv whose input comes
/// from a per-tensor DequantizeLinear and whose only path out (through Relu or Clip) ends at a
/// QuantizeLinear, and gives its float weights one symmetric per-tensor int8 scale, so that the
/// node fuses into a QLinearConv. A layer kept in float there would run int8 after all, with
/// a coarser grid than the per-channel one this quantizer would have used, and lose far more
/// than it would in int8 (docs/optimize-findings.md, "Figures behind the code").
/// [`super::quantize`] leaves none of these: a layer it keeps in float reads and writes float
/// tensors.
pub fn runtime_requantized(model: &Model) -> Vec<String> {
    let g = model.graph();
    let producer = onnx::producers(g);
    let readers = onnx::Readers::of(g);
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name(), t)).collect();
    let made_by = |t: &str, op: &str| {
        producer
            .get(t)
            .map(|&i| &g.node[i])
            .filter(|n| n.op_type() == op)
    };
    let scalar = |t: &str| {
        inits
            .get(t)
            .is_some_and(|t| t.dims.iter().product::<i64>() == 1)
    };
    let ends_at_q = |n: &pb::NodeProto| {
        let mut n = n;
        loop {
            let [out] = n.output.as_slice() else {
                return false;
            };
            let Some(next) = readers.only(out) else {
                return false;
            };
            let next = &g.node[next];
            match next.op_type() {
                "QuantizeLinear" => return true,
                "Relu" | "Clip" => n = next,
                _ => return false,
            }
        }
    };
    g.node
        .iter()
        .filter(|n| matches!(n.op_type(), "Conv" | "ConvTranspose" | "Gemm"))
        .filter(|n| {
            let from_dq = n.input.first().and_then(|x| made_by(x, "DequantizeLinear"));
            from_dq.is_some_and(|dq| dq.input.get(1).is_some_and(|s| scalar(s)))
                && n.input.get(1).is_some_and(|w| {
                    inits
                        .get(w.as_str())
                        .is_some_and(|t| t.data_type() == DataType::Float as i32)
                })
                && ends_at_q(n)
        })
        .map(|n| n.name().to_string())
        .collect()
}

/// `model` (float) with one activation quantized as `quantized` quantizes it: the tensor's Q/DQ
/// pair copied in after its producer and its readers moved to the dequantized copy. The error of
/// this one rounding, alone, is that tensor's sensitivity. `None` when `quantized` has no pair
/// for `tensor`.
pub fn with_one_quantized_tensor(model: &Model, quantized: &Model, tensor: &str) -> Option<Model> {
    let qg = quantized.graph();
    let q = qg.node.iter().find(|n| n.name() == Pair(tensor).q_node())?;
    let dq = qg
        .node
        .iter()
        .find(|n| n.name() == Pair(tensor).dq_node())?;
    let params: Vec<pb::TensorProto> = qg
        .initializer
        .iter()
        .filter(|t| q.input[1..].contains(&t.name().to_string()))
        .cloned()
        .collect();
    // A graph output keeps its name and its float value: there is nothing to round.
    if model.graph().output.iter().any(|o| o.name() == tensor) {
        return None;
    }
    let mut m = model.clone();
    let g = m.graph_mut();
    let dq_out = dq.output[0].clone();
    for n in g.node.iter_mut() {
        for i in n.input.iter_mut() {
            if i == tensor {
                *i = dq_out.clone();
            }
        }
    }
    let at = g
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| o == tensor))
        .map_or(0, |p| p + 1);
    g.node.splice(at..at, [q.clone(), dq.clone()]);
    g.initializer.extend(params);
    Some(m)
}

/// The nodes that write and read `tensor`: kept in float together, they keep it in float.
pub fn neighbours(model: &Model, tensor: &str) -> Vec<String> {
    model
        .graph()
        .node
        .iter()
        .filter(|n| n.input.iter().chain(&n.output).any(|t| t == tensor))
        .map(node_label)
        .collect()
}

/// The largest value the Q/DQ pair of `tensor` in `quantized` can give back (the pair
/// [`super::emit`] wrote): `(top - zero_point) * scale`, top 255 for uint8 and 127 for int8.
/// `None` when the tensor has no pair there.
pub fn grid_top(quantized: &Model, tensor: &str) -> Option<f64> {
    let g = quantized.graph();
    let q = g.node.iter().find(|n| n.name() == Pair(tensor).q_node())?;
    let init = |i: usize| {
        let name = q.input.get(i)?;
        g.initializer.iter().find(|t| t.name() == name)
    };
    let scale = f64::from(*onnx::tensor_f32(init(1)?)?.first()?);
    let zp = init(2)?;
    let &z = zp.raw_data().first()?;
    let (zero, top) = match zp.data_type() {
        t if t == DataType::Uint8 as i32 => (f64::from(z), 255.0),
        t if t == DataType::Int8 as i32 => (f64::from(z as i8), 127.0),
        _ => return None,
    };
    Some((top - zero) * scale)
}
