//! Detections in source pixels, and the non-maximum suppression that model families share.

use serde::Serialize;

/// An axis-aligned box in source pixels, corners (x1, y1) top-left and (x2, y2) bottom-right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// A named landmark of a detection (a face's eyes, nose tip, ...), in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Keypoint {
    pub name: &'static str,
    pub x: f32,
    pub y: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub class_id: u32,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// Landmarks, for families that give them (BlazeFace: six per face, which face alignment
    /// needs); empty, and left out of the events, otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keypoints: Vec<Keypoint>,
    /// The object's ID within its stream, once its track is reported (see [`crate::track`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// Who the object is, once a recogniser has named its track (faces; see `crate::faces`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Greedy non-maximum suppression within each class: keeps the best-scoring box and drops every
/// box of the same class overlapping it by more than `iou_threshold`. At most `max_keep` survive,
/// best first.
pub fn nms_per_class(
    mut dets: Vec<Detection>,
    iou_threshold: f32,
    max_keep: usize,
) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.len() >= max_keep {
            break;
        }
        let suppressed = keep
            .iter()
            .any(|k| k.class_id == d.class_id && k.bbox.iou(&d.bbox) > iou_threshold);
        if !suppressed {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: u32, score: f32, x1: f32) -> Detection {
        Detection {
            class_id,
            label: String::new(),
            score,
            bbox: BBox {
                x1,
                y1: 0.0,
                x2: x1 + 10.0,
                y2: 10.0,
            },
            keypoints: Vec::new(),
            track_id: None,
            name: None,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 10.0,
            y2: 10.0,
        };
        let b = BBox {
            x1: 5.0,
            y1: 0.0,
            x2: 15.0,
            y2: 10.0,
        };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(
            a.iou(&BBox {
                x1: 20.0,
                y1: 20.0,
                x2: 30.0,
                y2: 30.0
            }),
            0.0
        );
    }

    #[test]
    fn nms_suppresses_only_within_a_class() {
        let out = nms_per_class(
            vec![
                det(0, 0.9, 0.0),
                det(0, 0.8, 1.0),
                det(1, 0.7, 1.0),
                det(0, 0.6, 50.0),
            ],
            0.5,
            10,
        );
        let got: Vec<(u32, f32)> = out.iter().map(|d| (d.class_id, d.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.7), (0, 0.6)]);
    }
}
