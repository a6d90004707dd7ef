//! What the quantizer looks up about a float graph: who writes and how many read each tensor,
//! which tensors are constants, and the values of scalar constants and Clip bounds.

use std::collections::{HashMap, HashSet};

use crate::onnx::{self, pb, producers};

/// Lookups over one graph, built once per quantization.
pub struct GraphIndex<'g> {
    pub graph: &'g pb::GraphProto,
    /// The node that writes each tensor.
    pub producer: HashMap<&'g str, usize>,
    /// How many node inputs read each tensor.
    pub consumers: HashMap<&'g str, usize>,
    /// Initializer positions by name.
    pub init_idx: HashMap<&'g str, usize>,
    pub inits: HashSet<&'g str>,
    pub graph_outputs: HashSet<&'g str>,
}

impl<'g> GraphIndex<'g> {
    pub fn of(g: &'g pb::GraphProto) -> Self {
        let init_idx: HashMap<&str, usize> = g
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name(), i))
            .collect();
        let inits: HashSet<&str> = init_idx.keys().copied().collect();
        let mut consumers: HashMap<&str, usize> = HashMap::new();
        for n in &g.node {
            for i in &n.input {
                *consumers.entry(i.as_str()).or_default() += 1;
            }
        }
        GraphIndex {
            graph: g,
            producer: producers(g),
            consumers,
            init_idx,
            inits,
            graph_outputs: g.output.iter().map(|o| o.name()).collect(),
        }
    }

    /// An initializer or a Constant node's output.
    pub fn constant(&self, t: &str) -> bool {
        self.inits.contains(t)
            || self
                .producer
                .get(t)
                .is_some_and(|&p| self.graph.node[p].op_type() == "Constant")
    }
}

/// The tensor behind `t` when it is a constant: an initializer or a Constant node's value.
pub fn constant_tensor<'g>(
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
pub fn scalar_of(t: &pb::TensorProto) -> Option<f32> {
    match onnx::tensor_f32(t)?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// The value of a one-element float constant.
pub fn scalar_constant(
    g: &pb::GraphProto,
    producer: &HashMap<&str, usize>,
    t: &str,
) -> Option<f32> {
    scalar_of(constant_tensor(g, producer, t)?)
}

/// A Clip's constant bounds (attributes before opset 11, inputs after).
pub fn clip_bounds(
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

/// The nodes and initializers a pass adds to the graph.
#[derive(Debug, Default)]
pub struct Additions {
    pub nodes: Vec<pb::NodeProto>,
    pub inits: Vec<pb::TensorProto>,
}
