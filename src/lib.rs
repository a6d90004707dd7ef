//! edgesight: real-time video analytics on edge devices.
//!
//! Data flows one way, one module per step:
//! [`ingest`] → [`preprocess`] → [`engine`] → [`models`] (decode) → [`sinks`], wired by
//! [`pipeline`].

pub mod bench;
pub mod config;
pub mod cvmat;
pub mod detection;
pub mod devices;
pub mod doctor;
pub mod draw;
pub mod engine;
pub mod faces;
pub mod frame;
pub mod ingest;
pub mod metrics;
pub mod models;
pub mod mqtt;
pub mod onnx;
pub mod optimize;
pub mod picture;
pub mod pipeline;
pub mod preprocess;
pub mod rtsp;
pub mod sched;
pub mod service;
pub mod sinks;
pub mod source;
pub mod stats;
pub mod tensor;
pub mod track;
pub mod uri;

use std::path::{Path, PathBuf};

/// Where edgesight's own files are (`models/`, `.deps/` with ONNX Runtime, `assets/`,
/// `calibration/`): `$EDGESIGHT_HOME`; else the working directory when it is a checkout; else
/// the checkout the binary was built from. So an installed binary (`cargo install --path .`)
/// works from any directory.
///
/// ```
/// assert!(edgesight::home().join("models/ssd-mobilenet-v2.toml").is_file());
/// ```
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGESIGHT_HOME") {
        return PathBuf::from(dir);
    }
    if Path::new("models/ssd-mobilenet-v2.toml").is_file() {
        return PathBuf::from(".");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under [`home`].
pub fn bundled(rel: &str) -> PathBuf {
    let h = home();
    if h == Path::new(".") {
        PathBuf::from(rel)
    } else {
        h.join(rel)
    }
}
