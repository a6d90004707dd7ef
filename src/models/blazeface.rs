//! BlazeFace (MediaPipe's face detector, the ONNX export of the "back camera" 256 model and its
//! 128 "front" sibling): score logits and 16 regressors per anchor, decoded here.
//!
//! Two heads of anchors, in MediaPipe's SSD layout: a stride-16 grid with 2 anchors per cell and
//! a stride-32 grid with 6 (for 256x256: 16x16x2 = 512 and 8x8x6 = 384). Anchors sit at cell
//! centres, row-major with the anchors of a cell innermost, all of size 1 (MediaPipe's
//! `fixed_anchor_size`). Regressors are in input pixels: the box centre's offset from the anchor,
//! the box size, then six keypoints (eyes, nose tip, mouth, ears), offsets from the anchor too,
//! which each [`Detection`] carries in source pixels. Input: NHWC RGB float scaled to [-1, 1],
//! letterboxed to the square as MediaPipe does.
//!
//! ```
//! # use edgesight::models::blazeface::anchors;
//! // 256 input: 16x16 cells with 2 anchors, then 8x8 with 6.
//! let a = anchors(256, &[(16, 2), (32, 6)]);
//! assert_eq!(a.len(), 896);
//! assert_eq!(a[0], (0.5 / 16.0, 0.5 / 16.0));
//! assert_eq!(a[2], (1.5 / 16.0, 0.5 / 16.0)); // the next cell to the right
//! ```

use super::detector::{input_hw, Detector, DetectorCommon, IoCheck, ModelError};
use super::labels::Labels;
use super::manifest::Manifest;
use crate::detection::{Detection, Keypoint};
use crate::preprocess::{Layout, PreprocessSpec, Resize, Transform};
use crate::tensor::{ElementType, ModelIo, Output};

/// (stride, anchors per cell) of each head, finest first, as MediaPipe's face detection
/// calculators generate them (its four SSD layers, the last three merged at stride 32).
const HEADS: &[(u32, usize)] = &[(16, 2), (32, 6)];
/// Values per anchor in the regressor outputs: box (4) and six keypoints (12).
const REGRESSORS: usize = 16;
/// The keypoints in regressor order (MediaPipe's): the subject's right eye, left eye, nose tip,
/// mouth centre, right ear tragion, left ear tragion.
pub const KEYPOINTS: [&str; 6] = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth",
    "right_ear",
    "left_ear",
];
/// MediaPipe clips score logits to ±100 before the sigmoid.
const LOGIT_CLIP: f32 = 100.0;

/// Anchor centres (x, y), normalized to the input, in the models' output order.
pub fn anchors(input: u32, heads: &[(u32, usize)]) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for &(stride, per_cell) in heads {
        let cells = input.div_ceil(stride);
        for row in 0..cells {
            for col in 0..cells {
                let c = (
                    (col as f32 + 0.5) / cells as f32,
                    (row as f32 + 0.5) / cells as f32,
                );
                out.extend(std::iter::repeat_n(c, per_cell));
            }
        }
    }
    out
}

pub struct BlazeFace {
    c: DetectorCommon,
    anchors: Vec<(f32, f32)>,
    /// Per head: (index of its score output, index of its regressor output).
    heads: Vec<(usize, usize)>,
    size: f32,
}

impl BlazeFace {
    pub fn new(m: &Manifest, io: &ModelIo, labels: Option<Labels>) -> Result<Self, ModelError> {
        let check = IoCheck::new(m);
        let err = |reason: String| check.err(reason);
        let input = check.input(io)?;
        let (h, w) = input_hw(&input.shape, true);
        let square = match (h, w) {
            (Some(h), Some(w)) if h == w => h,
            (None, None) => m.input_size.map(|s| s[0]).unwrap_or(256),
            _ => 0,
        };
        if input.shape.len() != 4
            || input.shape[3] != 3
            || input.elem != ElementType::F32
            || square == 0
        {
            return Err(err(format!(
                "BlazeFace expects a float [1, S, S, 3] input, got {input}"
            )));
        }
        let anchors = anchors(square, HEADS);
        // The heads are told apart by their anchor counts, not by the exporter's names.
        let mut heads = Vec::new();
        for &(stride, per_cell) in HEADS {
            let n = (square.div_ceil(stride) as usize).pow(2) * per_cell;
            let find = |last: usize| {
                io.outputs.iter().position(|o| {
                    o.shape.len() == 3
                        && o.shape[1] == n as i64
                        && o.shape[2] == last as i64
                        && o.elem == ElementType::F32
                })
            };
            match (find(1), find(REGRESSORS)) {
                (Some(s), Some(r)) => heads.push((s, r)),
                _ => {
                    return Err(err(format!(
                        "outputs do not fit the blazeface family (want [1, {n}, 1] scores and \
                         [1, {n}, {REGRESSORS}] regressors for the stride-{stride} head; got {})",
                        io.outputs
                            .iter()
                            .map(|o| o.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        Ok(Self {
            c: DetectorCommon {
                spec: PreprocessSpec {
                    width: square,
                    height: square,
                    resize: Resize::Letterbox,
                    layout: Layout::Nhwc,
                    elem: ElementType::F32,
                    mean: [127.5; 3],
                    std: [127.5; 3],
                    pad: 0,
                },
                labels: labels.unwrap_or_else(|| Labels::parse("0 face")),
                score_threshold: m.score_threshold,
                iou_threshold: m.iou_threshold,
                max_detections: m.max_detections,
                model: check.model.clone(),
            },
            anchors,
            heads,
            size: square as f32,
        })
    }
}

impl Detector for BlazeFace {
    fn preprocess(&self) -> &PreprocessSpec {
        &self.c.spec
    }

    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError> {
        let mut dets = Vec::new();
        let mut anchor = self.anchors.iter();
        for &(si, ri) in &self.heads {
            let (scores, regs) = (&outputs[si], &outputs[ri]);
            let n = scores.data.len();
            if regs.data.len() != n * REGRESSORS {
                return Err(ModelError::OutputShape {
                    model: self.c.model.clone(),
                    output: regs.name.clone(),
                    shape: regs.data.shape().to_vec(),
                    reason: format!("want {REGRESSORS} regressors for each of {n} scores"),
                });
            }
            let regs: Vec<f32> = regs.data.iter().copied().collect();
            for (logit, r) in scores.data.iter().zip(regs.chunks_exact(REGRESSORS)) {
                let Some(&(ax, ay)) = anchor.next() else {
                    break;
                };
                let score = 1.0 / (1.0 + (-logit.clamp(-LOGIT_CLIP, LOGIT_CLIP)).exp());
                // NaN scores fail this too.
                if score.is_nan() || score < self.c.score_threshold {
                    continue;
                }
                let (cx, cy) = (ax * self.size + r[0], ay * self.size + r[1]);
                let (hw, hh) = (r[2] / 2.0, r[3] / 2.0);
                if !(hw > 0.0 && hh > 0.0) {
                    continue;
                }
                let mut d = self
                    .c
                    .detection(0, score, t, [cx - hw, cy - hh, cx + hw, cy + hh]);
                d.keypoints = KEYPOINTS
                    .iter()
                    .zip(r[4..].chunks_exact(2))
                    .map(|(&name, k)| {
                        let (x, y) = t.to_source(ax * self.size + k[0], ay * self.size + k[1]);
                        Keypoint { name, x, y }
                    })
                    .collect();
                dets.push(d);
            }
        }
        Ok(self.c.finish(dets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorInfo;
    use ndarray::ArrayD;

    fn io(size: i64) -> ModelIo {
        let t = |name: &str, shape: Vec<i64>| TensorInfo {
            name: name.into(),
            elem: ElementType::F32,
            shape,
        };
        ModelIo {
            inputs: vec![t("input:0", vec![1, size, size, 3])],
            // The export's order: both score heads, then both regressor heads.
            outputs: vec![
                t("Identity:0", vec![1, 512, 1]),
                t("Identity_1:0", vec![1, 384, 1]),
                t("Identity_2:0", vec![1, 512, 16]),
                t("Identity_3:0", vec![1, 384, 16]),
            ],
            metadata: Default::default(),
        }
    }

    #[test]
    fn decodes_an_anchor_of_each_head_to_source_pixels() {
        let m: Manifest =
            toml::from_str("name='b'\nfamily='blazeface'\nfile='b.onnx'\nscore_threshold=0.75")
                .unwrap();
        let b = BlazeFace::new(&m, &io(256), None).unwrap();
        let mut s16 = ArrayD::from_elem(vec![1, 512, 1], -10.0f32);
        let mut s32 = ArrayD::from_elem(vec![1, 384, 1], -10.0f32);
        let mut r16 = ArrayD::zeros(vec![1, 512, 16]);
        let mut r32 = ArrayD::zeros(vec![1, 384, 16]);
        // Cell (row 6, col 3) of the 16x16 grid, its second anchor: centre (56, 104).
        let a = (6 * 16 + 3) * 2 + 1;
        s16[[0, a, 0]] = 3.0;
        for (k, v) in [4.0, -2.0, 20.0, 30.0].into_iter().enumerate() {
            r16[[0, a, k]] = v;
        }
        // Its right eye 6 px left of and 4 px above the anchor; the other keypoints at it.
        r16[[0, a, 4]] = -6.0;
        r16[[0, a, 5]] = -4.0;
        // Cell (row 5, col 0) of the 8x8 grid, anchor 5: centre (16, 176); below threshold.
        let b32 = (5 * 8) * 6 + 5;
        s32[[0, b32, 0]] = 0.5;
        r32[[0, b32, 2]] = 10.0;
        r32[[0, b32, 3]] = 10.0;
        let out = |name: &str, data: ArrayD<f32>| Output {
            name: name.into(),
            data,
        };
        let outputs = [
            out("Identity:0", s16),
            out("Identity_1:0", s32),
            out("Identity_2:0", r16),
            out("Identity_3:0", r32),
        ];
        // A 512x384 source letterboxed into 256x256: scale 0.5, 32 rows of padding on top.
        let t = Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            pad_x: 0.0,
            pad_y: 32.0,
            src_width: 512,
            src_height: 384,
        };
        let d = b.decode(&outputs, &t).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].label, "face");
        assert!((d[0].score - 0.9526).abs() < 1e-3);
        // Centre (56 + 4, 104 - 2), 20x30 in input pixels: x 50..70, y 87..117; in the source
        // x / 0.5 and (y - 32) / 0.5.
        let bb = d[0].bbox;
        assert_eq!((bb.x1, bb.x2), (100.0, 140.0));
        assert_eq!((bb.y1, bb.y2), (110.0, 170.0));
        // Keypoints: offsets from the anchor, mapped as the box is. Right eye (50, 100) in the
        // input is (100, 136) in the source; the nose at the anchor (56, 104), (112, 144).
        let names: Vec<&str> = d[0].keypoints.iter().map(|k| k.name).collect();
        assert_eq!(names, KEYPOINTS);
        let (eye, nose) = (d[0].keypoints[0], d[0].keypoints[2]);
        assert_eq!((eye.x, eye.y), (100.0, 136.0));
        assert_eq!((nose.x, nose.y), (112.0, 144.0));

        // With the threshold lowered, the 8x8 head's anchor shows up where it should.
        let m: Manifest =
            toml::from_str("name='b'\nfamily='blazeface'\nfile='b.onnx'\nscore_threshold=0.5")
                .unwrap();
        let b = BlazeFace::new(&m, &io(256), None).unwrap();
        let d = b.decode(&outputs, &t).unwrap();
        // Centre (16, 176), 10x10: x 11..21, y 171..181 in input pixels.
        let low = d.iter().find(|d| d.score < 0.9).expect("the second face");
        assert_eq!((low.bbox.x1, low.bbox.x2), (22.0, 42.0));
        assert_eq!((low.bbox.y1, low.bbox.y2), (278.0, 298.0));
    }

    #[test]
    fn other_outputs_are_refused_with_the_shapes() {
        let m: Manifest = toml::from_str("name='b'\nfamily='blazeface'\nfile='b.onnx'").unwrap();
        let mut io = io(256);
        io.outputs.truncate(2);
        let e = BlazeFace::new(&m, &io, None).err().unwrap().to_string();
        assert!(e.contains("b.onnx") && e.contains("[1, 512, 16]"), "{e}");
    }
}
