//! Ultralytics YOLOv8 / YOLO11 detection exports (`yolo export format=onnx`).
//!
//! Input `[B, 3, H, W]` float RGB in [0, 1], letterboxed with grey 114. Output `output0` is
//! `[B, 4 + C, N]`: for each of N anchors a box (cx, cy, w, h) in input pixels followed by C
//! class scores (already sigmoid-ed, no objectness). Class names come from the export's `names`
//! metadata, else from the manifest's labels file.

use super::detector::{input_hw, Detector, DetectorCommon, IoCheck, ModelError};
use super::labels::Labels;
use super::manifest::Manifest;
use crate::detection::Detection;
use crate::preprocess::{Layout, PreprocessSpec, Resize, Transform};
use crate::tensor::{ElementType, ModelIo, Output};

pub struct Yolov8 {
    c: DetectorCommon,
}

impl Yolov8 {
    pub fn new(m: &Manifest, io: &ModelIo, labels: Option<Labels>) -> Result<Self, ModelError> {
        let check = IoCheck::new(m);
        let err = |reason: String| check.err(reason);
        let input = check.input(io)?;
        if input.shape.len() != 4 || input.shape[1] != 3 || input.elem != ElementType::F32 {
            return Err(err(format!(
                "YOLOv8 expects a float [B, 3, H, W] input, got {input}"
            )));
        }
        let out = check.output(io)?;
        // [B, 4 + C, N] with N anchors (8400 at 640) far more than channels; SSD-style
        // [1, N, 4] boxes fail here.
        if out.shape.len() != 3
            || (out.shape[1] > 0 && out.shape[1] < 5)
            || (out.shape[2] > 0 && out.shape[2] < out.shape[1])
        {
            return Err(err(format!(
                "outputs do not fit the yolov8 family (want [B, 4 + classes, anchors]; got {out})"
            )));
        }
        let (h, w) = input_hw(&input.shape, false);
        let [dw, dh] = m.input_size.unwrap_or([640, 640]);
        let labels = io
            .metadata
            .get("names")
            .and_then(|n| Labels::from_ultralytics(n))
            .or(labels)
            .unwrap_or_default();
        if out.shape[1] > 4 && !labels.is_empty() && labels.len() != (out.shape[1] - 4) as usize {
            tracing::warn!(
                model = %check.model,
                labels = labels.len(),
                classes = out.shape[1] - 4,
                "label count differs from the model's class count"
            );
        }
        Ok(Self {
            c: DetectorCommon {
                spec: PreprocessSpec {
                    width: w.unwrap_or(dw),
                    height: h.unwrap_or(dh),
                    resize: Resize::Letterbox,
                    layout: Layout::Nchw,
                    elem: ElementType::F32,
                    mean: [0.0; 3],
                    std: [255.0; 3],
                    pad: 114,
                },
                labels,
                score_threshold: m.score_threshold,
                iou_threshold: m.iou_threshold,
                max_detections: m.max_detections,
                model: check.model.clone(),
            },
        })
    }
}

impl Detector for Yolov8 {
    fn preprocess(&self) -> &PreprocessSpec {
        &self.c.spec
    }

    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError> {
        let out = &outputs[0];
        let shape = out.data.shape();
        if shape.len() != 3 || shape[1] < 5 {
            return Err(ModelError::OutputShape {
                model: self.c.model.clone(),
                output: out.name.clone(),
                shape: shape.to_vec(),
                reason: "want [B, 4 + classes, anchors]".into(),
            });
        }
        let (classes, n) = (shape[1] - 4, shape[2]);
        let a = out.data.view();
        let a = a
            .index_axis(ndarray::Axis(0), 0)
            .into_dimensionality::<ndarray::Ix2>()
            .expect("rank checked above");
        // Best class per anchor, walking each class row contiguously.
        let mut best = vec![(0u32, f32::MIN); n];
        for c in 0..classes {
            let row = a.row(4 + c);
            for (b, &s) in best.iter_mut().zip(row.iter()) {
                if s > b.1 {
                    *b = (c as u32, s);
                }
            }
        }
        let mut dets = Vec::new();
        for (j, &(class_id, score)) in best.iter().enumerate() {
            if score < self.c.score_threshold {
                continue;
            }
            let (cx, cy, w, h) = (a[[0, j]], a[[1, j]], a[[2, j]], a[[3, j]]);
            let b = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
            dets.push(self.c.detection(class_id, score, t, b));
        }
        Ok(self.c.finish(dets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detection::BBox;
    use crate::tensor::TensorInfo;
    use ndarray::Array3;

    fn io(names: Option<&str>) -> ModelIo {
        let mut io = ModelIo {
            inputs: vec![TensorInfo {
                name: "images".into(),
                elem: ElementType::F32,
                shape: vec![-1, 3, 640, 640],
            }],
            outputs: vec![TensorInfo {
                name: "output0".into(),
                elem: ElementType::F32,
                shape: vec![-1, 7, 8400],
            }],
            metadata: Default::default(),
        };
        if let Some(n) = names {
            io.metadata.insert("names".into(), n.into());
        }
        io
    }

    fn manifest() -> Manifest {
        toml::from_str(
            "name='y'\nfamily='yolov8'\nfile='y.onnx'\nscore_threshold=0.25\niou_threshold=0.5",
        )
        .unwrap()
    }

    /// Five anchors, three classes: two overlapping persons (one must be suppressed), a car
    /// overlapping the first person (other class: kept), a weak box and a strong dog.
    fn outputs() -> Vec<Output> {
        let anchors: [([f32; 4], [f32; 3]); 5] = [
            ([100.0, 100.0, 50.0, 100.0], [0.9, 0.1, 0.0]),
            ([102.0, 101.0, 50.0, 100.0], [0.8, 0.0, 0.0]),
            ([100.0, 100.0, 50.0, 100.0], [0.0, 0.7, 0.0]),
            ([300.0, 300.0, 20.0, 20.0], [0.1, 0.2, 0.1]),
            ([400.0, 200.0, 80.0, 40.0], [0.0, 0.1, 0.95]),
        ];
        let mut a = Array3::<f32>::zeros((1, 7, 5));
        for (j, (b, s)) in anchors.iter().enumerate() {
            for k in 0..4 {
                a[[0, k, j]] = b[k];
            }
            for c in 0..3 {
                a[[0, 4 + c, j]] = s[c];
            }
        }
        vec![Output {
            name: "output0".into(),
            data: a.into_dyn(),
        }]
    }

    #[test]
    fn decodes_known_boxes_with_class_wise_nms() {
        let y = Yolov8::new(
            &manifest(),
            &io(Some("{0: 'person', 1: 'car', 2: 'dog'}")),
            None,
        )
        .unwrap();
        assert_eq!((y.preprocess().width, y.preprocess().height), (640, 640));
        // Identity transform: boxes stay in input pixels.
        let t = Transform {
            scale_x: 1.0,
            scale_y: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
            src_width: 640,
            src_height: 640,
        };
        let dets = y.decode(&outputs(), &t).unwrap();
        let got: Vec<(&str, f32)> = dets.iter().map(|d| (d.label.as_str(), d.score)).collect();
        assert_eq!(got, vec![("dog", 0.95), ("person", 0.9), ("car", 0.7)]);
        assert_eq!(
            dets[1].bbox,
            BBox {
                x1: 75.0,
                y1: 50.0,
                x2: 125.0,
                y2: 150.0
            }
        );
        assert_eq!(
            dets[0].bbox,
            BBox {
                x1: 360.0,
                y1: 180.0,
                x2: 440.0,
                y2: 220.0
            }
        );
    }

    #[test]
    fn maps_letterboxed_boxes_to_source_pixels() {
        let y = Yolov8::new(&manifest(), &io(None), None).unwrap();
        // A 1280x720 frame letterboxed into 640x640: scale 0.5, 140 rows of padding on top.
        let t = Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            pad_x: 0.0,
            pad_y: 140.0,
            src_width: 1280,
            src_height: 720,
        };
        let dets = y.decode(&outputs(), &t).unwrap();
        let dog = dets.iter().find(|d| d.class_id == 2).unwrap();
        assert_eq!(dog.label, "class 2", "no names metadata and no labels file");
        assert_eq!(
            dog.bbox,
            BBox {
                x1: 720.0,
                y1: 80.0,
                x2: 880.0,
                y2: 160.0
            }
        );
    }

    #[test]
    fn rejects_ssd_style_outputs() {
        let mut io = io(None);
        io.outputs[0].shape = vec![1, 10, 4];
        let e = Yolov8::new(&manifest(), &io, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("do not fit the yolov8 family"), "{e}");
    }
}
