//! The graph rewrites for the CPU's int8 kernels and the FP16 conversion compute what the graphs
//! they replace compute: the same integers, bit for bit, or float32 where float16 cannot hold
//! the range.

mod common;
use common::optimize::*;
use common::*;

use std::path::{Path, PathBuf};

use edgesight::onnx::{self, pb, Model};

/// FP16: weights in float16, the model still takes and gives float32, and ONNX Runtime runs it
/// with outputs close to FP32's.
#[test]
fn fp16_keeps_float32_inputs_and_outputs() {
    use edgesight::engine::{Engine, EngineConfig};
    use edgesight::optimize::fp16;
    asset(MFN);
    let src = Model::load(&root().join(MFN)).unwrap();
    let (half, report) = fp16::convert(&src, &fp16::Fp16Options::default()).unwrap();
    assert!(report.converted_initializers > 100);
    let f32t = onnx::DataType::Float as i32;
    for v in half.graph().input.iter().chain(&half.graph().output) {
        assert_eq!(
            onnx::value_info_elem(v),
            Some(f32t),
            "{} stays float32",
            v.name()
        );
    }
    let weights = half
        .graph()
        .initializer
        .iter()
        .filter(|t| t.dims.len() == 4)
        .collect::<Vec<_>>();
    assert!(weights
        .iter()
        .all(|t| t.data_type() == onnx::DataType::Float16 as i32));

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("half.onnx");
    half.save(&path).unwrap();
    let mut a = Engine::load(&root().join(MFN), &EngineConfig::default()).unwrap();
    let mut b = Engine::load(&path, &EngineConfig::default()).unwrap();
    assert_eq!(b.io().inputs[0].elem, edgesight::tensor::ElementType::F32);
    let chip = asset("calibration/heldout/face-chips/John_Salley-000183_02159543.jpg");
    let img = edgesight::optimize::calibrate::decode_image(&chip).unwrap();
    let m = edgesight::models::Manifest::find("mobilefacenet").unwrap();
    let spec = edgesight::models::preprocess_spec(&m, a.io()).unwrap();
    let (t, _) = edgesight::preprocess::Preprocessor::new(spec)
        .run(img.pixels())
        .unwrap();
    let ra: Vec<f32> = a.run(&t).unwrap()[0].data.iter().copied().collect();
    let rb: Vec<f32> = b.run(&t).unwrap()[0].data.iter().copied().collect();
    let cos = edgesight::optimize::fidelity::cosine(&ra, &rb);
    assert!(cos > 0.999, "fp16 cosine {cos}");
}

/// FP16 on every family's graph: each converted model loads in ONNX Runtime and its outputs
/// follow FP32's on a real image. BlazeFace fills its anchor offsets with `ConstantOfShape`, and
/// the YOLOv8 export builds its anchor grid from integer `Range`s cast to float: float16 must
/// reach the one and leave the other alone, or the graph mixes float and float16 and does not
/// load.
#[test]
fn fp16_runs_every_family() {
    use edgesight::engine::{Engine, EngineConfig};
    use edgesight::optimize::fp16;
    use edgesight::tensor::Output;
    let tmp = tempfile::tempdir().unwrap();
    // YOLOv8's layout and integer anchor grid, built here (`common::yolo_graph`).
    let yolo = common::yolo_graph::save(&tmp.path().join("yolo-shaped.onnx"));
    let cases = vec![
        (asset("models/cache/blazeface-back-256.onnx"), "blazeface"),
        (
            asset("models/cache/centernet-mobilenetv3.onnx"),
            "centernet",
        ),
        (yolo, "yolov8"),
    ];
    for (path, family) in cases {
        let (half, _) = fp16::convert(&Model::load(&path).unwrap(), &Default::default()).unwrap();
        let out = tmp.path().join(format!("{family}.onnx"));
        half.save(&out).unwrap();
        let mut a = Engine::load(&path, &EngineConfig::default()).unwrap();
        let mut b = Engine::load(&out, &EngineConfig::default())
            .unwrap_or_else(|e| panic!("{family}'s FP16 graph does not load: {e}"));
        let input = &family_inputs(&path, family, &["assets/bus.jpg"])[0];
        let (ra, rb) = (a.run(input).unwrap(), b.run(input).unwrap());
        let flat = |t: &Output| t.data.iter().copied().collect::<Vec<f32>>();
        if family == "centernet" {
            // Its output is a top-100 list, whose tail of near-zero scores float16 reorders:
            // compare the detections instead.
            let rows = |o: &Output| {
                let v = flat(o);
                let above = v.chunks(6).filter(|r| r[4] >= 0.3);
                above.map(|r| r.to_vec()).collect::<Vec<_>>()
            };
            let (da, db) = (rows(&ra[0]), rows(&rb[0]));
            eprintln!("centernet: {da:?}\n  FP16 {db:?}");
            assert!(da.len() >= 4, "people and the bus in bus.jpg: {da:?}");
            assert_eq!(da.len(), db.len());
            for (p, q) in da.iter().zip(&db) {
                assert_eq!(p[5], q[5], "class");
                assert!((p[4] - q[4]).abs() < 0.01, "score {p:?} / {q:?}");
                let near = p[..4].iter().zip(&q[..4]).all(|(u, v)| (u - v).abs() < 2.0);
                assert!(near, "{p:?} / {q:?}");
            }
            continue;
        }
        for (x, y) in ra.iter().zip(&rb) {
            let cos = edgesight::optimize::fidelity::cosine(&flat(x), &flat(y));
            eprintln!("{family} {}: cosine {cos:.6}", x.name);
            assert!(cos > 0.9999, "{family} {}: cosine {cos}", x.name);
        }
    }
}

/// A Range over floats (ONNX has no float16 Range) stays float32 between Casts, fed by a
/// `Cast(to=FLOAT)` and a float `Constant` that float16 rewrites; the converted graph loads and
/// gives FP32's values.
#[test]
fn fp16_keeps_a_float_range_in_float32() {
    use edgesight::engine::{Engine, EngineConfig};
    use edgesight::onnx::DataType;
    use edgesight::optimize::fp16;
    let tmp = tempfile::tempdir().unwrap();
    let constant = |name: &str, t: pb::TensorProto| {
        let value = pb::AttributeProto {
            name: Some("value".into()),
            r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
            t: Some(t),
            ..Default::default()
        };
        onnx::node("Constant", name, &[], &[name], vec![value])
    };
    let n = pb::TensorProto {
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![5],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: Some("range".into()),
        node: vec![
            constant("n", n),
            onnx::node(
                "Cast",
                "limit",
                &["n"],
                &["limit"],
                vec![onnx::attr_int("to", 1)],
            ),
            constant("start", onnx::tensor_from_f32("", &[], &[0.25])),
            onnx::node(
                "Range",
                "range",
                &["start", "limit", "step"],
                &["r"],
                vec![],
            ),
            onnx::node("Mul", "scale", &["r", "x"], &["y"], vec![]),
        ],
        initializer: vec![onnx::tensor_from_f32("step", &[], &[0.5])],
        input: vec![onnx::value_info_shaped("x", DataType::Float, &[10])],
        output: vec![onnx::value_info("y", DataType::Float)],
        ..Default::default()
    };
    let file = tmp.path().join("range.onnx");
    let model = Model::from_graph(graph, 13, &file);
    model.save(&file).unwrap();
    let (half, report) = fp16::convert(&model, &Default::default()).unwrap();
    assert_eq!(report.kept_fp32_nodes.len(), 1, "{report:?}");
    let half_file = tmp.path().join("half.onnx");
    half.save(&half_file).unwrap();
    let x = edgesight::tensor::Tensor::F32(ndarray::ArrayD::from_elem(vec![10], 2.0));
    let run = |p: &Path| {
        let mut e = Engine::load(p, &EngineConfig::default()).unwrap();
        e.run(&x).unwrap()[0]
            .data
            .iter()
            .copied()
            .collect::<Vec<f32>>()
    };
    let want: Vec<f32> = (0..10).map(|i| 2.0 * (0.25 + 0.5 * i as f32)).collect();
    assert_eq!(run(&file), want);
    assert_eq!(run(&half_file), want, "exact in float16 too");
}

/// The stem convolution read over groups of pixels gives the same integers: CenterNet's INT8
/// graph (3x3, stride 2, TF's bottom-right padding) and BlazeFace's (5x5, padding on all sides,
/// so the grouped kernel reaches one group back) give the same outputs bit for bit.
#[test]
fn grouped_stem_gives_the_same_integers() {
    let images = [
        "assets/bus.jpg",
        "calibration/heldout/street/vtest-0010.jpg",
    ];
    for (file, family, kernel) in [
        (
            "models/cache/centernet-mobilenetv3.onnx",
            "centernet",
            [3, 2],
        ),
        ("models/cache/blazeface-back-256.onnx", "blazeface", [5, 3]),
    ] {
        let file = asset(file);
        let tmp = tempfile::tempdir().unwrap();
        let inputs = family_inputs(&file, family, &images);
        let (q, _) = quantized_on(&Model::load(&file).unwrap(), &inputs, tmp.path());
        let (g, grouped) = edgesight::optimize::stem::group_pixels(&q, |_| false).unwrap();
        assert_eq!(grouped.len(), 1, "{grouped:?}");
        assert_eq!((grouped[0].pixels, grouped[0].channels), (4, 12));
        let conv = g
            .graph()
            .node
            .iter()
            .find(|n| n.name() == grouped[0].layer)
            .unwrap();
        let k: Vec<i64> = conv
            .attribute
            .iter()
            .find(|a| a.name() == "kernel_shape")
            .unwrap()
            .ints
            .clone();
        assert_eq!(k, kernel, "{family}");
        same_outputs(&q, &g, &inputs, tmp.path());
    }
}

/// An NCHW stem: the image is transposed to NHWC before it is grouped. At stride 1 each group
/// position writes 4 output pixels, at stride 2 two; both give the same integers.
#[test]
fn grouped_nchw_stem_gives_the_same_integers() {
    use edgesight::onnx::DataType;
    let mut p = pixels_32x32_nchw();
    let inputs: Vec<_> = [
        "assets/bus.jpg",
        "calibration/heldout/street/vtest-0010.jpg",
    ]
    .iter()
    .map(|f| {
        let img = edgesight::optimize::calibrate::decode_image(&asset(f)).unwrap();
        p.run(img.pixels()).unwrap().0
    })
    .collect();
    // Padding 1 on the left: the grouped kernel reaches one group back, and at stride 1 the
    // 4 output pixels of a group read 6 columns, three groups wide.
    for (stride, per_group, width) in [(1, 4, 3), (2, 2, 2)] {
        let w: Vec<f32> = (0..8 * 27)
            .map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let b: Vec<f32> = (0..8).map(|i| i as f32 * 0.05 - 0.2).collect();
        let model = Model::from_graph(
            pb::GraphProto {
                node: vec![
                    onnx::node(
                        "Conv",
                        "stem",
                        &["x", "w", "b"],
                        &["y"],
                        vec![
                            onnx::attr_ints("strides", &[stride, stride]),
                            onnx::attr_ints("pads", &[1, 1, 1, 1]),
                        ],
                    ),
                    onnx::node("Relu", "relu", &["y"], &["r"], vec![]),
                    onnx::node("Conv", "next", &["r", "w2"], &["out"], vec![]),
                ],
                initializer: vec![
                    onnx::tensor_from_f32("w", &[8, 3, 3, 3], &w),
                    onnx::tensor_from_f32("b", &[8], &b),
                    onnx::tensor_from_f32("w2", &[8, 8, 1, 1], &w[..64]),
                ],
                input: vec![onnx::value_info_shaped(
                    "x",
                    DataType::Float,
                    &[1, 3, 32, 32],
                )],
                output: vec![onnx::value_info("out", DataType::Float)],
                ..Default::default()
            },
            13,
            "stem.onnx",
        );
        let tmp = tempfile::tempdir().unwrap();
        let (q, _) = quantized_on(&model, &inputs, tmp.path());
        let (g, grouped) = edgesight::optimize::stem::group_pixels(&q, |_| false).unwrap();
        assert_eq!(grouped[0].layer, "stem");
        let conv = g.graph().node.iter().find(|n| n.name() == "stem").unwrap();
        let gg = g.graph();
        let w_dq = gg.node.iter().find(|n| n.output[0] == conv.input[1]);
        let w = w_dq
            .and_then(|d| gg.initializer.iter().find(|t| t.name() == d.input[0]))
            .map(|t| t.dims.clone());
        assert_eq!(
            w,
            Some(vec![8 * per_group, 12, 3, width]),
            "stride {stride}"
        );
        same_outputs(&q, &g, &inputs, tmp.path());
    }
}

/// Per-channel gates tiled to their tensors' shapes give the same integers: CenterNet's eight
/// squeeze-and-excite gates and its head's, bit for bit.
#[test]
fn tiled_gates_give_the_same_integers() {
    let file = asset("models/cache/centernet-mobilenetv3.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let images = [
        "assets/bus.jpg",
        "calibration/heldout/street/vtest-0010.jpg",
    ];
    let inputs = family_inputs(&file, "centernet", &images);
    let (q, shapes) = quantized_on(&Model::load(&file).unwrap(), &inputs, tmp.path());
    let (t, tiled) = edgesight::optimize::gates::tile(&q, &shapes).unwrap();
    let head = tiled
        .iter()
        .find(|t| t.mul == "tower_0/CenternetHead/mul")
        .map(|t| t.shape.clone());
    assert_eq!(head, Some(vec![1, 128, 128, 128]));
    assert_eq!(tiled.len(), 9, "{tiled:?}");
    let tiles = t.graph().node.iter().filter(|n| n.op_type() == "Tile");
    assert_eq!(tiles.count(), 9);
    same_outputs(&q, &t, &inputs, tmp.path());
}

/// Gemm (both weight layouts) and MatMul get symmetric per-channel int8 weights, one scale per
/// output channel on the right axis and zero points of 0, and the quantized graph follows the
/// float one on real images. The project's real models have no Gemm or MatMul, so the graph is
/// built here: Conv -> Relu -> Flatten -> Gemm(transB) -> Relu -> MatMul -> Gemm.
#[test]
fn gemm_and_matmul_get_per_channel_weights() {
    use edgesight::engine::{Engine, EngineConfig};
    use edgesight::onnx::DataType;
    use edgesight::optimize::weights::WeightRange;
    let tmp = tempfile::tempdir().unwrap();
    // Output channels of very different magnitudes, so one scale per tensor would not do.
    // `axis` holds the output channels: 0 for Conv and Gemm(transB), 1 for a [K, N] weight.
    let w = |name: &str, dims: &[i64], axis: usize| {
        let n = dims.iter().product::<i64>() as usize;
        let channel = |i: usize| match axis {
            0 => i / (n / dims[0] as usize),
            _ => i % dims[1] as usize,
        };
        let v: Vec<f32> = (0..n)
            .map(|i| (((i * 7) % 13) as f32 - 6.0) * 0.05 * (1 + channel(i) % 4) as f32)
            .collect();
        onnx::tensor_from_f32(name, dims, &v)
    };
    let trans_b = vec![onnx::attr_int("transB", 1)];
    let graph = pb::GraphProto {
        name: Some("fc".into()),
        node: vec![
            onnx::node(
                "Conv",
                "conv",
                &["x", "wc"],
                &["a"],
                vec![onnx::attr_ints("strides", &[4, 4])],
            ),
            onnx::node("Relu", "relu1", &["a"], &["b"], vec![]),
            onnx::node("Flatten", "flat", &["b"], &["c"], vec![]),
            onnx::node("Gemm", "fc1", &["c", "w1", "b1"], &["d"], trans_b),
            onnx::node("Relu", "relu2", &["d"], &["e"], vec![]),
            onnx::node("MatMul", "mm", &["e", "w2"], &["f"], vec![]),
            onnx::node("Gemm", "fc2", &["f", "w3", "b3"], &["y"], vec![]),
        ],
        initializer: vec![
            w("wc", &[4, 3, 4, 4], 0),
            w("w1", &[16, 256], 0),
            onnx::tensor_from_f32("b1", &[16], &[0.1; 16]),
            w("w2", &[16, 12], 1),
            w("w3", &[12, 6], 1),
            onnx::tensor_from_f32("b3", &[6], &[-0.2; 6]),
        ],
        input: vec![onnx::value_info_shaped(
            "x",
            DataType::Float,
            &[1, 3, 32, 32],
        )],
        output: vec![onnx::value_info("y", DataType::Float)],
        ..Default::default()
    };
    let file = tmp.path().join("fc.onnx");
    let model = Model::from_graph(graph, 13, &file);
    let mut p = pixels_32x32_nchw();
    let mut frames = |dir: &str, n: usize| -> Vec<_> {
        let files = files_in(dir);
        let img = |f: &PathBuf| edgesight::optimize::calibrate::decode_image(f).unwrap();
        files
            .iter()
            .step_by(files.len() / n)
            .map(|f| p.run(img(f).pixels()).unwrap().0)
            .collect()
    };
    // Min-max ranges: a held-out frame past a calibrated range would be clipped, which is
    // calibration's business, not the weights'.
    let (cal, held) = (
        frames("calibration/street", 40),
        frames("calibration/heldout/street", 12),
    );
    let (q, _) = quantized_on(&model, &cal, tmp.path());

    let g = q.graph();
    let producer = |t: &str| g.node.iter().find(|n| n.output.iter().any(|o| o == t));
    let init = |t: &str| g.initializer.iter().find(|i| i.name() == t).unwrap();
    for (node, channels, axis) in [("fc1", 16, 0), ("mm", 12, 1), ("fc2", 6, 1)] {
        let n = g.node.iter().find(|n| n.name() == node).unwrap();
        let dq = producer(&n.input[1]).expect("a dequantized weight");
        assert_eq!(dq.op_type(), "DequantizeLinear", "{node}");
        assert_eq!(
            init(&dq.input[0]).data_type(),
            DataType::Int8 as i32,
            "{node}"
        );
        let scales = onnx::tensor_f32(init(&dq.input[1])).unwrap();
        assert_eq!(
            scales.len(),
            channels,
            "{node}: one scale per output channel"
        );
        assert!(
            scales.iter().any(|&a| scales.iter().any(|&b| b > 2.0 * a)),
            "{node}: {scales:?}"
        );
        let zp = init(&dq.input[2]);
        assert_eq!(zp.data_type(), DataType::Int8 as i32);
        assert!(zp.raw_data().iter().all(|&b| b == 0), "{node}: symmetric");
        assert_eq!(onnx::get_attr_int(dq, "axis"), Some(axis), "{node}");
    }

    let save = |m: &Model, name: &str| {
        let path = tmp.path().join(name);
        m.save(&path).unwrap();
        Engine::load(&path, &EngineConfig::default()).unwrap()
    };
    let (mut a, mut b) = (save(&model, "f.onnx"), save(&q, "q.onnx"));
    let flat = |e: &mut Engine, t: &edgesight::tensor::Tensor| {
        e.run(t).unwrap()[0]
            .data
            .iter()
            .copied()
            .collect::<Vec<f32>>()
    };
    for t in &held {
        let (ya, yb) = (flat(&mut a, t), flat(&mut b, t));
        let cos = edgesight::optimize::fidelity::cosine(&ya, &yb);
        eprintln!("cosine {cos:.6}");
        assert!(cos > 0.998, "{ya:?} / {yb:?}");
    }
    // Where the int8 kernels add products in 16 bits, full-range weights saturate them: the
    // reduced range above is what keeps this model's outputs. Should a runtime stop
    // saturating, this fails and the reduced range can go.
    if edgesight::optimize::weights::cpu_int8_saturates() {
        let (full, _) = quantized_with_range(&model, &cal, tmp.path(), WeightRange::Full);
        let mut c = save(&full, "full.onnx");
        let worst = held
            .iter()
            .map(|t| edgesight::optimize::fidelity::cosine(&flat(&mut a, t), &flat(&mut c, t)))
            .fold(1.0f64, f64::min);
        eprintln!("full range on this CPU: worst cosine {worst:.6}");
        assert!(worst < 0.99, "full-range weights did not saturate: {worst}");
    }
}

/// Cross-layer equalization rescales Conv → ReLU → Conv pairs without changing the function.
#[test]
fn equalization_preserves_the_float_model() {
    let file = asset("models/cache/centernet-mobilenetv3.onnx");
    let src = Model::load(&file).unwrap();
    let mut eq = src.clone();
    let pairs = edgesight::optimize::equalize::equalize(&mut eq, 4);
    assert!(pairs >= 10, "{pairs} pairs");
    // Some weight changed, by more than rounding.
    let changed = src
        .graph()
        .initializer
        .iter()
        .zip(&eq.graph().initializer)
        .filter(|(a, b)| a.raw_data() != b.raw_data() || a.float_data != b.float_data)
        .count();
    assert!(changed >= 2 * pairs, "{changed} initializers changed");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("eq.onnx");
    eq.save(&path).unwrap();
    let ra = &centernet_rows(&file, &["assets/bus.jpg"])[0];
    let rb = &centernet_rows(&path, &["assets/bus.jpg"])[0];
    // The top detections are the same boxes with the same scores.
    for (x, y) in ra.chunks(6).zip(rb.chunks(6)).take(5) {
        for k in 0..6 {
            assert!(
                (x[k] - y[k]).abs() < 0.05 * x[k].abs().max(1.0),
                "{x:?} vs {y:?}"
            );
        }
    }
}

/// Depthwise layers widened to the int8 kernel's channel multiple compute the same function:
/// the extra channels meet zero weights.
#[test]
fn widened_depthwise_layers_preserve_the_float_model() {
    let file = asset("models/cache/centernet-mobilenetv3.onnx");
    let src = Model::load(&file).unwrap();
    let (wide, widened) = edgesight::optimize::align::widen_depthwise(&src).unwrap();
    // 72 -> 80 in the backbone, 18/24/22 -> 32 in the head's reverse branches.
    let channels: Vec<(usize, usize)> = widened.iter().map(|w| w.channels).collect();
    assert!(
        channels.contains(&(72, 80)) && channels.contains(&(18, 32)),
        "{channels:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("wide.onnx");
    wide.save(&path).unwrap();
    let images = [
        "assets/bus.jpg",
        "calibration/heldout/street/vtest-0010.jpg",
    ];
    for (a, b) in centernet_rows(&file, &images)
        .iter()
        .zip(&centernet_rows(&path, &images))
    {
        // Every detection, summation order aside: the same boxes, scores and classes.
        let found = |r: &[f32]| r.chunks(6).filter(|d| d[4] >= 0.2).count();
        assert_eq!(found(a), found(b));
        assert!(found(a) >= 3, "{} detections", found(a));
        for (x, y) in a.chunks(6).zip(b.chunks(6)).take(found(a)) {
            for k in 0..6 {
                assert!(
                    (x[k] - y[k]).abs() <= 1e-3 * x[k].abs().max(1.0),
                    "{x:?} vs {y:?}"
                );
            }
        }
    }
}
