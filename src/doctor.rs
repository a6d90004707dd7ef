//! `edgesight doctor`: what this installation found, and where. The data directory, the ONNX
//! Runtime library, each model file, the GStreamer elements each job needs, and the CPU's int8
//! features, each with what is missing and how to get it.
//!
//! ```no_run
//! for c in edgesight::doctor::checks() {
//!     println!("{} {}: {}", if c.ok { "ok" } else { "--" }, c.what, c.detail);
//! }
//! ```

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use crate::models::Manifest;
use crate::optimize::weights::{cpu_int8_saturates, WeightRange};

/// One thing looked for.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `home`, `runtime`, `model`, `calibration`, `gstreamer` or `cpu`.
    pub kind: &'static str,
    pub what: String,
    pub ok: bool,
    /// Where it was found, or what is missing and how to get it.
    pub detail: String,
    /// Without it edgesight's default job cannot run.
    pub essential: bool,
}

impl Check {
    fn new(kind: &'static str, what: impl Into<String>, ok: bool, detail: String) -> Self {
        Check {
            kind,
            what: what.into(),
            ok,
            detail,
            essential: false,
        }
    }

    fn essential(mut self) -> Self {
        self.essential = true;
        self
    }
}

/// The GStreamer elements edgesight builds pipelines from, with the job that needs each;
/// `true` for those every job needs.
const ELEMENTS: &[(&str, &str, bool)] = &[
    ("uridecodebin", "files and RTSP streams", true),
    ("videoconvert", "every input", true),
    ("appsink", "frames to Rust", true),
    ("appsrc", "annotated video and pictures", true),
    ("x264enc", "annotated MP4 and the RTSP re-stream", false),
    ("h264parse", "annotated MP4", false),
    ("mp4mux", "annotated MP4", false),
    ("jpegenc", "pictures in optimize's report", false),
    ("filesink", "annotated MP4", false),
    ("rtspsrc", "RTSP cameras", false),
    ("v4l2src", "USB cameras", false),
    ("libcamerasrc", "CSI cameras (Raspberry Pi)", false),
    ("nvarguscamerasrc", "CSI cameras (Jetson)", false),
];

/// Every check, in the order `doctor` prints them.
pub fn checks() -> Vec<Check> {
    let mut out = vec![home_check(), runtime_check()];
    out.extend(model_checks());
    out.extend(calibration_checks());
    out.extend(gstreamer_checks());
    out.push(cpu_check());
    out
}

fn home_check() -> Check {
    let home = crate::home();
    let why = if std::env::var_os("EDGESIGHT_HOME").is_some() {
        "from EDGESIGHT_HOME"
    } else if home == Path::new(".") {
        "the working directory is a checkout"
    } else {
        "the checkout this binary was built from"
    };
    let shown = std::fs::canonicalize(&home).unwrap_or(home.clone());
    let ok = home.join("models").is_dir();
    let detail = if ok {
        format!("{} ({why})", shown.display())
    } else {
        format!(
            "{} ({why}) has no models/: set EDGESIGHT_HOME to a checkout",
            shown.display()
        )
    };
    Check::new("home", "data directory", ok, detail).essential()
}

fn runtime_check() -> Check {
    let path = std::env::var("ORT_DYLIB_PATH").map_or_else(
        |_| crate::bundled(".deps/onnxruntime/libonnxruntime.so"),
        PathBuf::from,
    );
    let shown = std::fs::canonicalize(&path).unwrap_or(path);
    let (ok, detail) = match crate::engine::runtime() {
        Ok(_) => (true, format!("{} (loaded)", shown.display())),
        Err(e) => (false, format!("{e}")),
    };
    Check::new("runtime", "ONNX Runtime", ok, detail).essential()
}

fn model_checks() -> Vec<Check> {
    Manifest::names()
        .iter()
        .map(|name| {
            let check = match Manifest::find(name) {
                Ok(m) if m.file.is_file() => Check::new(
                    "model",
                    name.as_str(),
                    true,
                    format!("{} ({} MiB)", m.file.display(), mib(&m.file)),
                ),
                Ok(m) => {
                    let how = match m.source.as_deref() {
                        Some(s) if s.starts_with("user-provided") => {
                            format!("{s}: pass --model-file")
                        }
                        _ => "run scripts/setup.sh (models/fetch.sh)".to_string(),
                    };
                    let detail = format!("{} is missing: {how}", m.file.display());
                    Check::new("model", name.as_str(), false, detail)
                }
                Err(e) => Check::new("model", name.as_str(), false, e.to_string()),
            };
            if name == "ssd-mobilenet-v2" {
                check.essential()
            } else {
                check
            }
        })
        .collect()
}

fn mib(path: &Path) -> String {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn calibration_checks() -> Vec<Check> {
    let dir = crate::bundled("calibration");
    let mut sets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    if sets.is_empty() {
        let detail = format!(
            "{} has no image sets: run scripts/setup.sh (calibration/fetch.sh)",
            dir.display()
        );
        return vec![Check::new("calibration", "image sets", false, detail)];
    }
    // Folders without images (ground-truth labels) are no image sets.
    sets.iter()
        .filter_map(|p| {
            let n = crate::optimize::calibrate::ImageSet::open(p).map_or(0, |s| s.images.len());
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let detail = format!("{} ({n} images)", p.display());
            (n > 0).then(|| Check::new("calibration", name, true, detail))
        })
        .collect()
}

fn gstreamer_checks() -> Vec<Check> {
    if let Err(e) = gst::init() {
        let c = Check::new("gstreamer", "GStreamer", false, e.to_string());
        return vec![c.essential()];
    }
    let mut out = vec![Check::new(
        "gstreamer",
        "GStreamer",
        true,
        gst::version_string().to_string(),
    )
    .essential()];
    for &(name, job, essential) in ELEMENTS {
        let found = gst::ElementFactory::find(name);
        let detail = match &found {
            Some(f) => format!(
                "{job} ({})",
                f.plugin_name()
                    .map_or_else(String::new, |p| format!("plugin {p}"))
            ),
            None => format!("{job}: not installed"),
        };
        let c = Check::new("gstreamer", name, found.is_some(), detail);
        out.push(if essential { c.essential() } else { c });
    }
    out
}

fn cpu_check() -> Check {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let features = int8_features();
    let range = WeightRange::for_this_cpu();
    let why = if cpu_int8_saturates() {
        "no VNNI: int8 pairs saturate in 16 bits"
    } else {
        "int8 products add in 32 bits"
    };
    let detail = format!(
        "{model}; {}; optimize --weight-range auto picks {range} ({why})",
        features.join(" ")
    );
    Check::new("cpu", "int8 features", true, detail)
}

/// Each x86 feature that decides int8 speed, as `name` or `-name`.
fn int8_features() -> Vec<String> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        [
            ("avx2", has!("avx2")),
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512vnni", has!("avx512vnni")),
            ("avxvnni", has!("avxvnni")),
        ]
        .iter()
        .map(|(n, on)| if *on { n.to_string() } else { format!("-{n}") })
        .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        vec![format!(
            "{} (32-bit int8 accumulation)",
            std::env::consts::ARCH
        )]
    }
}
