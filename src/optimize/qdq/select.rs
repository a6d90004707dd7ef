//! Which nodes run in int8: the op tables, the patterns that decide a node's fate (SiLU,
//! post-processing after a selection, Relu/Clip folded into their producer, `x * c`, gates),
//! and the tensors calibration must measure for them.

use std::collections::{HashMap, HashSet};

use super::config::{QdqReport, QuantizeConfig};
use super::graph::{scalar_constant, GraphIndex};
use crate::onnx::graph::node_label;
use crate::onnx::{self, pb, producers, DataType, Model};

/// Ops with weights, quantized per channel.
pub const WEIGHTED: &[&str] = &["Conv", "MatMul", "Gemm"];
/// Ops whose float inputs and outputs get Q/DQ so that runtimes can run them in int8.
pub const ACTIVATION: &[&str] = &[
    "Add",
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Concat",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Pad",
];
/// Activations that fold into the quantized op before them.
pub const FUSED_ACTIVATION: &[&str] = &["Relu", "Clip"];
/// Data movement: the output takes the input's quantization parameters.
pub const SHARES_INPUT_RANGE: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "Pad",
];
/// Ops this quantizer knows and leaves in float on purpose: precision-sensitive math, shape
/// arithmetic and post-processing.
pub const KNOWN_FLOAT: &[&str] = &[
    "Mul",
    "Sigmoid",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Div",
    "Sub",
    "Cast",
    "Shape",
    "Gather",
    "GatherND",
    "GatherElements",
    "TopK",
    "NonMaxSuppression",
    "Slice",
    "Split",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSum",
    "ReduceProd",
    "ReduceL2",
    "Sqrt",
    "Pow",
    "Tanh",
    "Floor",
    "Ceil",
    "Round",
    "ArgMax",
    "ArgMin",
    "Identity",
    "Constant",
    "ConstantOfShape",
    "Range",
    "Expand",
    "Tile",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Where",
    "Not",
    "And",
    "Or",
    "Min",
    "Max",
    "Abs",
    "Neg",
    "Reciprocal",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "Erf",
    "HardSigmoid",
    "HardSwish",
    "Upsample",
    "ConvTranspose",
    "Dropout",
    "Einsum",
    "NonZero",
    "ScatterND",
    "ScatterElements",
    "Softplus",
    "Mish",
    "Elu",
    "Selu",
    "CumSum",
    "LRN",
    "Sign",
    "Size",
    "DepthToSpace",
    "SpaceToDepth",
    "Sum",
    "Mean",
    "OneHot",
    "QuantizeLinear",
    "DequantizeLinear",
    "Trilu",
    "Mod",
];

pub fn quantizable(op: &str) -> bool {
    WEIGHTED.contains(&op) || ACTIVATION.contains(&op)
}

/// The Sigmoid and Mul nodes of SiLU, `x * sigmoid(x)` (YOLOv8's activation). In int8 they
/// become QLinearSigmoid and QLinearMul, and the dequantize-requantize passes around every
/// convolution disappear, a fifth of YOLOv8s's kernel time (docs/optimize-findings.md, "Figures behind the code"). Other Muls
/// (PReLU slopes, hard-swish, squeeze-excite gates) lost accuracy in int8 and gained nothing,
/// so only this pattern is quantized.
pub fn silu_nodes(g: &pb::GraphProto) -> HashSet<usize> {
    let producer = producers(g);
    let mut out = HashSet::new();
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type() != "Mul" || n.input.len() != 2 {
            continue;
        }
        for (a, b) in [(0, 1), (1, 0)] {
            if let Some(&si) = producer.get(n.input[b].as_str()) {
                let s = &g.node[si];
                if s.op_type() == "Sigmoid" && s.input[0] == n.input[a] {
                    out.insert(i);
                    out.insert(si);
                }
            }
        }
    }
    out
}

/// Ops that pick elements (peaks, boxes kept by NMS, best classes): what follows them in a graph
/// is post-processing.
const SELECTS: &[&str] = &["TopK", "NonMaxSuppression", "ArgMax", "ArgMin", "NonZero"];

/// The nodes that read, directly or not, the output of a selection op: box corners, scores
/// and class ids after CenterNet's TopK, for one. They stay float whatever their op. In int8 a
/// detector's `x + w` would snap box corners to a grid of ~2 pixels over 512, scores to 256
/// levels (ties in the ranking) and class ids to ~0.3 steps; the tensors are a few hundred
/// values, so no runtime would gain anything from integer kernels there.
pub fn post_selection(g: &pb::GraphProto) -> HashSet<usize> {
    let mut tainted: HashSet<&str> = HashSet::new();
    let mut out = HashSet::new();
    for (i, n) in g.node.iter().enumerate() {
        let selects = SELECTS.contains(&n.op_type());
        if selects || n.input.iter().any(|t| tainted.contains(t.as_str())) {
            if !selects {
                out.insert(i);
            }
            tainted.extend(n.output.iter().map(|o| o.as_str()));
        }
    }
    out
}

/// The tensor that carries output `o` in the quantized graph: an output folded into the Relu or
/// Clip after it (`fused`) exists only as that activation's output.
pub fn carrier<'g>(g: &'g pb::GraphProto, fused: &HashSet<&str>, o: &'g str) -> Option<&'g str> {
    if !fused.contains(o) {
        return Some(o);
    }
    let act = g.node.iter().find(|m| m.input.iter().any(|i| i == o))?;
    Some(act.output[0].as_str())
}

/// Input positions that carry activations (not shapes, axes, scales or weights).
pub fn data_inputs(n: &pb::NodeProto, inits: &HashSet<&str>) -> Vec<usize> {
    let all = |n: &pb::NodeProto| -> Vec<usize> {
        (0..n.input.len())
            .filter(|&i| !n.input[i].is_empty() && !inits.contains(n.input[i].as_str()))
            .collect()
    };
    match n.op_type() {
        "Conv" | "Gemm" => vec![0],
        "MatMul" | "Add" | "Mul" | "Concat" => all(n),
        _ => vec![0],
    }
    .into_iter()
    .filter(|&i| i < n.input.len() && !inits.contains(n.input[i].as_str()))
    .collect()
}

/// The float tensors whose ranges calibration must measure: data inputs and outputs of every
/// quantizable node.
pub fn calibration_tensors(model: &Model) -> Vec<String> {
    let g = model.graph();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let float_inputs: HashSet<&str> = g
        .input
        .iter()
        .filter(|v| onnx::value_info_elem(v) == Some(DataType::Float as i32))
        .map(|v| v.name())
        .collect();
    let graph_inputs: HashSet<&str> = g.input.iter().map(|v| v.name()).collect();
    let types = onnx::infer_elem_types(model);
    let silu = silu_nodes(g);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        // Every Mul too: a product of two int8 tensors can run as QLinearMul.
        if !quantizable(n.op_type()) && !silu.contains(&i) && n.op_type() != "Mul" {
            continue;
        }
        let mut names: Vec<&str> = data_inputs(n, &inits)
            .into_iter()
            .map(|i| n.input[i].as_str())
            .collect();
        if let Some(o) = n.output.first() {
            names.push(o.as_str());
        }
        for t in names {
            // A non-float graph input (uint8 images) cannot be quantized this way.
            if graph_inputs.contains(t) && !float_inputs.contains(t) {
                continue;
            }
            // Shape arithmetic (int64 Concat, Gather) is not an activation.
            if types.get(t).is_some_and(|&e| e != DataType::Float as i32) {
                continue;
            }
            if !t.is_empty() && seen.insert(t.to_string()) {
                out.push(t.to_string());
            }
        }
    }
    out
}

/// The inputs of the layers whose bias can absorb their weights' rounding error, with the axis
/// that holds their channels: Conv's NCHW input (axis 1) and Gemm's `[M, K]` one (axis 1, or
/// 0 when transposed). MatMul has no bias to correct.
pub fn bias_correction_inputs(model: &Model) -> HashMap<String, usize> {
    let g = model.graph();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    g.node
        .iter()
        .filter(|n| {
            matches!(n.op_type(), "Conv" | "Gemm")
                && n.input.len() >= 2
                && inits.contains(n.input[1].as_str())
                && !inits.contains(n.input[0].as_str())
        })
        .map(|n| {
            let axis = match n.op_type() {
                "Gemm" if onnx::get_attr_int(n, "transA") == Some(1) => 0,
                _ => 1,
            };
            (n.input[0].clone(), axis)
        })
        .collect()
}

/// Which nodes run in int8, decided in one forward pass over the (topologically sorted) graph.
pub struct Selection<'g> {
    /// Per node: it computes in int8.
    pub active: Vec<bool>,
    /// Outputs folded into the Relu or Clip that alone reads them.
    pub fused: HashSet<&'g str>,
    /// `x * c`, read from x's integers at scale `s * c`: node index → c.
    pub folded: HashMap<usize, f32>,
    /// Tensors that reach a graph output through data movement alone.
    pub feeds_output: HashSet<&'g str>,
}

impl<'g> Selection<'g> {
    /// Decides every node; unknown ops and excluded layers land in `report`.
    pub fn of(ix: &GraphIndex<'g>, cfg: &QuantizeConfig, report: &mut QdqReport) -> Self {
        let g = ix.graph;
        let silu = silu_nodes(g);
        let post = post_selection(g);
        let mut s = Selection {
            active: by_op(g, &silu, &post, cfg, report),
            fused: HashSet::new(),
            folded: HashMap::new(),
            feeds_output: feeds_output(ix),
        };
        s.by_neighbours(ix, &silu, &post, cfg);
        s
    }

    /// The tensor that carries output `o` in the quantized graph ([`carrier`]).
    pub fn carrier(&self, g: &'g pb::GraphProto, o: &'g str) -> Option<&'g str> {
        carrier(g, &self.fused, o)
    }

    /// What the quantized neighbours of each node allow. `q_avail` holds the tensors that will
    /// carry a Q/DQ pair.
    fn by_neighbours(
        &mut self,
        ix: &GraphIndex<'g>,
        silu: &HashSet<usize>,
        post: &HashSet<usize>,
        cfg: &QuantizeConfig,
    ) {
        let (g, cpu, exclude, ranges) = (ix.graph, cfg.cpu(), cfg.exclude, cfg.ranges);
        let constant = |t: &str| ix.constant(t);
        let active = &mut self.active;
        let mut q_avail: HashSet<&str> = g
            .input
            .iter()
            .map(|v| v.name())
            .filter(|t| ranges.contains_key(*t))
            .collect();
        for (i, n) in g.node.iter().enumerate() {
            if post.contains(&i) {
                continue;
            }
            let op = n.op_type();
            let other_of_scalar = || -> Option<(&str, f32)> {
                if n.input.len() != 2 {
                    return None;
                }
                let c = (0..2)
                    .find_map(|k| Some((k, scalar_constant(g, &ix.producer, &n.input[k])?)))?;
                Some((n.input[1 - c.0].as_str(), c.1))
            };
            match op {
                // `x + c`: int8 on the CPU (QLinearAdd with a quantized constant) when x already is;
                // otherwise float, for runtimes fuse only Adds whose inputs are both quantized and
                // TensorRT folds such constants into the layer before.
                "Add" if n.input.iter().any(|t| constant(t)) => {
                    active[i] &= cpu && other_of_scalar().is_some_and(|(x, _)| q_avail.contains(x));
                }
                // `x * c` with c > 0 costs nothing in int8: it is the same integers read with scale
                // `s * c` (hard-swish's x/6). A product of two quantized tensors (hard-swish, a
                // squeeze-excite gate) becomes QLinearMul, so that no dequantize-requantize pass
                // surrounds it. Both only on the CPU, and only where the inputs already are int8.
                "Mul" if cpu && !silu.contains(&i) && !exclude.excludes(n) => {
                    if let Some((x, c)) = other_of_scalar() {
                        if c > 0.0 && c.is_finite() && q_avail.contains(x) {
                            self.folded.insert(i, c);
                        }
                    } else if n.input.len() == 2
                        && n.input
                            .iter()
                            .all(|t| !constant(t) && q_avail.contains(t.as_str()))
                    {
                        active[i] = true;
                    }
                }
                // A gate, `x * sigmoid(g)` (squeeze-excite), runs as QLinearSigmoid and QLinearMul
                // when g is int8 already. A Sigmoid read by anything else (a detector's scores)
                // stays float: 256 levels over [0, 1] would blur the ranking.
                "Sigmoid"
                    if cpu
                        && !silu.contains(&i)
                        && !exclude.excludes(n)
                        && q_avail.contains(n.input[0].as_str())
                        && g.node.iter().all(|m| {
                            !m.input.contains(&n.output[0])
                                || (m.op_type() == "Mul" && !m.input.iter().any(|t| constant(t)))
                        }) =>
                {
                    active[i] = true;
                }
                // Relu and Clip after a quantized op (not data movement) that feeds only them: their
                // output's QuantizeLinear becomes the producer's, and the runtime drops them (ONNX
                // Runtime removes a Relu or Clip whose Q range already lies inside it; TensorRT
                // fuses them). Without this the producer's own Q/DQ pair would requantize every such
                // tensor once more. Elsewhere (after float arithmetic) they stay float.
                _ if FUSED_ACTIVATION.contains(&op) && active[i] => {
                    let t = n.input[0].as_str();
                    let fusable = ix.producer.get(t).is_some_and(|&p| {
                        active[p] && !SHARES_INPUT_RANGE.contains(&g.node[p].op_type())
                    }) && ix.consumers.get(t) == Some(&1)
                        && !ix.graph_outputs.contains(t);
                    if fusable {
                        self.fused.insert(t);
                    } else {
                        active[i] = false;
                    }
                }
                _ => {}
            }
            if let Some(o) = n.output.first() {
                if (active[i] && ranges.contains_key(o)) || self.folded.contains_key(&i) {
                    q_avail.insert(o.as_str());
                }
            }
        }
    }
}

/// Which nodes run quantized by their op alone: quantizable ops and SiLU, unless excluded or
/// after a selection. Ops of other domains and ops this quantizer does not know are counted.
fn by_op(
    g: &pb::GraphProto,
    silu: &HashSet<usize>,
    post: &HashSet<usize>,
    cfg: &QuantizeConfig,
    report: &mut QdqReport,
) -> Vec<bool> {
    let exclude = cfg.exclude;
    g.node
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let op = n.op_type();
            if post.contains(&i) {
                return false;
            }
            if !n.domain().is_empty() && n.domain() != "ai.onnx" {
                *report
                    .unknown_ops
                    .entry(format!("{}:{op}", n.domain()))
                    .or_default() += 1;
                return false;
            }
            if quantizable(op) || silu.contains(&i) {
                if exclude.excludes(n) {
                    report.excluded.push(node_label(n));
                    return false;
                }
                return true;
            }
            if !KNOWN_FLOAT.contains(&op) {
                *report.unknown_ops.entry(op.to_string()).or_default() += 1;
            }
            // Muls and Sigmoids may still run in int8 (gates, x * c); kept float, they are
            // named with the rest.
            if matches!(op, "Mul" | "Sigmoid") && exclude.excludes(n) {
                report.excluded.push(node_label(n));
            }
            false
        })
        .collect()
}

/// Tensors that reach a graph output through data movement alone. A detector's or
/// embedder's head ends there: 256 levels over its whole output range cost more accuracy
/// than anything else, and with no Q after it no runtime fuses that layer anyway.
fn feeds_output<'g>(ix: &GraphIndex<'g>) -> HashSet<&'g str> {
    let mut feeds_output = ix.graph_outputs.clone();
    for n in ix.graph.node.iter().rev() {
        if SHARES_INPUT_RANGE.contains(&n.op_type())
            && n.output.iter().any(|o| feeds_output.contains(o.as_str()))
        {
            feeds_output.insert(n.input[0].as_str());
        }
    }
    feeds_output
}
