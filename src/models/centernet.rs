//! CenterNet (TF.js MobileNetV3 export): top-100 detections decoded inside the graph.
//!
//! Output `[1, 100, 6]` rows are `x1, y1, x2, y2, score, class`, boxes in model-input pixels,
//! classes 0-based COCO-80. The graph's 3x3 peak extraction stands in for NMS, but a large object
//! can still give two peaks (the bus in `bus.jpg` does), so a class-wise NMS follows.
//! Input: NHWC RGB float in 0..255, stretched to the input size.

use super::detector::{input_hw, Detector, DetectorCommon, IoCheck, ModelError};
use super::labels::Labels;
use super::manifest::Manifest;
use crate::detection::Detection;
use crate::preprocess::{Layout, PreprocessSpec, Resize, Transform};
use crate::tensor::{ElementType, ModelIo, Output};

pub struct CenterNet {
    c: DetectorCommon,
}

impl CenterNet {
    pub fn new(m: &Manifest, io: &ModelIo, labels: Option<Labels>) -> Result<Self, ModelError> {
        let check = IoCheck::new(m);
        let err = |reason: String| check.err(reason);
        let input = check.input(io)?;
        if input.shape.len() != 4 || input.shape[3] != 3 || input.elem != ElementType::F32 {
            return Err(err(format!(
                "CenterNet expects a float [1, H, W, 3] input, got {input}"
            )));
        }
        let out = check.output(io)?;
        if out.shape.len() != 3 || out.shape[2] != 6 {
            return Err(err(format!(
                "outputs do not fit the centernet family (want [1, N, 6] = x1, y1, x2, y2, score, class; got {out})"
            )));
        }
        let (h, w) = input_hw(&input.shape, true);
        let [dw, dh] = m.input_size.unwrap_or([512, 512]);
        Ok(Self {
            c: DetectorCommon {
                spec: PreprocessSpec {
                    width: w.unwrap_or(dw),
                    height: h.unwrap_or(dh),
                    resize: Resize::Stretch,
                    layout: Layout::Nhwc,
                    elem: ElementType::F32,
                    mean: [0.0; 3],
                    std: [1.0; 3],
                    pad: 0,
                },
                labels: labels.unwrap_or_default(),
                score_threshold: m.score_threshold,
                iou_threshold: m.iou_threshold,
                max_detections: m.max_detections,
                model: check.model.clone(),
            },
        })
    }
}

impl Detector for CenterNet {
    fn preprocess(&self) -> &PreprocessSpec {
        &self.c.spec
    }

    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError> {
        let o = &outputs[0];
        let v: Vec<f32> = o.data.iter().copied().collect();
        if !v.len().is_multiple_of(6) {
            return Err(ModelError::OutputShape {
                model: self.c.model.clone(),
                output: o.name.clone(),
                shape: o.data.shape().to_vec(),
                reason: "not rows of 6".into(),
            });
        }
        let mut dets = Vec::new();
        for r in v.chunks_exact(6) {
            let score = r[4];
            // NaN scores fail this too.
            if score.is_nan() || score < self.c.score_threshold {
                continue;
            }
            let d = self.c.detection(
                r[5].max(0.0).round() as u32,
                score,
                t,
                [r[0], r[1], r[2], r[3]],
            );
            if d.bbox.x2 > d.bbox.x1 && d.bbox.y2 > d.bbox.y1 {
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
    use ndarray::arr3;

    #[test]
    fn decodes_rows_to_source_pixels() {
        let m: Manifest =
            toml::from_str("name='c'\nfamily='centernet'\nfile='c.onnx'\nscore_threshold=0.3")
                .unwrap();
        let io = ModelIo {
            inputs: vec![TensorInfo {
                name: "x".into(),
                elem: ElementType::F32,
                shape: vec![1, 512, 512, 3],
            }],
            outputs: vec![TensorInfo {
                name: "d".into(),
                elem: ElementType::F32,
                shape: vec![1, 100, 6],
            }],
            metadata: Default::default(),
        };
        let c = CenterNet::new(&m, &io, Some(Labels::parse("0 person\n5 bus"))).unwrap();
        let out = Output {
            name: "d".into(),
            data: arr3(&[[
                [100.0, 50.0, 300.0, 450.0, 0.9, 5.0],
                [10.0, 10.0, 20.0, 30.0, 0.2, 0.0],
                [0.0, 256.0, 256.0, 512.0, 0.5, 0.0],
                // A second peak on the bus: suppressed.
                [101.0, 52.0, 302.0, 455.0, 0.4, 5.0],
            ]])
            .into_dyn(),
        };
        // A 1024x768 source stretched to 512x512.
        let t = Transform {
            scale_x: 0.5,
            scale_y: 512.0 / 768.0,
            pad_x: 0.0,
            pad_y: 0.0,
            src_width: 1024,
            src_height: 768,
        };
        let d = c.decode(&[out], &t).unwrap();
        assert_eq!(
            d.len(),
            2,
            "the 0.2 row is under the threshold, the 0.4 bus a duplicate"
        );
        assert_eq!(
            (d[0].label.as_str(), d[1].label.as_str()),
            ("bus", "person")
        );
        assert_eq!((d[0].bbox.x1, d[0].bbox.y1), (200.0, 75.0));
        assert_eq!((d[0].bbox.x2, d[0].bbox.y2), (600.0, 675.0));
        assert_eq!((d[1].bbox.y1, d[1].bbox.y2), (384.0, 768.0));
    }
}
