//! `edgesight faces …`: the enrollment CLI. Every command that changes the gallery checks all
//! its inputs first and writes in one transaction, so a refused input or a kill leaves the
//! gallery as it was.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use edgesight::engine::EngineConfig;
use edgesight::faces::gallery::{
    Enrollment, Gallery, OnExisting, DEFAULT_MARGIN, DEFAULT_THRESHOLD,
};
use edgesight::faces::quality::QualityGates;
use edgesight::faces::{Face, FaceModels};
use edgesight::frame::{Frame, PixelFormat};
use edgesight::ingest::{Decoder, Next};
use edgesight::models::Manifest;

#[derive(Args)]
pub struct FacesArgs {
    #[command(subcommand)]
    cmd: FacesCmd,
    /// The gallery file (SQLite) [default: $EDGESIGHT_GALLERY, else faces.db].
    #[arg(long, global = true)]
    gallery: Option<PathBuf>,
    /// Face detector manifest: blazeface, or scrfd (InsightFace weights: non-commercial
    /// research use only).
    #[arg(long, global = true, default_value = "blazeface")]
    detector: String,
    /// Embedder manifest.
    #[arg(long, global = true, default_value = "mobilefacenet")]
    embedder: String,
    /// An embedder artifact folder written by `edgesight optimize` (e.g. INT8).
    #[arg(long, global = true)]
    model_dir: Option<PathBuf>,
    /// Cosine similarity a match needs.
    #[arg(long, global = true, default_value_t = DEFAULT_THRESHOLD)]
    threshold: f32,
    /// Lead the best person needs over the second-best.
    #[arg(long, global = true, default_value_t = DEFAULT_MARGIN)]
    margin: f32,
}

#[derive(Subcommand)]
enum FacesCmd {
    /// Enroll a person from photos, folders of photos, or a video with one face in it.
    Enroll {
        #[arg(long)]
        name: String,
        /// Refuse if NAME is already enrolled (by default new faces are added to it).
        #[arg(long)]
        new: bool,
        /// Where a photo shows several faces, take the largest instead of refusing.
        #[arg(long)]
        largest: bool,
        /// Enroll faces that fail the size, sharpness or frontal checks.
        #[arg(long)]
        force: bool,
        /// From a video: how many of its best frames to keep.
        #[arg(long, default_value_t = 5)]
        frames: usize,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// List the enrolled people.
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        name: String,
    },
    Rename {
        old: String,
        new: String,
    },
    /// Name every face in photos: box, best match or `unknown`, similarity and margin.
    Identify {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Whether two photos (one face each) show the same person.
    Verify {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write the gallery's embeddings and metadata to a JSON file.
    Export {
        file: PathBuf,
    },
    /// Add the people of an exported file.
    Import {
        file: PathBuf,
        /// Refuse names that are already enrolled (by default their faces are added).
        #[arg(long)]
        new: bool,
    },
    /// ROC figures and a threshold from labelled photos: DIR/<person>/*.jpg, or files named
    /// <person>-<anything>.jpg.
    Calibrate {
        dir: PathBuf,
        /// False-accept rate the suggested threshold keeps to.
        #[arg(long, default_value_t = 0.001)]
        far: f64,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: &FacesArgs) -> Result<ExitCode> {
    match &a.cmd {
        FacesCmd::Enroll {
            name,
            new,
            largest,
            force,
            frames,
            inputs,
        } => enroll(a, name, inputs, (*new, *largest, *force), *frames),
        FacesCmd::List { json } => list(a, *json),
        FacesCmd::Remove { name } => {
            let n = open_gallery(a, &load_models(a)?)?.remove(name)?;
            println!("removed {name} ({n} faces)");
            Ok(ExitCode::SUCCESS)
        }
        FacesCmd::Rename { old, new } => {
            open_gallery(a, &load_models(a)?)?.rename(old, new)?;
            println!("renamed {old} to {new}");
            Ok(ExitCode::SUCCESS)
        }
        FacesCmd::Identify { images, json } => identify(a, images, *json),
        FacesCmd::Verify { a: x, b: y, json } => verify(a, x, y, *json),
        FacesCmd::Export { file } => {
            let n = open_gallery(a, &load_models(a)?)?.export(file)?;
            println!("wrote {n} people to {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        FacesCmd::Import { file, new } => {
            let on = if *new {
                OnExisting::Refuse
            } else {
                OnExisting::Append
            };
            let out = open_gallery(a, &load_models(a)?)?.import(file, on)?;
            println!("imported {out:?} from {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        FacesCmd::Calibrate { dir, far, json } => calibrate(a, dir, *far, *json),
    }
}

fn gallery_path(a: &FacesArgs) -> PathBuf {
    a.gallery
        .clone()
        .or_else(|| std::env::var_os("EDGESIGHT_GALLERY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("faces.db"))
}

pub fn load_models(a: &FacesArgs) -> Result<FaceModels> {
    let detector = Manifest::find(&a.detector)?;
    let (embedder, cfg) = match &a.model_dir {
        Some(dir) => {
            let art = edgesight::optimize::artifact::Artifact::load(dir)?;
            let cfg = art.engine_config(dir, &EngineConfig::default());
            (art.model, cfg)
        }
        None => (Manifest::find(&a.embedder)?, EngineConfig::default()),
    };
    Ok(FaceModels::load(&detector, &embedder, &cfg)?)
}

fn open_gallery(a: &FacesArgs, models: &FaceModels) -> Result<Gallery> {
    Ok(Gallery::open(&gallery_path(a), models.embedder_id())?)
}

const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "webp", "tif"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The photos and videos named: folders give their photos, in name order.
fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| is_image(f))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no photos in this folder", p.display());
            }
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file", p.display());
        }
    }
    Ok(out)
}

/// The decoded frames of a photo (one) or a video, as RGB.
fn frames_of(path: &Path, each: &mut dyn FnMut(Frame) -> Result<()>) -> Result<()> {
    let uri = path.to_string_lossy().to_string();
    let mut d = Decoder::open_as(&uri, Arc::from("faces"), PixelFormat::Rgb)
        .with_context(|| format!("{}: cannot decode it as a photo or a video", path.display()))?;
    loop {
        match d.next(Duration::from_secs(10)) {
            Ok(Next::Frame(f)) => each(f)?,
            Ok(Next::Eos) => return Ok(()),
            Ok(Next::Pending) => bail!("{}: the decoder stalled", path.display()),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        }
    }
}

/// Every face of a photo (of a video's first frame).
fn faces_of_photo(models: &mut FaceModels, path: &Path) -> Result<Vec<Face>> {
    let mut faces = None;
    frames_of(path, &mut |f| {
        if faces.is_none() {
            faces = Some(models.faces(&f)?);
        }
        Ok(())
    })?;
    Ok(faces.unwrap_or_default())
}

/// The one face of a photo, by the enrollment rules.
fn photo_face(
    models: &mut FaceModels,
    path: &Path,
    largest: bool,
    force: bool,
    gates: &QualityGates,
) -> Result<Face> {
    let faces = faces_of_photo(models, path)?;
    let n = faces.len();
    if n == 0 {
        bail!("{}: no face found", path.display());
    }
    if n > 1 && !largest {
        bail!(
            "{}: {n} faces found; pass --largest to enroll the largest",
            path.display()
        );
    }
    let face = faces
        .into_iter()
        .max_by(|a, b| a.quality.side.total_cmp(&b.quality.side))
        .expect("at least one face");
    if let (Some(why), false) = (face.quality.refusal(gates), force) {
        bail!(
            "{}: {why}; pass --force to enroll it anyway",
            path.display()
        );
    }
    Ok(face)
}

fn enrollment(face: &Face, source: &Path) -> Enrollment {
    Enrollment {
        embedding: face.embedding.clone(),
        quality: face.quality.weight(),
        source: source.display().to_string(),
    }
}

fn enroll(
    a: &FacesArgs,
    name: &str,
    inputs: &[PathBuf],
    (new, largest, force): (bool, bool, bool),
    frames: usize,
) -> Result<ExitCode> {
    let mut models = load_models(a)?;
    let mut gallery = open_gallery(a, &models)?;
    let gates = QualityGates::default();
    let mut entries = Vec::new();
    for path in expand(inputs)? {
        if is_image(&path) {
            let face = photo_face(&mut models, &path, largest, force, &gates)?;
            entries.push(enrollment(&face, &path));
        } else {
            let faces = best_faces(&mut models, &path, frames, largest, &gates)?;
            entries.extend(faces.iter().map(|f| enrollment(f, &path)));
        }
    }
    let on = if new {
        OnExisting::Refuse
    } else {
        OnExisting::Append
    };
    let out = gallery.enroll(name, &entries, on)?;
    println!(
        "enrolled {name}: {} new faces, {} in all{}",
        out.added,
        out.total,
        if out.person_created {
            " (new person)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn list(a: &FacesArgs, json: bool) -> Result<ExitCode> {
    let people = open_gallery(a, &load_models(a)?)?.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&people)?);
    } else if people.is_empty() {
        println!("nobody enrolled in {}", gallery_path(a).display());
    } else {
        for p in &people {
            println!(
                "{}\t{} faces\tfrom {}",
                p.name,
                p.embeddings,
                p.sources.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn identify(a: &FacesArgs, images: &[PathBuf], json: bool) -> Result<ExitCode> {
    let mut models = load_models(a)?;
    let matcher = open_gallery(a, &models)?.matcher()?;
    for path in expand(images)? {
        let faces = faces_of_photo(&mut models, &path)?;
        if faces.is_empty() {
            eprintln!("{}: no face found", path.display());
        }
        for f in &faces {
            let who = matcher.identify(&f.embedding, a.threshold, a.margin);
            let b = f.detection.bbox;
            let (name, score) = match (&who.name, &who.best) {
                (Some(n), Some((_, s))) => (n.as_str(), *s),
                (None, best) => ("unknown", best.as_ref().map_or(0.0, |b| b.1)),
                (Some(n), None) => (n.as_str(), 0.0),
            };
            if json {
                let line = serde_json::json!({
                    "file": path.display().to_string(),
                    "box": [b.x1, b.y1, b.x2, b.y2],
                    "name": name,
                    "nearest": who.best.as_ref().map(|b| &b.0),
                    "similarity": score,
                    "margin": who.margin,
                    "quality": f.quality,
                });
                println!("{line}");
            } else {
                println!(
                    "{}\t[{:.0}, {:.0}, {:.0}, {:.0}]\t{name}\tsimilarity {score:.3}\tmargin {:.3}",
                    path.display(),
                    b.x1,
                    b.y1,
                    b.x2,
                    b.y2,
                    who.margin
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(a: &FacesArgs, x: &Path, y: &Path, json: bool) -> Result<ExitCode> {
    let mut models = load_models(a)?;
    let gates = QualityGates::default();
    let fx = photo_face(&mut models, x, true, true, &gates)?;
    let fy = photo_face(&mut models, y, true, true, &gates)?;
    let s = edgesight::faces::gallery::similarity(&fx.embedding, &fy.embedding);
    let same = s >= a.threshold;
    if json {
        println!(
            "{}",
            serde_json::json!({"similarity": s, "threshold": a.threshold, "same": same})
        );
    } else {
        let verdict = if same {
            "same person"
        } else {
            "different people"
        };
        println!(
            "similarity {s:.3} (threshold {:.3}): {verdict}",
            a.threshold
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The identity of a labelled photo: its folder's name under `root`, or the part of its file
/// name before the first `-`.
fn identity(root: &Path, p: &Path) -> Option<String> {
    let parent = p.parent()?;
    if parent != root {
        return parent.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    edgesight::optimize::fidelity::identity_of(p)
}

fn calibrate(a: &FacesArgs, dir: &Path, far: f64, json: bool) -> Result<ExitCode> {
    let mut models = load_models(a)?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            files.extend(expand(std::slice::from_ref(&p))?);
        } else if is_image(&p) {
            files.push(p);
        }
    }
    files.sort();
    let (mut embs, mut ids, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let pb = crate::progress::progress_bar();
    pb.set_length(files.len() as u64);
    for p in &files {
        pb.inc(1);
        let Some(id) = identity(dir, p) else {
            skipped.push(format!("{}: no identity in its name", p.display()));
            continue;
        };
        match photo_face(&mut models, p, true, true, &QualityGates::default()) {
            Ok(f) => {
                embs.push(f.embedding);
                ids.push(id);
            }
            Err(e) => skipped.push(format!("{e:#}")),
        }
    }
    pb.finish_and_clear();
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    let roc = edgesight::faces::verify::Roc::of(&embs, &ids).with_context(|| {
        format!(
            "{}: calibrating needs at least two photos of one person and two people",
            dir.display()
        )
    })?;
    let (threshold, tar) = roc.threshold_at_far(far);
    if json {
        let v = serde_json::json!({
            "faces": embs.len(), "same_pairs": roc.same.len(), "different_pairs": roc.different.len(),
            "auc": roc.auc, "eer": roc.eer.0, "eer_threshold": roc.eer.1,
            "far": far, "threshold": threshold, "tar": tar,
        });
        println!("{v}");
    } else {
        println!(
            "{} faces, {} same-person pairs, {} different-person pairs",
            embs.len(),
            roc.same.len(),
            roc.different.len()
        );
        println!(
            "AUC {:.4}, equal error rate {:.3} at {:.3}",
            roc.auc, roc.eer.0, roc.eer.1
        );
        for t in [0.2f32, 0.3, 0.4, 0.5, 0.6] {
            let (fa, fr) = roc.rates(t);
            println!(
                "threshold {t:.2}: false accepts {:.4}, true accepts {:.4}",
                fa,
                1.0 - fr
            );
        }
        println!(
            "suggested --threshold {threshold:.3} (false accepts ≤ {far}, true accepts {tar:.3})"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The best faces of a video's one face track: the video is tracked, and the `keep` heaviest
/// faces (by quality weight) of its longest track are taken. More than one track that lasts is
/// refused unless `largest`, which takes the track with the largest faces.
fn best_faces(
    models: &mut FaceModels,
    path: &Path,
    keep: usize,
    largest: bool,
    gates: &QualityGates,
) -> Result<Vec<Face>> {
    use edgesight::track::{Tracker, TrackerSettings};
    use std::collections::BTreeMap;
    let mut tracker = Tracker::new(TrackerSettings::default());
    let mut by_track: BTreeMap<u64, Vec<Face>> = BTreeMap::new();
    let mut n = 0u64;
    frames_of(path, &mut |f| {
        let mut dets = models.detect(&f)?;
        let t = f.pts.map_or(n as f64 / 25.0, |p| p.nseconds() as f64 / 1e9);
        tracker.update(t, f.number, &mut dets);
        let tracked: Vec<_> = dets.into_iter().filter(|d| d.track_id.is_some()).collect();
        for face in models.describe(&f, &tracked)? {
            if face.quality.refusal(gates).is_none() {
                let id = face.detection.track_id.expect("tracked");
                by_track.entry(id).or_default().push(face);
            }
        }
        n += 1;
        Ok(())
    })?;
    // A track that lasts: at least a quarter of the longest one.
    let longest = by_track.values().map(Vec::len).max().unwrap_or(0);
    let mut lasting: Vec<Vec<Face>> = by_track
        .into_values()
        .filter(|v| v.len() * 4 >= longest && !v.is_empty())
        .collect();
    if lasting.is_empty() {
        bail!("{}: no usable face in {n} frames", path.display());
    }
    if lasting.len() > 1 && !largest {
        bail!(
            "{}: {} faces are tracked in this video; pass --largest to enroll the largest",
            path.display(),
            lasting.len()
        );
    }
    let side = |v: &Vec<Face>| v.iter().map(|f| f.quality.side).fold(0.0f32, f32::max);
    lasting.sort_by(|a, b| side(b).total_cmp(&side(a)));
    let mut faces = lasting.swap_remove(0);
    faces.sort_by(|a, b| b.quality.weight().total_cmp(&a.quality.weight()));
    faces.truncate(keep.max(1));
    Ok(faces)
}
