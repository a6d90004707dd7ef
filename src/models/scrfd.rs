//! SCRFD (InsightFace's face detector, the 500M variant with five landmarks): per stride 8, 16
//! and 32, two anchors at each cell corner, a score, a box as distances from the anchor and five
//! keypoints as offsets from it, all in units of the stride. The five keypoints are the ones the
//! ArcFace alignment template is made of, which BlazeFace's lack (it has no mouth corners).
//!
//! Its weights are InsightFace's, **for non-commercial research only**: it is an option, never
//! the default.
//!
//! ```
//! # use edgesight::models::scrfd::anchor_centres;
//! // A 640 input at stride 32: 20x20 cells, two anchors each, at the cells' top-left corners.
//! let a = anchor_centres(640, 32);
//! assert_eq!(a.len(), 800);
//! assert_eq!((a[0], a[1], a[2]), ((0.0, 0.0), (0.0, 0.0), (32.0, 0.0)));
//! ```

use super::detector::{Detector, DetectorCommon, IoCheck, ModelError};
use super::labels::Labels;
use super::manifest::Manifest;
use crate::detection::{Detection, Keypoint};
use crate::preprocess::{Layout, PreprocessSpec, Resize, Transform};
use crate::tensor::{ElementType, ModelIo, Output};

const STRIDES: [u32; 3] = [8, 16, 32];
const ANCHORS_PER_CELL: usize = 2;
/// In the ArcFace template's order: image-left eye first (the subject's right).
pub const KEYPOINTS: [&str; 5] = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_right",
    "mouth_left",
];

/// Anchor centres of one stride, in input pixels, in the model's output order.
pub fn anchor_centres(input: u32, stride: u32) -> Vec<(f32, f32)> {
    let cells = input / stride;
    let mut out = Vec::with_capacity((cells * cells) as usize * ANCHORS_PER_CELL);
    for row in 0..cells {
        for col in 0..cells {
            let c = ((col * stride) as f32, (row * stride) as f32);
            out.extend(std::iter::repeat_n(c, ANCHORS_PER_CELL));
        }
    }
    out
}

/// One stride's anchors and the indices of its score, box and keypoint outputs.
struct Head {
    stride: f32,
    anchors: Vec<(f32, f32)>,
    outputs: (usize, usize, usize),
}

pub struct Scrfd {
    c: DetectorCommon,
    heads: Vec<Head>,
}

impl Scrfd {
    pub fn new(m: &Manifest, io: &ModelIo, labels: Option<Labels>) -> Result<Self, ModelError> {
        let check = IoCheck::new(m);
        let input = check.input(io)?;
        let side = match input.shape.as_slice() {
            [_, 3, h, w] if h == w && *h > 0 => *h as u32,
            _ => {
                return Err(check.err(format!(
                    "SCRFD expects a float [1, 3, S, S] input, got {input}"
                )))
            }
        };
        let mut heads = Vec::new();
        for stride in STRIDES {
            let anchors = anchor_centres(side, stride);
            let n = anchors.len() as i64;
            let find = |last: i64| {
                io.outputs.iter().position(|o| {
                    o.elem == ElementType::F32
                        && matches!(o.shape.as_slice(), [1, a, l] | [a, l] if *a == n && *l == last)
                })
            };
            match (find(1), find(4), find(10)) {
                (Some(s), Some(b), Some(k)) => heads.push(Head {
                    stride: stride as f32,
                    anchors,
                    outputs: (s, b, k),
                }),
                _ => {
                    return Err(check.err(format!(
                        "outputs do not fit the scrfd family (want [1, {n}, 1|4|10] scores, boxes \
                         and keypoints for stride {stride})"
                    )))
                }
            }
        }
        Ok(Self {
            c: DetectorCommon {
                spec: PreprocessSpec {
                    width: side,
                    height: side,
                    resize: Resize::Letterbox,
                    layout: Layout::Nchw,
                    elem: ElementType::F32,
                    mean: [127.5; 3],
                    std: [128.0; 3],
                    pad: 0,
                },
                labels: labels.unwrap_or_else(|| Labels::parse("0 face")),
                score_threshold: m.score_threshold,
                iou_threshold: m.iou_threshold,
                max_detections: m.max_detections,
                model: check.model,
            },
            heads,
        })
    }
}

impl Detector for Scrfd {
    fn preprocess(&self) -> &PreprocessSpec {
        &self.c.spec
    }

    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError> {
        let mut dets = Vec::new();
        for Head {
            stride,
            anchors,
            outputs: (si, bi, ki),
        } in &self.heads
        {
            let (scores, boxes, kps) = (&outputs[*si], &outputs[*bi], &outputs[*ki]);
            let n = anchors.len();
            if scores.data.len() != n || boxes.data.len() != n * 4 || kps.data.len() != n * 10 {
                return Err(ModelError::OutputShape {
                    model: self.c.model.clone(),
                    output: scores.name.clone(),
                    shape: scores.data.shape().to_vec(),
                    reason: format!("want {n} anchors at stride {stride}"),
                });
            }
            let b: Vec<f32> = boxes.data.iter().copied().collect();
            let k: Vec<f32> = kps.data.iter().copied().collect();
            for (i, (&score, &(ax, ay))) in scores.data.iter().zip(anchors).enumerate() {
                if score.is_nan() || score < self.c.score_threshold {
                    continue;
                }
                let d = &b[i * 4..i * 4 + 4];
                let bbox = [
                    ax - d[0] * stride,
                    ay - d[1] * stride,
                    ax + d[2] * stride,
                    ay + d[3] * stride,
                ];
                let mut det = self.c.detection(0, score, t, bbox);
                det.keypoints = KEYPOINTS
                    .iter()
                    .zip(k[i * 10..i * 10 + 10].chunks_exact(2))
                    .map(|(&name, p)| {
                        let (x, y) = t.to_source(ax + p[0] * stride, ay + p[1] * stride);
                        Keypoint { name, x, y }
                    })
                    .collect();
                dets.push(det);
            }
        }
        Ok(self.c.finish(dets))
    }
}
