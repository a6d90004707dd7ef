//! Sources: what a stream URI means, as a GStreamer description, before anything is opened.
//!
//! | URI | GStreamer | live |
//! |---|---|---|
//! | a path, `file://`, `http(s)://` | `uridecodebin` | no |
//! | `rtsp://[user:pass@]host/path` | `uridecodebin` → `rtspsrc` (latency, transport, credentials set on it) | yes |
//! | `v4l2:///dev/videoN` | `v4l2src device=… ! caps ! decodebin` | yes |
//! | `csi://N` | `nvarguscamerasrc sensor-id=N` (Jetson) or `libcamerasrc` | yes |
//! | `test://[pattern][?width=W&height=H&fps=F]` | `videotestsrc is-live=true` | yes |
//! | `gst://<launch description>` | the description, then `videoconvert ! appsink` | as it says |
//!
//! Parsing is pure: nothing here touches a device, so the descriptions built for hardware this
//! machine lacks (a CSI camera) are checked by unit tests, and [`Source::check`] turns a missing
//! element or device into one clear error naming the stream.
//!
//! ```
//! use edgesight::source::{Source, SourceOptions};
//! let s = Source::parse("test://ball?width=320&height=240&fps=15", &SourceOptions::default()).unwrap();
//! assert!(s.is_live());
//! assert_eq!(
//!     s.launch_head().unwrap().as_deref(),
//!     Some("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1")
//! );
//! let cam = Source::parse("rtsp://admin:secret@10.0.0.5/live", &SourceOptions::default()).unwrap();
//! assert_eq!(cam.display(), "rtsp://***@10.0.0.5/live");
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0}: no such file")]
    NotFound(String),
    #[error("{uri}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("{uri}: GStreamer element {element} is missing ({hint})")]
    MissingElement {
        uri: String,
        element: String,
        hint: String,
    },
    #[error("{uri}: no such device {device} (`edgesight devices` lists the cameras found)")]
    NoDevice { uri: String, device: String },
}

/// How rtspsrc carries the media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// UDP first, TCP when UDP gets nothing (rtspsrc's own order).
    #[default]
    Auto,
    Tcp,
    Udp,
}

impl RtspTransport {
    /// The value of rtspsrc's `protocols` flags property.
    pub fn protocols(self) -> &'static str {
        match self {
            Self::Auto => "udp+udp-mcast+tcp",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// Per-stream settings for live sources, from the pipeline file's `[streams.source]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceOptions {
    /// RTSP jitter-buffer latency; rtspsrc's own default of 2 s delays every event.
    pub latency_ms: u32,
    pub transport: RtspTransport,
    /// RTSP credentials, when the URI carries none.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Camera mode (v4l2, csi); unset fields are left to negotiation with the device.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    /// v4l2 pixel format: `MJPG` (decoded) or a raw format such as `YUY2`, `NV12`.
    pub format: Option<String>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            latency_ms: 200,
            transport: RtspTransport::Auto,
            user: None,
            password: None,
            width: None,
            height: None,
            fps: None,
            format: None,
        }
    }
}

/// A password: read from the pipeline file, never printed (Debug and Serialize show `***`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Which CSI stack builds `csi://N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsiStack {
    /// NVIDIA Jetson: Argus, then `nvvidconv` out of NVMM memory.
    Argus,
    /// libcamera (Raspberry Pi and others).
    Libcamera,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Files and http(s): uridecodebin, no drops, a clean end.
    Uri {
        uri: String,
    },
    Rtsp {
        /// The URI without credentials.
        location: String,
        credentials: Option<(String, Secret)>,
    },
    V4l2 {
        device: PathBuf,
    },
    Csi {
        sensor: u32,
    },
    Test {
        pattern: String,
        width: u32,
        height: u32,
        fps: u32,
    },
    Gst {
        description: String,
    },
}

/// A parsed stream source: what to build, and how to name it without its credentials.
#[derive(Clone, PartialEq)]
pub struct Source {
    kind: SourceKind,
    display: String,
    options: SourceOptions,
    /// A `gst://` description is live unless [`Source::probe_live`] found it prerolls.
    gst_live: bool,
}

// Debug output reaches logs and panics: it shows the redacted URI only, never credentials.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("uri", &self.display)
            .field("live", &self.is_live())
            .finish()
    }
}

impl Source {
    /// Parses a CLI argument or pipeline-file `uri`. A bare path must exist.
    pub fn parse(input: &str, options: &SourceOptions) -> Result<Self, SourceError> {
        let display = crate::uri::redact(input);
        let bad = |reason: &str| SourceError::BadUri {
            uri: display.clone(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = input.split_once("://") else {
            return Self::file(input, options);
        };
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "file" | "http" | "https" => SourceKind::Uri {
                uri: input.to_string(),
            },
            "rtsp" | "rtsps" | "rtspt" => Self::rtsp(scheme, rest, options).map_err(|r| bad(&r))?,
            "v4l2" => {
                let device = PathBuf::from(rest);
                if !rest.starts_with("/dev/") {
                    return Err(bad("expected v4l2:///dev/videoN"));
                }
                SourceKind::V4l2 { device }
            }
            "csi" => SourceKind::Csi {
                sensor: rest
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|_| bad("expected csi://N with N the sensor number"))?,
            },
            "test" => Self::test(rest).map_err(|r| bad(&r))?,
            "gst" => {
                if rest.trim().is_empty() {
                    return Err(bad("gst:// needs a GStreamer launch description"));
                }
                SourceKind::Gst {
                    description: rest.to_string(),
                }
            }
            other => return Err(bad(&format!("unknown scheme {other}://"))),
        };
        Ok(Self {
            kind,
            display,
            options: options.clone(),
            gst_live: true,
        })
    }

    fn file(input: &str, options: &SourceOptions) -> Result<Self, SourceError> {
        let uri =
            crate::uri::resolve(input).map_err(|_| SourceError::NotFound(input.to_string()))?;
        Ok(Self {
            kind: SourceKind::Uri { uri },
            display: input.to_string(),
            options: options.clone(),
            gst_live: false,
        })
    }

    fn rtsp(scheme: &str, rest: &str, o: &SourceOptions) -> Result<SourceKind, String> {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (userinfo, host) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let from_uri = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            (percent_decode(user), Secret(percent_decode(pass)))
        });
        let from_file = o
            .user
            .clone()
            .map(|u| (u, o.password.clone().unwrap_or(Secret(String::new()))));
        Ok(SourceKind::Rtsp {
            location: format!("{scheme}://{host}{path}"),
            credentials: from_uri.or(from_file),
        })
    }

    fn test(rest: &str) -> Result<SourceKind, String> {
        let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
        let pattern = pattern.trim_end_matches('/');
        let mut q: BTreeMap<&str, u32> = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or(format!("bad query {pair:?}"))?;
            if !["width", "height", "fps"].contains(&k) {
                return Err(format!("unknown parameter {k:?} (width, height, fps)"));
            }
            let v: u32 = v
                .parse()
                .ok()
                .filter(|&v| v > 0)
                .ok_or(format!("{k}={v}: expected a positive integer"))?;
            q.insert(k, v);
        }
        if !pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!("bad pattern {pattern:?}"));
        }
        Ok(SourceKind::Test {
            pattern: if pattern.is_empty() { "smpte" } else { pattern }.to_string(),
            width: q.get("width").copied().unwrap_or(640),
            height: q.get("height").copied().unwrap_or(480),
            fps: q.get("fps").copied().unwrap_or(30),
        })
    }

    pub fn kind(&self) -> &SourceKind {
        &self.kind
    }

    pub fn options(&self) -> &SourceOptions {
        &self.options
    }

    /// The URI with any credentials hidden: the only form that reaches logs and outputs.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Live sources run in PLAYING from the start, drop old frames when inference falls behind,
    /// and are reconnected when they fail. A `gst://` description counts as live unless it is
    /// known to be a file; [`crate::ingest::Decoder`] also asks the pipeline itself.
    pub fn is_live(&self) -> bool {
        match self.kind {
            SourceKind::Uri { .. } => false,
            SourceKind::Gst { .. } => self.gst_live,
            _ => true,
        }
    }

    /// Asks a `gst://` description whether it is live: a live source answers NO_PREROLL when
    /// paused, a file prerolls. A file-backed description then keeps every frame, as a file does.
    pub fn probe_live(&mut self) {
        let SourceKind::Gst { description } = &self.kind else {
            return;
        };
        let _ = gstreamer::init();
        use gstreamer::prelude::*;
        let Ok(p) = gstreamer::parse::launch(&format!("{description} ! fakesink")) else {
            return;
        };
        let r = p.set_state(gstreamer::State::Paused);
        let _ = p.set_state(gstreamer::State::Null);
        self.gst_live = !matches!(
            r,
            Ok(gstreamer::StateChangeSuccess::Async) | Ok(gstreamer::StateChangeSuccess::Success)
        );
    }

    /// A short default stream name: the file name for files, the redacted URI otherwise.
    pub fn default_name(&self) -> String {
        match &self.kind {
            SourceKind::Uri { uri } => crate::uri::stream_name(uri),
            SourceKind::V4l2 { device } => device
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.display.clone()),
            SourceKind::Csi { sensor } => format!("csi{sensor}"),
            SourceKind::Test { pattern, .. } => format!("test-{pattern}"),
            _ => self.display.clone(),
        }
    }

    /// The launch description of everything before `videoconvert ! appsink`, for the kinds built
    /// from one (`None` for uridecodebin's kinds, which are built element by element).
    pub fn launch_head(&self) -> Result<Option<String>, SourceError> {
        self.launch_head_for(detect_csi_stack())
    }

    /// [`Source::launch_head`] with the CSI stack given, so both can be tested anywhere.
    pub fn launch_head_for(&self, csi: Option<CsiStack>) -> Result<Option<String>, SourceError> {
        let o = &self.options;
        Ok(match &self.kind {
            SourceKind::Uri { .. } | SourceKind::Rtsp { .. } => None,
            SourceKind::Test {
                pattern,
                width,
                height,
                fps,
            } => Some(format!(
                "videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={width},height={height},framerate={fps}/1"
            )),
            SourceKind::V4l2 { device } => Some(format!(
                "v4l2src device={} ! {} ! decodebin",
                device.display(),
                v4l2_caps(o)
            )),
            SourceKind::Csi { sensor } => Some(csi_head(*sensor, o, csi).ok_or_else(|| {
                SourceError::MissingElement {
                    uri: self.display.clone(),
                    element: "nvarguscamerasrc or libcamerasrc".into(),
                    hint: "csi:// needs NVIDIA's Argus camera stack on a Jetson, or libcamera's \
                           GStreamer plugin (gstreamer1.0-libcamera) elsewhere"
                        .into(),
                }
            })?),
            SourceKind::Gst { description } => Some(description.clone()),
        })
    }

    /// Everything that can be known wrong before the stream starts: a missing element, a
    /// missing device node, a `gst://` description that does not parse.
    pub fn check(&self) -> Result<(), SourceError> {
        let missing = |element: &str, hint: &str| SourceError::MissingElement {
            uri: self.display.clone(),
            element: element.into(),
            hint: hint.into(),
        };
        let need = |element: &str, hint: &str| {
            gstreamer::ElementFactory::find(element)
                .map(|_| ())
                .ok_or_else(|| missing(element, hint))
        };
        let _ = gstreamer::init();
        match &self.kind {
            SourceKind::Uri { .. } => need("uridecodebin", "gstreamer1.0-plugins-base"),
            SourceKind::Rtsp { .. } => need("rtspsrc", "Debian: gstreamer1.0-plugins-good"),
            SourceKind::V4l2 { device } => {
                need("v4l2src", "Debian: gstreamer1.0-plugins-good")?;
                if !Path::new(device).exists() {
                    return Err(SourceError::NoDevice {
                        uri: self.display.clone(),
                        device: device.display().to_string(),
                    });
                }
                Ok(())
            }
            SourceKind::Test { .. } => need("videotestsrc", "gstreamer1.0-plugins-base"),
            SourceKind::Csi { .. } | SourceKind::Gst { .. } => {
                let head = self.launch_head()?.expect("csi and gst have a description");
                gstreamer::parse::launch(&format!("{head} ! fakesink"))
                    .map(|_| ())
                    .map_err(|e| SourceError::BadUri {
                        uri: self.display.clone(),
                        reason: format!("the description does not parse: {e}"),
                    })
            }
        }
    }
}

/// The caps a v4l2 camera is asked for: MJPEG or a raw format, with the mode's fields that are
/// set. With no format, raw and MJPEG are both offered and the device's first match wins.
fn v4l2_caps(o: &SourceOptions) -> String {
    let mut fields = String::new();
    if let Some(w) = o.width {
        fields += &format!(",width={w}");
    }
    if let Some(h) = o.height {
        fields += &format!(",height={h}");
    }
    if let Some(f) = o.fps {
        fields += &format!(",framerate={f}/1");
    }
    match o.format.as_deref() {
        Some(f) if f.eq_ignore_ascii_case("mjpg") || f.eq_ignore_ascii_case("mjpeg") => {
            format!("image/jpeg{fields}")
        }
        Some(raw) => format!("video/x-raw,format={raw}{fields}"),
        None => format!("\"video/x-raw{fields};image/jpeg{fields}\""),
    }
}

/// The CSI camera head for a stack; `None` when neither stack is there.
fn csi_head(sensor: u32, o: &SourceOptions, stack: Option<CsiStack>) -> Option<String> {
    let (w, h, f) = (
        o.width.unwrap_or(1280),
        o.height.unwrap_or(720),
        o.fps.unwrap_or(30),
    );
    match stack? {
        // Argus hands frames in NVMM memory; nvvidconv copies them out into system memory.
        CsiStack::Argus => Some(format!(
            "nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={w},height={h},framerate={f}/1 ! nvvidconv"
        )),
        // libcamerasrc names cameras, not numbers: sensor 0 is the default camera.
        CsiStack::Libcamera => Some(if sensor == 0 {
            format!("libcamerasrc ! video/x-raw,width={w},height={h},framerate={f}/1")
        } else {
            format!(
                "libcamerasrc camera-name=\"{sensor}\" ! video/x-raw,width={w},height={h},framerate={f}/1"
            )
        }),
    }
}

/// The CSI stack this machine has, Argus first.
pub fn detect_csi_stack() -> Option<CsiStack> {
    let _ = gstreamer::init();
    if gstreamer::ElementFactory::find("nvarguscamerasrc").is_some() {
        Some(CsiStack::Argus)
    } else if gstreamer::ElementFactory::find("libcamerasrc").is_some() {
        Some(CsiStack::Libcamera)
    } else {
        None
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Source, SourceError> {
        Source::parse(s, &SourceOptions::default())
    }

    #[test]
    fn rtsp_credentials_leave_the_location() {
        let s = parse("rtsp://ad%40min:p%3Ass@cam.local:8554/live/1").unwrap();
        assert_eq!(s.display(), "rtsp://***@cam.local:8554/live/1");
        assert_eq!(
            s.kind(),
            &SourceKind::Rtsp {
                location: "rtsp://cam.local:8554/live/1".into(),
                credentials: Some(("ad@min".into(), Secret("p:ss".into()))),
            }
        );
        assert!(s.is_live());
    }

    #[test]
    fn rtsp_credentials_from_the_pipeline_file() {
        let o = SourceOptions {
            user: Some("u".into()),
            password: Some(Secret("pw".into())),
            ..Default::default()
        };
        let s = Source::parse("rtsp://cam/live", &o).unwrap();
        assert!(
            matches!(s.kind(), SourceKind::Rtsp { credentials: Some((u, p)), .. } if u == "u" && p.0 == "pw")
        );
        assert!(!format!("{s:?}").contains("pw"), "{s:?}");
    }

    #[test]
    fn v4l2_description_carries_the_mode() {
        let o = SourceOptions {
            width: Some(1280),
            height: Some(720),
            fps: Some(30),
            format: Some("MJPG".into()),
            ..Default::default()
        };
        let s = Source::parse("v4l2:///dev/video2", &o).unwrap();
        assert_eq!(
            s.launch_head_for(None).unwrap().unwrap(),
            "v4l2src device=/dev/video2 ! image/jpeg,width=1280,height=720,framerate=30/1 ! decodebin"
        );
        let any = parse("v4l2:///dev/video0").unwrap();
        assert_eq!(
            any.launch_head_for(None).unwrap().unwrap(),
            "v4l2src device=/dev/video0 ! \"video/x-raw;image/jpeg\" ! decodebin"
        );
        assert_eq!(any.default_name(), "video0");
    }

    #[test]
    fn csi_descriptions_for_both_stacks() {
        let s = parse("csi://1").unwrap();
        assert_eq!(
            s.launch_head_for(Some(CsiStack::Argus)).unwrap().unwrap(),
            "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv"
        );
        assert_eq!(
            parse("csi://0")
                .unwrap()
                .launch_head_for(Some(CsiStack::Libcamera))
                .unwrap()
                .unwrap(),
            "libcamerasrc ! video/x-raw,width=1280,height=720,framerate=30/1"
        );
        let e = s.launch_head_for(None).unwrap_err().to_string();
        assert!(
            e.contains("csi://1") && e.contains("nvarguscamerasrc"),
            "{e}"
        );
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (uri, want) in [
            ("ftp://x/y", "unknown scheme ftp://"),
            ("csi://front", "csi://N"),
            ("v4l2://video0", "v4l2:///dev/videoN"),
            ("test://ball?fps=0", "fps=0"),
            ("test://ball?speed=3", "unknown parameter"),
            ("gst://", "launch description"),
            ("rtsp:///path", "no host"),
        ] {
            let e = parse(uri).unwrap_err().to_string();
            assert!(e.contains(want), "{uri}: {e}");
        }
        assert_eq!(
            parse("no/such/clip.mp4").unwrap_err(),
            SourceError::NotFound("no/such/clip.mp4".into())
        );
    }

    #[test]
    fn test_pattern_defaults() {
        let s = parse("test://").unwrap();
        assert_eq!(
            s.launch_head_for(None).unwrap().unwrap(),
            "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=480,framerate=30/1"
        );
        assert_eq!(s.default_name(), "test-smpte");
    }
}
