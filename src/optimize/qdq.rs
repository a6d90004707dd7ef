//! INT8 quantization in the explicit Q/DQ form: `QuantizeLinear → DequantizeLinear` pairs in the
//! ONNX graph itself, which ONNX Runtime's CPU kernels fuse into integer ops (QLinearConv,
//! MatMulInteger, ...) and which TensorRT ≥ 8 builds INT8 engines from. TensorRT's implicit
//! calibrators are deprecated since 10.1, so this one graph serves both.
//!
//! - Weights: int8, symmetric, per output channel, stored quantized behind a DequantizeLinear;
//!   on ±127, or on ±64 for x86 CPUs whose int8 kernels would saturate ([`WeightRange`]).
//! - Biases of Conv/Gemm: int32 with scale `s_input * s_weight[c]`, as the fused kernels expect.
//! - Activations: per tensor; uint8 asymmetric for ONNX Runtime's CPU kernels (u8s8 is their
//!   fast path), int8 symmetric for TensorRT (it accepts nothing else).
//!
//! Mul stays float: in the graphs seen here it scales (PReLU slopes, attention), where int8 buys
//! nothing and costs accuracy.
//!
//! Ops that only move data (Reshape, Transpose, MaxPool, ...) reuse their input's scale, so the
//! runtime can drop the Q/DQ around them instead of requantizing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::calibrator::{per_channel_scales, Range};
use super::reconstruct::{Preset, Presets};
use super::{align, peaks};
use crate::onnx::{self, pb, producers, DataType, Model};

/// Ops with weights, quantized per channel.
const WEIGHTED: &[&str] = &["Conv", "MatMul", "Gemm"];
/// Ops whose float inputs and outputs get Q/DQ so that runtimes can run them in int8.
const ACTIVATION: &[&str] = &[
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
const FUSED_ACTIVATION: &[&str] = &["Relu", "Clip"];
/// Data movement: the output takes the input's quantization parameters.
const SHARES_INPUT_RANGE: &[&str] = &[
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
const KNOWN_FLOAT: &[&str] = &[
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationType {
    /// ONNX Runtime CPU.
    U8Asymmetric,
    /// TensorRT.
    I8Symmetric,
}

/// How far int8 weights reach. ONNX Runtime's x86 int8 kernels without VNNI (AVX2, and AVX-512
/// without VNNI) multiply uint8 activations by int8 weights with `vpmaddubsw`, which adds each
/// pair of products into an int16 and saturates: 2 × 255 × 127 does not fit, 2 × 255 × 64
/// does. On such a CPU a full-range model silently computes something else, far off its own
/// Q/DQ arithmetic (docs/optimize-findings.md, "Figures behind the code"). Depthwise convolutions run on a
/// kernel that widens to 16 bits first, so they keep the full range either way. VNNI, ARM and
/// TensorRT kernels accumulate in 32 bits and take the full range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightRange {
    /// ±127.
    #[default]
    Full,
    /// ±64 (ONNX Runtime's `reduce_range`), depthwise convolutions aside.
    Reduced,
}

impl WeightRange {
    /// The largest int8 weight magnitude of a layer.
    pub fn qmax(self, depthwise: bool) -> f32 {
        match self {
            WeightRange::Reduced if !depthwise => 64.0,
            _ => 127.0,
        }
    }

    /// What ONNX Runtime's CPU kernels on this machine need.
    pub fn for_this_cpu() -> Self {
        if cpu_int8_saturates() {
            WeightRange::Reduced
        } else {
            WeightRange::Full
        }
    }
}

impl std::fmt::Display for WeightRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightRange::Full => "full",
            WeightRange::Reduced => "reduced",
        })
    }
}

/// Whether this CPU's int8 kernels add pairs of uint8 × int8 products in 16 bits (x86 without
/// VNNI, see [`WeightRange`]).
pub fn cpu_int8_saturates() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A convolution with one input and one output channel per group: ONNX Runtime runs it on its
/// depthwise kernel, which does not saturate ([`WeightRange`]).
pub fn is_depthwise(n: &pb::NodeProto, weight_dims: &[i64]) -> bool {
    let group = onnx::get_attr_int(n, "group").unwrap_or(1);
    n.op_type() == "Conv"
        && weight_dims.len() == 4
        && weight_dims[1] == 1
        && group > 1
        && weight_dims[0] == group
}

#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    /// Node names left in float.
    pub names: BTreeSet<String>,
    /// Op types left in float.
    pub ops: BTreeSet<String>,
}

impl Exclusions {
    pub fn excludes(&self, n: &pb::NodeProto) -> bool {
        self.names.contains(n.name()) || self.ops.contains(n.op_type())
    }
}

/// What the quantizer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QdqReport {
    /// Weighted layers now in int8.
    pub quantized_layers: Vec<String>,
    /// Activation tensors with a Q/DQ pair.
    pub quantized_tensors: Vec<String>,
    /// Every node that computes in int8, data movement aside: the candidates of the accuracy
    /// search.
    pub quantized_compute: Vec<String>,
    /// (node, its output tensor) for the same nodes, for per-layer error figures.
    pub compute_outputs: Vec<(String, String)>,
    /// Layers the user (or the accuracy search) kept in float.
    pub excluded: Vec<String>,
    /// Op types the quantizer does not know, left in float: (op, count).
    pub unknown_ops: BTreeMap<String, usize>,
    /// Rewrites for the CPU runtime's int8 kernels, each with what it keeps or rounds.
    pub rewrites: Vec<String>,
}

fn quantizable(op: &str) -> bool {
    WEIGHTED.contains(&op) || ACTIVATION.contains(&op)
}

/// The Sigmoid and Mul nodes of SiLU, `x * sigmoid(x)` (YOLOv8's activation). In int8 they
/// become QLinearSigmoid and QLinearMul, and the dequantize-requantize passes around every
/// convolution disappear, a fifth of YOLOv8s's kernel time (docs/optimize-findings.md, "Figures behind the code"). Other Muls
/// (PReLU slopes, hard-swish, squeeze-excite gates) lost accuracy in int8 and gained nothing,
/// so only this pattern is quantized.
fn silu_nodes(g: &pb::GraphProto) -> HashSet<usize> {
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
fn post_selection(g: &pb::GraphProto) -> HashSet<usize> {
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
fn carrier<'g>(g: &'g pb::GraphProto, fused: &HashSet<&str>, o: &'g str) -> Option<&'g str> {
    if !fused.contains(o) {
        return Some(o);
    }
    let act = g.node.iter().find(|m| m.input.iter().any(|i| i == o))?;
    Some(act.output[0].as_str())
}

/// Input positions that carry activations (not shapes, axes, scales or weights).
fn data_inputs(n: &pb::NodeProto, inits: &HashSet<&str>) -> Vec<usize> {
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

/// The shift that int8 rounding adds to each output channel of a Conv or Gemm:
/// `Σ (w_q − w) · mean(x_c)` over the weights of that channel, each times the mean of the input
/// channel it multiplies. Subtracted from the bias, it leaves the layer's mean output as in FP32
/// (Nagel et al., "Data-Free Quantization", 2019, bias correction). It matters most for
/// BatchNorm-folded depthwise kernels: large weights that nearly cancel on a near-constant
/// input, where rounding alone moved CenterNet's heatmap to a cosine of 0.97 with FP32.
///
/// `error` is `w_q − w` in the weight's own layout; `None` when `mean` does not fit it.
pub fn rounding_shift(
    op: &str,
    error: &[f32],
    dims: &[i64],
    group: usize,
    trans_b: bool,
    mean: &[f32],
) -> Option<Vec<f32>> {
    let d: Vec<usize> = dims.iter().map(|&x| x as usize).collect();
    match op {
        "Conv" if d.len() >= 3 && group > 0 && d[0].is_multiple_of(group) => {
            let (outs, cin) = (d[0], d[1]);
            let k: usize = d[2..].iter().product();
            if mean.len() != cin * group || error.len() != outs * cin * k {
                return None;
            }
            let per_group = outs / group;
            Some(
                (0..outs)
                    .map(|o| {
                        let first = (o / per_group) * cin;
                        (0..cin)
                            .map(|ci| {
                                let e: f32 = error[(o * cin + ci) * k..][..k].iter().sum();
                                e * mean[first + ci]
                            })
                            .sum()
                    })
                    .collect(),
            )
        }
        "Gemm" if d.len() == 2 => {
            // transB: W is [N, K]; otherwise [K, N].
            let (n, k) = if trans_b { (d[0], d[1]) } else { (d[1], d[0]) };
            if mean.len() != k || error.len() != n * k {
                return None;
            }
            let at = |o: usize, i: usize| if trans_b { o * k + i } else { i * n + o };
            Some(
                (0..n)
                    .map(|o| (0..k).map(|i| error[at(o, i)] * mean[i]).sum())
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The float Conv/Gemm layers of a Q/DQ graph that ONNX Runtime would quantize itself: its
/// `WeightBiasQuantization` pass (1.20 and later, on by default) takes a Conv whose input comes
/// from a per-tensor DequantizeLinear and whose only path out (through Relu or Clip) ends at a
/// QuantizeLinear, and gives its float weights one symmetric per-tensor int8 scale, so that the
/// node fuses into a QLinearConv. A layer kept in float there would run int8 after all, with
/// a coarser grid than the per-channel one this quantizer would have used: CenterNet with
/// float weights in every convolution between its int8 activations read agreement mAP50 0.85
/// with the runtime's graph optimizations off and 0.32 with them on. [`quantize`] leaves none
/// of these: a layer it keeps in float reads and writes float tensors.
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
    let q = qg
        .node
        .iter()
        .find(|n| n.name() == format!("{tensor}__Q"))?;
    let dq = qg
        .node
        .iter()
        .find(|n| n.name() == format!("{tensor}__DQ"))?;
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

/// A copy of `model` whose outputs also include `tensors`, for calibration runs.
pub fn with_extra_outputs(model: &Model, tensors: &[String]) -> Model {
    let mut m = model.clone();
    let g = m.graph_mut();
    let existing: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    for t in tensors {
        if !existing.contains(t) {
            g.output.push(onnx::value_info(t, DataType::Float));
        }
    }
    m
}

#[derive(Clone, Copy)]
struct QParams {
    scale: f32,
    zero_point: i32,
}

fn qparams(r: &Range, act: ActivationType) -> QParams {
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

/// The tensor behind `t` when it is a constant: an initializer or a Constant node's value.
fn constant_tensor<'g>(
    g: &'g pb::GraphProto,
    producer: &HashMap<&str, usize>,
    t: &str,
) -> Option<&'g pb::TensorProto> {
    g.initializer.iter().find(|x| x.name() == t).or_else(|| {
        let n = &g.node[*producer.get(t)?];
        if n.op_type() != "Constant" {
            return None;
        }
        n.attribute.iter().find(|a| a.name() == "value")?.t.as_ref()
    })
}

/// The value of a one-element float tensor.
fn scalar_of(t: &pb::TensorProto) -> Option<f32> {
    match onnx::tensor_f32(t)?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// The value of a one-element float constant.
pub(super) fn scalar_constant(
    g: &pb::GraphProto,
    producer: &HashMap<&str, usize>,
    t: &str,
) -> Option<f32> {
    scalar_of(constant_tensor(g, producer, t)?)
}

/// A one-element constant as int8/uint8 behind a DequantizeLinear that gives it back exactly
/// (value ±1 at scale |c|), so that `x + c` fuses into QLinearAdd. Returns the DQ's output.
fn quantized_constant(
    name: &str,
    c: f32,
    dims: &[i64],
    zp_type: DataType,
    new_inits: &mut Vec<pb::TensorProto>,
    new_nodes: &mut Vec<pb::NodeProto>,
) -> String {
    let scale = if c == 0.0 { 1.0 } else { c.abs() };
    let (s, z, q, dq) = (
        format!("{name}__cscale"),
        format!("{name}__czp"),
        format!("{name}__cq"),
        format!("{name}__cdq"),
    );
    new_inits.push(onnx::tensor_from_f32(&s, &[], &[scale]));
    match zp_type {
        // uint8 has no -1: a negative value is 0 with zero point 1.
        DataType::Uint8 => {
            let (v, zp) = match c {
                c if c > 0.0 => (1, 0),
                c if c < 0.0 => (0, 1),
                _ => (0, 0),
            };
            new_inits.push(onnx::tensor_from_u8(&q, dims, &[v]));
            new_inits.push(onnx::tensor_from_u8(&z, &[], &[zp]));
        }
        _ => {
            new_inits.push(onnx::tensor_from_i8(&q, dims, &[c.signum() as i8]));
            new_inits.push(onnx::tensor_from_i8(&z, &[], &[0]));
        }
    }
    new_nodes.push(onnx::node(
        "DequantizeLinear",
        &format!("{name}__CDQ"),
        &[&q, &s, &z],
        &[&dq],
        vec![],
    ));
    dq
}

/// A Clip's constant bounds (attributes before opset 11, inputs after).
pub(super) fn clip_bounds(
    g: &pb::GraphProto,
    producer: &HashMap<&str, usize>,
    n: &pb::NodeProto,
) -> (f32, f32) {
    let bound = |input: usize, attr: &str| {
        n.input
            .get(input)
            .filter(|s| !s.is_empty())
            .and_then(|s| scalar_constant(g, producer, s))
            .or_else(|| {
                n.attribute
                    .iter()
                    .find(|x| x.name() == attr)
                    .and_then(|x| x.f)
            })
    };
    (
        bound(1, "min").unwrap_or(f32::NEG_INFINITY),
        bound(2, "max").unwrap_or(f32::INFINITY),
    )
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

/// The float graph as [`quantize`] lays it out before placing Q/DQ for `act`: on the CPU,
/// depthwise layers widened ([`align`]); `None` when it is the model as given. Its node names,
/// weights and channel counts are the quantized graph's.
pub fn layout_for(model: &Model, act: ActivationType) -> Option<(Model, Vec<align::Widened>)> {
    (act == ActivationType::U8Asymmetric)
        .then(|| align::widen_depthwise(model))
        .flatten()
}

/// Quantizes `model`. `ranges` holds the calibrated range of each tensor named by
/// [`calibration_tensors`]; a tensor without one stays float. `channel_means` holds the
/// per-channel means of the tensors named by [`bias_correction_inputs`]; a layer whose input has
/// none keeps its bias as it was. A layer `presets` names (by node label) takes its int8
/// weights, scales and bias from there instead ([`super::reconstruct`]).
pub fn quantize(
    model: &Model,
    ranges: &HashMap<String, Range>,
    channel_means: &HashMap<String, Vec<f32>>,
    presets: &Presets,
    act: ActivationType,
    weights: WeightRange,
    exclude: &Exclusions,
) -> Result<(Model, QdqReport), onnx::OnnxError> {
    let cpu = act == ActivationType::U8Asymmetric;
    // Two CPU-only rewrites that keep the float function. Depthwise layers widened to a channel
    // count the runtime's fast int8 kernel takes; their extra channels have a mean of zero.
    let aligned = layout_for(model, act);
    let widened_means;
    let (model, channel_means) = match &aligned {
        Some((m, widened)) => {
            widened_means = align::widen_means(channel_means, widened);
            (m, &widened_means)
        }
        None => (model, channel_means),
    };
    // Peak tests on integer logits: the CPU runtime pools and compares the integers in place.
    let rewritten = cpu
        .then(|| peaks::pool_the_logits(model, |n| exclude.excludes(n)))
        .flatten();
    let model = rewritten.as_ref().map_or(model, |(m, _)| m);
    let mut rewrites: Vec<String> = aligned
        .iter()
        .flat_map(|(_, w)| w)
        .map(|w| w.to_string())
        .collect();
    rewrites.extend(
        rewritten
            .iter()
            .flat_map(|(_, t)| t)
            .map(|t| format!("{t}: peak test on the integer logits")),
    );
    let mut out = model.clone();
    let opset = model.opset();
    if opset < 10 {
        return Err(onnx::OnnxError::Graph {
            path: model.path.clone(),
            reason: format!("opset {opset} has no QuantizeLinear (needs 10 or later)"),
        });
    }
    // Per-channel DequantizeLinear needs opset 13. Depthwise convolutions with one scale per
    // tensor lose too much, so lift 11 and 12 to 13 when no op in the graph changed meaning
    // between them (these four moved attributes to inputs).
    const CHANGED_AT_13: &[&str] = &["Squeeze", "Unsqueeze", "Split", "ReduceSum"];
    let liftable = (11..13).contains(&opset)
        && !model
            .graph()
            .node
            .iter()
            .any(|n| CHANGED_AT_13.contains(&n.op_type()));
    if liftable {
        for o in out.proto.opset_import.iter_mut() {
            if o.domain().is_empty() || o.domain() == "ai.onnx" {
                o.version = Some(13);
            }
        }
    }
    let per_channel_ok = opset >= 13 || liftable;
    let g = model.graph();
    let init_idx: HashMap<&str, usize> = g
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name(), i))
        .collect();
    let inits: HashSet<&str> = init_idx.keys().copied().collect();

    let mut report = QdqReport {
        rewrites,
        ..Default::default()
    };
    // Which nodes run quantized.
    let silu = silu_nodes(g);
    let post = post_selection(g);
    let active: Vec<bool> = g
        .node
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
        .collect();

    let producer = producers(g);
    let mut consumers: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            *consumers.entry(i.as_str()).or_default() += 1;
        }
    }
    let constant = |t: &str| {
        inits.contains(t)
            || producer
                .get(t)
                .is_some_and(|&p| g.node[p].op_type() == "Constant")
    };
    let graph_outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    // One forward pass (the graph is topologically sorted) decides what the quantized neighbours
    // of each node allow: `q_avail` holds the tensors that will carry a Q/DQ pair.
    let mut active = active;
    let mut fused: HashSet<&str> = HashSet::new();
    let mut folded: HashMap<usize, f32> = HashMap::new();
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
            let c = (0..2).find_map(|k| Some((k, scalar_constant(g, &producer, &n.input[k])?)))?;
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
                        folded.insert(i, c);
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
                let fusable = producer.get(t).is_some_and(|&p| {
                    active[p] && !SHARES_INPUT_RANGE.contains(&g.node[p].op_type())
                }) && consumers.get(t) == Some(&1)
                    && !graph_outputs.contains(t);
                if fusable {
                    fused.insert(t);
                } else {
                    active[i] = false;
                }
            }
            _ => {}
        }
        if let Some(o) = n.output.first() {
            if (active[i] && ranges.contains_key(o)) || folded.contains_key(&i) {
                q_avail.insert(o.as_str());
            }
        }
    }

    // Tensors that reach a graph output through data movement alone. A detector's or
    // embedder's head ends there: 256 levels over its whole output range cost more accuracy
    // than anything else, and with no Q after it no runtime fuses that layer anyway.
    let mut feeds_output = graph_outputs.clone();
    for n in g.node.iter().rev() {
        if SHARES_INPUT_RANGE.contains(&n.op_type())
            && n.output.iter().any(|o| feeds_output.contains(o.as_str()))
        {
            feeds_output.insert(n.input[0].as_str());
        }
    }

    // Quantization parameters per tensor. Data-movement ops inherit their input's and are
    // quantized only where their input already is: they compute nothing worth int8.
    let mut tq: HashMap<String, QParams> = HashMap::new();
    let calibrated = |t: &str| ranges.get(t).map(|r| qparams(r, act));
    for (i, (n, &on)) in g.node.iter().zip(&active).enumerate() {
        if let Some(&c) = folded.get(&i) {
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
            for i in data_inputs(n, &inits) {
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
                .map(|r| clip_qparams(r, clip_bounds(g, &producer, n), act))
        } else {
            calibrated(o)
        };
        if let Some(q) = q {
            tq.insert(o.clone(), q);
        }
    }

    // A Concat whose inputs carry its output's parameters only copies bytes (ONNX Runtime's
    // QLinearConcat builds no requantization table for them; TensorRT elides such a concat),
    // and those inputs are rounded once, not twice. Only inputs the Concat alone reads, written
    // by an op that computes: data movement keeps its input's grid so that the runtime drops
    // it, and a folded Relu/Clip needs its own Q inside its bounds.
    let carrier = |o| carrier(g, &fused, o);
    for (n, &on) in g.node.iter().zip(&active) {
        if !on || n.op_type() != "Concat" {
            continue;
        }
        let Some(&out_q) = carrier(&n.output[0]).and_then(|o| tq.get(o)) else {
            continue;
        };
        for t in &n.input {
            let sole = consumers.get(t.as_str()) == Some(&1) && !graph_outputs.contains(t.as_str());
            let computes = producer.get(t.as_str()).is_some_and(|&p| {
                let op = g.node[p].op_type();
                active[p] && !SHARES_INPUT_RANGE.contains(&op) && !FUSED_ACTIVATION.contains(&op)
            });
            if sole && computes && tq.contains_key(t) {
                tq.insert(t.clone(), out_q);
            }
        }
    }

    let zp_type = match act {
        ActivationType::U8Asymmetric => DataType::Uint8,
        ActivationType::I8Symmetric => DataType::Int8,
    };
    let mut new_inits: Vec<pb::TensorProto> = Vec::new();
    let mut new_nodes: Vec<pb::NodeProto> = Vec::new();
    let mut emitted: HashSet<String> = HashSet::new();

    // Graph inputs first, so their pairs precede every consumer.
    for v in &g.input {
        if tq.contains_key(v.name()) && !inits.contains(v.name()) {
            emit_qdq(
                v.name(),
                &tq,
                zp_type,
                &mut emitted,
                &mut new_nodes,
                &mut new_inits,
            );
        }
    }
    // Only nodes with a quantized output count: an Add of integer indices is no layer.
    report.compute_outputs = g
        .node
        .iter()
        .zip(&active)
        .filter(|(n, &on)| on && !SHARES_INPUT_RANGE.contains(&n.op_type()))
        // A folded output's raw values (clipped at the inputs, for a Concat) mean nothing: the
        // error is measured where the runtime writes it.
        .filter_map(|(n, _)| Some((node_label(n), carrier(n.output.first()?)?.to_string())))
        .filter(|(_, t)| ranges.contains_key(t))
        .collect();
    report.quantized_compute = report
        .compute_outputs
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    for (i, (n, &on)) in g.node.iter().zip(&active).enumerate() {
        // `x * c` read from x's integers at scale `s * c`. The float node stays only where
        // something reads its float output (a graph output, an excluded layer).
        if folded.contains_key(&i) {
            let o = &n.output[0];
            let x = n.input.iter().find(|t| !constant(t));
            if let (Some(x), Some(q)) = (x, tq.get(o)) {
                if emitted.contains(x.as_str()) {
                    let s = format!("{o}__scale");
                    new_inits.push(onnx::tensor_from_f32(&s, &[], &[q.scale]));
                    new_nodes.push(onnx::node(
                        "DequantizeLinear",
                        &format!("{o}__DQ"),
                        &[&format!("{x}__q"), &s, &format!("{x}__zp")],
                        &[&dq_name(o)],
                        vec![],
                    ));
                    emitted.insert(o.clone());
                    let read_in_float = graph_outputs.contains(o.as_str())
                        || g.node
                            .iter()
                            .any(|m| exclude.excludes(m) && m.input.contains(o));
                    if !read_in_float {
                        continue;
                    }
                }
            }
        }
        let mut node = n.clone();
        if on && n.op_type() == "Add" {
            for k in 0..node.input.len() {
                let t = n.input[k].as_str();
                let ct = constant_tensor(g, &producer, t);
                if let Some((c, ct)) = ct.and_then(|ct| Some((scalar_of(ct)?, ct))) {
                    node.input[k] = quantized_constant(
                        &format!("{t}__{}", node_label(n)),
                        c,
                        &ct.dims,
                        zp_type,
                        &mut new_inits,
                        &mut new_nodes,
                    );
                }
            }
        }
        // Two tensors on one grid are equal where their integers are: a peak test compares
        // those, with no dequantize pass over either (CPU only; TensorRT takes Q/DQ graphs).
        let same_grid = |a: &str, b: &str| {
            matches!((tq.get(a), tq.get(b)), (Some(x), Some(y))
                if x.scale == y.scale && x.zero_point == y.zero_point)
        };
        let integer_compare = cpu
            && n.op_type() == "Equal"
            && n.input.len() == 2
            && n.input.iter().all(|t| emitted.contains(t.as_str()))
            && same_grid(&n.input[0], &n.input[1]);
        // Every consumer but an excluded layer reads the dequantized copy: ONNX Runtime fuses a
        // quantized op only when its output feeds nothing but its QuantizeLinear.
        if !exclude.excludes(n) {
            for inp in node.input.iter_mut() {
                if emitted.contains(inp.as_str()) {
                    *inp = if integer_compare {
                        format!("{inp}__q")
                    } else {
                        dq_name(inp)
                    };
                }
            }
        }
        if on
            && WEIGHTED.contains(&n.op_type())
            && quantize_weights(
                model,
                n,
                &mut node,
                &init_idx,
                tq.get(&n.input[0]).map(|q| q.scale),
                channel_means.get(&n.input[0]).map(Vec::as_slice),
                presets.get(&node_label(n)),
                per_channel_ok,
                weights,
                &mut new_inits,
                &mut new_nodes,
            )
            .is_some()
        {
            report.quantized_layers.push(node_label(n));
        }
        let outputs = node.output.clone();
        new_nodes.push(node);
        // Right after the producer, whatever it is: a float op feeding a quantized one gets
        // its Q here, so that every later consumer reads the same dequantized copy.
        for o in &outputs {
            emit_qdq(
                o,
                &tq,
                zp_type,
                &mut emitted,
                &mut new_nodes,
                &mut new_inits,
            );
        }
    }
    let og = out.graph_mut();
    og.node = new_nodes;
    // Nothing reads a pair whose every reader is an excluded layer, nor the dequantized copy of
    // a tensor that only an integer compare reads.
    onnx::drop_dead_nodes(og);
    // In graph order, as their pairs were emitted.
    report.quantized_tensors = og
        .node
        .iter()
        .filter(|n| n.op_type() == "QuantizeLinear")
        .filter_map(|n| n.name().strip_suffix("__Q"))
        .filter(|t| emitted.contains(*t))
        .map(String::from)
        .collect();
    og.initializer.extend(new_inits);
    onnx::drop_unused_initializers(og);
    // Heatmap scores on a fixed 8-bit grid, once every tensor has its pair (CPU only).
    if let Some((scored, muls)) = cpu
        .then(|| peaks::scores_on_integers(&out, |n| exclude.excludes(n)))
        .flatten()
    {
        out = scored;
        report.rewrites.extend(
            muls.iter()
                .map(|m| format!("{m}: masked heatmap scores in uint8 on a grid of 1/255 (each moves by at most 1/510)")),
        );
    }
    Ok((out, report))
}

fn dq_name(t: &str) -> String {
    format!("{t}__dq")
}

/// Adds the Q/DQ pair of tensor `t` (once), reading `t` and producing `t__dq`.
fn emit_qdq(
    t: &str,
    tq: &HashMap<String, QParams>,
    zp_type: DataType,
    emitted: &mut HashSet<String>,
    new_nodes: &mut Vec<pb::NodeProto>,
    new_inits: &mut Vec<pb::TensorProto>,
) {
    let Some(q) = tq.get(t) else { return };
    if !emitted.insert(t.to_string()) {
        return;
    }
    let (s, z) = (format!("{t}__scale"), format!("{t}__zp"));
    new_inits.push(onnx::tensor_from_f32(&s, &[], &[q.scale]));
    new_inits.push(match zp_type {
        DataType::Uint8 => onnx::tensor_from_u8(&z, &[], &[q.zero_point as u8]),
        _ => onnx::tensor_from_i8(&z, &[], &[q.zero_point as i8]),
    });
    let qt = format!("{t}__q");
    new_nodes.push(onnx::node(
        "QuantizeLinear",
        &format!("{t}__Q"),
        &[t, &s, &z],
        &[&qt],
        vec![],
    ));
    new_nodes.push(onnx::node(
        "DequantizeLinear",
        &format!("{t}__DQ"),
        &[&qt, &s, &z],
        &[&dq_name(t)],
        vec![],
    ));
}

/// The largest value the Q/DQ pair of `tensor` in `quantized` can give back (the pair
/// [`emit_qdq`] wrote): `(top - zero_point) * scale`, top 255 for uint8 and 127 for int8.
/// `None` when the tensor has no pair there.
pub fn grid_top(quantized: &Model, tensor: &str) -> Option<f64> {
    let g = quantized.graph();
    let q = g.node.iter().find(|n| n.name() == format!("{tensor}__Q"))?;
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

pub fn node_label(n: &pb::NodeProto) -> String {
    if n.name().is_empty() {
        format!(
            "{}({})",
            n.op_type(),
            n.output.first().map(String::as_str).unwrap_or("")
        )
    } else {
        n.name().to_string()
    }
}

/// Replaces a weighted node's float weight (and bias) with int8 (int32) initializers behind
/// DequantizeLinear. Returns `None` when the node has no float weight initializer.
#[allow(clippy::too_many_arguments)]
fn quantize_weights(
    model: &Model,
    n: &pb::NodeProto,
    node: &mut pb::NodeProto,
    init_idx: &HashMap<&str, usize>,
    input_scale: Option<f32>,
    input_mean: Option<&[f32]>,
    preset: Option<&Preset>,
    per_channel_ok: bool,
    range: WeightRange,
    new_inits: &mut Vec<pb::TensorProto>,
    new_nodes: &mut Vec<pb::NodeProto>,
) -> Option<()> {
    let g = model.graph();
    let wi = match n.op_type() {
        "MatMul" => (0..2).find(|&i| {
            n.input
                .get(i)
                .is_some_and(|x| init_idx.contains_key(x.as_str()))
        })?,
        _ => 1,
    };
    let w = &g.initializer[*init_idx.get(n.input.get(wi)?.as_str())?];
    let values = onnx::tensor_f32(w)?;
    let dims = w.dims.clone();
    // The axis holding output channels.
    let axis: i64 = match n.op_type() {
        "Conv" => 0,
        "Gemm" if onnx::get_attr_int(n, "transB") == Some(1) => 0,
        "Gemm" => 1,
        _ if wi == 1 && dims.len() == 2 => 1,
        _ => -1, // per tensor
    };
    let per_channel = per_channel_ok && axis >= 0 && dims.len() >= 2;
    let qmax = range.qmax(is_depthwise(n, &dims));
    let scales: Vec<f32> = if per_channel && axis == 0 {
        per_channel_scales(&values, dims[0] as usize, qmax)
    } else if per_channel {
        let (k, c) = (dims[0] as usize, dims[1] as usize);
        (0..c)
            .map(|j| {
                let m = (0..k)
                    .map(|i| values[i * c + j].abs())
                    .fold(0.0f32, f32::max);
                if m > 0.0 {
                    m / qmax
                } else {
                    1.0
                }
            })
            .collect()
    } else {
        per_channel_scales(&values, 1, qmax)
    };
    // The Conv/Gemm float bias. A layer without one gets zeros, used only if bias correction
    // has something to put there.
    let out_channels = match (n.op_type(), axis) {
        ("Conv", _) | ("Gemm", 0) => dims[0] as usize,
        ("Gemm", _) => dims[1] as usize,
        _ => 0,
    };
    let had_bias = n.input.get(2).is_some_and(|b| !b.is_empty());
    let mut bias: Option<(String, Vec<f32>)> = match n.op_type() {
        "Conv" | "Gemm" if had_bias => {
            let b = &n.input[2];
            init_idx
                .get(b.as_str())
                .and_then(|&bi| onnx::tensor_f32(&g.initializer[bi]))
                .map(|v| (b.clone(), v))
        }
        "Conv" | "Gemm" => Some((format!("{}__bias", w.name()), vec![0.0; out_channels])),
        _ => None,
    };
    let scale_of_channel = |c: usize, scales: &[f32]| {
        if per_channel {
            c.min(scales.len() - 1)
        } else {
            0
        }
    };
    // b / (s_input * s_weight) must fit the int32: a channel with tiny weights and a real bias
    // would overflow it, so such a channel's weight scale is widened until the bias fits in
    // 2^30 (headroom for the accumulator and for the bias correction below).
    let mut scales = scales;
    if let (Some((_, bv)), Some(s_in)) = (&bias, input_scale) {
        let limit = (1u32 << 30) as f32;
        for (c, b) in bv.iter().enumerate() {
            let k = scale_of_channel(c, &scales);
            scales[k] = scales[k].max(b.abs() / (s_in * limit));
        }
    }
    let channel_of = |idx: usize| -> usize {
        if !per_channel {
            0
        } else if axis == 0 {
            idx / (values.len() / dims[0] as usize)
        } else {
            idx % dims[1] as usize
        }
    };
    // A reconstruction's weights replace the rounding, and its bias the correction, where
    // they fit this layer as it is here: per channel, the same shapes, and an int32 bias that
    // fits at the preset's own scales (the floor that widened `scales` above).
    let preset = preset.filter(|p| {
        let fits = |s_in: f32| {
            p.bias
                .iter()
                .zip(&p.scales)
                .all(|(b, s)| *s > 0.0 && b.abs() / (s_in * s) <= (1u32 << 30) as f32)
        };
        per_channel
            && axis == 0
            && bias.is_some()
            && p.q.len() == values.len()
            && p.scales.len() == scales.len()
            && p.bias.len() == out_channels
            && input_scale.is_none_or(fits)
    });
    let q: Vec<i8> = match preset {
        Some(p) => {
            scales.clone_from(&p.scales);
            if let Some((_, bv)) = bias.as_mut() {
                bv.clone_from(&p.bias);
            }
            p.q.clone()
        }
        None => values
            .iter()
            .enumerate()
            .map(|(i, &v)| (v / scales[channel_of(i)]).round().clamp(-qmax, qmax) as i8)
            .collect(),
    };
    let corrected = match (input_mean, bias.as_mut()) {
        // The fitted bias already takes the rounding back, on the quantized inputs.
        _ if preset.is_some() => true,
        (Some(mean), Some((_, bv))) if bv.len() == out_channels => {
            let error: Vec<f32> = values
                .iter()
                .zip(&q)
                .enumerate()
                .map(|(i, (&v, &qv))| f32::from(qv) * scales[channel_of(i)] - v)
                .collect();
            let group = onnx::get_attr_int(n, "group").unwrap_or(1).max(1) as usize;
            let trans_b = onnx::get_attr_int(n, "transB") == Some(1);
            match rounding_shift(n.op_type(), &error, &dims, group, trans_b, mean) {
                Some(shift) => {
                    for (b, d) in bv.iter_mut().zip(shift) {
                        *b -= d;
                    }
                    true
                }
                None => false,
            }
        }
        _ => false,
    };
    if !had_bias && !corrected {
        bias = None;
    }
    // Named after the node too: one weight may feed several nodes.
    let name = format!("{}__{}", w.name(), node_label(n));
    let (qn, sn, zn, dqn) = (
        format!("{name}__q8"),
        format!("{name}__wscale"),
        format!("{name}__wzp"),
        format!("{name}__wdq"),
    );
    let sdims: Vec<i64> = if per_channel {
        vec![scales.len() as i64]
    } else {
        vec![]
    };
    new_inits.push(onnx::tensor_from_i8(&qn, &dims, &q));
    new_inits.push(onnx::tensor_from_f32(&sn, &sdims, &scales));
    new_inits.push(onnx::tensor_from_i8(&zn, &sdims, &vec![0i8; scales.len()]));
    let attrs = if per_channel {
        vec![onnx::attr_int("axis", axis)]
    } else {
        vec![]
    };
    new_nodes.push(onnx::node(
        "DequantizeLinear",
        &format!("{dqn}__DQ"),
        &[&qn, &sn, &zn],
        &[&dqn],
        attrs,
    ));
    node.input[wi] = dqn;

    let Some((bname, bv)) = bias else {
        return Some(());
    };
    let bname = format!("{bname}__{}", node_label(n));
    let set_bias = |node: &mut pb::NodeProto, t: String| {
        if node.input.len() > 2 {
            node.input[2] = t;
        } else {
            node.input.push(t);
        }
    };
    // The bias in int32 at the scale the integer kernels accumulate in, s_input * s_weight[c],
    // when the input's scale is known; otherwise a float bias, rewritten only if corrected.
    let Some(s_in) = input_scale else {
        if corrected {
            let t = format!("{bname}__corrected");
            new_inits.push(onnx::tensor_from_f32(&t, &[bv.len() as i64], &bv));
            set_bias(node, t);
        }
        return Some(());
    };
    let bscale: Vec<f32> = (0..bv.len())
        .map(|c| s_in * scales[scale_of_channel(c, &scales)])
        .collect();
    // Per-axis DequantizeLinear needs opset 13; before that one scale must serve.
    let (bscale, bdims, battrs) = if per_channel {
        (
            bscale,
            vec![bv.len() as i64],
            vec![onnx::attr_int("axis", 0)],
        )
    } else {
        (vec![bscale[0]], vec![], vec![])
    };
    let bq: Vec<i32> = bv
        .iter()
        .zip(bscale.iter().cycle())
        .map(|(&v, &s)| (v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32)
        .collect();
    let (bqn, bsn, bzn, bdq) = (
        format!("{bname}__q32"),
        format!("{bname}__bscale"),
        format!("{bname}__bzp"),
        format!("{bname}__bdq"),
    );
    new_inits.push(onnx::tensor_from_i32(&bqn, &[bv.len() as i64], &bq));
    new_inits.push(onnx::tensor_from_f32(&bsn, &bdims, &bscale));
    new_inits.push(onnx::tensor_from_i32(&bzn, &bdims, &vec![0; bscale.len()]));
    new_nodes.push(onnx::node(
        "DequantizeLinear",
        &format!("{bdq}__DQ"),
        &[&bqn, &bsn, &bzn],
        &[&bdq],
        battrs,
    ));
    set_bias(node, bdq);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One activation rounded alone: the float model plus that tensor's own Q/DQ pair (same
    /// parameters as in the quantized model), its readers on the dequantized copy, weights float.
    #[test]
    fn one_quantized_tensor_in_the_float_model() {
        let model = model_of(
            vec![
                onnx::node("Conv", "c1", &["x", "w1"], &["a"], vec![]),
                onnx::node("Relu", "r", &["a"], &["b"], vec![]),
                onnx::node("Conv", "c2", &["b", "w2"], &["c"], vec![]),
                onnx::node("Add", "add", &["c", "b2"], &["out"], vec![]),
            ],
            vec![weights("w1", &[4, 3, 1, 1]), weights("w2", &[4, 4, 1, 1])],
        );
        let (q, rep) = quantize_in(
            &model,
            |_| Range { lo: -1.0, hi: 2.0 },
            ActivationType::U8Asymmetric,
        );
        assert!(
            rep.quantized_tensors.contains(&"b".to_string()),
            "{:?}",
            rep.quantized_tensors
        );
        let one = with_one_quantized_tensor(&model, &q, "b").unwrap();
        let g = one.graph();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(
            ops,
            [
                "Conv",
                "Relu",
                "QuantizeLinear",
                "DequantizeLinear",
                "Conv",
                "Add"
            ]
        );
        assert_eq!(g.node[4].input[0], "b__dq");
        assert_eq!(g.node[4].input[1], "w2", "weights stay float");
        let scale = |m: &Model| {
            let t = m
                .graph()
                .initializer
                .iter()
                .find(|t| t.name() == "b__scale")
                .unwrap();
            onnx::tensor_f32(t).unwrap()
        };
        assert_eq!(scale(&one), scale(&q));
        assert!(with_one_quantized_tensor(&model, &q, "nothing").is_none());
        assert_eq!(neighbours(&model, "b"), ["r", "c2"]);
    }

    /// Hand-checked: each output channel's shift is the sum of its weights' rounding errors,
    /// each times the mean of the input channel it reads.
    #[test]
    fn rounding_shift_by_hand() {
        // Depthwise, two channels of 1x2 kernels.
        let e = [0.1, 0.2, -0.3, 0.05];
        let got = rounding_shift("Conv", &e, &[2, 1, 1, 2], 2, false, &[2.0, 10.0]).unwrap();
        assert!(
            (got[0] - 0.6).abs() < 1e-6 && (got[1] + 2.5).abs() < 1e-6,
            "{got:?}"
        );
        // Dense 1x1, one output reading two channels.
        let got = rounding_shift("Conv", &[0.5, -1.0], &[1, 2, 1, 1], 1, false, &[4.0, 3.0]);
        assert!((got.unwrap()[0] + 1.0).abs() < 1e-6);
        // Gemm, W as [N, K] (transB) and as [K, N].
        let e = [1.0, 2.0, 3.0, 4.0];
        let m = [1.0, 10.0];
        assert_eq!(
            rounding_shift("Gemm", &e, &[2, 2], 1, true, &m).unwrap(),
            [21.0, 43.0]
        );
        assert_eq!(
            rounding_shift("Gemm", &e, &[2, 2], 1, false, &m).unwrap(),
            [31.0, 42.0]
        );
        // Means that do not fit the weight: no correction rather than a wrong one.
        assert!(rounding_shift("Conv", &e, &[2, 1, 1, 2], 2, false, &[1.0]).is_none());
    }

    /// With its input's channel means known, a Conv's int32 bias carries the correction, and a
    /// Conv without a bias gets one; without means the bias is the float one, rounded.
    #[test]
    fn bias_correction_reaches_the_quantized_bias() {
        // Weights chosen to round badly at their scale (max 1.0, so step 1/127).
        let w = onnx::tensor_from_f32("w", &[2, 1, 1, 2], &[1.0, 0.0035, -1.0, 0.0043]);
        let b = onnx::tensor_from_f32("b", &[2], &[0.5, -0.5]);
        let model = model_of(
            vec![
                onnx::node(
                    "Conv",
                    "dw",
                    &["x", "w", "b"],
                    &["y"],
                    vec![onnx::attr_int("group", 2)],
                ),
                onnx::node(
                    "Conv",
                    "nobias",
                    &["y", "w"],
                    &["out"],
                    vec![onnx::attr_int("group", 2)],
                ),
            ],
            vec![w, b],
        );
        let ranges = ranges_in(&model, |_| Range { lo: -4.0, hi: 4.0 });
        let means = HashMap::from([
            ("x".to_string(), vec![100.0, 200.0]),
            ("y".to_string(), vec![50.0, -50.0]),
        ]);
        let bias_of = |q: &Model, node: &str| -> Vec<f32> {
            let g = q.graph();
            let n = g.node.iter().find(|n| n.name() == node).unwrap();
            let dq = g.node.iter().find(|d| d.output[0] == n.input[2]).unwrap();
            let init = |name: &str| g.initializer.iter().find(|t| t.name() == name).unwrap();
            let q32 = init(&dq.input[0]);
            let v: Vec<i32> = q32
                .raw_data()
                .chunks(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let s = onnx::tensor_f32(init(&dq.input[1])).unwrap();
            v.iter().zip(s).map(|(&i, s)| i as f32 * s).collect()
        };
        let (act, full) = (ActivationType::U8Asymmetric, WeightRange::Full);
        let ex = Exclusions::default();
        let (plain, _) = quantize(
            &model,
            &ranges,
            &HashMap::new(),
            &Presets::new(),
            act,
            full,
            &ex,
        )
        .unwrap();
        let (fixed, _) =
            quantize(&model, &ranges, &means, &Presets::new(), act, full, &ex).unwrap();
        // Rounding errors: 0.0035 -> 0 (step 1/127 = 0.00787) and 0.0043 -> 0.00787.
        let err1 = 1.0 / 127.0 - 0.0043;
        let want = [0.5 - (-0.0035) * 100.0, -0.5 - err1 * 200.0];
        let (p, f) = (bias_of(&plain, "dw"), bias_of(&fixed, "dw"));
        // The int32 bias's own step: s_input * s_weight = (8 / 255) / 127.
        let step = 2.5e-4;
        for c in 0..2 {
            assert!((p[c] - [0.5, -0.5][c]).abs() < step, "plain {p:?}");
            assert!(
                (f[c] - want[c]).abs() < step,
                "corrected {f:?}, want {want:?}"
            );
        }
        // The bias-less Conv got a bias: minus its own shift (means 50 and -50).
        let f2 = bias_of(&fixed, "nobias");
        let want2 = [-(-0.0035 * 50.0), -(err1 * -50.0)];
        assert!(
            (f2[0] - want2[0]).abs() < step && (f2[1] - want2[1]).abs() < step,
            "{f2:?}"
        );
        let nobias = plain
            .graph()
            .node
            .iter()
            .find(|n| n.name() == "nobias")
            .unwrap();
        assert_eq!(nobias.input.len(), 2, "no means, no bias added");
    }

    /// SiLU's Sigmoid and Mul run in int8; a Mul by a negative constant stays float.
    #[test]
    fn silu_is_quantized_other_muls_are_not() {
        let w = weights;
        let model = model_of(
            vec![
                onnx::node("Conv", "c1", &["x", "w1"], &["a"], vec![]),
                onnx::node("Sigmoid", "sig", &["a"], &["s"], vec![]),
                onnx::node("Mul", "silu", &["a", "s"], &["m"], vec![]),
                onnx::node("Mul", "scale", &["m", "k"], &["m2"], vec![]),
                onnx::node("Conv", "c2", &["m2", "w2"], &["out"], vec![]),
            ],
            vec![w("w1", &[4, 3, 1, 1]), w("w2", &[2, 4, 1, 1]), w("k", &[1])],
        );
        let tensors = calibration_tensors(&model);
        for t in ["x", "a", "s", "m", "m2"] {
            assert!(
                tensors.contains(&t.to_string()),
                "{t} calibrated: {tensors:?}"
            );
        }
        let (q, rep) = quantize_in(
            &model,
            |_| Range { lo: -1.0, hi: 1.0 },
            ActivationType::U8Asymmetric,
        );
        assert_eq!(rep.quantized_layers, vec!["c1", "c2"]);
        let quantized_out = |name: &str| {
            q.graph()
                .node
                .iter()
                .any(|n| n.op_type() == "QuantizeLinear" && n.input[0] == name)
        };
        assert!(quantized_out("s") && quantized_out("m"), "SiLU in int8");
        assert!(!rep.quantized_compute.contains(&"scale".to_string()));
        assert!(rep.quantized_compute.contains(&"silu".to_string()));
    }

    /// A detector's decoding after TopK (CenterNet's: corner = cell * stride + offset, then a
    /// concat of corners, scores and class ids) stays float even though Add, Mul and Concat
    /// are int8 elsewhere; the convolution before it does not.
    #[test]
    fn post_processing_after_a_selection_stays_float() {
        let model = model_of(
            vec![
                onnx::node("Conv", "head", &["x", "w1"], &["a"], vec![]),
                onnx::node("Flatten", "flat", &["a"], &["af"], vec![]),
                onnx::node("TopK", "peaks", &["af", "k"], &["score", "idx"], vec![]),
                onnx::node(
                    "Cast",
                    "cell",
                    &["idx"],
                    &["cellf"],
                    vec![onnx::attr_int("to", 1)],
                ),
                onnx::node("Mul", "stride", &["cellf", "four"], &["px"], vec![]),
                onnx::node("Add", "corner", &["px", "score"], &["c"], vec![]),
                onnx::node("Add", "sum", &["c", "px"], &["c2"], vec![]),
                onnx::node(
                    "Concat",
                    "rows",
                    &["c2", "score"],
                    &["out"],
                    vec![onnx::attr_int("axis", 1)],
                ),
            ],
            vec![
                weights("w1", &[4, 3, 1, 1]),
                onnx::tensor_raw("k", DataType::Int64, &[1], 3i64.to_le_bytes().to_vec()),
                onnx::tensor_from_f32("four", &[], &[4.0]),
            ],
        );
        let tensors = calibration_tensors(&model);
        assert!(tensors.contains(&"c".into()) && tensors.contains(&"px".into()));
        for act in [ActivationType::U8Asymmetric, ActivationType::I8Symmetric] {
            let (q, rep) = quantize_in(&model, |_| Range { lo: -1.0, hi: 60.0 }, act);
            let g = q.graph();
            let requantized: Vec<&str> = g
                .node
                .iter()
                .filter(|n| n.op_type() == "QuantizeLinear")
                .map(|n| n.input[0].as_str())
                .collect();
            // The heatmap before TopK is an activation like any other.
            assert!(requantized.contains(&"x") && requantized.contains(&"a"));
            for t in ["score", "cellf", "px", "c", "c2"] {
                assert!(!requantized.contains(&t), "{act:?}: {t} rounded");
            }
            for name in ["stride", "corner", "sum", "rows"] {
                let n = g.node.iter().find(|n| n.name() == name).unwrap();
                assert!(
                    n.input.iter().all(|t| !t.ends_with("__dq")),
                    "{act:?}: {name} reads {:?}",
                    n.input
                );
                assert!(!rep.quantized_compute.contains(&name.to_string()));
            }
            assert!(
                rep.quantized_layers.contains(&"head".to_string()),
                "{act:?}"
            );
        }
    }

    /// A Concat's inputs take its output's parameters (here the Relu's folded after it), so
    /// the runtime copies bytes instead of requantizing; an input read elsewhere too keeps its
    /// own.
    #[test]
    fn concat_inputs_share_the_output_grid() {
        let model = model_of(
            vec![
                onnx::node("Conv", "c1", &["x", "w1"], &["a"], vec![]),
                onnx::node("Conv", "c2", &["x", "w2"], &["b"], vec![]),
                onnx::node("Conv", "c3", &["x", "w3"], &["e"], vec![]),
                onnx::node(
                    "Concat",
                    "cat",
                    &["a", "b", "e"],
                    &["cc"],
                    vec![onnx::attr_int("axis", 1)],
                ),
                onnx::node("Relu", "relu", &["cc"], &["rr"], vec![]),
                onnx::node("Conv", "head", &["rr", "w4"], &["out"], vec![]),
                onnx::node("Conv", "side", &["b", "w5"], &["s"], vec![]),
            ],
            vec![
                weights("w1", &[2, 3, 1, 1]),
                weights("w2", &[2, 3, 1, 1]),
                weights("w3", &[2, 3, 1, 1]),
                weights("w4", &[2, 6, 1, 1]),
                weights("w5", &[2, 2, 1, 1]),
            ],
        );
        let range = |t: &str| match t {
            "a" => Range { lo: -1.0, hi: 2.0 },
            "b" => Range { lo: -3.0, hi: 1.0 },
            "e" => Range { lo: -0.5, hi: 0.5 },
            "cc" => Range { lo: -3.0, hi: 6.0 },
            "rr" => Range { lo: 0.0, hi: 6.0 },
            _ => Range { lo: -4.0, hi: 4.0 },
        };
        for act in [ActivationType::U8Asymmetric, ActivationType::I8Symmetric] {
            let (q, rep) = quantize_in(&model, range, act);
            // Its error is measured where the runtime writes it: after the folded Relu.
            assert!(rep
                .compute_outputs
                .contains(&("cat".to_string(), "rr".to_string())));
            let g = q.graph();
            let value = |name: &str| {
                let t = g.initializer.iter().find(|t| t.name() == name).unwrap();
                (t.raw_data().to_vec(), t.data_type())
            };
            let grid = |t: &str| (value(&format!("{t}__scale")), value(&format!("{t}__zp")));
            assert!(
                grid("a") == grid("rr") && grid("e") == grid("rr"),
                "{act:?}"
            );
            assert!(
                grid("b") != grid("rr"),
                "{act:?}: b is read by another layer"
            );
            // On the Relu's grid, zero stays the lowest level: the runtime still drops it.
            if act == ActivationType::U8Asymmetric {
                assert_eq!(value("rr__zp").0, [0]);
            }
        }
    }

    /// CenterNet's peak test as tf2onnx exports it: `Equal(h, MaxPool(h))` on the sigmoid, with
    /// the pool between two Transposes that cancel. On the CPU it becomes a pool of the logits'
    /// integers and an integer compare.
    #[test]
    fn peak_test_pools_and_compares_the_integer_logits() {
        let (model, range) = (heatmap_head(), heatmap_range);
        let (q, _) = quantize_in(&model, range, ActivationType::U8Asymmetric);
        let g = q.graph();
        let by_op = |op: &'static str| g.node.iter().filter(move |n| n.op_type() == op);
        let pools: Vec<_> = by_op("MaxPool").collect();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].input[0], "logits__dq", "the logits are pooled");
        let peak = by_op("Equal").next().unwrap();
        assert_eq!(
            peak.input,
            ["logits__q", "logits__pooled__q"],
            "integers compared, on one grid"
        );
        let scale = |t: &str| {
            let t = g.initializer.iter().find(|i| i.name() == t).unwrap();
            onnx::tensor_f32(t).unwrap()
        };
        assert_eq!(scale("logits__scale"), scale("logits__pooled__scale"));
        // The mask moves to where the scores are, and keeps its name.
        let mv = g
            .node
            .iter()
            .find(|n| n.input[0] == peak.output[0])
            .unwrap();
        assert_eq!((mv.op_type(), mv.output[0].as_str()), ("Transpose", "keep"));
        assert_eq!(mv.attribute[0].ints, NHWC);
        // Nothing left dangling: no dequantized pool, no exported pool or its Transposes.
        for n in &g.node {
            assert!(
                !["t2", "t3", "pool"].contains(&n.name()),
                "{} left",
                n.name()
            );
            assert!(n.name() != "logits__pooled__DQ", "an unread dequantize");
        }
        assert_eq!(by_op("Sigmoid").next().unwrap().input[0], "logits__dq");

        // TensorRT reads Q/DQ graphs only, and an excluded pool stays where it was.
        let (t, _) = quantize_in(&model, range, ActivationType::I8Symmetric);
        let kept = |m: &Model| m.graph().node.iter().any(|n| n.name() == "pool");
        assert!(kept(&t));
        let e = quantize_excluding(&model, range, "pool");
        assert!(kept(&e));
        // What the dropped nodes read goes with them (ONNX Runtime warns of every leftover).
        for m in [&q, &e] {
            let g = m.graph();
            for t in &g.initializer {
                let read = g
                    .node
                    .iter()
                    .any(|n| n.input.contains(&t.name().to_string()));
                assert!(read, "{} is read by nothing", t.name());
            }
        }
    }

    /// A depthwise layer of 24 channels (MLAS's fast int8 kernel wants multiples of 16) is
    /// widened to 32 on the CPU: zero kernels, zero weights where the next layer reads the
    /// extra channels, and bias correction still fitting the widened inputs.
    #[test]
    fn depthwise_layers_widen_to_the_fast_kernel() {
        let model = model_of(
            vec![
                onnx::node("Conv", "p", &["x", "wp", "bp"], &["a"], vec![]),
                onnx::node("Relu", "r1", &["a"], &["ar"], vec![]),
                onnx::node(
                    "Conv",
                    "dw",
                    &["ar", "wd", "bd"],
                    &["b"],
                    vec![onnx::attr_int("group", 24)],
                ),
                onnx::node("Relu", "r2", &["b"], &["br"], vec![]),
                onnx::node("Conv", "q", &["br", "wq", "bq"], &["out"], vec![]),
            ],
            vec![
                weights("wp", &[24, 3, 1, 1]),
                weights("bp", &[24]),
                weights("wd", &[24, 1, 3, 3]),
                weights("bd", &[24]),
                weights("wq", &[8, 24, 1, 1]),
                weights("bq", &[8]),
            ],
        );
        let range = |_: &str| Range { lo: 0.0, hi: 4.0 };
        let (q, _) = quantize_in(&model, range, ActivationType::U8Asymmetric);
        let g = q.graph();
        let node = |name: &str| g.node.iter().find(|n| n.name() == name).unwrap();
        assert_eq!(onnx::get_attr_int(node("dw"), "group"), Some(32));
        // The int8 weights, through each layer's weight DequantizeLinear.
        let int8 = |layer: &str| {
            let dq = g
                .node
                .iter()
                .find(|n| n.output[0] == node(layer).input[1])
                .unwrap();
            let t = g
                .initializer
                .iter()
                .find(|t| t.name() == dq.input[0])
                .unwrap();
            (t.dims.clone(), t.raw_data().to_vec())
        };
        let (pd, pw) = int8("p");
        assert_eq!(pd, [32, 3, 1, 1]);
        assert!(
            pw[24 * 3..].iter().all(|&b| b == 0),
            "extra outputs weigh 0"
        );
        let (dd, dw) = int8("dw");
        assert_eq!(dd, [32, 1, 3, 3]);
        assert!(dw[24 * 9..].iter().all(|&b| b == 0));
        assert!(dw[..24 * 9].iter().any(|&b| b != 0));
        let (qd, qw) = int8("q");
        assert_eq!(qd, [8, 32, 1, 1]);
        for o in 0..8 {
            assert!(
                qw[o * 32 + 24..(o + 1) * 32].iter().all(|&b| b == 0),
                "row {o}"
            );
        }

        // Bias correction reads the widened inputs' means: with means the int32 bias moves.
        let ranges = ranges_in(&model, range);
        let means: HashMap<String, Vec<f32>> = bias_correction_inputs(&model)
            .into_keys()
            .map(|t| (t, vec![1.5; 24]))
            .collect();
        assert!(means.contains_key("br"), "{:?}", means.keys());
        let act = ActivationType::U8Asymmetric;
        let (c, _) = quantize(
            &model,
            &ranges,
            &means,
            &Presets::new(),
            act,
            WeightRange::Full,
            &Exclusions::default(),
        )
        .unwrap();
        let bias = |m: &Model| {
            let g = m.graph();
            let q = g.node.iter().find(|n| n.name() == "q").unwrap();
            let dq = g.node.iter().find(|n| n.output[0] == q.input[2]).unwrap();
            let t = g
                .initializer
                .iter()
                .find(|t| t.name() == dq.input[0])
                .unwrap();
            t.raw_data().to_vec()
        };
        assert_ne!(
            bias(&c),
            bias(&q),
            "the correction reached the widened layer"
        );

        // TensorRT builds its own kernels: nothing widens there.
        let (t, _) = quantize_in(&model, range, ActivationType::I8Symmetric);
        let dw = t.graph().node.iter().find(|n| n.name() == "dw").unwrap();
        assert_eq!(onnx::get_attr_int(dw, "group"), Some(24));
    }

    const NHWC: [i64; 4] = [0, 2, 3, 1];

    /// CenterNet's heatmap head as tf2onnx exports it: sigmoid, a peak test with the pool
    /// between two Transposes that cancel, and the scores masked by the peaks.
    fn heatmap_head() -> Model {
        let perm = |name: &str, i: &str, o: &str, p: &[i64]| {
            onnx::node(
                "Transpose",
                name,
                &[i],
                &[o],
                vec![onnx::attr_ints("perm", p)],
            )
        };
        model_of(
            vec![
                onnx::node("Conv", "head", &["x", "w"], &["logits"], vec![]),
                onnx::node("Sigmoid", "sig", &["logits"], &["h"], vec![]),
                perm("t1", "h", "h_nhwc", &NHWC),
                perm("t2", "h_nhwc", "h_back", &[0, 3, 1, 2]),
                onnx::node("MaxPool", "pool", &["h_back"], &["hmax"], vec![]),
                perm("t3", "hmax", "hmax_nhwc", &NHWC),
                onnx::node("Equal", "peak", &["h_nhwc", "hmax_nhwc"], &["keep"], vec![]),
                onnx::node(
                    "Cast",
                    "f",
                    &["keep"],
                    &["keepf"],
                    vec![onnx::attr_int("to", 1)],
                ),
                onnx::node("Mul", "score", &["h_nhwc", "keepf"], &["out"], vec![]),
            ],
            vec![weights("w", &[4, 3, 1, 1])],
        )
    }

    fn heatmap_range(_: &str) -> Range {
        Range { lo: -6.0, hi: 2.0 }
    }

    /// The masked scores that go to TopK run on integers (CPU): the sigmoid on the fixed grid
    /// of 1/255, the Transpose moving uint8, the mask cast to uint8 and the Mul of the two
    /// landing on the same grid, where a multiply by 0 or 1 is exact.
    #[test]
    fn masked_scores_multiply_integers_on_a_fixed_grid() {
        let model = heatmap_head();
        let (q, report) = quantize_in(&model, heatmap_range, ActivationType::U8Asymmetric);
        let g = q.graph();
        let node = |name: &str| g.node.iter().find(|n| n.name() == name).unwrap();
        let init = |t: &str| g.initializer.iter().find(|i| i.name() == t).unwrap();
        let writer = |t: &str| {
            g.node
                .iter()
                .find(|n| n.output.iter().any(|o| o == t))
                .unwrap()
        };
        let score_q = writer("h__score_q");
        assert_eq!(score_q.op_type(), "QuantizeLinear");
        assert_eq!(score_q.input[0], "h", "the sigmoid's output");
        assert_eq!(
            onnx::tensor_f32(init(&score_q.input[1])),
            Some(vec![1.0 / 255.0])
        );
        let zp = init(&score_q.input[2]);
        assert_eq!(
            (zp.data_type(), zp.raw_data()),
            (DataType::Uint8 as i32, &[0u8][..])
        );
        assert_eq!(
            node("t1").input[0],
            "h__score_q",
            "the Transpose moves integers"
        );
        assert_eq!(
            onnx::get_attr_int(node("f"), "to"),
            Some(DataType::Uint8 as i64)
        );
        let mul = node("score");
        assert_eq!(mul.input, ["h_nhwc__score_dq", "keepf__mask_dq"]);
        let mask_dq = writer("keepf__mask_dq");
        assert_eq!(onnx::tensor_f32(init(&mask_dq.input[1])), Some(vec![1.0]));
        // The product is requantized onto the scores' grid, and the graph output keeps its name.
        let requant = g.node.iter().find(|n| n.input[0] == mul.output[0]).unwrap();
        assert_eq!(requant.op_type(), "QuantizeLinear");
        assert_eq!(requant.input[1], score_q.input[1]);
        assert_eq!(writer("out").op_type(), "DequantizeLinear");
        assert!(
            report
                .rewrites
                .iter()
                .any(|r| r.starts_with("score: masked")),
            "{:?}",
            report.rewrites
        );

        // TensorRT keeps float scores, and so does an excluded sigmoid or Mul.
        let float_scores = |m: &Model| {
            let g = m.graph();
            g.node
                .iter()
                .any(|n| n.name() == "score" && n.input[1] == "keepf")
                && !g
                    .node
                    .iter()
                    .any(|n| n.output.iter().any(|o| o == "h__score_q"))
        };
        let (t, _) = quantize_in(&model, heatmap_range, ActivationType::I8Symmetric);
        assert!(float_scores(&t));
        for name in ["sig", "score"] {
            let e = quantize_excluding(&model, heatmap_range, name);
            assert!(float_scores(&e), "{name} excluded");
        }
    }

    /// When the masked scores go (through a Reshape) to a TopK, it ranks their integers and
    /// only the k values it keeps are dequantized: no dequantize pass over the heatmap.
    #[test]
    fn topk_ranks_the_masked_integers() {
        let mut model = heatmap_head();
        let g = model.graph_mut();
        g.initializer
            .push(onnx::tensor_from_i64("flat", &[2], &[1, -1]));
        g.initializer.push(onnx::tensor_from_i64("k", &[1], &[5]));
        g.node.extend([
            onnx::node("Reshape", "flatten", &["out", "flat"], &["scores"], vec![]),
            onnx::node("TopK", "top", &["scores", "k"], &["vals", "idx"], vec![]),
        ]);
        g.output = vec![
            onnx::value_info("vals", DataType::Float),
            onnx::value_info("idx", DataType::Int64),
        ];
        let (q, _) = quantize_in(&model, heatmap_range, ActivationType::U8Asymmetric);
        let g = q.graph();
        let node = |name: &str| g.node.iter().find(|n| n.name() == name).unwrap();
        assert_eq!(node("flatten").input[0], "out__masked_q");
        assert_eq!(node("top").output, ["vals__q", "idx"]);
        let dq = g.node.iter().find(|n| n.output[0] == "vals").unwrap();
        assert_eq!(
            (dq.op_type(), dq.input[0].as_str()),
            ("DequantizeLinear", "vals__q")
        );
        assert!(
            !g.node.iter().any(|n| n.output.iter().any(|o| o == "out")),
            "no dequantized heatmap"
        );
    }

    /// Quantizes with each calibrated tensor in the range `range` gives it, no exclusion, no
    /// bias correction.
    fn quantize_in(
        model: &Model,
        range: impl Fn(&str) -> Range,
        act: ActivationType,
    ) -> (Model, QdqReport) {
        quantize_keeping(model, range, act, &Exclusions::default())
    }

    /// [`quantize_in`] for the CPU, with the node `name` kept in float.
    fn quantize_excluding(model: &Model, range: impl Fn(&str) -> Range, name: &str) -> Model {
        let exclude = Exclusions {
            names: [name.to_string()].into(),
            ..Default::default()
        };
        quantize_keeping(model, range, ActivationType::U8Asymmetric, &exclude).0
    }

    /// [`quantize_in`] with `exclude` kept in float.
    fn quantize_keeping(
        model: &Model,
        range: impl Fn(&str) -> Range,
        act: ActivationType,
        exclude: &Exclusions,
    ) -> (Model, QdqReport) {
        quantize_on_grid(model, range, act, WeightRange::Full, exclude)
    }

    /// [`quantize_keeping`] with the weights on `weights`' grid.
    fn quantize_on_grid(
        model: &Model,
        range: impl Fn(&str) -> Range,
        act: ActivationType,
        weights: WeightRange,
        exclude: &Exclusions,
    ) -> (Model, QdqReport) {
        let ranges = ranges_in(model, range);
        quantize(
            model,
            &ranges,
            &HashMap::new(),
            &Presets::new(),
            act,
            weights,
            exclude,
        )
        .unwrap()
    }

    /// ONNX Runtime's own weight quantization finds a float Conv between a per-tensor
    /// dequantize and a quantize (through a Relu), and the quantizer, keeping the middle of
    /// three convolutions in float, leaves it none to find.
    #[test]
    fn no_float_layer_is_left_for_the_runtime_to_quantize() {
        let by_hand = model_of(
            vec![
                onnx::node("DequantizeLinear", "dq", &["xq", "s", "z"], &["x1"], vec![]),
                onnx::node("Conv", "c", &["x1", "w"], &["y"], vec![]),
                onnx::node("Relu", "r", &["y"], &["y1"], vec![]),
                onnx::node("QuantizeLinear", "q", &["y1", "s", "z"], &["out"], vec![]),
            ],
            vec![
                weights("w", &[2, 3, 1, 1]),
                onnx::tensor_from_f32("s", &[], &[0.1]),
                onnx::tensor_from_u8("z", &[], &[0]),
            ],
        );
        assert_eq!(runtime_requantized(&by_hand), ["c"]);
        let chain = model_of(
            vec![
                onnx::node("Conv", "a", &["x", "wa"], &["ya"], vec![]),
                onnx::node("Conv", "b", &["ya", "wb"], &["yb"], vec![]),
                onnx::node("Relu", "rb", &["yb"], &["yb1"], vec![]),
                onnx::node("Conv", "c", &["yb1", "wc"], &["out"], vec![]),
            ],
            vec![
                weights("wa", &[3, 3, 1, 1]),
                weights("wb", &[3, 3, 1, 1]),
                weights("wc", &[3, 3, 1, 1]),
            ],
        );
        let q = quantize_excluding(&chain, |_| Range { lo: -1.0, hi: 1.0 }, "b");
        let b = q.graph().node.iter().find(|n| n.name() == "b").unwrap();
        assert!(
            q.graph().initializer.iter().any(|t| t.name() == b.input[1]),
            "b keeps its float weights"
        );
        assert!(
            runtime_requantized(&q).is_empty(),
            "{:?}",
            runtime_requantized(&q)
        );
    }

    /// A reconstruction's preset replaces round-to-nearest and bias correction: the layer's
    /// int8 weights, scales and bias are the preset's, to the bit.
    #[test]
    fn a_preset_replaces_the_rounding() {
        let model = model_of(
            vec![onnx::node("Conv", "c", &["x", "w", "b"], &["out"], vec![])],
            vec![
                weights("w", &[2, 3, 1, 1]),
                onnx::tensor_from_f32("b", &[2], &[0.5, -0.5]),
            ],
        );
        let ranges = ranges_in(&model, |_| Range { lo: -1.0, hi: 1.0 });
        let act = ActivationType::U8Asymmetric;
        let preset = Preset {
            q: vec![1, -2, 3, 127, 0, -127],
            scales: vec![0.01, 0.02],
            bias: vec![0.25, 0.75],
        };
        let presets: Presets = [("c".to_string(), preset.clone())].into();
        let means: HashMap<String, Vec<f32>> = [("x".to_string(), vec![1.0; 3])].into();
        let with = |p: &Presets| {
            quantize(
                &model,
                &ranges,
                &means,
                p,
                act,
                WeightRange::Full,
                &Exclusions::default(),
            )
            .unwrap()
        };
        let (q, rep) = with(&presets);
        assert_eq!(rep.quantized_layers, vec!["c".to_string()]);
        let init = |suffix: &str| {
            q.graph()
                .initializer
                .iter()
                .find(|t| t.name().ends_with(suffix))
                .unwrap_or_else(|| panic!("{suffix}"))
                .clone()
        };
        let w8: Vec<i8> = init("__q8").raw_data().iter().map(|&b| b as i8).collect();
        assert_eq!(w8, preset.q);
        assert_eq!(onnx::tensor_f32(&init("__wscale")).unwrap(), preset.scales);
        // The int32 bias at s_input * s_weight: the preset's, not a corrected float one.
        let s_in = onnx::tensor_f32(&init("x__scale")).map(|v| v[0]);
        let b32 = init("__q32");
        let b32: Vec<i32> = b32
            .raw_data()
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let s_in = s_in.expect("the input's scale");
        for (k, b) in b32.iter().enumerate() {
            let want = preset.bias[k] / (s_in * preset.scales[k]);
            assert!((*b as f32 - want).abs() <= 0.5, "{b} vs {want}");
        }
        // Without it, the same layer rounds to nearest.
        let (r, _) = with(&Presets::new());
        assert_ne!(
            r.graph()
                .initializer
                .iter()
                .find(|t| t.name().ends_with("__q8"))
                .unwrap()
                .raw_data(),
            init("__q8").raw_data()
        );
    }

    /// Each calibrated tensor of `model` in the range `range` gives it.
    fn ranges_in(model: &Model, range: impl Fn(&str) -> Range) -> HashMap<String, Range> {
        calibration_tensors(model)
            .into_iter()
            .map(|t| {
                let r = range(&t);
                (t, r)
            })
            .collect()
    }

    /// Small weights in steps of 0.1 around 0 (-0.3 for a one-element tensor).
    /// The reduced range puts every weight but a depthwise layer's within ±64, where the pair
    /// sums of x86's 16-bit int8 kernels cannot saturate; the full range reaches ±127.
    #[test]
    fn reduced_range_spares_depthwise_layers() {
        let model = model_of(
            vec![
                onnx::node("Conv", "pw", &["x", "wp"], &["p"], vec![]),
                onnx::node(
                    "Conv",
                    "dw",
                    &["p", "wd"],
                    &["out"],
                    vec![
                        onnx::attr_int("group", 4),
                        onnx::attr_ints("pads", &[1, 1, 1, 1]),
                    ],
                ),
            ],
            vec![weights("wp", &[4, 4, 1, 1]), weights("wd", &[4, 1, 3, 3])],
        );
        let reach = |weights: WeightRange| -> BTreeMap<String, i32> {
            let (q, _) = quantize_on_grid(
                &model,
                |_| Range { lo: -1.0, hi: 1.0 },
                ActivationType::U8Asymmetric,
                weights,
                &Exclusions::default(),
            );
            let g = q.graph();
            let producer = |t: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == t));
            g.node
                .iter()
                .filter(|n| n.op_type() == "Conv")
                .map(|n| {
                    let dq = producer(&n.input[1]).expect("dequantized weights");
                    let w = g
                        .initializer
                        .iter()
                        .find(|t| t.name() == dq.input[0])
                        .unwrap();
                    let top = w.raw_data().iter().map(|&b| i32::from(b as i8).abs()).max();
                    (n.name().to_string(), top.unwrap())
                })
                .collect()
        };
        assert_eq!(
            reach(WeightRange::Full),
            [("dw".into(), 127), ("pw".into(), 127)].into()
        );
        assert_eq!(
            reach(WeightRange::Reduced),
            [("dw".into(), 127), ("pw".into(), 64)].into()
        );
        let n =
            |group: i64| onnx::node("Conv", "c", &[], &[], vec![onnx::attr_int("group", group)]);
        assert!(is_depthwise(&n(4), &[4, 1, 3, 3]));
        assert!(!is_depthwise(&n(4), &[8, 1, 3, 3]), "two outputs per group");
        assert!(
            !is_depthwise(&n(1), &[1, 1, 3, 3]),
            "one channel, not grouped"
        );
    }

    fn weights(name: &str, dims: &[i64]) -> pb::TensorProto {
        let n: i64 = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        onnx::tensor_from_f32(name, dims, &v)
    }

    fn model_of(node: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>) -> Model {
        let graph = pb::GraphProto {
            node,
            initializer,
            input: vec![onnx::value_info("x", DataType::Float)],
            output: vec![onnx::value_info("out", DataType::Float)],
            ..Default::default()
        };
        Model::from_graph(graph, 13, "block.onnx")
    }

    /// A MobileNetV3 block: Conv, hard-swish written as TF exports it (`x/6 * relu6(x + 3)`),
    /// then Conv + Relu. On the CPU every step must stay int8, which is what makes the graph
    /// faster at all: no float op may sit between a DequantizeLinear and a QuantizeLinear.
    #[test]
    fn hard_swish_and_fused_activations_stay_int8() {
        let w = weights;
        let scalar = |name: &str, v: f32| onnx::tensor_from_f32(name, &[], &[v]);
        let model = model_of(
            vec![
                onnx::node("Conv", "c1", &["x", "w1"], &["a"], vec![]),
                onnx::node("Mul", "sixth", &["k6", "a"], &["m"], vec![]),
                onnx::node("Add", "plus3", &["a", "k3"], &["b"], vec![]),
                onnx::node("Clip", "relu6", &["b", "lo", "hi"], &["r"], vec![]),
                onnx::node("Mul", "hswish", &["m", "r"], &["y"], vec![]),
                onnx::node("Conv", "c2", &["y", "w2"], &["z"], vec![]),
                onnx::node("Relu", "relu", &["z"], &["zr"], vec![]),
                onnx::node("Conv", "c3", &["zr", "w3"], &["out"], vec![]),
            ],
            vec![
                w("w1", &[4, 3, 1, 1]),
                w("w2", &[4, 4, 1, 1]),
                w("w3", &[2, 4, 1, 1]),
                scalar("k6", 1.0 / 6.0),
                onnx::tensor_from_f32("k3", &[1, 1, 1, 1], &[3.0]),
                scalar("lo", 0.0),
                scalar("hi", 6.0),
            ],
        );
        let range = |t: &str| match t {
            "r" => Range { lo: 0.0, hi: 6.0 },
            "zr" => Range { lo: 0.0, hi: 2.0 },
            _ => Range { lo: -2.0, hi: 4.0 },
        };
        let cpu = |act| quantize_in(&model, range, act);

        let (q, _) = cpu(ActivationType::U8Asymmetric);
        let g = q.graph();
        let made_by = |t: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == t));
        let op_of = |t: &str| {
            made_by(t)
                .map(|n| n.op_type().to_string())
                .unwrap_or_default()
        };
        for n in &g.node {
            let op = n.op_type();
            if ["Conv", "Add", "Mul"].contains(&op) {
                // Every input comes from a DequantizeLinear (weights and the constant 3
                // included), so the runtime can swap in QLinear* kernels.
                for i in &n.input {
                    let from = op_of(i);
                    assert_eq!(from, "DequantizeLinear", "{} reads {i}", n.name());
                }
            }
            if ["Clip", "Relu"].contains(&op) {
                // Fused: straight from the op before, no requantization between.
                let from = op_of(&n.input[0]);
                assert!(from == "Add" || from == "Conv", "{} reads {from}", n.name());
            }
        }
        assert!(
            !g.node.iter().any(|n| n.name() == "sixth"),
            "x/6 is a scale, not a node"
        );
        let dq6 = made_by("m__dq").expect("x/6 read from x's integers");
        assert_eq!(dq6.input[0], "a__q");
        let scale = |name: &str| {
            onnx::tensor_f32(g.initializer.iter().find(|t| t.name() == name).unwrap()).unwrap()[0]
        };
        assert!((scale(&dq6.input[1]) - scale("a__scale") / 6.0).abs() < 1e-9);
        // relu6's Q must lie inside [0, 6] as the runtime computes it, or it keeps the Clip.
        assert!(scale("r__scale") * 255.0 <= 6.0);
        // The convolution before a Relu is not requantized: the Relu's Q is its output's.
        assert!(!g
            .node
            .iter()
            .any(|n| n.op_type() == "QuantizeLinear" && n.input[0] == "z"));
        assert!(g
            .node
            .iter()
            .any(|n| n.op_type() == "QuantizeLinear" && n.input[0] == "zr"));

        // TensorRT fuses hard-swish itself: the constant Add and the x/6 stay float there.
        let (t, _) = cpu(ActivationType::I8Symmetric);
        let t = t.graph();
        assert!(t.node.iter().any(|n| n.name() == "sixth"));
        let add = t.node.iter().find(|n| n.name() == "plus3").unwrap();
        assert!(add.input.contains(&"k3".to_string()));
    }
}
