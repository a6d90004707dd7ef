//! Calibration: real images through the FP32 model, with the model family's own preprocessing,
//! collecting the statistics of every activation that feeds a quantizable op.
//!
//! The statistics (histograms, not ranges) are cached by model hash, image-set hash and
//! preprocessing, so trying another calibrator costs no new run ([`calibrated`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::calibrator::TensorStats;
use super::qdq;
use super::spec::{OptimizeError, ProgressFn};
use crate::engine::{Engine, EngineConfig};
use crate::frame::Frame;
use crate::ingest::{resolve_input, Decoder, Next};
use crate::onnx::Model;
use crate::preprocess::{PreprocessSpec, Preprocessor};
use crate::tensor::Tensor;

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];
/// More undecodable images than this share of the set is an error, not a skip.
const MAX_BAD_SHARE: f64 = 0.2;

/// A folder of images, sorted, with a hash of their names and bytes.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub dir: PathBuf,
    pub images: Vec<PathBuf>,
    pub sha256: String,
    /// Each image's own sha256, read with the set's, to tell a shared image by its bytes
    /// (`None` for a file that could not be read).
    digests: Vec<Option<[u8; 32]>>,
}

impl ImageSet {
    /// Every image under `dir` (one level of subfolders included), sorted by path.
    pub fn open(dir: &Path) -> Result<Self, OptimizeError> {
        if !dir.is_dir() {
            return Err(OptimizeError::Calibration {
                dir: dir.to_path_buf(),
                reason: "no such folder".into(),
            });
        }
        let mut images = Vec::new();
        let visit =
            |d: &Path, images: &mut Vec<PathBuf>| -> Vec<PathBuf> {
                let mut subdirs = Vec::new();
                for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        subdirs.push(p);
                    } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                        IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str())
                    }) {
                        images.push(p);
                    }
                }
                subdirs
            };
        for sub in visit(dir, &mut images) {
            // Held-out frames must never calibrate.
            if sub.file_name().is_some_and(|n| n == "heldout") {
                continue;
            }
            visit(&sub, &mut images);
        }
        images.sort();
        if images.is_empty() {
            return Err(OptimizeError::Calibration {
                dir: dir.to_path_buf(),
                reason: format!(
                    "no images ({}) in it; run calibration/fetch.sh or pass --calibration DIR",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
        let mut h = Sha256::new();
        let mut digests = Vec::with_capacity(images.len());
        for p in &images {
            h.update(
                p.strip_prefix(dir)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .as_bytes(),
            );
            let bytes = std::fs::read(p).ok();
            h.update(bytes.as_deref().unwrap_or_default());
            digests.push(bytes.map(|b| Sha256::digest(b).into()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            images,
            sha256: hex(&h.finalize()),
            digests,
        })
    }

    /// The first image of `self` whose bytes are also in `other`, with its twin there: a
    /// held-out set must share none with the calibration set, whatever the files are called.
    pub fn shared_with(&self, other: &ImageSet) -> Option<(PathBuf, PathBuf)> {
        let theirs: HashMap<&[u8; 32], &PathBuf> = other
            .digests
            .iter()
            .zip(&other.images)
            .filter_map(|(d, p)| Some((d.as_ref()?, p)))
            .collect();
        self.digests
            .iter()
            .zip(&self.images)
            .find_map(|(d, p)| Some((p.clone(), theirs.get(d.as_ref()?)?.to_path_buf())))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn file_sha256(path: &Path) -> Result<String, OptimizeError> {
    let bytes = std::fs::read(path).map_err(|e| OptimizeError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// One image, decoded by GStreamer as video is: an I420 [`Frame`], so calibration sees the
/// very pixels (colour conversion included) that `edgesight run` gives the model.
pub fn decode_image(path: &Path) -> Result<Frame, String> {
    let uri = resolve_input(&path.to_string_lossy()).map_err(|e| e.to_string())?;
    let mut dec = Decoder::open(&uri, "calibration".into()).map_err(|e| e.to_string())?;
    loop {
        match dec
            .next(Duration::from_millis(500))
            .map_err(|e| e.to_string())?
        {
            Next::Frame(f) => return Ok(f),
            Next::Pending => continue,
            Next::Eos => return Err("no frame".into()),
        }
    }
}

/// Preprocessed tensors of a set of images; undecodable ones are skipped and counted.
pub fn tensors(
    set: &ImageSet,
    spec: &PreprocessSpec,
    progress: &dyn Fn(u64, u64),
) -> Result<(Vec<Tensor>, Vec<String>), OptimizeError> {
    tensors_with(set, Preprocessor::new(spec.clone()), progress)
}

/// [`tensors`] through a preprocessor set up by the caller (another interpolation).
pub fn tensors_with(
    set: &ImageSet,
    mut pre: Preprocessor,
    progress: &dyn Fn(u64, u64),
) -> Result<(Vec<Tensor>, Vec<String>), OptimizeError> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, p) in set.images.iter().enumerate() {
        match decode_image(p) {
            Ok(img) => {
                let (t, _) = pre
                    .run(img.pixels())
                    .map_err(|e| OptimizeError::Calibration {
                        dir: set.dir.clone(),
                        reason: format!("{}: {e}", p.display()),
                    })?;
                out.push(t);
            }
            Err(e) => {
                tracing::warn!(image = %p.display(), error = %e, "skipping an image that does not decode");
                bad.push(format!("{}: {e}", p.display()));
            }
        }
        progress(i as u64 + 1, set.images.len() as u64);
    }
    if bad.len() as f64 > MAX_BAD_SHARE * set.images.len() as f64 || out.is_empty() {
        return Err(OptimizeError::Calibration {
            dir: set.dir.clone(),
            reason: format!(
                "{} of {} images do not decode (first: {})",
                bad.len(),
                set.images.len(),
                bad.first().map(String::as_str).unwrap_or("")
            ),
        });
    }
    Ok((out, bad))
}

/// What one calibration run measures.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Statistics {
    /// The distribution of every calibration tensor, for its quantization range.
    pub tensors: HashMap<String, TensorStats>,
    /// The mean of each channel of every weighted layer's input, for bias correction: the
    /// rounding error of a layer's int8 weights, times its input's mean, is a shift of its
    /// output that the bias can take back.
    pub channel_means: HashMap<String, Vec<f32>>,
    /// The shape of every calibration tensor (batch 1), for rewrites that need it fixed.
    #[serde(default)]
    pub shapes: HashMap<String, Vec<usize>>,
    /// The images of the set that did not decode, with why: a run from the cache reports them
    /// as the run that decoded the set did.
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// Per-channel sums along `axis`, accumulated over runs.
#[derive(Default)]
struct ChannelSums {
    sums: Vec<f64>,
    per_channel: u64,
}

impl ChannelSums {
    fn observe(&mut self, data: &ndarray::ArrayD<f32>, axis: usize) {
        if axis >= data.ndim() {
            return;
        }
        let ax = ndarray::Axis(axis);
        if self.sums.is_empty() {
            self.sums = vec![0.0; data.len_of(ax)];
        }
        if self.sums.len() != data.len_of(ax) {
            return;
        }
        for (c, sub) in data.axis_iter(ax).enumerate() {
            self.sums[c] += sub.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        self.per_channel += (data.len() / data.len_of(ax).max(1)) as u64;
    }

    fn means(&self) -> Vec<f32> {
        let n = self.per_channel.max(1) as f64;
        self.sums.iter().map(|s| (s / n) as f32).collect()
    }
}

/// Statistics of every calibration tensor of `model` over `inputs`.
pub fn collect(
    model: &Model,
    inputs: &[Tensor],
    engine: &EngineConfig,
    scratch: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Statistics, OptimizeError> {
    let names = qdq::calibration_tensors(model);
    let channel_axes: HashMap<String, usize> = qdq::bias_correction_inputs(model);
    let mut extra = names.clone();
    extra.extend(channel_axes.keys().filter(|t| !names.contains(t)).cloned());
    let augmented = crate::onnx::graph::with_extra_outputs(model, &extra);
    let path = scratch.join("calibration-augmented.onnx");
    augmented.save(&path)?;
    let mut eng = Engine::load(&path, engine)?;
    let mut stats: HashMap<String, TensorStats> = HashMap::new();
    let mut sums: HashMap<String, ChannelSums> = HashMap::new();
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, t) in inputs.iter().enumerate() {
        for o in eng.run(t)? {
            if let Some(&axis) = channel_axes.get(&o.name) {
                sums.entry(o.name.clone())
                    .or_default()
                    .observe(&o.data, axis);
            }
            if names.contains(&o.name) {
                if !shapes.contains_key(&o.name) {
                    shapes.insert(o.name.clone(), o.data.shape().to_vec());
                }
                let v = o.data.as_slice_memory_order().map(<[f32]>::to_vec);
                let v = v.unwrap_or_else(|| o.data.iter().copied().collect());
                stats.entry(o.name).or_default().observe(&v);
            }
        }
        progress(i as u64 + 1, inputs.len() as u64);
    }
    let _ = std::fs::remove_file(&path);
    Ok(Statistics {
        tensors: stats,
        channel_means: sums.into_iter().map(|(k, s)| (k, s.means())).collect(),
        shapes,
        skipped: Vec::new(),
    })
}

/// Where cached statistics live: `$EDGESIGHT_CACHE`, else `$XDG_CACHE_HOME/edgesight`, else
/// `~/.cache/edgesight`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGESIGHT_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("edgesight")
}

const PIXELS_REVISION: u32 = 6;

/// Keyed by everything the statistics depend on, the set of tensors observed included: a
/// quantizer that learns a new op needs statistics for tensors an older run did not collect.
pub fn cache_key(
    model_sha: &str,
    set_sha: &str,
    spec: &PreprocessSpec,
    tensors: &[String],
) -> String {
    let mut h = Sha256::new();
    h.update(model_sha);
    h.update(set_sha);
    h.update(format!("{spec:?}"));
    for t in tensors {
        h.update(t.as_bytes());
        h.update([0u8]);
    }
    h.update(env!("CARGO_PKG_VERSION"));
    // Bumped whenever decoding or preprocessing changes the pixels (2: I420 decode, OpenCV
    // bilinear resize) or the statistics gain a field (3: exact zeros counted; 4: channel
    // means for bias correction; 5: tensor shapes; 6: the skipped images), which a version
    // number in development does not track.
    h.update(PIXELS_REVISION.to_le_bytes());
    hex(&h.finalize())[..24].to_string()
}

pub fn load_cached(key: &str) -> Option<Statistics> {
    let p = cache_dir().join("calibration").join(format!("{key}.json"));
    let text = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn store_cached(key: &str, stats: &Statistics) {
    let dir = cache_dir().join("calibration");
    let ok = std::fs::create_dir_all(&dir).is_ok()
        && serde_json::to_string(stats)
            .ok()
            .and_then(|s| std::fs::write(dir.join(format!("{key}.json")), s).ok())
            .is_some();
    if !ok {
        tracing::warn!(dir = %dir.display(), "could not cache calibration statistics");
    }
}

/// Calibration statistics for one model and image set, from the cache or from a run.
pub struct Calibrated {
    pub stats: Statistics,
    /// Images that did not decode.
    pub skipped: usize,
    pub cached: bool,
    /// The decoded images, when this run decoded them (the search and the fit reuse them).
    pub decoded: Option<Vec<Tensor>>,
}

/// The statistics of `model` (the source, `model_key` its hash and any weight edits) over
/// `set`, looked up in the cache first and stored there after a run.
pub fn calibrated(
    model: &Model,
    model_key: &str,
    set: &ImageSet,
    pre: &PreprocessSpec,
    engine: &EngineConfig,
    scratch: &Path,
    progress: ProgressFn,
) -> Result<Calibrated, OptimizeError> {
    let key = cache_key(
        model_key,
        &set.sha256,
        pre,
        &qdq::calibration_tensors(model),
    );
    if let Some(s) = load_cached(&key) {
        for image in &s.skipped {
            tracing::warn!(%image, "skipped: did not decode when this set was calibrated");
        }
        let skipped = s.skipped.len();
        return Ok(Calibrated {
            stats: s,
            skipped,
            cached: true,
            decoded: None,
        });
    }
    let (inputs, bad) = tensors(set, pre, &|d, t| {
        progress("decoding calibration images", d, t)
    })?;
    let mut s = collect(model, &inputs, engine, scratch, &|d, t| {
        progress("calibrating", d, t)
    })?;
    s.skipped.clone_from(&bad);
    store_cached(&key, &s);
    Ok(Calibrated {
        stats: s,
        skipped: bad.len(),
        cached: false,
        decoded: Some(inputs),
    })
}
