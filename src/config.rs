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
use crate::pipeline::RunSpec;

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
    pub source: SourceSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub output: OutputSection,
    #[serde(default)]
    pub queues: QueueSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub uri: String,
    /// Stream name in events; defaults to the file name.
    pub name: Option<String>,
    pub max_frames: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
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
            .try_deserialize()
            .map_err(|e| invalid(strip_origin(&e.to_string(), path)))
    }

    /// Resolves the model manifest and applies the file's overrides.
    pub fn to_run_spec(&self) -> Result<RunSpec, ConfigError> {
        let name = self.model.name.as_deref().unwrap_or(DEFAULT_MODEL);
        let mut model = Manifest::find(name)?;
        if let Some(f) = &self.model.file {
            model.file = f.clone();
        }
        if let Some(s) = self.model.score_threshold {
            model.score_threshold = s;
        }
        if let Some(s) = self.model.iou_threshold {
            model.iou_threshold = s;
        }
        let mut spec = RunSpec::new(self.source.uri.clone(), model, self.output.dir.clone());
        spec.stream_name = self.source.name.clone();
        spec.max_frames = self.source.max_frames;
        spec.engine = self.engine.clone();
        spec.write_video = self.output.video;
        spec.write_events = self.output.events;
        spec.queue_depth = self.queues.depth;
        Ok(spec)
    }
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
