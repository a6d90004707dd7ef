//! FP16: weights and compute in float16, the graph's inputs and outputs still float32 (callers
//! keep feeding and reading f32), and precision-sensitive ops kept in float32 between Casts.
//!
//! Only the places that state a type explicitly change: float initializers, `Constant` and
//! `ConstantOfShape` values, `Cast(to=FLOAT)` and the graph I/O. Intermediate types follow by
//! inference, so stale `value_info` entries are dropped rather than patched.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::onnx::{self, pb, DataType, Model, OnnxError};

/// Ops kept in float32, with the positions of their float inputs and outputs. Exponentials,
/// reductions and softmax overflow or lose too much in f16; NMS and TopK compare scores.
const KEEP_FP32: &[(&str, &[usize], &[usize])] = &[
    ("Resize", &[0], &[0]),
    ("Upsample", &[0], &[0]),
    ("TopK", &[0], &[0]),
    ("NonMaxSuppression", &[0, 1], &[]),
    ("Softmax", &[0], &[0]),
    ("LogSoftmax", &[0], &[0]),
    ("Exp", &[0], &[0]),
    ("Log", &[0], &[0]),
    ("Pow", &[0, 1], &[0]),
    ("ReduceMean", &[0], &[0]),
    ("ReduceSum", &[0], &[0]),
    ("ReduceL2", &[0], &[0]),
    ("RoiAlign", &[0, 1], &[0]),
    // ONNX's Range has no float16 type: a float Range reads and writes float32 between Casts.
    // An integer one (YOLO's anchor grid, cast to float after it) is left alone: keep_rule.
    ("Range", &[0, 1, 2], &[0]),
];

/// Inputs that ONNX requires to be float32 whatever the data type: (op, position).
const ALWAYS_FP32_INPUTS: &[(&str, usize)] = &[("Resize", 1), ("Resize", 2), ("Upsample", 1)];

#[derive(Debug, Clone, Default)]
pub struct Fp16Options {
    /// Extra op types to keep in float32 (their float inputs and outputs are input 0 / output 0).
    pub keep_ops: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Fp16Report {
    pub converted_initializers: usize,
    pub kept_fp32_nodes: Vec<String>,
}

fn keep_rule<'a>(
    n: &pb::NodeProto,
    float_source: &dyn Fn(&str) -> bool,
    opts: &'a Fp16Options,
) -> Option<(&'a [usize], &'a [usize])> {
    let op = n.op_type();
    // Range is mostly an integer op (shape arithmetic), which float16 leaves alone; only a
    // Range over floats needs its float32 island.
    if op == "Range" && !n.input.iter().any(|i| float_source(i)) {
        return None;
    }
    if let Some((_, i, o)) = KEEP_FP32.iter().find(|(k, _, _)| *k == op) {
        return Some((i, o));
    }
    opts.keep_ops.contains(op).then_some((&[0][..], &[0][..]))
}

/// IEEE 754 binary16 from binary32, round to nearest even, saturating to ±inf like a cast.
fn half_from_f32(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut r = m >> shift;
        let rem = m & ((1 << shift) - 1);
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1; // may carry into the exponent, which is the right rounding
    }
    sign | r as u16
}

fn to_f16_tensor(t: &pb::TensorProto) -> Option<pb::TensorProto> {
    let v = onnx::tensor_f32(t)?;
    let raw: Vec<u8> = v
        .iter()
        .flat_map(|&x| half_from_f32(x).to_le_bytes())
        .collect();
    Some(onnx::tensor_raw(t.name(), DataType::Float16, &t.dims, raw))
}

fn cast(name: &str, input: &str, output: &str, to: DataType) -> pb::NodeProto {
    onnx::node(
        "Cast",
        name,
        &[input],
        &[output],
        vec![onnx::attr_int("to", to as i64)],
    )
}

/// The float16 copy of `model`, and what was kept in float32.
///
/// It stays one pass of about 155 lines over the graph: which initializers, inputs and node
/// outputs change type is decided node by node, with the casts it inserts, from the same
/// running maps.
pub fn convert(model: &Model, opts: &Fp16Options) -> Result<(Model, Fp16Report), OnnxError> {
    let mut out = model.clone();
    let g = model.graph();
    let mut report = Fp16Report::default();
    let float = DataType::Float as i32;

    let types = onnx::infer_elem_types(model);
    let float_source = |name: &str| types.get(name) == Some(&float);
    // Which initializers can become f16: every use must be an f16 position.
    let mut must_stay: HashSet<String> = HashSet::new();
    for n in &g.node {
        let keep = keep_rule(n, &float_source, opts);
        for (i, inp) in n.input.iter().enumerate() {
            let fixed = ALWAYS_FP32_INPUTS.contains(&(n.op_type(), i));
            if fixed || keep.is_some() {
                must_stay.insert(inp.clone());
            }
        }
    }
    let mut inits = Vec::new();
    for t in &g.initializer {
        if t.data_type() == float && !must_stay.contains(t.name()) {
            inits.push(to_f16_tensor(t).expect("float tensor"));
            report.converted_initializers += 1;
        } else {
            inits.push(t.clone());
        }
    }
    let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();

    let mut nodes = Vec::new();
    // Graph inputs stay f32; the graph reads an f16 copy.
    let mut rename: HashMap<String, String> = HashMap::new();
    for v in &g.input {
        if init_names.contains(v.name()) || onnx::value_info_elem(v) != Some(float) {
            continue;
        }
        let h = format!("{}__f16", v.name());
        nodes.push(cast(
            &format!("{}__to_f16", v.name()),
            v.name(),
            &h,
            DataType::Float16,
        ));
        rename.insert(v.name().to_string(), h);
    }
    let outputs: HashSet<&str> = g
        .output
        .iter()
        .filter(|v| onnx::value_info_elem(v) == Some(float))
        .map(|v| v.name())
        .collect();
    let mut tail = Vec::new();
    let mut out_rename: HashMap<String, String> = HashMap::new();

    for n in &g.node {
        let mut node = n.clone();
        for inp in node.input.iter_mut() {
            if let Some(r) = rename.get(inp.as_str()) {
                *inp = r.clone();
            }
        }
        let keep = keep_rule(n, &float_source, opts);
        if let Some((fin, fout)) = keep {
            report
                .kept_fp32_nodes
                .push(crate::onnx::graph::node_label(n));
            for &i in fin {
                let Some(inp) = node.input.get(i).cloned() else {
                    continue;
                };
                if inp.is_empty() || init_names.contains(inp.as_str()) {
                    continue;
                }
                let f = format!("{inp}__f32_for_{}", crate::onnx::graph::node_label(n));
                nodes.push(cast(&format!("{f}__cast"), &inp, &f, DataType::Float));
                node.input[i] = f;
            }
            for &o in fout {
                let Some(name) = node.output.get(o).cloned() else {
                    continue;
                };
                let f32_name = format!("{name}__f32");
                node.output[o] = f32_name.clone();
                if outputs.contains(name.as_str()) {
                    // Already float32, as the graph output must be.
                    node.output[o] = name.clone();
                } else {
                    let n2 = cast(
                        &format!("{name}__to_f16"),
                        &f32_name,
                        &name,
                        DataType::Float16,
                    );
                    tail.push(n2);
                }
            }
            nodes.push(node);
            nodes.append(&mut tail);
            continue;
        }
        match n.op_type() {
            "Cast" if onnx::get_attr_int(n, "to") == Some(float as i64) => {
                for a in node.attribute.iter_mut().filter(|a| a.name() == "to") {
                    a.i = Some(DataType::Float16 as i64);
                }
            }
            // Both state their float values in a tensor attribute.
            "Constant" | "ConstantOfShape" => {
                for a in node.attribute.iter_mut() {
                    if let Some(t) = a.t.as_ref().filter(|t| t.data_type() == float) {
                        a.t = to_f16_tensor(t);
                    }
                }
                // Without `value`, ConstantOfShape fills float32 zeros (BlazeFace's paddings).
                if n.op_type() == "ConstantOfShape" && node.attribute.is_empty() {
                    node.attribute.push(pb::AttributeProto {
                        name: Some("value".into()),
                        r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
                        t: Some(onnx::tensor_raw("", DataType::Float16, &[1], vec![0, 0])),
                        ..Default::default()
                    });
                }
            }
            _ => {}
        }
        // f16 graph outputs are renamed and cast back to f32 under their own name.
        for o in node.output.iter_mut() {
            if outputs.contains(o.as_str()) {
                let h = format!("{o}__f16");
                tail.push(cast(&format!("{o}__to_f32"), &h, o, DataType::Float));
                out_rename.insert(o.clone(), h.clone());
                *o = h;
            }
        }
        nodes.push(node);
        nodes.append(&mut tail);
    }
    // A consumer placed after a renamed graph output reads the f16 copy.
    for n in nodes.iter_mut() {
        if n.op_type() == "Cast" && n.output.iter().any(|o| outputs.contains(o.as_str())) {
            continue;
        }
        for inp in n.input.iter_mut() {
            if let Some(r) = out_rename.get(inp.as_str()) {
                *inp = r.clone();
            }
        }
    }
    let og = out.graph_mut();
    og.node = nodes;
    og.initializer = inits;
    og.value_info.clear();
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::half_from_f32;

    #[test]
    fn half_conversion_of_known_values() {
        assert_eq!(half_from_f32(1.0), 0x3c00);
        assert_eq!(half_from_f32(-2.0), 0xc000);
        assert_eq!(half_from_f32(65504.0), 0x7bff);
        assert_eq!(half_from_f32(1e6), 0x7c00);
        assert_eq!(half_from_f32(0.0), 0);
        assert_eq!(half_from_f32(5.960_464_5e-8), 0x0001); // smallest subnormal
        assert_eq!(half_from_f32(0.333_333_34), 0x3555);
    }
}
