//! BlazeFace in `run`, judged against dlib's hand-drawn face boxes (`calibration/labels/`, from
//! the same Debian package as the photos): 43 faces in 10 crowd photos, small and large, some
//! turned away.

mod common;
use common::*;
use std::path::Path;

/// (left, top, right, bottom) of each labelled face in the photo named `file`, from both of
/// dlib's label files.
fn labelled_faces(file: &str) -> Vec<[f64; 4]> {
    let mut out = Vec::new();
    for set in ["training", "testing"] {
        let xml =
            std::fs::read_to_string(asset(&format!("calibration/labels/dlib-faces-{set}.xml")))
                .unwrap();
        let Some(start) = xml.find(&format!("<image file='{file}'")) else {
            continue;
        };
        let body = &xml[start..start + xml[start..].find("</image>").unwrap()];
        let attr = |s: &str, name: &str| -> f64 {
            let k = s.find(&format!("{name}='")).unwrap() + name.len() + 2;
            s[k..k + s[k..].find('\'').unwrap()].parse().unwrap()
        };
        for b in body.split("<box ").skip(1) {
            let (t, l) = (attr(b, "top"), attr(b, "left"));
            out.push([l, t, l + attr(b, "width"), t + attr(b, "height")]);
        }
    }
    out
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let i = ix * iy;
    i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)
}

/// Runs `model` on every labelled dlib photo: (the labelled boxes, the detections) per photo.
fn detect_labelled(model: &str) -> Vec<(Vec<[f64; 4]>, Vec<serde_json::Value>)> {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for dir in ["calibration/faces", "calibration/heldout/faces"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let Some(file) = name.strip_prefix("dlib-") else {
                continue;
            };
            let truth = labelled_faces(file);
            if truth.is_empty() {
                continue; // bald_guys.jpg and the Tom Cruise still carry no labels
            }
            let dir = tmp.path().join(&name);
            let o = edgesight(&[
                "run",
                path.to_str().unwrap(),
                "--model",
                model,
                "--no-video",
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{name}: {}", stderr(&o));
            let records = events(Path::new(&dir));
            let raw = records[0]["detections"].as_array().unwrap().clone();
            out.push((truth, raw));
        }
    }
    out
}

fn boxes(raw: &[serde_json::Value]) -> Vec<[f64; 4]> {
    raw.iter()
        .map(|d| {
            assert_eq!(d["label"], "face");
            let (x1, y1, x2, y2) = bbox(d);
            [x1, y1, x2, y2]
        })
        .collect()
}

/// (labelled faces, found at IoU 0.3, detections on no labelled face, mean IoU of the found).
fn recall(photos: &[(Vec<[f64; 4]>, Vec<serde_json::Value>)]) -> (usize, usize, usize, f64) {
    let (mut labels, mut found, mut stray, mut iou_sum) = (0, 0, 0, 0.0);
    for (truth, raw) in photos {
        let dets = boxes(raw);
        labels += truth.len();
        for t in truth {
            let best = dets.iter().map(|&d| iou(*t, d)).fold(0.0, f64::max);
            if best >= 0.3 {
                found += 1;
                iou_sum += best;
            }
        }
        stray += dets
            .iter()
            .filter(|&&d| truth.iter().all(|&t| iou(t, d) < 0.3))
            .count();
    }
    (labels, found, stray, iou_sum / found.max(1) as f64)
}

/// SCRFD (the non-commercial option) finds the faces BlazeFace misses, with the five ArcFace
/// landmarks in a face's order.
#[test]
fn scrfd_finds_the_labelled_faces_with_five_landmarks() {
    let photos = detect_labelled("scrfd");
    let (labels, found, _, mean_iou) = recall(&photos);
    assert_eq!(labels, 43);
    assert!(found >= 41, "found {found} of {labels} faces");
    // SCRFD also finds tiny background faces (under 20 px) that dlib did not label.
    let big: Vec<(Vec<[f64; 4]>, Vec<serde_json::Value>)> = photos
        .iter()
        .map(|(t, raw)| {
            let keep = raw.iter().filter(|d| {
                let (x1, y1, x2, y2) = bbox(d);
                (x2 - x1).min(y2 - y1) >= 20.0
            });
            (t.clone(), keep.cloned().collect())
        })
        .collect();
    let (_, _, stray, _) = recall(&big);
    assert!(
        stray <= 1,
        "{stray} detections of 20 px or more on no labelled face"
    );
    assert!(mean_iou > 0.5, "boxes fit loosely: {mean_iou}");
    let (mut faces, mut ordered) = (0, 0);
    for d in photos.iter().flat_map(|p| &p.1) {
        let k = d["keypoints"].as_array().unwrap();
        let names: Vec<&str> = k.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "right_eye",
                "left_eye",
                "nose_tip",
                "mouth_right",
                "mouth_left"
            ]
        );
        let at = |i: usize| (k[i]["x"].as_f64().unwrap(), k[i]["y"].as_f64().unwrap());
        let (re, le, nose, mr, ml) = (at(0), at(1), at(2), at(3), at(4));
        faces += 1;
        ordered += usize::from(
            re.0 < le.0 && mr.0 < ml.0 && re.1.max(le.1) < nose.1 && nose.1 < mr.1.min(ml.1),
        );
    }
    assert!(
        ordered * 10 >= faces * 9,
        "{ordered} of {faces} faces in a face's order"
    );
}

#[test]
fn blazeface_finds_the_labelled_faces() {
    let photos = detect_labelled("blazeface");
    let (labels, found, stray, mean_iou) = recall(&photos);
    // Landmarks of the faces found: (inside their box, in a face's order).
    let (mut faces, mut inside, mut ordered) = (0, 0, 0);
    for (_, raw) in &photos {
        for (d, b) in raw.iter().zip(boxes(raw)) {
            let k = d["keypoints"]
                .as_array()
                .expect("BlazeFace gives keypoints");
            let names: Vec<&str> = k.iter().map(|p| p["name"].as_str().unwrap()).collect();
            assert_eq!(
                names,
                [
                    "right_eye",
                    "left_eye",
                    "nose_tip",
                    "mouth",
                    "right_ear",
                    "left_ear"
                ]
            );
            let at = |i: usize| (k[i]["x"].as_f64().unwrap(), k[i]["y"].as_f64().unwrap());
            let (re, le, nose, mouth) = (at(0), at(1), at(2), at(3));
            faces += 1;
            // Eyes, nose and mouth lie in the face's box (ears may stick out of it).
            let within = |(x, y): (f64, f64)| x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3];
            inside += usize::from([re, le, nose, mouth].into_iter().all(within));
            // An upright face seen from the front: the subject's right eye on the image's
            // left, both eyes above the mouth, the nose between them in height.
            ordered += usize::from(re.0 < le.0 && re.1.max(le.1) < nose.1 && nose.1 < mouth.1);
        }
    }
    assert_eq!(labels, 43, "dlib labels 43 faces in these photos");
    // Measured: 38 of 43 (the misses are small faces turned away), none stray, IoU 0.75.
    assert!(found >= 35, "found {found} of {labels} faces");
    assert!(stray <= 2, "{stray} detections on no labelled face");
    assert!(mean_iou > 0.6, "boxes fit loosely: {mean_iou}");
    // Landmarks: every face's eyes, nose and mouth in its box, and in a face's order for
    // nearly all (these photos hold upright faces; a few turn away).
    println!("keypoints: {faces} faces, {inside} inside their box, {ordered} in order");
    assert!(faces >= found, "{faces} faces with keypoints");
    assert_eq!(inside, faces, "eyes, nose and mouth inside the box");
    assert!(
        ordered * 10 >= faces * 9,
        "{ordered} of {faces} faces in a face's order"
    );
}
