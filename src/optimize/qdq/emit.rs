//! Writes the quantized graph: each tensor's Q/DQ pair right after its producer, readers
//! moved to the dequantized copy, `x * c` read from x's integers, `x + c` with a quantized
//! constant, peak tests on integers, and the weighted layers' int8 weights.

use std::collections::{HashMap, HashSet};

use super::config::{ActivationType, QdqReport, QuantizeConfig};
use super::graph::{constant_tensor, scalar_of, Additions, GraphIndex};
use super::names::{per_layer, Pair, Stored};
use super::params::QParams;
use super::select::{Selection, SHARES_INPUT_RANGE, WEIGHTED};
use super::weights::{quantize_layer, LayerInputs, WeightRules};
use crate::onnx::graph::node_label;
use crate::onnx::{self, pb, DataType};

/// The new graph's nodes and initializers as they are written, and which tensors have a pair.
pub struct Emitter<'t> {
    tq: &'t HashMap<String, QParams>,
    zp_type: DataType,
    /// Tensors whose pair (or folded dequantization) is in place.
    pub emitted: HashSet<String>,
    pub add: Additions,
}

impl<'t> Emitter<'t> {
    pub fn new(tq: &'t HashMap<String, QParams>, act: ActivationType) -> Self {
        let zp_type = match act {
            ActivationType::U8Asymmetric => DataType::Uint8,
            ActivationType::I8Symmetric => DataType::Int8,
        };
        Emitter {
            tq,
            zp_type,
            emitted: HashSet::new(),
            add: Additions::default(),
        }
    }

    /// Adds the Q/DQ pair of tensor `t` (once), reading `t` and producing its dequantized copy.
    fn pair(&mut self, t: &str) {
        let Some(q) = self.tq.get(t) else { return };
        if !self.emitted.insert(t.to_string()) {
            return;
        }
        let p = Pair(t);
        let (s, z) = (p.scale(), p.zero_point());
        self.add
            .inits
            .push(onnx::tensor_from_f32(&s, &[], &[q.scale]));
        self.add.inits.push(match self.zp_type {
            DataType::Uint8 => onnx::tensor_from_u8(&z, &[], &[q.zero_point as u8]),
            _ => onnx::tensor_from_i8(&z, &[], &[q.zero_point as i8]),
        });
        let qt = p.quantized();
        self.add.nodes.push(onnx::node(
            "QuantizeLinear",
            &p.q_node(),
            &[t, &s, &z],
            &[&qt],
            vec![],
        ));
        self.add.nodes.push(onnx::node(
            "DequantizeLinear",
            &p.dq_node(),
            &[&qt, &s, &z],
            &[&p.dequantized()],
            vec![],
        ));
    }

    /// A one-element constant as int8/uint8 behind a DequantizeLinear that gives it back exactly
    /// (value ±1 at scale |c|), so that `x + c` fuses into QLinearAdd. Returns the DQ's output.
    fn constant(&mut self, name: &str, c: f32, dims: &[i64]) -> String {
        let scale = if c == 0.0 { 1.0 } else { c.abs() };
        let names = Stored::constant(name);
        let (s, z, q) = (&names.scale, &names.zero_point, &names.quantized);
        let inits = &mut self.add.inits;
        inits.push(onnx::tensor_from_f32(s, &[], &[scale]));
        match self.zp_type {
            // uint8 has no -1: a negative value is 0 with zero point 1.
            DataType::Uint8 => {
                let (v, zp) = match c {
                    c if c > 0.0 => (1, 0),
                    c if c < 0.0 => (0, 1),
                    _ => (0, 0),
                };
                inits.push(onnx::tensor_from_u8(q, dims, &[v]));
                inits.push(onnx::tensor_from_u8(z, &[], &[zp]));
            }
            _ => {
                inits.push(onnx::tensor_from_i8(q, dims, &[c.signum() as i8]));
                inits.push(onnx::tensor_from_i8(z, &[], &[0]));
            }
        }
        self.add.nodes.push(onnx::node(
            "DequantizeLinear",
            &names.dq_node,
            &[q, s, z],
            &[&names.dequantized],
            vec![],
        ));
        names.dequantized
    }

    /// `x * c` read from x's integers at scale `s * c`. Whether the float node can go: it stays
    /// only where something reads its float output (a graph output, an excluded layer).
    fn folded_mul(&mut self, ix: &GraphIndex, n: &pb::NodeProto, cfg: &QuantizeConfig) -> bool {
        let o = &n.output[0];
        let x = n.input.iter().find(|t| !ix.constant(t));
        let (Some(x), Some(q)) = (x, self.tq.get(o)) else {
            return false;
        };
        if !self.emitted.contains(x.as_str()) {
            return false;
        }
        let (po, px) = (Pair(o), Pair(x));
        let s = po.scale();
        self.add
            .inits
            .push(onnx::tensor_from_f32(&s, &[], &[q.scale]));
        self.add.nodes.push(onnx::node(
            "DequantizeLinear",
            &po.dq_node(),
            &[&px.quantized(), &s, &px.zero_point()],
            &[&po.dequantized()],
            vec![],
        ));
        self.emitted.insert(o.clone());
        let read_in_float = ix.graph_outputs.contains(o.as_str())
            || ix
                .graph
                .node
                .iter()
                .any(|m| cfg.exclude.excludes(m) && m.input.contains(o));
        !read_in_float
    }

    /// An int8 Add's scalar constants, each quantized for this layer.
    fn add_constants(&mut self, ix: &GraphIndex, n: &pb::NodeProto, node: &mut pb::NodeProto) {
        for k in 0..node.input.len() {
            let t = n.input[k].as_str();
            let ct = constant_tensor(ix.graph, &ix.producer, t);
            if let Some((c, ct)) = ct.and_then(|ct| Some((scalar_of(ct)?, ct))) {
                node.input[k] = self.constant(&per_layer(t, &node_label(n)), c, &ct.dims);
            }
        }
    }

    /// Every reader but an excluded layer takes the dequantized copy: ONNX Runtime fuses a
    /// quantized op only when its output feeds nothing but its QuantizeLinear. Two tensors on
    /// one grid are equal where their integers are: a peak test compares those, with no
    /// dequantize pass over either (CPU only; TensorRT takes Q/DQ graphs).
    fn rewire(&self, n: &pb::NodeProto, node: &mut pb::NodeProto, cfg: &QuantizeConfig) {
        let same_grid = |a: &str, b: &str| {
            matches!((self.tq.get(a), self.tq.get(b)), (Some(x), Some(y))
                if x.scale == y.scale && x.zero_point == y.zero_point)
        };
        let integer_compare = cfg.cpu()
            && n.op_type() == "Equal"
            && n.input.len() == 2
            && n.input.iter().all(|t| self.emitted.contains(t.as_str()))
            && same_grid(&n.input[0], &n.input[1]);
        if cfg.exclude.excludes(n) {
            return;
        }
        for inp in node.input.iter_mut() {
            if self.emitted.contains(inp.as_str()) {
                *inp = if integer_compare {
                    Pair(inp).quantized()
                } else {
                    Pair(inp).dequantized()
                };
            }
        }
    }
}

/// Writes every node of the graph, with the pairs, constants and weights around it, in order.
pub fn emit_graph<'t>(
    ix: &GraphIndex,
    sel: &Selection,
    tq: &'t HashMap<String, QParams>,
    cfg: &QuantizeConfig,
    channel_means: &HashMap<String, Vec<f32>>,
    rules: WeightRules,
    report: &mut QdqReport,
) -> Emitter<'t> {
    let g = ix.graph;
    let mut em = Emitter::new(tq, cfg.act);
    // Graph inputs first, so their pairs precede every consumer.
    for v in &g.input {
        if tq.contains_key(v.name()) && !ix.inits.contains(v.name()) {
            em.pair(v.name());
        }
    }
    for (i, (n, &on)) in g.node.iter().zip(&sel.active).enumerate() {
        if sel.folded.contains_key(&i) && em.folded_mul(ix, n, cfg) {
            continue;
        }
        let mut node = n.clone();
        if on && n.op_type() == "Add" {
            em.add_constants(ix, n, &mut node);
        }
        em.rewire(n, &mut node, cfg);
        if on && WEIGHTED.contains(&n.op_type()) {
            let input = LayerInputs {
                scale: tq.get(&n.input[0]).map(|q| q.scale),
                mean: channel_means.get(&n.input[0]).map(Vec::as_slice),
                preset: cfg.presets.get(&node_label(n)),
            };
            if quantize_layer(ix, n, &mut node, input, rules, &mut em.add).is_some() {
                report.quantized_layers.push(node_label(n));
            }
        }
        let outputs = node.output.clone();
        em.add.nodes.push(node);
        // Right after the producer, whatever it is: a float op feeding a quantized one gets
        // its Q here, so that every later consumer reads the same dequantized copy.
        for o in &outputs {
            em.pair(o);
        }
    }
    em
}

/// (node, the tensor the runtime writes its result to) for every node that computes in int8
/// with a calibrated output. Only nodes with a quantized output count: an Add of integer
/// indices is no layer.
pub fn compute_outputs(
    ix: &GraphIndex,
    sel: &Selection,
    cfg: &QuantizeConfig,
) -> Vec<(String, String)> {
    let g = ix.graph;
    g.node
        .iter()
        .zip(&sel.active)
        .filter(|(n, &on)| on && !SHARES_INPUT_RANGE.contains(&n.op_type()))
        // A folded output's raw values (clipped at the inputs, for a Concat) mean nothing: the
        // error is measured where the runtime writes it.
        .filter_map(|(n, _)| {
            Some((
                node_label(n),
                sel.carrier(g, n.output.first()?)?.to_string(),
            ))
        })
        .filter(|(_, t)| cfg.ranges.contains_key(t))
        .collect()
}
