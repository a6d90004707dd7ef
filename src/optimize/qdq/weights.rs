//! A weighted layer (Conv, Gemm, MatMul) in int8: per-channel weights behind a
//! DequantizeLinear, the bias in int32 at the scale the integer kernels accumulate in, bias
//! correction for the rounding, or a reconstruction's fitted weights in place of rounding.

use super::graph::{Additions, GraphIndex};
use super::names::{corrected_bias, per_layer, zero_bias, Stored};
use crate::onnx::graph::node_label;
use crate::onnx::{self, pb};
use crate::optimize::weights::{
    is_depthwise, per_channel_scales, per_column_scales, Preset, WeightRange,
};

/// How a graph lets its weights be quantized.
#[derive(Debug, Clone, Copy)]
pub struct WeightRules {
    /// Per-channel DequantizeLinear exists (opset 13, or lifted to it).
    pub per_channel_ok: bool,
    pub range: WeightRange,
}

/// What one layer's weights are quantized with, besides the layer itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerInputs<'a> {
    /// The scale of the layer's quantized input: with it the bias goes int32.
    pub scale: Option<f32>,
    /// The per-channel means of its input, for bias correction.
    pub mean: Option<&'a [f32]>,
    /// Fitted weights that replace the rounding.
    pub preset: Option<&'a Preset>,
}

/// A layer's float weight and how it splits into channels.
struct Weight<'g> {
    /// The node input that holds it.
    slot: usize,
    tensor: &'g pb::TensorProto,
    values: Vec<f32>,
    dims: Vec<i64>,
    /// The axis holding output channels; -1 for one scale over the tensor.
    axis: i64,
    per_channel: bool,
    qmax: f32,
}

impl<'g> Weight<'g> {
    /// `None` when the node has no float weight initializer.
    fn of(ix: &GraphIndex<'g>, n: &pb::NodeProto, rules: WeightRules) -> Option<Self> {
        let slot = match n.op_type() {
            "MatMul" => (0..2).find(|&i| {
                n.input
                    .get(i)
                    .is_some_and(|x| ix.init_idx.contains_key(x.as_str()))
            })?,
            _ => 1,
        };
        let tensor = &ix.graph.initializer[*ix.init_idx.get(n.input.get(slot)?.as_str())?];
        let values = onnx::tensor_f32(tensor)?;
        let dims = tensor.dims.clone();
        let axis: i64 = match n.op_type() {
            "Conv" => 0,
            "Gemm" if onnx::get_attr_int(n, "transB") == Some(1) => 0,
            "Gemm" => 1,
            _ if slot == 1 && dims.len() == 2 => 1,
            _ => -1, // per tensor
        };
        let per_channel = rules.per_channel_ok && axis >= 0 && dims.len() >= 2;
        let qmax = rules.range.qmax(is_depthwise(n, &dims));
        Some(Weight {
            slot,
            tensor,
            values,
            dims,
            axis,
            per_channel,
            qmax,
        })
    }

    fn scales(&self) -> Vec<f32> {
        let (v, d) = (&self.values, &self.dims);
        match (self.per_channel, self.axis) {
            (true, 0) => per_channel_scales(v, d[0] as usize, self.qmax),
            (true, _) => per_column_scales(v, d[0] as usize, d[1] as usize, self.qmax),
            _ => per_channel_scales(v, 1, self.qmax),
        }
    }

    fn out_channels(&self, op: &str) -> usize {
        match (op, self.axis) {
            ("Conv", _) | ("Gemm", 0) => self.dims[0] as usize,
            ("Gemm", _) => self.dims[1] as usize,
            _ => 0,
        }
    }

    /// The scale that serves output channel `c`.
    fn scale_of_channel(&self, c: usize, scales: &[f32]) -> usize {
        if self.per_channel {
            c.min(scales.len() - 1)
        } else {
            0
        }
    }

    /// The channel of the weight at flat index `idx`.
    fn channel_of(&self, idx: usize) -> usize {
        if !self.per_channel {
            0
        } else if self.axis == 0 {
            idx / (self.values.len() / self.dims[0] as usize)
        } else {
            idx % self.dims[1] as usize
        }
    }
}

/// The most an int32 bias may reach, with headroom for the accumulator and bias correction.
const BIAS_LIMIT: f32 = (1u32 << 30) as f32;

/// Replaces a weighted node's float weight (and bias) with int8 (int32) initializers behind
/// DequantizeLinear, in `node`, the copy of `n` the new graph gets. Returns `None` when the
/// node has no float weight initializer.
pub fn quantize_layer(
    ix: &GraphIndex,
    n: &pb::NodeProto,
    node: &mut pb::NodeProto,
    input: LayerInputs,
    rules: WeightRules,
    add: &mut Additions,
) -> Option<()> {
    let w = Weight::of(ix, n, rules)?;
    let out_channels = w.out_channels(n.op_type());
    let had_bias = n.input.get(2).is_some_and(|b| !b.is_empty());
    let mut bias = float_bias(ix, n, &w, had_bias, out_channels);
    let mut scales = w.scales();
    // b / (s_input * s_weight) must fit the int32: a channel with tiny weights and a real bias
    // would overflow it, so such a channel's weight scale is widened until the bias fits.
    if let (Some((_, bv)), Some(s_in)) = (&bias, input.scale) {
        for (c, b) in bv.iter().enumerate() {
            let k = w.scale_of_channel(c, &scales);
            scales[k] = scales[k].max(b.abs() / (s_in * BIAS_LIMIT));
        }
    }
    let preset = usable_preset(&input, &w, bias.is_some(), scales.len(), out_channels);
    let q: Vec<i8> = match preset {
        Some(p) => {
            scales.clone_from(&p.scales);
            if let Some((_, bv)) = bias.as_mut() {
                bv.clone_from(&p.bias);
            }
            p.q.clone()
        }
        None => w
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| (v / scales[w.channel_of(i)]).round().clamp(-w.qmax, w.qmax) as i8)
            .collect(),
    };
    // The fitted bias already takes the rounding back, on the quantized inputs.
    let corrected = preset.is_some()
        || correct_bias(n, &w, &q, &scales, input.mean, bias.as_mut(), out_channels);
    if !had_bias && !corrected {
        bias = None;
    }
    emit_weight(n, node, &w, &q, &scales, add);
    let Some((bname, bv)) = bias else {
        return Some(());
    };
    let bname = per_layer(&bname, &node_label(n));
    match input.scale {
        Some(s_in) => emit_bias(node, &w, &bname, &bv, s_in, &scales, add),
        // Without the input's scale the bias stays float, rewritten only if corrected.
        None if corrected => {
            let t = corrected_bias(&bname);
            add.inits
                .push(onnx::tensor_from_f32(&t, &[bv.len() as i64], &bv));
            set_bias(node, t);
        }
        None => {}
    }
    Some(())
}

/// The Conv/Gemm float bias. A layer without one gets zeros, used only if bias correction
/// has something to put there.
fn float_bias(
    ix: &GraphIndex,
    n: &pb::NodeProto,
    w: &Weight,
    had_bias: bool,
    out_channels: usize,
) -> Option<(String, Vec<f32>)> {
    match n.op_type() {
        "Conv" | "Gemm" if had_bias => {
            let b = &n.input[2];
            ix.init_idx
                .get(b.as_str())
                .and_then(|&bi| onnx::tensor_f32(&ix.graph.initializer[bi]))
                .map(|v| (b.clone(), v))
        }
        "Conv" | "Gemm" => Some((zero_bias(w.tensor.name()), vec![0.0; out_channels])),
        _ => None,
    }
}

/// A reconstruction's weights replace the rounding, and its bias the correction, where they
/// fit this layer as it is here: per channel, the same shapes, and an int32 bias that fits at
/// the preset's own scales (the floor that widened the scales).
fn usable_preset<'a>(
    input: &LayerInputs<'a>,
    w: &Weight,
    has_bias: bool,
    n_scales: usize,
    out_channels: usize,
) -> Option<&'a Preset> {
    input.preset.filter(|p| {
        let fits = |s_in: f32| {
            p.bias
                .iter()
                .zip(&p.scales)
                .all(|(b, s)| *s > 0.0 && b.abs() / (s_in * s) <= BIAS_LIMIT)
        };
        w.per_channel
            && w.axis == 0
            && has_bias
            && p.q.len() == w.values.len()
            && p.scales.len() == n_scales
            && p.bias.len() == out_channels
            && input.scale.is_none_or(fits)
    })
}

/// Takes the rounding's mean shift out of the bias ([`rounding_shift`]); whether it did.
fn correct_bias(
    n: &pb::NodeProto,
    w: &Weight,
    q: &[i8],
    scales: &[f32],
    mean: Option<&[f32]>,
    bias: Option<&mut (String, Vec<f32>)>,
    out_channels: usize,
) -> bool {
    let (Some(mean), Some((_, bv))) = (mean, bias) else {
        return false;
    };
    if bv.len() != out_channels {
        return false;
    }
    let error: Vec<f32> = w
        .values
        .iter()
        .zip(q)
        .enumerate()
        .map(|(i, (&v, &qv))| f32::from(qv) * scales[w.channel_of(i)] - v)
        .collect();
    let group = onnx::get_attr_int(n, "group").unwrap_or(1).max(1) as usize;
    let trans_b = onnx::get_attr_int(n, "transB") == Some(1);
    match rounding_shift(n.op_type(), &error, &w.dims, group, trans_b, mean) {
        Some(shift) => {
            for (b, d) in bv.iter_mut().zip(shift) {
                *b -= d;
            }
            true
        }
        None => false,
    }
}

/// The int8 weight behind its DequantizeLinear, read by `node` in place of the float one.
fn emit_weight(
    n: &pb::NodeProto,
    node: &mut pb::NodeProto,
    w: &Weight,
    q: &[i8],
    scales: &[f32],
    add: &mut Additions,
) {
    // Named after the node too: one weight may feed several nodes.
    let names = Stored::weight(&per_layer(w.tensor.name(), &node_label(n)));
    let sdims: Vec<i64> = if w.per_channel {
        vec![scales.len() as i64]
    } else {
        vec![]
    };
    add.inits
        .push(onnx::tensor_from_i8(&names.quantized, &w.dims, q));
    add.inits
        .push(onnx::tensor_from_f32(&names.scale, &sdims, scales));
    add.inits.push(onnx::tensor_from_i8(
        &names.zero_point,
        &sdims,
        &vec![0i8; scales.len()],
    ));
    let attrs = if w.per_channel {
        vec![onnx::attr_int("axis", w.axis)]
    } else {
        vec![]
    };
    add.nodes.push(onnx::node(
        "DequantizeLinear",
        &names.dq_node,
        &[&names.quantized, &names.scale, &names.zero_point],
        &[&names.dequantized],
        attrs,
    ));
    node.input[w.slot] = names.dequantized;
}

/// The bias in int32 at the scale the integer kernels accumulate in, `s_input * s_weight[c]`.
fn emit_bias(
    node: &mut pb::NodeProto,
    w: &Weight,
    bname: &str,
    bv: &[f32],
    s_in: f32,
    scales: &[f32],
    add: &mut Additions,
) {
    let bscale: Vec<f32> = (0..bv.len())
        .map(|c| s_in * scales[w.scale_of_channel(c, scales)])
        .collect();
    // Per-axis DequantizeLinear needs opset 13; before that one scale must serve.
    let (bscale, bdims, battrs) = if w.per_channel {
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
    let names = Stored::bias(bname);
    add.inits.push(onnx::tensor_from_i32(
        &names.quantized,
        &[bv.len() as i64],
        &bq,
    ));
    add.inits
        .push(onnx::tensor_from_f32(&names.scale, &bdims, &bscale));
    add.inits.push(onnx::tensor_from_i32(
        &names.zero_point,
        &bdims,
        &vec![0; bscale.len()],
    ));
    add.nodes.push(onnx::node(
        "DequantizeLinear",
        &names.dq_node,
        &[&names.quantized, &names.scale, &names.zero_point],
        &[&names.dequantized],
        battrs,
    ));
    set_bias(node, names.dequantized);
}

fn set_bias(node: &mut pb::NodeProto, t: String) {
    if node.input.len() > 2 {
        node.input[2] = t;
    } else {
        node.input.push(t);
    }
}

/// The shift that int8 rounding adds to each output channel of a Conv or Gemm:
/// `Σ (w_q − w) · mean(x_c)` over the weights of that channel, each times the mean of the input
/// channel it multiplies. Subtracted from the bias, it leaves the layer's mean output as in FP32
/// (Nagel et al., "Data-Free Quantization", 2019, bias correction). It matters most for
/// BatchNorm-folded depthwise kernels: large weights that nearly cancel on a near-constant
/// input, where rounding alone moves a heatmap well away from FP32 (docs/optimize-findings.md,
/// "Figures behind the code").
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
