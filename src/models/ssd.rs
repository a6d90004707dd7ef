//! SSD with post-processing in the graph (TFLite `TFLite_Detection_PostProcess`, as in
//! SSD MobileNetV2 COCO): outputs are boxes `[1, N, 4]` as normalised (ymin, xmin, ymax, xmax),
//! classes `[1, N]`, scores `[1, N]` and a count `[1]`. The image is stretched to the input.

use super::detector::{input_hw, Detector, IoCheck, ModelError};
use super::labels::Labels;
use super::manifest::Manifest;
use crate::detection::{BBox, Detection};
use crate::preprocess::{Layout, PreprocessSpec, Resize, Transform};
use crate::tensor::{ElementType, ModelIo, Output};

pub struct Ssd {
    spec: PreprocessSpec,
    labels: Labels,
    score_threshold: f32,
    model: String,
    /// Output positions of boxes, classes, scores and count.
    idx: [usize; 4],
}

impl Ssd {
    pub fn new(m: &Manifest, io: &ModelIo, labels: Option<Labels>) -> Result<Self, ModelError> {
        let check = IoCheck::new(m);
        let err = |reason: String| check.err(reason);
        let input = check.input(io)?;
        if input.shape.len() != 4 {
            return Err(err(format!(
                "SSD expects a 4-D image input, {input} is not"
            )));
        }
        let nhwc = input.shape[3] == 3;
        let (h, w) = input_hw(&input.shape, nhwc);
        let [dw, dh] = m.input_size.unwrap_or([300, 300]);
        let (elem, mean, std) = match input.elem {
            ElementType::U8 => (ElementType::U8, [0.0; 3], [1.0; 3]),
            ElementType::F32 => (ElementType::F32, [127.5; 3], [127.5; 3]),
            other => return Err(err(format!("SSD input type {other:?} is not supported"))),
        };
        let spec = PreprocessSpec {
            width: w.unwrap_or(dw),
            height: h.unwrap_or(dh),
            resize: Resize::Stretch,
            layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
            elem,
            mean,
            std,
            pad: 0,
        };

        // Post-processed SSD outputs: one rank-3 box tensor ending in 4, two rank-2 tensors
        // (classes, then scores, in TFLite's order) and one count.
        let rank = |r: usize| {
            io.outputs
                .iter()
                .enumerate()
                .filter(move |(_, o)| o.shape.len() == r)
                .map(|(i, _)| i)
        };
        let boxes = rank(3).find(|&i| io.outputs[i].shape[2] == 4);
        let pairs: Vec<usize> = rank(2).collect();
        let count = rank(1).next();
        let (Some(boxes), [classes, scores], Some(count)) = (boxes, pairs.as_slice(), count) else {
            let got: Vec<String> = io.outputs.iter().map(|o| o.to_string()).collect();
            return Err(err(format!(
                "outputs do not fit the ssd family (want boxes [1,N,4], classes [1,N], scores [1,N], count [1]; got {})",
                got.join(", ")
            )));
        };
        Ok(Self {
            spec,
            labels: labels.unwrap_or_default(),
            score_threshold: m.score_threshold,
            model: check.model.clone(),
            idx: [boxes, *classes, *scores, count],
        })
    }
}

impl Detector for Ssd {
    fn preprocess(&self) -> &PreprocessSpec {
        &self.spec
    }

    fn decode(&self, outputs: &[Output], t: &Transform) -> Result<Vec<Detection>, ModelError> {
        let get = |i: usize| &outputs[self.idx[i]];
        let (boxes, classes, scores, count) = (get(0), get(1), get(2), get(3));
        let n = boxes.data.shape().get(1).copied().unwrap_or(0);
        let shape_err = |o: &Output, reason: &str| ModelError::OutputShape {
            model: self.model.clone(),
            output: o.name.clone(),
            shape: o.data.shape().to_vec(),
            reason: reason.into(),
        };
        if boxes.data.len() < n * 4 || classes.data.len() < n || scores.data.len() < n {
            return Err(shape_err(boxes, "fewer values than detections"));
        }
        let count = count
            .data
            .iter()
            .next()
            .copied()
            .ok_or_else(|| shape_err(count, "empty count"))?;
        let count = (count.max(0.0) as usize).min(n);
        let b: Vec<f32> = boxes.data.iter().copied().collect();
        let c: Vec<f32> = classes.data.iter().copied().collect();
        let s: Vec<f32> = scores.data.iter().copied().collect();
        let (iw, ih) = (self.spec.width as f32, self.spec.height as f32);
        let mut dets = Vec::new();
        for i in 0..count {
            if s[i] < self.score_threshold {
                continue;
            }
            let [ymin, xmin, ymax, xmax] = [b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]];
            let (x1, y1) = t.to_source(xmin * iw, ymin * ih);
            let (x2, y2) = t.to_source(xmax * iw, ymax * ih);
            let class_id = c[i].max(0.0).round() as u32;
            dets.push(Detection {
                class_id,
                label: self.labels.name(class_id),
                score: s[i],
                bbox: BBox { x1, y1, x2, y2 },
                keypoints: Vec::new(),
                track_id: None,
                name: None,
            });
        }
        Ok(dets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::manifest::Family;
    use crate::tensor::TensorInfo;
    use ndarray::{arr1, arr2, arr3};

    fn io() -> ModelIo {
        let t = |name: &str, elem, shape: &[i64]| TensorInfo {
            name: name.into(),
            elem,
            shape: shape.to_vec(),
        };
        ModelIo {
            inputs: vec![t("img", ElementType::U8, &[1, 300, 300, 3])],
            outputs: vec![
                t("boxes", ElementType::F32, &[1, 3, 4]),
                t("classes", ElementType::F32, &[1, 3]),
                t("scores", ElementType::F32, &[1, 3]),
                t("count", ElementType::F32, &[1]),
            ],
            metadata: Default::default(),
        }
    }

    fn manifest() -> Manifest {
        toml::from_str::<Manifest>("name='t'\nfamily='ssd'\nfile='x.onnx'\nscore_threshold=0.5")
            .unwrap()
    }

    #[test]
    fn decodes_hand_built_outputs_to_source_pixels() {
        let ssd = Ssd::new(&manifest(), &io(), Some(Labels::parse("0 person\n5 bus"))).unwrap();
        assert_eq!(manifest().family, Family::Ssd);
        assert_eq!(ssd.preprocess().layout, Layout::Nhwc);
        let out = |name: &str, data: ndarray::ArrayD<f32>| Output {
            name: name.into(),
            data,
        };
        let outputs = vec![
            out(
                "boxes",
                arr3(&[[
                    [0.1, 0.2, 0.5, 0.4],
                    [0.0, 0.0, 1.0, 1.0],
                    [0.5, 0.5, 0.6, 0.6],
                ]])
                .into_dyn(),
            ),
            out("classes", arr2(&[[0.0, 5.0, 0.0]]).into_dyn()),
            out("scores", arr2(&[[0.9, 0.3, 0.8]]).into_dyn()),
            // Only the first two detections are valid; the third must be ignored.
            out("count", arr1(&[2.0]).into_dyn()),
        ];
        // A 640x480 frame stretched to 300x300.
        let t = Transform {
            scale_x: 300.0 / 640.0,
            scale_y: 300.0 / 480.0,
            pad_x: 0.0,
            pad_y: 0.0,
            src_width: 640,
            src_height: 480,
        };
        let dets = ssd.decode(&outputs, &t).unwrap();
        assert_eq!(
            dets.len(),
            1,
            "score 0.3 is below the threshold, index 2 beyond count"
        );
        let d = &dets[0];
        assert_eq!(d.label, "person");
        let b = d.bbox;
        for (got, want) in [(b.x1, 128.0), (b.y1, 48.0), (b.x2, 256.0), (b.y2, 240.0)] {
            assert!((got - want).abs() < 0.01, "{b:?}");
        }
    }

    #[test]
    fn rejects_outputs_of_another_family() {
        let mut io = io();
        io.outputs = vec![TensorInfo {
            name: "output0".into(),
            elem: ElementType::F32,
            shape: vec![1, 84, 8400],
        }];
        let e = Ssd::new(&manifest(), &io, None).err().unwrap().to_string();
        assert!(e.contains("do not fit the ssd family"), "{e}");
    }
}
