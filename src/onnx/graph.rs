//! Graph helpers that sit above the protobuf types: how a node is named in reports, and a
//! model that also outputs some of its inner tensors (calibration and per-layer error runs).
//!
//! ```
//! use edgesight::onnx::{self, graph::node_label};
//! let n = onnx::node("Relu", "", &["x"], &["y"], vec![]);
//! assert_eq!(node_label(&n), "Relu(y)");
//! ```

use std::collections::HashSet;

use super::{pb, value_info, DataType, Model};

/// A node's name, or `Op(first output)` for an unnamed one.
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

/// A copy of `model` whose outputs also include `tensors`, for calibration runs.
pub fn with_extra_outputs(model: &Model, tensors: &[String]) -> Model {
    let mut m = model.clone();
    let g = m.graph_mut();
    let existing: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    for t in tensors {
        if !existing.contains(t) {
            g.output.push(value_info(t, DataType::Float));
        }
    }
    m
}
