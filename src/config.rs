//! Pipeline files (`pipelines/*.toml`), read with the `config` crate so that any field can be
//! overridden from the environment: `EDGESIGHT__OUTPUT__DIR=/tmp/x` sets `[output] dir`.
//!
//! ```toml
//! [source]
//! uri = "assets/vtest.avi"        # a path or any URI uridecodebin plays
//!
//! [model]
//! name = "ssd-mobilenet-v2"       # a manifest in models/, or a path to one
//! score_threshold = 0.5
//!
//! [engine]
//! threads = 2
//! provider = "cpu"                # cpu | cuda | tensorrt
//!
//! [output]
//! dir = "out/vtest"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::EngineConfig;
use crate::models::{manifest::ManifestError, Manifest};
use crate::pipeline::{BatchSettings, LiveSettings, RunSpec};
use crate::source::SourceOptions;
use crate::track::zones::{LineSpec, ZoneSpec};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("pipeline file {0}: no such file")]
    NotFound(PathBuf),
    #[error("pipeline file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

pub const DEFAULT_MODEL: &str = "ssd-mobilenet-v2";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// One stream (the older form); or use `[[streams]]`.
    pub source: Option<SourceSection>,
    /// Many streams, each with its own name, source settings, model and outputs.
    #[serde(default)]
    pub streams: Vec<StreamSection>,
    /// The model of every stream that names none.
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Outputs of every stream; a stream's `dir` defaults to `<output.dir>/<name>`.
    #[serde(default)]
    pub output: OutputSection,
    #[serde(default)]
    pub queues: QueueSection,
    #[serde(default)]
    pub batch: BatchSettings,
    /// How live streams are watched and reconnected; a stream may override it.
    #[serde(default)]
    pub live: LiveSettings,
    pub metrics: Option<MetricsSection>,
    pub mqtt: Option<crate::mqtt::MqttConfig>,
    /// Serve each stream's annotated video at `rtsp://address:port/<stream>`.
    pub rtsp_out: Option<RtspOutSection>,
    /// Object tracking of every stream; a stream may override it.
    #[serde(default)]
    pub tracker: crate::track::TrackerSettings,
    /// Zones and lines of the single `[source]` stream (`[[streams]]` have their own).
    #[serde(default)]
    pub zones: Vec<ZoneSpec>,
    #[serde(default)]
    pub lines: Vec<LineSpec>,
    /// Face recognition of every stream's tracks; a stream may override it.
    pub faces: Option<crate::faces::FacesSettings>,
    /// Where the file was read from, for errors.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub uri: String,
    /// Stream name in events; defaults to the file name.
    pub name: Option<String>,
    pub max_frames: Option<u64>,
}

/// One `[[streams]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    pub name: String,
    pub uri: String,
    pub max_frames: Option<u64>,
    /// RTSP latency, transport, credentials; camera mode.
    #[serde(default)]
    pub source: SourceOptions,
    pub model: Option<ModelSection>,
    pub output: Option<StreamOutput>,
    pub live: Option<LiveSettings>,
    pub tracker: Option<crate::track::TrackerSettings>,
    /// Polygon zones, counted by the bottom centre of each tracked box.
    #[serde(default)]
    pub zones: Vec<ZoneSpec>,
    /// Directed counting lines.
    #[serde(default)]
    pub lines: Vec<LineSpec>,
    pub faces: Option<crate::faces::FacesSettings>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamOutput {
    pub dir: Option<PathBuf>,
    pub video: Option<bool>,
    pub events: Option<bool>,
    /// Served over RTSP when `[rtsp_out]` is set (default true).
    pub rtsp: Option<bool>,
}

/// `[rtsp_out]`: the RTSP server of annotated video.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspOutSection {
    #[serde(default = "localhost")]
    pub address: String,
    #[serde(default = "default_rtsp_port")]
    pub port: u16,
}

fn localhost() -> String {
    "127.0.0.1".into()
}
fn default_rtsp_port() -> u16 {
    8554
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_metrics_addr")]
    pub addr: std::net::SocketAddr,
}

fn default_metrics_addr() -> std::net::SocketAddr {
    crate::metrics::DEFAULT_ADDR
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A manifest name in `models/` or a path to a manifest.
    pub name: Option<String>,
    /// Overrides the manifest's ONNX file.
    pub file: Option<PathBuf>,
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    #[serde(default = "default_out")]
    pub dir: PathBuf,
    #[serde(default = "yes")]
    pub video: bool,
    #[serde(default = "yes")]
    pub events: bool,
    /// A live stream's annotated video is cut into files of this many seconds.
    #[serde(default = "default_segment")]
    pub segment_s: f64,
}

fn default_segment() -> f64 {
    600.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    #[serde(default = "default_depth")]
    pub depth: usize,
}

fn default_out() -> PathBuf {
    PathBuf::from("out")
}
fn yes() -> bool {
    true
}
fn default_depth() -> usize {
    4
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            dir: default_out(),
            video: true,
            events: true,
            segment_s: default_segment(),
        }
    }
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            depth: default_depth(),
        }
    }
}

impl PipelineFile {
    /// Reads a pipeline file, then `EDGESIGHT__SECTION__FIELD` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::NotFound(path.to_path_buf()));
        }
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        // Syntax first, with toml's own parser: the config crate's message spans several lines
        // and names the file by a mangled relative path.
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(invalid(syntax_error(&text, &e)));
        }
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("EDGESIGHT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| invalid(strip_origin(&e.to_string(), path)))?
            .try_deserialize::<Self>()
            .map(|mut f| {
                f.path = Some(path.to_path_buf());
                f
            })
            .map_err(|e| invalid(strip_origin(&e.to_string(), path)))
    }

    /// The single stream of a file with a `[source]` section; an error naming the file when it
    /// has none, or has `[[streams]]` too.
    pub fn to_run_spec(&self) -> Result<RunSpec, ConfigError> {
        let source = match (&self.source, self.streams.is_empty()) {
            (Some(s), true) => s,
            (Some(_), false) => {
                return Err(self.invalid("give either [source] or [[streams]], not both"))
            }
            (None, _) => {
                return Err(self.invalid(
                    "no [source] section (or several [[streams]]: run them as a service)",
                ))
            }
        };
        let mut spec = RunSpec::new(
            source.uri.clone(),
            self.model.manifest(None)?,
            self.output.dir.clone(),
        );
        spec.stream_name = source.name.clone();
        spec.max_frames = source.max_frames;
        self.apply_common(&mut spec);
        spec.tracker
            .check()
            .map_err(|e| self.invalid(&format!("[tracker] {e}")))?;
        spec.zones = self.zones.clone();
        spec.lines = self.lines.clone();
        check_counting(&spec).map_err(|e| self.invalid(&e))?;
        check_faces(&spec).map_err(|e| self.invalid(&e))?;
        Ok(spec)
    }

    /// Every stream of the file, resolved, in file order: `[[streams]]`, or the one `[source]`.
    /// A duplicate name, a bad URI or a missing model is an error naming the stream.
    pub fn stream_specs(&self) -> Result<Vec<(String, RunSpec)>, ConfigError> {
        if self.streams.is_empty() {
            let spec = self.to_run_spec()?;
            let name = spec.stream_name.clone().unwrap_or_default();
            return Ok(vec![(name, spec)]);
        }
        if self.source.is_some() {
            return Err(self.invalid("give either [source] or [[streams]], not both"));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for s in &self.streams {
            let bad = |reason: String| self.invalid(&format!("stream {}: {reason}", s.name));
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad("a name is letters, digits, '-', '_' or '.'".into()));
            }
            if !seen.insert(s.name.clone()) {
                return Err(bad("a second stream has this name".into()));
            }
            let model = self
                .model
                .manifest(s.model.as_ref())
                .map_err(|e| bad(e.to_string()))?;
            let out_cfg = s.output.clone().unwrap_or_default();
            let dir = out_cfg.dir.unwrap_or_else(|| self.output.dir.join(&s.name));
            let mut spec = RunSpec::new(s.uri.clone(), model, dir);
            spec.stream_name = Some(s.name.clone());
            spec.max_frames = s.max_frames;
            spec.source = s.source.clone();
            self.apply_common(&mut spec);
            spec.write_video = out_cfg.video.unwrap_or(self.output.video);
            spec.write_events = out_cfg.events.unwrap_or(self.output.events);
            spec.rtsp_out = out_cfg.rtsp.unwrap_or(true);
            if let Some(l) = &s.live {
                spec.live = l.clone();
            }
            if let Some(t) = &s.tracker {
                spec.tracker = t.clone();
            }
            spec.tracker
                .check()
                .map_err(|e| bad(format!("[tracker] {e}")))?;
            spec.zones = s.zones.clone();
            spec.lines = s.lines.clone();
            if s.faces.is_some() {
                spec.faces = s.faces.clone();
            }
            check_counting(&spec).map_err(bad)?;
            check_faces(&spec).map_err(bad)?;
            out.push((s.name.clone(), spec));
        }
        Ok(out)
    }

    /// A fingerprint of each stream's settings, secrets included, that a reload compares.
    pub fn stream_fingerprints(&self) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest;
        self.streams
            .iter()
            .map(|s| {
                let secret = s
                    .source
                    .password
                    .as_ref()
                    .map(|p| p.0.clone())
                    .unwrap_or_default();
                let text = format!(
                    "{s:?}|{secret}|{:?}|{:?}|{:?}|{:?}",
                    self.model,
                    self.output,
                    self.live,
                    (&self.tracker, &self.faces)
                );
                (
                    s.name.clone(),
                    format!("{:x}", sha2::Sha256::digest(text.as_bytes())),
                )
            })
            .collect()
    }

    fn apply_common(&self, spec: &mut RunSpec) {
        spec.engine = self.engine.clone();
        spec.write_video = self.output.video;
        spec.write_events = self.output.events;
        spec.queue_depth = self.queues.depth;
        spec.live = self.live.clone();
        spec.segment = std::time::Duration::from_secs_f64(self.output.segment_s.max(1.0));
        spec.tracker = self.tracker.clone();
        spec.faces = self.faces.clone();
    }

    fn invalid(&self, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone().unwrap_or_default(),
            reason: reason.to_string(),
        }
    }
}

impl ModelSection {
    /// The manifest this section names (or `stream`'s, field by field), with its overrides.
    fn manifest(&self, stream: Option<&ModelSection>) -> Result<Manifest, ConfigError> {
        let pick = |f: fn(&ModelSection) -> Option<String>| stream.and_then(f).or_else(|| f(self));
        let name = pick(|m| m.name.clone()).unwrap_or_else(|| DEFAULT_MODEL.to_string());
        let mut model = Manifest::find(&name)?;
        if let Some(f) = stream
            .and_then(|m| m.file.clone())
            .or_else(|| self.file.clone())
        {
            model.file = f;
        }
        if let Some(s) = stream
            .and_then(|m| m.score_threshold)
            .or(self.score_threshold)
        {
            model.score_threshold = s;
        }
        if let Some(s) = stream.and_then(|m| m.iou_threshold).or(self.iou_threshold) {
            model.iou_threshold = s;
        }
        Ok(model)
    }
}

/// Face recognition names tracks, so it needs the tracker; and faces with landmarks, from the
/// stream's own model or from a face detector run inside person boxes.
pub fn check_faces(spec: &RunSpec) -> Result<(), String> {
    let Some(f) = &spec.faces else {
        return Ok(());
    };
    f.check()?;
    if !spec.tracker.enabled {
        return Err("[faces] names tracks: [tracker] enabled must be true".into());
    }
    use crate::models::Family;
    let landmarks = matches!(spec.model.family, Family::Blazeface | Family::Scrfd);
    if f.face_detector.is_none() && !landmarks {
        return Err(format!(
            "[faces]: the model {} gives no face landmarks; use a face detector (blazeface) as \
             the model, or set face_detector = \"blazeface\" to look for faces inside person boxes",
            spec.model.name
        ));
    }
    Ok(())
}

/// Zones and lines need the tracker, a usable shape, and classes the model has.
fn check_counting(spec: &RunSpec) -> Result<(), String> {
    if spec.zones.is_empty() && spec.lines.is_empty() {
        return Ok(());
    }
    if !spec.tracker.enabled {
        return Err("zones and lines count tracks: [tracker] enabled must be true".into());
    }
    crate::track::zones::Counter::new(spec.zones.clone(), spec.lines.clone())?;
    // A model whose names come with the weights (YOLO's metadata) is checked when it loads.
    let Some(path) = &spec.model.labels else {
        return Ok(());
    };
    let labels = crate::models::Labels::from_file(path).map_err(|e| e.to_string())?;
    let named = spec
        .zones
        .iter()
        .map(|z| (format!("zone {}", z.name), &z.labels))
        .chain(
            spec.lines
                .iter()
                .map(|l| (format!("line {}", l.name), &l.labels)),
        );
    for (what, wanted) in named {
        if let Some(unknown) = wanted.iter().find(|l| !labels.contains(l)) {
            return Err(format!("{what}: the model has no class {unknown:?}"));
        }
    }
    Ok(())
}

/// "line L, column C: message" on one line.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("TOML syntax error at line {line}, column {col}: {msg}")
        }
        None => format!("TOML syntax error: {msg}"),
    }
}

/// The config crate appends " in <path>" to its messages; the error names the file already.
fn strip_origin(msg: &str, path: &Path) -> String {
    msg.replace(&format!(" in {}", path.display()), "")
}
