//! `edgesight bench --suite faces`: how well and how fast faces are recognised.
//!
//! - **Verification** on the identity photos setup provides: dlib's chips of five people,
//!   face-recognition's Obama and Biden photos, and every face of dlib's crowd photos as a
//!   stranger. For each detector's alignment (BlazeFace's four points, SCRFD's five) and each
//!   embedder (FP32, and the `--model-dir` artifact when given): AUC, equal-error rate, the
//!   threshold at a 0.1 % false-accept rate, and rank-1 (the nearest other photo is the same
//!   person).
//! - **Speed**: faces per second through detect, align and embed, per detector.
//! - **Per-track saving**: faces embedded against faces seen, through the pipeline on
//!   `carphone_pristine.mp4`.
//! - **Faces inside person boxes**: faces found and time per photo, BlazeFace on the whole
//!   photo against SSD's persons searched with BlazeFace.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Engine, EngineConfig};
use crate::faces::gallery::{Enrollment, Gallery, OnExisting};
use crate::faces::verify::Roc;
use crate::faces::{FaceDetector, FaceEmbedder, FaceError, FacesSettings};
use crate::frame::{Frame, PixelFormat};
use crate::ingest::{Decoder, Next};
use crate::models::{build_detector, Manifest};
use crate::pipeline::{self, PipelineError, RunSpec};
use crate::preprocess::Preprocessor;

#[derive(Debug, thiserror::Error)]
pub enum FacesBenchError {
    #[error(transparent)]
    Face(#[from] FaceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub detector: String,
    pub embedder: String,
    pub faces: usize,
    pub identities: usize,
    pub same_pairs: usize,
    pub different_pairs: usize,
    pub auc: f64,
    pub eer: f64,
    pub threshold_at_far_0_001: f32,
    pub tar_at_far_0_001: f64,
    pub rank1: f64,
    /// Mean similarity of same-person and of different-person pairs, and their separation
    /// (d′: the gap over the pooled spread). AUC saturates on so few people; d′ still shows
    /// what alignment costs.
    pub mean_same: f64,
    pub mean_different: f64,
    pub d_prime: f64,
    /// Photos without a usable face, left out.
    pub skipped: usize,
    /// The most similar pairs of different people: where false accepts would come from.
    pub closest_strangers: Vec<(String, String, f32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    pub detector: String,
    pub photos: usize,
    pub faces: usize,
    pub faces_per_s: f64,
    pub detect_ms_per_photo: f64,
    pub embed_ms_per_face: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Saving {
    pub clip: String,
    pub frames: u64,
    pub faces_seen: u64,
    pub embedded: u64,
    /// 1 − embedded / seen: the work saved against embedding every face of every frame.
    pub saving: f64,
    pub named: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InsidePersons {
    pub photos: usize,
    pub faces_whole_frame: usize,
    pub faces_in_persons: usize,
    pub ms_whole_frame: f64,
    pub ms_in_persons: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FacesReport {
    pub verification: Vec<Verification>,
    pub speed: Vec<Speed>,
    pub per_track: Saving,
    pub inside_persons: InsidePersons,
}

fn other(e: impl ToString) -> FacesBenchError {
    FacesBenchError::Other(e.to_string())
}

/// A photo as packed RGB. A small one (an identity chip, cropped tight around the face) is
/// set in the middle of a grey canvas three times its size, as a face in a photo would be:
/// detectors are not made for faces that fill the whole picture.
fn rgb_photo(path: &Path) -> Result<(Vec<u8>, (u32, u32)), FacesBenchError> {
    let f = photo(path)?;
    let rgb = f.rgb().ok_or_else(|| other("not RGB"))?;
    let (h, w) = (rgb.shape()[0], rgb.shape()[1]);
    if w.max(h) > 200 {
        return Ok((rgb.iter().copied().collect(), (w as u32, h as u32)));
    }
    let (cw, ch) = (w * 3, h * 3);
    let mut out = vec![128u8; cw * ch * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                out[((y + h) * cw + x + w) * 3 + c] = rgb[[y, x, c]];
            }
        }
    }
    Ok((out, (cw as u32, ch as u32)))
}

/// The first frame of a photo, as RGB.
fn photo(path: &Path) -> Result<Frame, FacesBenchError> {
    let mut d = Decoder::open_as(
        &path.to_string_lossy(),
        Arc::from("bench"),
        PixelFormat::Rgb,
    )
    .map_err(other)?;
    loop {
        match d.next(Duration::from_secs(10)).map_err(other)? {
            Next::Frame(f) => return Ok(f),
            Next::Pending => continue,
            Next::Eos => return Err(other(format!("{}: no frame", path.display()))),
        }
    }
}

fn images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v
}

/// (photo, identity): chips named `<person>-…`, `facerec-<person>…`; crowd photos give one
/// stranger per face, so their identity is None here.
fn identity_set(root: &Path) -> Vec<(PathBuf, Option<String>)> {
    let mut out = Vec::new();
    for d in ["calibration/face-chips", "calibration/heldout/face-chips"] {
        for p in images(&root.join(d)) {
            let id = crate::optimize::fidelity::identity_of(&p);
            out.push((p, id));
        }
    }
    for d in ["calibration/faces", "calibration/heldout/faces"] {
        for p in images(&root.join(d)) {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name == "dlib-bald_guys" {
                continue; // dlib's clustering example: four men, each several times
            }
            let id = name
                .strip_prefix("facerec-")
                .map(|n| n.trim_end_matches(char::is_numeric).to_string());
            out.push((p, id));
        }
    }
    out
}

fn mean_sd(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

fn d_prime(roc: &Roc) -> f64 {
    let ((ms, ss), (md, sd)) = (mean_sd(&roc.same), mean_sd(&roc.different));
    (ms - md) / ((ss * ss + sd * sd) / 2.0).sqrt().max(1e-9)
}

fn closest_strangers(embs: &[Vec<f32>], ids: &[String], n: usize) -> Vec<(String, String, f32)> {
    let mut pairs = Vec::new();
    for i in 0..embs.len() {
        for j in i + 1..embs.len() {
            if ids[i] != ids[j] {
                let s = crate::faces::gallery::similarity(&embs[i], &embs[j]);
                pairs.push((ids[i].clone(), ids[j].clone(), s));
            }
        }
    }
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2));
    pairs.truncate(n);
    pairs
}

/// Nearest-other-photo accuracy over the faces whose identity has at least two photos.
fn rank1(embs: &[Vec<f32>], ids: &[String]) -> f64 {
    let (mut hits, mut total) = (0, 0);
    for i in 0..embs.len() {
        if ids.iter().filter(|x| **x == ids[i]).count() < 2 {
            continue;
        }
        let best = (0..embs.len()).filter(|&j| j != i).max_by(|&a, &b| {
            let s = |j: usize| crate::faces::gallery::similarity(&embs[i], &embs[j]);
            s(a).total_cmp(&s(b))
        });
        total += 1;
        hits += usize::from(best.is_some_and(|j| ids[j] == ids[i]));
    }
    hits as f64 / total.max(1) as f64
}

fn verification(
    root: &Path,
    (det_name, four): (&str, bool),
    detector: &mut FaceDetector,
    embedder: &mut FaceEmbedder,
    embedder_name: &str,
) -> Result<(Verification, Speed), FacesBenchError> {
    let (mut embs, mut ids, mut skipped) = (Vec::new(), Vec::new(), 0);
    let (mut t_detect, mut t_embed, mut photos) = (Duration::ZERO, Duration::ZERO, 0);
    for (path, id) in identity_set(root) {
        let (rgb, (w, h)) = rgb_photo(&path)?;
        let view =
            ndarray::ArrayView3::from_shape((h as usize, w as usize, 3), &rgb).map_err(other)?;
        let t = Instant::now();
        let dets = detector.detect_rgb(view)?;
        t_detect += t.elapsed();
        photos += 1;
        let mut faces = FaceEmbedder::align_rgb(&rgb, (w, h), &dets, four);
        // The gates the product applies: a stranger's 15-pixel face is not compared.
        let gates = crate::faces::quality::QualityGates::default();
        faces.retain(|f| f.quality.refusal(&gates).is_none());
        if id.is_some() {
            // An identity photo shows its person largest.
            faces.sort_by(|a, b| b.quality.side.total_cmp(&a.quality.side));
            faces.truncate(1);
        }
        if faces.is_empty() {
            skipped += 1;
            continue;
        }
        let t = Instant::now();
        embedder.embed_faces(&mut faces)?;
        t_embed += t.elapsed();
        for (i, f) in faces.into_iter().enumerate() {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            ids.push(id.clone().unwrap_or_else(|| format!("stranger-{stem}-{i}")));
            embs.push(f.embedding);
        }
    }
    let roc = Roc::of(&embs, &ids).ok_or_else(|| other("no pairs: run scripts/setup.sh"))?;
    let (threshold, tar) = roc.threshold_at_far(0.001);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    let v = Verification {
        detector: format!("{det_name} ({} points)", if four { 4 } else { 5 }),
        embedder: embedder_name.into(),
        faces: embs.len(),
        identities: distinct.len(),
        same_pairs: roc.same.len(),
        different_pairs: roc.different.len(),
        auc: roc.auc,
        eer: roc.eer.0,
        threshold_at_far_0_001: threshold,
        tar_at_far_0_001: tar,
        rank1: rank1(&embs, &ids),
        skipped,
        closest_strangers: closest_strangers(&embs, &ids, 5),
        mean_same: mean_sd(&roc.same).0,
        mean_different: mean_sd(&roc.different).0,
        d_prime: d_prime(&roc),
    };
    let secs = (t_detect + t_embed).as_secs_f64();
    let s = Speed {
        detector: det_name.into(),
        photos,
        faces: embs.len(),
        faces_per_s: embs.len() as f64 / secs.max(1e-9),
        detect_ms_per_photo: t_detect.as_secs_f64() * 1e3 / photos.max(1) as f64,
        embed_ms_per_face: t_embed.as_secs_f64() * 1e3 / embs.len().max(1) as f64,
    };
    Ok((v, s))
}

/// Enrolls the clip's face from its first frames, then runs the pipeline on it with
/// recognition on.
fn per_track(root: &Path, scratch: &Path) -> Result<Saving, FacesBenchError> {
    let clip = root.join("assets/carphone_pristine.mp4");
    let cfg = EngineConfig::default();
    let mut detector = FaceDetector::load(&Manifest::find("blazeface").map_err(other)?, &cfg)?;
    let mut embedder = FaceEmbedder::load(&Manifest::find("mobilefacenet").map_err(other)?, &cfg)?;
    std::fs::create_dir_all(scratch).map_err(other)?;
    let gallery_path = scratch.join("faces.db");
    let _ = std::fs::remove_file(&gallery_path);
    let mut gallery = Gallery::open(&gallery_path, embedder.id()).map_err(FaceError::from)?;
    let frame = photo(&clip)?;
    let mut faces = FaceEmbedder::align(&frame, &detector.detect(&frame)?);
    embedder.embed_faces(&mut faces)?;
    let entries: Vec<Enrollment> = faces
        .iter()
        .map(|f| Enrollment {
            embedding: f.embedding.clone(),
            quality: f.quality.weight(),
            source: clip.display().to_string(),
        })
        .collect();
    gallery
        .enroll("driver", &entries, OnExisting::Append)
        .map_err(FaceError::from)?;
    let mut spec = RunSpec::new(
        clip.to_string_lossy(),
        Manifest::find("blazeface").map_err(other)?,
        scratch.join("run"),
    );
    spec.write_video = false;
    spec.faces = Some(FacesSettings {
        gallery: gallery_path,
        ..FacesSettings::default()
    });
    let s = pipeline::run(&spec, &AtomicBool::new(false), &mut |_| {})?;
    let f = s.faces.unwrap_or_default();
    Ok(Saving {
        clip: "assets/carphone_pristine.mp4".into(),
        frames: s.frames,
        faces_seen: f.faces_seen,
        embedded: f.embedded,
        saving: 1.0 - f.embedded as f64 / f.faces_seen.max(1) as f64,
        named: f.identified.contains_key("driver"),
    })
}

/// BlazeFace on whole photos against BlazeFace inside SSD's person boxes (their top 60 %).
fn inside_persons(root: &Path) -> Result<InsidePersons, FacesBenchError> {
    let cfg = EngineConfig::default();
    let mut faces = FaceDetector::load(&Manifest::find("blazeface").map_err(other)?, &cfg)?;
    let ssd_m = Manifest::find("ssd-mobilenet-v2").map_err(other)?;
    let mut ssd = Engine::load(&ssd_m.file, &cfg).map_err(other)?;
    let ssd_dec = build_detector(&ssd_m, ssd.io()).map_err(other)?;
    let mut pre = Preprocessor::new(ssd_dec.preprocess().clone());
    let mut photos: Vec<PathBuf> = images(&root.join("calibration/faces"));
    photos.extend(images(&root.join("calibration/heldout/faces")));
    photos.extend([root.join("assets/bus.jpg"), root.join("assets/zidane.jpg")]);
    let mut r = InsidePersons {
        photos: photos.len(),
        faces_whole_frame: 0,
        faces_in_persons: 0,
        ms_whole_frame: 0.0,
        ms_in_persons: 0.0,
    };
    for p in &photos {
        let frame = photo(p)?;
        let t = Instant::now();
        r.faces_whole_frame += faces.detect(&frame)?.len();
        r.ms_whole_frame += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let (tensor, tr) = pre.run(frame.pixels()).map_err(other)?;
        let out = ssd.run(&tensor).map_err(other)?;
        for d in ssd_dec.decode(&out, &tr).map_err(other)? {
            if d.label != "person" {
                continue;
            }
            let b = d.bbox;
            let head = [b.x1, b.y1, b.x2, b.y1 + (b.y2 - b.y1) * 0.6];
            r.faces_in_persons += faces.detect_in(&frame, head)?.len().min(1);
        }
        r.ms_in_persons += t.elapsed().as_secs_f64() * 1e3;
    }
    r.ms_whole_frame /= photos.len() as f64;
    r.ms_in_persons /= photos.len() as f64;
    Ok(r)
}

/// The whole suite; `int8` is an embedder artifact folder from `optimize`, compared with FP32.
pub fn run(
    root: &Path,
    int8: Option<&Path>,
    scratch: &Path,
) -> Result<FacesReport, FacesBenchError> {
    let cfg = EngineConfig::default();
    let mut embedders: Vec<(String, FaceEmbedder)> = vec![(
        "mobilefacenet fp32".into(),
        FaceEmbedder::load(&Manifest::find("mobilefacenet").map_err(other)?, &cfg)?,
    )];
    if let Some(dir) = int8 {
        let art = crate::optimize::artifact::Artifact::load(dir).map_err(other)?;
        let e = FaceEmbedder::load(&art.model, &art.engine_config(dir, &cfg))?;
        embedders.push((format!("{} ({})", art.model.name, dir.display()), e));
    }
    let (mut verification_rows, mut speed) = (Vec::new(), Vec::new());
    // SCRFD twice: with its five points, and with BlazeFace's four made from them, so that
    // the cost of the coarser alignment is measured on the same faces.
    for (det, four) in [("blazeface", true), ("scrfd", false), ("scrfd", true)] {
        let mut d = FaceDetector::load(&Manifest::find(det).map_err(other)?, &cfg)?;
        for (i, (name, e)) in embedders.iter_mut().enumerate() {
            let (v, s) = verification(root, (det, four), &mut d, e, name)?;
            verification_rows.push(v);
            if i == 0 && (det == "blazeface" || !four) {
                speed.push(s);
            }
        }
    }
    Ok(FacesReport {
        verification: verification_rows,
        speed,
        per_track: per_track(root, scratch)?,
        inside_persons: inside_persons(root)?,
    })
}
