//! The stem convolution read over groups of pixels, so that ONNX Runtime's fast int8 kernel
//! takes it.
//!
//! MLAS runs a dense int8 convolution with its symmetric ConvSym kernels only when the input
//! channel count is a multiple of 4. A network's first convolution reads 3 (RGB), falls back to
//! im2col and a generic GEMM, and is then the slowest layer of an INT8 graph, slower than the
//! same layer in float (CenterNet's stem: 3 → 16 channels, 3x3, stride 2, 512x512).
//!
//! In NHWC memory, 4 neighbouring pixels of 3 channels are 12 contiguous values: reshaped to
//! `[N, H, W/4, 12]`, the image is a 12-channel tensor, and the convolution becomes one over
//! those groups. With stride 2, each group position yields 2 output pixels, so the grouped
//! convolution writes 2 × 16 channels, which the inverse reshape lays out as the original
//! `[N, Ho, Wo, 16]`. Each grouped weight holds the original tap that lands on it, zero
//! elsewhere; padding columns fall on padded groups. The integers are the same: on CenterNet
//! the rewritten graph's outputs are equal bit for bit, and the layer takes about a third of
//! the time (docs/optimize-findings.md, "Figures behind the code").
//!
//! The rewrite works on a quantized graph (the `Conv` reads `DequantizeLinear`s of int8 weights
//! with zero points 0 and of its input's `QuantizeLinear`, and one `QuantizeLinear` reads its
//! output), for the CPU only, and where the input is a graph input of fixed height and width,
//! in NCHW or behind the NHWC → NCHW `Transpose` that TF exporters write.
//!
//! ```
//! use edgesight::onnx::{self, pb, DataType, Model};
//! let f = |n: &str, v: f32| onnx::tensor_from_f32(n, &[], &[v]);
//! let z = |n: &str| onnx::tensor_from_u8(n, &[], &[128]);
//! let g = pb::GraphProto {
//!     node: vec![
//!         onnx::node("QuantizeLinear", "xq", &["x", "xs", "xz"], &["x_q"], vec![]),
//!         onnx::node("DequantizeLinear", "xdq", &["x_q", "xs", "xz"], &["x_dq"], vec![]),
//!         onnx::node("DequantizeLinear", "wdq", &["w", "ws", "wz"], &["w_dq"], vec![]),
//!         onnx::node("Conv", "stem", &["x_dq", "w_dq"], &["y"], vec![
//!             onnx::attr_ints("strides", &[2, 2]),
//!             onnx::attr_ints("pads", &[1, 1, 1, 1]),
//!         ]),
//!         onnx::node("QuantizeLinear", "yq", &["y", "ys", "yz"], &["y_q"], vec![]),
//!     ],
//!     initializer: vec![
//!         f("xs", 0.02), z("xz"), f("ys", 0.05), z("yz"), f("ws", 0.01),
//!         onnx::tensor_from_i8("wz", &[], &[0]),
//!         onnx::tensor_from_i8("w", &[8, 3, 3, 3], &[1; 216]),
//!     ],
//!     input: vec![onnx::value_info_shaped("x", DataType::Float, &[1, 3, 32, 32])],
//!     output: vec![onnx::value_info("y_q", DataType::Uint8)],
//!     ..Default::default()
//! };
//! let model = Model::from_graph(g, 13, "m.onnx");
//! let (out, grouped) = edgesight::optimize::stem::group_pixels(&model, |_| false).unwrap();
//! assert_eq!((grouped[0].pixels, grouped[0].channels), (4, 12));
//! let g = out.graph();
//! let conv = g.node.iter().find(|n| n.op_type() == "Conv").unwrap();
//! let w_dq = g.node.iter().find(|n| n.output[0] == conv.input[1]).unwrap();
//! let w = g.initializer.iter().find(|t| t.name() == w_dq.input[0]).unwrap();
//! assert_eq!(w.dims, [16, 12, 3, 2]);
//! ```

use std::collections::HashMap;

use crate::onnx::{self, pb, DataType, Dim, Model};

/// The input channel multiple of MLAS's symmetric int8 convolution kernels.
const CHANNEL_ALIGN: i64 = 4;

/// One stem convolution read over groups of pixels.
#[derive(Debug, Clone)]
pub struct Grouped {
    pub layer: String,
    /// Pixels per group, and the grouped tensor's channels.
    pub pixels: i64,
    pub channels: i64,
}

impl std::fmt::Display for Grouped {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{}: stem convolution read over groups of {} pixels ({} channels), so the fast int8 kernel takes it (the same integers)",
            self.layer, self.pixels, self.channels
        )
    }
}

/// Everything the rewrite of one convolution needs, read off the graph.
struct Site {
    conv: usize,
    /// A Relu or Clip between the convolution and its output's QuantizeLinear.
    act: Option<usize>,
    out_q: usize,
    /// The graph input holding the image, and whether it is NHWC (else NCHW, to transpose).
    image: String,
    nhwc: bool,
    in_q: usize,
    in_dq: usize,
    w_dq: usize,
    b_dq: Option<usize>,
    /// C, H, W of the image (N passes through the reshapes as it is).
    c: i64,
    h: i64,
    w: i64,
    o: i64,
    kernel: [i64; 2],
    strides: [i64; 2],
    pads: [i64; 4],
}

/// The graph with every eligible stem convolution read over groups of pixels, and what was
/// rewritten; `None` when nothing was. A convolution that `skip` names (an excluded layer)
/// is left alone.
pub fn group_pixels(
    model: &Model,
    skip: impl Fn(&pb::NodeProto) -> bool,
) -> Option<(Model, Vec<Grouped>)> {
    let g = model.graph();
    let producer = onnx::producers(g);
    let readers = onnx::Readers::of(g);
    let sites: Vec<Site> = (0..g.node.len())
        .filter(|&i| !skip(&g.node[i]))
        .filter_map(|i| site(g, i, &producer, &readers))
        .collect();
    if sites.is_empty() {
        return None;
    }
    let mut out = model.clone();
    let og = out.graph_mut();
    let mut grouped = Vec::new();
    let mut replace: HashMap<usize, Vec<pb::NodeProto>> = HashMap::new();
    let mut drop = Vec::new();
    for s in sites {
        let Some((nodes, inits, done)) = rewrite(og, &s) else {
            continue;
        };
        og.initializer.extend(inits);
        replace.insert(s.conv, nodes);
        drop.push(s.out_q);
        drop.extend(s.act);
        // The float outputs are gone, and with them any shape recorded for them.
        let gone: Vec<String> = std::iter::once(s.conv)
            .chain(s.act)
            .map(|n| og.node[n].output[0].clone())
            .collect();
        og.value_info
            .retain(|v| !gone.iter().any(|t| t == v.name()));
        grouped.push(done);
    }
    if grouped.is_empty() {
        return None;
    }
    let old = std::mem::take(&mut og.node);
    for (i, n) in old.into_iter().enumerate() {
        match replace.remove(&i) {
            Some(nodes) => og.node.extend(nodes),
            None if drop.contains(&i) => {}
            None => og.node.push(n),
        }
    }
    onnx::drop_dead_nodes(og);
    onnx::drop_unused_initializers(og);
    Some((out, grouped))
}

fn ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name() == name)
        .map(|a| a.ints.clone())
}

fn site(
    g: &pb::GraphProto,
    i: usize,
    producer: &HashMap<&str, usize>,
    readers: &onnx::Readers,
) -> Option<Site> {
    let n = &g.node[i];
    if n.op_type() != "Conv" || n.input.len() < 2 {
        return None;
    }
    let of = |t: &str| producer.get(t).map(|&p| (p, &g.node[p]));
    let init = |t: &str| g.initializer.iter().find(|x| x.name() == t);
    if onnx::get_attr_int(n, "group").unwrap_or(1) != 1
        || ints(n, "dilations").is_some_and(|d| d.iter().any(|&d| d != 1))
        || n.attribute
            .iter()
            .any(|a| a.name() == "auto_pad" && !matches!(a.s(), b"NOTSET" | b""))
    {
        return None;
    }
    // Input: Q → DQ of the image.
    let (in_dq, dq) = of(&n.input[0]).filter(|(_, d)| d.op_type() == "DequantizeLinear")?;
    let (in_q, q) = of(&dq.input[0]).filter(|(_, q)| q.op_type() == "QuantizeLinear")?;
    // One scale for the image: it is quantized before its bytes move.
    if q.input
        .get(1)
        .and_then(|t| init(t))
        .is_none_or(|t| onnx::numel(t) != 1)
    {
        return None;
    }
    let x = q.input[0].as_str();
    let input_dims = |name: &str| {
        let v = g.input.iter().find(|v| v.name() == name)?;
        let d = onnx::value_info_dims(v)?;
        let fixed = |d: &Dim| match d {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        };
        (d.len() == 4).then(|| [fixed(&d[0]), fixed(&d[1]), fixed(&d[2]), fixed(&d[3])])
    };
    let (nhwc, image, [c, h, w]) = match of(x) {
        Some((_, t)) if t.op_type() == "Transpose" => {
            if ints(t, "perm").as_deref() != Some(&[0, 3, 1, 2]) {
                return None;
            }
            let [_, h, w, c] = input_dims(&t.input[0])?;
            (true, t.input[0].clone(), [c?, h?, w?])
        }
        Some(_) => return None,
        None => {
            let [_, c, h, w] = input_dims(x)?;
            (false, x.to_string(), [c?, h?, w?])
        }
    };
    // Weights: int8 with zero points 0, per tensor or per output channel.
    let (w_dq, wd) = of(&n.input[1]).filter(|(_, d)| d.op_type() == "DequantizeLinear")?;
    let wt = init(&wd.input[0])?;
    if wt.data_type() != DataType::Int8 as i32 || wt.raw_data().is_empty() || wt.dims.len() != 4 {
        return None;
    }
    let zero_points_zero = wd
        .input
        .get(2)
        .is_none_or(|z| init(z).is_some_and(|z| z.raw_data().iter().all(|&b| b == 0)));
    if !zero_points_zero || wt.dims[1] != c {
        return None;
    }
    let (o, kernel) = (wt.dims[0], [wt.dims[2], wt.dims[3]]);
    let b_dq = match n.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => {
            let (bi, bd) = of(b).filter(|(_, d)| d.op_type() == "DequantizeLinear")?;
            init(&bd.input[0]).filter(|t| !t.raw_data().is_empty())?;
            Some(bi)
        }
        None => None,
    };
    // Output: one QuantizeLinear, maybe after a Relu or Clip (elementwise: it runs on the
    // grouped layout as well).
    let mut out_q = readers.only(&n.output[0])?;
    let mut act = None;
    if matches!(g.node[out_q].op_type(), "Relu" | "Clip") {
        act = Some(out_q);
        out_q = readers.only(&g.node[out_q].output[0])?;
    }
    if g.node[out_q].op_type() != "QuantizeLinear" {
        return None;
    }
    let strides = match ints(n, "strides").as_deref() {
        None => [1, 1],
        Some(&[a, b]) => [a, b],
        Some(_) => return None,
    };
    let pads = match ints(n, "pads").as_deref() {
        None => [0; 4],
        Some(&[a, b, c, d]) => [a, b, c, d],
        Some(_) => return None,
    };
    let s = Site {
        conv: i,
        act,
        out_q,
        nhwc,
        image,
        in_q,
        in_dq,
        w_dq,
        b_dq,
        c,
        h,
        w,
        o,
        kernel,
        strides,
        pads,
    };
    s.plan().map(|_| s)
}

/// The grouping of a site: (pixels per group, output pixels per group position, grouped
/// kernel width, its left and right padding in groups, output height and width).
struct Plan {
    pixels: i64,
    per_group: i64,
    kw: i64,
    k_first: i64,
    pad_left: i64,
    pad_right: i64,
    ho: i64,
    wo: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Site {
    fn plan(&self) -> Option<Plan> {
        if self.c % CHANNEL_ALIGN == 0 {
            return None;
        }
        let pixels = CHANNEL_ALIGN / gcd(self.c, CHANNEL_ALIGN);
        let [sh, sw] = self.strides;
        let [kh, kw] = self.kernel;
        let [pt, pl, pb, pr] = self.pads;
        if sw <= 0 || sh <= 0 || pixels % sw != 0 || self.w % pixels != 0 {
            return None;
        }
        let per_group = pixels / sw;
        let ho = (self.h + pt + pb - kh) / sh + 1;
        let wo = (self.w + pl + pr - kw) / sw + 1;
        // The symmetric kernel's conditions on output channels; without them nothing is gained.
        let out_channels = per_group * self.o;
        if wo % per_group != 0 || out_channels < 16 || out_channels % 8 != 0 || ho <= 0 {
            return None;
        }
        // Output pixel p of a group position reads input columns sw*p - pl + k, k < kw: groups
        // `k_first..=k_last` relative to its own.
        let k_first = (-pl).div_euclid(pixels);
        let k_last = (sw * (per_group - 1) - pl + kw - 1).div_euclid(pixels);
        let gkw = k_last - k_first + 1;
        let pad_left = -k_first;
        let pad_right = wo / per_group - 1 + gkw - self.w / pixels - pad_left;
        (pad_right >= 0).then_some(Plan {
            pixels,
            per_group,
            kw: gkw,
            k_first,
            pad_left,
            pad_right,
            ho,
            wo,
        })
    }
}

/// Each per-output-channel tensor (`o` values) repeated `times`; a per-tensor one as it is.
fn tiled(t: &pb::TensorProto, o: i64, times: i64, name: &str) -> Option<pb::TensorProto> {
    if onnx::numel(t) as i64 != o || o == 1 {
        return (onnx::numel(t) == 1).then(|| pb::TensorProto {
            name: Some(name.to_string()),
            ..t.clone()
        });
    }
    let raw = t.raw_data();
    if raw.is_empty() {
        return None;
    }
    Some(pb::TensorProto {
        name: Some(name.to_string()),
        data_type: Some(t.data_type()),
        dims: vec![o * times],
        raw_data: Some(raw.repeat(times as usize)),
        ..Default::default()
    })
}

/// A copy of the dequantize `dq` reading `data` into `out`, its per-channel parameters tiled
/// once per output pixel of a group.
fn dequantize(
    g: &pb::GraphProto,
    dq: &pb::NodeProto,
    data: String,
    out: &str,
    (o, times): (i64, i64),
    inits: &mut Vec<pb::TensorProto>,
) -> Option<pb::NodeProto> {
    let mut n = dq.clone();
    n.name = Some(format!("{out}_DQ"));
    n.input[0] = data;
    for slot in 1..n.input.len() {
        let t = g.initializer.iter().find(|x| x.name() == n.input[slot])?;
        let tiled_name = format!("{out}_{slot}");
        inits.push(tiled(t, o, times, &tiled_name)?);
        n.input[slot] = tiled_name;
    }
    n.output = vec![out.to_string()];
    Some(n)
}

/// The nodes replacing the convolution, their new initializers and the description.
///
/// It stays one function of about 160 lines: it writes one chain of nodes (pad, group, the
/// grouped convolution, ungroup) whose names, shapes and quantization parameters each step
/// takes from the one before, and split apart the steps would pass a dozen values along.
fn rewrite(
    g: &pb::GraphProto,
    s: &Site,
) -> Option<(Vec<pb::NodeProto>, Vec<pb::TensorProto>, Grouped)> {
    let p = s.plan()?;
    let init = |t: &str| g.initializer.iter().find(|x| x.name() == t);
    let conv = &g.node[s.conv];
    let base = format!("{}__grouped", conv.name());
    let name = |suffix: &str| format!("{base}_{suffix}");
    let mut inits = Vec::new();
    let mut nodes = Vec::new();

    // The weights: grouped [P*O, G*C, kh, gkw], each original tap where it lands.
    let wd = &g.node[s.w_dq];
    let wt = init(&wd.input[0])?;
    let w = wt.raw_data();
    let (o, c, kh, kw) = (s.o, s.c, s.kernel[0], s.kernel[1]);
    let gc = p.pixels * c;
    let mut w2 = vec![0u8; (p.per_group * o * gc * kh * p.kw) as usize];
    for px in 0..p.per_group {
        for k in 0..kw {
            let t = s.strides[1] * px - s.pads[1] + k;
            let col = t.div_euclid(p.pixels) - p.k_first;
            let q = t.rem_euclid(p.pixels);
            for oc in 0..o {
                for ic in 0..c {
                    for r in 0..kh {
                        let from = ((oc * c + ic) * kh + r) * kw + k;
                        let to = (((px * o + oc) * gc + q * c + ic) * kh + r) * p.kw + col;
                        w2[to as usize] = w[from as usize];
                    }
                }
            }
        }
    }
    let w_name = name("w");
    inits.push(onnx::tensor_raw(
        &w_name,
        DataType::Int8,
        &[p.per_group * o, gc, kh, p.kw],
        w2,
    ));
    let per = (o, p.per_group);
    let w_dq = dequantize(g, wd, w_name, &name("w_dq"), per, &mut inits)?;
    let b_dq = match s.b_dq {
        Some(b) => {
            let bd = &g.node[b];
            let b_name = name("b");
            inits.push(tiled(init(&bd.input[0])?, o, p.per_group, &b_name)?);
            Some(dequantize(g, bd, b_name, &name("b_dq"), per, &mut inits)?)
        }
        None => None,
    };

    // The image as groups of pixels, in NCHW for the graph (the runtime's layout pass turns it
    // back to NHWC, where the reshape is free).
    let transpose = |input: &str, output: &str, perm: &[i64]| {
        onnx::node(
            "Transpose",
            &format!("{output}_T"),
            &[input],
            &[output],
            vec![onnx::attr_ints("perm", perm)],
        )
    };
    // The image is quantized where it is, in its own layout, and only its bytes move: an NCHW
    // image is transposed as uint8, a quarter of the float traffic.
    let iq = &g.node[s.in_q];
    let image_q = name("image_q");
    let mut q = iq.clone();
    q.name = Some(format!("{image_q}_Q"));
    q.input[0] = s.image.clone();
    q.output = vec![image_q.clone()];
    nodes.push(q);
    let nhwc = if s.nhwc {
        image_q
    } else {
        let t = name("nhwc");
        nodes.push(transpose(&image_q, &t, &[0, 2, 3, 1]));
        t
    };
    let reshape = |input: &str, output: &str, dims: &[i64], inits: &mut Vec<pb::TensorProto>| {
        let shape = format!("{output}_shape");
        inits.push(onnx::tensor_from_i64(&shape, &[4], dims));
        onnx::node(
            "Reshape",
            &format!("{output}_R"),
            &[input, &shape],
            &[output],
            vec![],
        )
    };
    let pixels = name("pixels");
    let dims = [0, s.h, s.w / p.pixels, gc];
    nodes.push(reshape(&nhwc, &pixels, &dims, &mut inits));
    let in_q = name("in_q");
    nodes.push(transpose(&pixels, &in_q, &[0, 3, 1, 2]));
    let in_dq = name("in_dq");
    let mut dq = g.node[s.in_dq].clone();
    dq.name = Some(format!("{in_dq}_DQ"));
    dq.input[0] = in_q;
    dq.output = vec![in_dq.clone()];
    nodes.push(dq);
    nodes.push(w_dq);

    let mut gconv = conv.clone();
    gconv.input = vec![in_dq, name("w_dq")];
    if let Some(b) = b_dq {
        nodes.push(b);
        gconv.input.push(name("b_dq"));
    }
    let out = name("out");
    gconv.output = vec![out.clone()];
    gconv
        .attribute
        .retain(|a| !matches!(a.name(), "kernel_shape" | "strides" | "pads"));
    gconv.attribute.extend([
        onnx::attr_ints("kernel_shape", &[kh, p.kw]),
        onnx::attr_ints("strides", &[s.strides[0], 1]),
        onnx::attr_ints("pads", &[s.pads[0], p.pad_left, s.pads[2], p.pad_right]),
    ]);
    nodes.push(gconv);
    let out = match s.act {
        Some(a) => {
            let mut act = g.node[a].clone();
            let activated = name("act");
            act.name = Some(format!("{activated}_A"));
            act.input[0] = out;
            act.output = vec![activated.clone()];
            nodes.push(act);
            activated
        }
        None => out,
    };

    // Back to the original output: the grouped channels are (pixel, channel) in NHWC.
    let oq = &g.node[s.out_q];
    let out_q = name("out_q");
    let mut q = oq.clone();
    q.name = Some(format!("{out_q}_Q"));
    q.input[0] = out;
    q.output = vec![out_q.clone()];
    nodes.push(q);
    let out_nhwc = name("out_nhwc");
    nodes.push(transpose(&out_q, &out_nhwc, &[0, 2, 3, 1]));
    let out_pixels = name("out_pixels");
    let dims = [0, p.ho, p.wo, o];
    nodes.push(reshape(&out_nhwc, &out_pixels, &dims, &mut inits));
    nodes.push(transpose(&out_pixels, &oq.output[0], &[0, 3, 1, 2]));
    Some((
        nodes,
        inits,
        Grouped {
            layer: conv.name().to_string(),
            pixels: p.pixels,
            channels: gc,
        },
    ))
}
