//! A small graph in Ultralytics' YOLOv8 layout, built with the project's own ONNX editor, whose
//! outputs are known in advance, so that the YOLO tests need no fixture and can assert where
//! each box lands.
//!
//! Input `images` is `[batch, 3, height, width]` float RGB in 0..1 (all three dimensions
//! dynamic, as in a `dynamic=True` export, so the manifest's 640x640 applies). Output `output0`
//! is `[batch, 84, anchors]`: per anchor a box (cx, cy, w, h) in input pixels, then 80 class
//! scores already through a sigmoid, with COCO's names in the `names` metadata.
//!
//! ```text
//! images -> AveragePool 32x32/32 -> cell means [B, 3, H/32, W/32]
//!   head "a": Conv 1x1 -> xy + anchor grid | Conv 1x1 -> wh | Conv 1x1 -> Sigmoid -> classes
//!   head "b": the same, with bigger boxes and a lower score (a duplicate for NMS to remove)
//!   each head Concat -> [B, 84, H/32, W/32] -> Reshape [B, 84, -1]; Concat(a, b) -> output0
//! anchor grid: Shape -> Gather -> integer Range -> Cast(float) -> * 32 -> Expand, as the
//! Ultralytics export builds its anchors.
//! ```
//!
//! So every 32x32 cell of the input is two anchors: head "a" gives the cell itself as a box
//! (`BOX` square, centred on the cell) and head "b" a `DUP_BOX` square around the same centre,
//! their IoU 0.64. Class 0 ("person") scores `sigmoid(20 * mean brightness - 12)` of the cell,
//! class 2 ("car") `sigmoid(16 R - 10 G - 10 B - 10)` of its mean colour, every other class
//! `sigmoid(-10)`; head "b" scores one logit lower. A white cell is a person at 0.9997, a red
//! one a car at 0.9975, black and the letterbox's grey 114 nothing at the manifest's 0.25.

use std::path::{Path, PathBuf};

use edgesight::onnx::{self, pb, DataType, Model};

/// Side of one cell, in input pixels (the pool's kernel and stride).
pub const STRIDE: i64 = 32;
/// Side of head "a"'s boxes: the cell itself.
pub const BOX: f32 = 32.0;
/// Side of head "b"'s boxes, around the same centre.
pub const DUP_BOX: f32 = 40.0;
pub const CLASSES: usize = 80;

/// COCO's 80 class names, as Ultralytics exports list them, comma-separated.
pub const COCO80: &str =
    "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,\
     fire hydrant,stop sign,parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,\
     zebra,giraffe,backpack,umbrella,handbag,tie,suitcase,frisbee,skis,snowboard,\
     sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,tennis racket,\
     bottle,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,\
     carrot,hot dog,pizza,donut,cake,chair,couch,potted plant,bed,dining table,toilet,tv,\
     laptop,mouse,remote,keyboard,cell phone,microwave,oven,toaster,sink,refrigerator,book,\
     clock,vase,scissors,teddy bear,hair drier,toothbrush";

/// Head "a"'s class logits for a cell of mean colour `rgb` (0..1 per channel):
/// `(person, car, any other class)`.
pub fn logits(rgb: [f32; 3]) -> (f32, f32, f32) {
    let [r, g, b] = rgb;
    (
        20.0 * (r + g + b) / 3.0 - 12.0,
        16.0 * r - 10.0 * g - 10.0 * b - 10.0,
        -10.0,
    )
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Head "a"'s class weights `[80, 3, 1, 1]` and biases; head "b" takes one off each bias.
fn class_weights() -> (Vec<f32>, Vec<f32>) {
    let mut w = vec![0.0; CLASSES * 3];
    let mut b = vec![-10.0; CLASSES];
    w[..3].copy_from_slice(&[20.0 / 3.0; 3]);
    b[0] = -12.0;
    w[6..9].copy_from_slice(&[16.0, -10.0, -10.0]);
    b[2] = -10.0;
    (w, b)
}

/// A tensor value with named (dynamic) and fixed dimensions.
fn value_info_dims(name: &str, dims: &[Result<i64, &str>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let mut v = onnx::value_info(name, DataType::Float);
    if let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape = Some(pb::TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dimension {
                    value: Some(match d {
                        Ok(n) => Value::DimValue(*n),
                        Err(p) => Value::DimParam(p.to_string()),
                    }),
                    ..Default::default()
                })
                .collect(),
        });
    }
    v
}

/// One detection head over the cell means `pool`: `[B, 84, cells]` named `{p}flat`.
fn head(p: &str, dup: bool, nodes: &mut Vec<pb::NodeProto>, inits: &mut Vec<pb::TensorProto>) {
    let side = if dup { DUP_BOX } else { BOX };
    let (w, mut b) = class_weights();
    if dup {
        b.iter_mut().for_each(|x| *x -= 1.0);
    }
    let half = STRIDE as f32 / 2.0;
    let n = |s: &str| format!("{p}{s}");
    inits.extend([
        onnx::tensor_from_f32(&n("xy_w"), &[2, 3, 1, 1], &[0.0; 6]),
        onnx::tensor_from_f32(&n("xy_b"), &[2], &[half, half]),
        onnx::tensor_from_f32(&n("wh_w"), &[2, 3, 1, 1], &[0.0; 6]),
        onnx::tensor_from_f32(&n("wh_b"), &[2], &[side, side]),
        onnx::tensor_from_f32(&n("cls_w"), &[CLASSES as i64, 3, 1, 1], &w),
        onnx::tensor_from_f32(&n("cls_b"), &[CLASSES as i64], &b),
    ]);
    let conv = |what: &str| {
        let (y, w, b) = (n(what), n(&format!("{what}_w")), n(&format!("{what}_b")));
        onnx::node("Conv", &y, &["pool", &w, &b], &[&y], vec![])
    };
    nodes.extend([
        conv("xy"),
        onnx::node(
            "Add",
            &n("box_xy"),
            &[&n("xy"), "grid"],
            &[&n("box_xy")],
            vec![],
        ),
        conv("wh"),
        conv("cls"),
        onnx::node(
            "Sigmoid",
            &n("scores"),
            &[&n("cls")],
            &[&n("scores")],
            vec![],
        ),
        onnx::node(
            "Concat",
            &n("out"),
            &[&n("box_xy"), &n("wh"), &n("scores")],
            &[&n("out")],
            vec![onnx::attr_int("axis", 1)],
        ),
        onnx::node(
            "Reshape",
            &n("flat"),
            &[&n("out"), "b_84_n"],
            &[&n("flat")],
            vec![],
        ),
    ]);
}

/// The graph, as a model whose file (named in errors) is `path`.
pub fn build(path: &Path) -> Model {
    let i64s = onnx::tensor_from_i64;
    let mut inits = vec![
        i64s("two", &[], &[2]),
        i64s("three", &[], &[3]),
        i64s("zero", &[], &[0]),
        i64s("one", &[], &[1]),
        i64s("slice_from", &[1], &[2]),
        i64s("slice_to", &[1], &[4]),
        i64s("ones_2", &[2], &[1, 1]),
        i64s("row_shape", &[4], &[1, 1, 1, -1]),
        i64s("col_shape", &[4], &[1, 1, -1, 1]),
        i64s("b_84_n", &[3], &[0, 4 + CLASSES as i64, -1]),
        onnx::tensor_from_f32("stride", &[], &[STRIDE as f32]),
    ];
    let node = onnx::node;
    let mut nodes = vec![
        node(
            "AveragePool",
            "pool",
            &["images"],
            &["pool"],
            vec![
                onnx::attr_ints("kernel_shape", &[STRIDE, STRIDE]),
                onnx::attr_ints("strides", &[STRIDE, STRIDE]),
            ],
        ),
        // The anchor grid, from the pooled map's own size: x and y of each cell's corner.
        node("Shape", "shape", &["pool"], &["shape"], vec![]),
        node("Gather", "rows", &["shape", "two"], &["rows"], vec![]),
        node("Gather", "cols", &["shape", "three"], &["cols"], vec![]),
        node("Range", "ys", &["zero", "rows", "one"], &["ys"], vec![]),
        node("Range", "xs", &["zero", "cols", "one"], &["xs"], vec![]),
        node(
            "Cast",
            "ys_f",
            &["ys"],
            &["ys_f"],
            vec![onnx::attr_int("to", 1)],
        ),
        node(
            "Cast",
            "xs_f",
            &["xs"],
            &["xs_f"],
            vec![onnx::attr_int("to", 1)],
        ),
        node("Mul", "ys_px", &["ys_f", "stride"], &["ys_px"], vec![]),
        node("Mul", "xs_px", &["xs_f", "stride"], &["xs_px"], vec![]),
        node(
            "Reshape",
            "y_col",
            &["ys_px", "col_shape"],
            &["y_col"],
            vec![],
        ),
        node(
            "Reshape",
            "x_row",
            &["xs_px", "row_shape"],
            &["x_row"],
            vec![],
        ),
        node(
            "Slice",
            "hw",
            &["shape", "slice_from", "slice_to"],
            &["hw"],
            vec![],
        ),
        node(
            "Concat",
            "grid_shape",
            &["ones_2", "hw"],
            &["grid_shape"],
            vec![onnx::attr_int("axis", 0)],
        ),
        node("Expand", "gy", &["y_col", "grid_shape"], &["gy"], vec![]),
        node("Expand", "gx", &["x_row", "grid_shape"], &["gx"], vec![]),
        node(
            "Concat",
            "grid",
            &["gx", "gy"],
            &["grid"],
            vec![onnx::attr_int("axis", 1)],
        ),
    ];
    head("a_", false, &mut nodes, &mut inits);
    head("b_", true, &mut nodes, &mut inits);
    nodes.push(node(
        "Concat",
        "output0",
        &["a_flat", "b_flat"],
        &["output0"],
        vec![onnx::attr_int("axis", 2)],
    ));
    let graph = pb::GraphProto {
        name: Some("yolo-shaped".into()),
        node: nodes,
        initializer: inits,
        input: vec![value_info_dims(
            "images",
            &[Err("batch"), Ok(3), Err("height"), Err("width")],
        )],
        output: vec![value_info_dims(
            "output0",
            &[Err("batch"), Ok(4 + CLASSES as i64), Err("anchors")],
        )],
        ..Default::default()
    };
    let mut model = Model::from_graph(graph, 17, path);
    let names: Vec<String> = COCO80
        .split(',')
        .enumerate()
        .map(|(i, n)| format!("{i}: '{n}'"))
        .collect();
    assert_eq!(names.len(), CLASSES);
    for (k, v) in [
        ("names", format!("{{{}}}", names.join(", "))),
        ("stride", STRIDE.to_string()),
        ("task", "detect".to_string()),
    ] {
        model.proto.metadata_props.push(pb::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        });
    }
    model.proto.producer_name = Some("edgesight tests".into());
    model
}

/// The graph saved at `path`, which it returns.
pub fn save(path: &Path) -> PathBuf {
    build(path).save(path).unwrap();
    path.to_path_buf()
}

/// Anchors of a `width` x `height` input: two per cell.
pub fn anchors(width: usize, height: usize) -> usize {
    2 * (width / STRIDE as usize) * (height / STRIDE as usize)
}

/// An RGB image of one colour.
pub fn canvas(width: usize, height: usize, rgb: [u8; 3]) -> ndarray::Array3<u8> {
    let mut img = ndarray::Array3::<u8>::zeros((height, width, 3));
    for (i, v) in img.iter_mut().enumerate() {
        *v = rgb[i % 3];
    }
    img
}

/// Paints the rectangle `x..x + w`, `y..y + h` in `rgb`.
pub fn paint(
    img: &mut ndarray::Array3<u8>,
    (x, y, w, h): (usize, usize, usize, usize),
    rgb: [u8; 3],
) {
    for r in y..y + h {
        for c in x..x + w {
            for (k, &v) in rgb.iter().enumerate() {
                img[[r, c, k]] = v;
            }
        }
    }
}
