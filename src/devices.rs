//! `edgesight devices`: the cameras GStreamer's device monitor sees, each with the URI that
//! `run` takes and the modes (format, size, rate) its caps offer.
//!
//! ```no_run
//! for cam in edgesight::devices::list().unwrap() {
//!     println!("{} {} ({} modes)", cam.uri, cam.name, cam.modes.len());
//! }
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("the device monitor could not start: {0}")]
    Monitor(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Camera {
    pub name: String,
    /// `v4l2:///dev/videoN` where the device names its node, else the monitor's class.
    pub uri: String,
    /// `format WxH @ F fps` per caps structure, as the device offers them.
    pub modes: Vec<String>,
}

/// Every video source the monitor finds; an empty list when there is none.
pub fn list() -> Result<Vec<Camera>, DevicesError> {
    gst::init().map_err(|e| DevicesError::Init(e.to_string()))?;
    let monitor = gst::DeviceMonitor::new();
    monitor.add_filter(Some("Video/Source"), None);
    monitor
        .start()
        .map_err(|e| DevicesError::Monitor(e.to_string()))?;
    let cams = monitor.devices().iter().map(camera).collect();
    monitor.stop();
    Ok(cams)
}

fn camera(d: &gst::Device) -> Camera {
    let path = d
        .properties()
        .and_then(|p| p.get::<String>("device.path").ok())
        .or_else(|| {
            d.properties()
                .and_then(|p| p.get::<String>("api.v4l2.path").ok())
        });
    Camera {
        name: d.display_name().to_string(),
        uri: path
            .map(|p| format!("v4l2://{p}"))
            .unwrap_or_else(|| d.device_class().to_string()),
        modes: d.caps().map(|c| modes(&c)).unwrap_or_default(),
    }
}

/// One line per caps structure: `image/jpeg 1280x720 @ 30/1`, ranges as GStreamer writes them.
pub fn modes(caps: &gst::CapsRef) -> Vec<String> {
    caps.iter()
        .map(|s| {
            let field = |k: &str| {
                s.value(k)
                    .ok()
                    .and_then(|v| v.serialize().ok())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "?".into())
            };
            let format = if s.name() == "video/x-raw" {
                field("format")
            } else {
                s.name().to_string()
            };
            format!(
                "{format} {}x{} @ {}",
                field("width"),
                field("height"),
                field("framerate")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_name_format_size_and_rate() {
        gst::init().unwrap();
        let caps: gst::Caps =
            "video/x-raw,format=YUY2,width=640,height=480,framerate=30/1; image/jpeg,width=1280,height=720,framerate=60/1"
                .parse()
                .unwrap();
        assert_eq!(
            modes(&caps),
            vec!["YUY2 640x480 @ 30/1", "image/jpeg 1280x720 @ 60/1"]
        );
    }
}
