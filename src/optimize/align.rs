//! Depthwise channel counts that ONNX Runtime's fast int8 kernel takes.
//!
//! MLAS runs a symmetric int8 depthwise convolution (weights zero-point 0, as ours are) with
//! its ConvSym kernels only when the channel count is a multiple of 16; any other count falls
//! back to a generic kernel about twice as slow (docs/optimize-findings.md, "Figures behind the code"). MobileNetV3 and CenterNet's head
//! have such layers.
//!
//! For a chain `Conv P → [Relu|Clip]* → depthwise D → [Relu|Clip]* → Conv Q` whose tensors
//! nothing else reads, P gains output channels with zero weights and bias, D the same channels
//! with zero kernels, and Q reads them with zero weights: whatever the extra channels hold, Q
//! multiplies them by zero, so the function is unchanged.
//!
//! ```
//! use edgesight::onnx::{self, pb, Model};
//! let w = |n: &str, d: &[i64]| onnx::tensor_from_f32(n, d, &vec![0.5; d.iter().product::<i64>() as usize]);
//! let g = pb::GraphProto {
//!     node: vec![
//!         onnx::node("Conv", "p", &["x", "wp"], &["a"], vec![]),
//!         onnx::node("Conv", "d", &["a", "wd"], &["b"], vec![onnx::attr_int("group", 24)]),
//!         onnx::node("Conv", "q", &["b", "wq"], &["y"], vec![]),
//!     ],
//!     initializer: vec![w("wp", &[24, 3, 1, 1]), w("wd", &[24, 1, 3, 3]), w("wq", &[8, 24, 1, 1])],
//!     output: vec![onnx::value_info("y", onnx::DataType::Float)],
//!     ..Default::default()
//! };
//! let model = Model::from_graph(g, 13, "m.onnx");
//! let (out, widened) = edgesight::optimize::align::widen_depthwise(&model).unwrap();
//! assert_eq!(widened[0].channels, (24, 32));
//! assert_eq!(onnx::get_attr_int(&out.graph().node[1], "group"), Some(32));
//! ```

use std::collections::HashMap;

use crate::onnx::{self, pb, Model};

/// ONNX Runtime's symmetric depthwise kernel takes channel counts in multiples of this.
const CHANNEL_ALIGN: i64 = 16;

/// One widened depthwise layer.
#[derive(Debug, Clone)]
pub struct Widened {
    pub layer: String,
    /// Channels before and after.
    pub channels: (usize, usize),
    /// The activations that now carry the extra channels (channel axis 1): the depthwise
    /// layer's input and the input of the convolution after it.
    pub tensors: Vec<String>,
}

impl std::fmt::Display for Widened {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (from, to) = self.channels;
        write!(
            f,
            "{}: depthwise, {from} → {to} channels (the fast int8 kernel's multiple of 16)",
            self.layer
        )
    }
}

/// Per-channel means (bias correction's) for the widened graph: the extra channels are zero.
pub fn widen_means(
    means: &HashMap<String, Vec<f32>>,
    widened: &[Widened],
) -> HashMap<String, Vec<f32>> {
    let mut out = means.clone();
    for w in widened {
        for t in &w.tensors {
            if let Some(v) = out.get_mut(t) {
                v.resize(w.channels.1, 0.0);
            }
        }
    }
    out
}

/// The graph with every eligible depthwise layer widened to a multiple of 16 channels, and what
/// was widened; `None` when nothing was.
pub fn widen_depthwise(model: &Model) -> Option<(Model, Vec<Widened>)> {
    let g = model.graph();
    let producer = onnx::producers(g);
    let readers = onnx::Readers::of(g);
    let only_reader = |t: &str| readers.only(t);
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name(), t)).collect();
    let elementwise = |n: &pb::NodeProto| matches!(n.op_type(), "Relu" | "Clip");
    let group = |n: &pb::NodeProto| onnx::get_attr_int(n, "group").unwrap_or(1);
    let dims = |t: &str| inits.get(t).map(|t| t.dims.as_slice());

    let mut plans = Vec::new();
    for (di, d) in g.node.iter().enumerate() {
        let c = group(d);
        if d.op_type() != "Conv" || c <= 1 || c % CHANNEL_ALIGN == 0 || d.input.len() < 2 {
            continue;
        }
        if dims(&d.input[1]).is_none_or(|w| w.len() != 4 || w[0] != c || w[1] != 1) {
            continue;
        }
        // Up to the convolution that writes the channels.
        let mut chain = vec![d.input[0].as_str()];
        let mut t = d.input[0].as_str();
        let p = loop {
            let Some(&pi) = producer.get(t) else {
                break None;
            };
            if only_reader(t).is_none() {
                break None;
            }
            let n = &g.node[pi];
            if !elementwise(n) {
                break Some(pi);
            }
            t = n.input[0].as_str();
            chain.push(t);
        };
        let Some(pi) = p else { continue };
        let pn = &g.node[pi];
        if pn.op_type() != "Conv" || group(pn) != 1 || pn.input.len() < 2 {
            continue;
        }
        if dims(&pn.input[1]).is_none_or(|w| w[0] != c) {
            continue;
        }
        // Down to the convolution that reads them.
        let mut t = d.output[0].as_str();
        chain.push(t);
        let q = loop {
            let Some(r) = only_reader(t) else { break None };
            let n = &g.node[r];
            if !elementwise(n) {
                break Some(r);
            }
            t = n.output[0].as_str();
            chain.push(t);
        };
        let Some(qi) = q else { continue };
        let qn = &g.node[qi];
        if qn.op_type() != "Conv" || group(qn) != 1 || qn.input.len() < 2 || qn.input[0] != t {
            continue;
        }
        if dims(&qn.input[1]).is_none_or(|w| w.len() < 2 || w[1] != c) {
            continue;
        }
        plans.push((
            pi,
            di,
            qi,
            c,
            chain.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
    }
    if plans.is_empty() {
        return None;
    }

    let mut out = model.clone();
    let og = out.graph_mut();
    let mut widened = Vec::new();
    for (pi, di, qi, c, chain) in plans {
        let c2 = (c + CHANNEL_ALIGN - 1) / CHANNEL_ALIGN * CHANNEL_ALIGN;
        let (c, c2) = (c as usize, c2 as usize);
        let has_bias = |n: &pb::NodeProto| n.input.get(2).is_some_and(|b| !b.is_empty());
        let (p_bias, d_bias) = (has_bias(&og.node[pi]), has_bias(&og.node[di]));
        // New initializers: another node may read the old ones.
        let mut pad = |node: usize, input: usize, axis: usize| -> Option<()> {
            let name = og.node[node].input.get(input)?.clone();
            let t = og.initializer.iter().find(|t| t.name() == name)?;
            let v = onnx::tensor_f32(t)?;
            let mut d = t.dims.clone();
            let outer: usize = d[..axis].iter().product::<i64>() as usize;
            let inner: usize = d[axis + 1..].iter().product::<i64>() as usize;
            let mut w = vec![0.0f32; outer * c2 * inner];
            for o in 0..outer {
                let (from, to) = (o * c * inner, o * c2 * inner);
                w[to..to + c * inner].copy_from_slice(&v[from..from + c * inner]);
            }
            d[axis] = c2 as i64;
            let wide = format!("{name}__c{c2}");
            og.initializer.push(onnx::tensor_from_f32(&wide, &d, &w));
            og.node[node].input[input] = wide;
            Some(())
        };
        let padded = pad(pi, 1, 0).is_some()
            && pad(di, 1, 0).is_some()
            && pad(qi, 1, 1).is_some()
            && (!p_bias || pad(pi, 2, 0).is_some())
            && (!d_bias || pad(di, 2, 0).is_some());
        if !padded {
            // A weight that does not read as float32: leave the model as it came.
            return None;
        }
        let d = &mut og.node[di];
        for a in d.attribute.iter_mut().filter(|a| a.name() == "group") {
            a.i = Some(c2 as i64);
        }
        // Shapes recorded for the chain are stale now.
        og.value_info
            .retain(|v| !chain.iter().any(|t| t == v.name()));
        widened.push(Widened {
            layer: og.node[di].name().to_string(),
            channels: (c, c2),
            tensors: vec![og.node[di].input[0].clone(), og.node[qi].input[0].clone()],
        });
    }
    Some((out, widened))
}
