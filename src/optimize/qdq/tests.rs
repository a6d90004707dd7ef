//! The quantizer on small graphs built by hand: what each pattern turns into, and the
//! arithmetic of the parameters it writes.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::onnx::{self, pb, DataType};
use crate::optimize::calibrator::Range;
use crate::optimize::weights::{is_depthwise, Preset, Presets, WeightRange};

/// [`quantize`] with its configuration spelled out, as the tests vary one part at a time.
fn quantize_with(
    model: &Model,
    ranges: &HashMap<String, Range>,
    channel_means: &HashMap<String, Vec<f32>>,
    presets: &Presets,
    act: ActivationType,
    weights: WeightRange,
    exclude: &Exclusions,
) -> Result<(Model, QdqReport), onnx::OnnxError> {
    quantize(
        model,
        &QuantizeConfig {
            ranges,
            channel_means,
            presets,
            act,
            weights,
            exclude,
        },
    )
}

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
    let (plain, _) = quantize_with(
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
        quantize_with(&model, &ranges, &means, &Presets::new(), act, full, &ex).unwrap();
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
    let (c, _) = quantize_with(
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
    quantize_with(
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
        quantize_with(
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
    let n = |group: i64| onnx::node("Conv", "c", &[], &[], vec![onnx::attr_int("group", group)]);
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
