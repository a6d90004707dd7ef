//! Ingest: any file or URI that `uridecodebin` can play becomes a stream of [`Frame`]s.
//!
//! The pipeline is `uridecodebin ! videoconvert ! video/x-raw,format=I420 ! appsink` (or RGB,
//! with [`Decoder::open_as`]). I420 is what decoders emit, so `videoconvert` passes it through
//! untouched and the full-size frame is never converted: on a 2-core box that conversion
//! would take CPU from inference (see `edgesight bench`). The appsink
//! keeps a short queue and never drops, so a file source blocks at the speed of the slowest
//! stage instead of losing frames. Non-video pads (audio, subtitles) are sent to a `fakesink`.
//!
//! ```no_run
//! use edgesight::ingest::{Decoder, Next};
//! # fn main() -> Result<(), edgesight::ingest::IngestError> {
//! let uri = edgesight::ingest::resolve_input("assets/vtest.avi")?;
//! let mut dec = Decoder::open(&uri, "vtest".into())?;
//! while let Next::Frame(frame) = dec.next(std::time::Duration::from_millis(100))? {
//!     println!("frame {} at {:?}", frame.number, frame.pts);
//! }
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::frame::{Frame, FrameError, PixelFormat};
use crate::source::{Source, SourceKind, SourceOptions};
use crate::uri::{self, redact};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}: no such file")]
    NotFound(String),
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("{source_name}: cannot be opened as video: {reason}")]
    Open { source_name: String, reason: String },
    #[error("{source_name}: decoding failed after {frames} frames: {reason}")]
    Stream {
        source_name: String,
        frames: u64,
        reason: String,
    },
    #[error("{source_name}: {err}")]
    Frame {
        source_name: String,
        #[source]
        err: FrameError,
    },
}

/// Turns a CLI argument into a URI: `scheme://...` passes through, anything else must be an
/// existing file.
pub fn resolve_input(input: &str) -> Result<String, IngestError> {
    uri::resolve(input).map_err(|e| match e {
        uri::UriError::NotFound => IngestError::NotFound(input.to_string()),
        uri::UriError::Invalid(reason) => IngestError::Open {
            source_name: input.to_string(),
            reason,
        },
    })
}

pub use crate::uri::stream_name;

/// What [`Decoder::next`] found.
// The frame is moved on into a channel right away; boxing it would cost an allocation per frame
// to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// Nothing within the timeout; the stream is still alive.
    Pending,
    /// The stream ended cleanly.
    Eos,
}

pub struct Decoder {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    stream: Arc<str>,
    display: String,
    next_number: u64,
    total_frames: Option<u64>,
    /// An exact frame count written by the container (AVI's header), the only kind that can
    /// prove a file short.
    announced_frames: Option<u64>,
    fps: Option<f64>,
    size: (u32, u32),
    live: bool,
}

fn init() -> Result<(), IngestError> {
    gst::init().map_err(|e| IngestError::Init(e.to_string()))
}

impl Decoder {
    /// Builds the pipeline and waits for the first frame to preroll, so that a file that is
    /// not video fails here, with its name, rather than somewhere downstream. Frames come as
    /// I420. Any URI that [`Source::parse`] takes works; a live one starts playing at once.
    pub fn open(uri: &str, stream: Arc<str>) -> Result<Self, IngestError> {
        Self::open_as(uri, stream, PixelFormat::I420)
    }

    /// [`Decoder::open`], with frames in `format`.
    pub fn open_as(uri: &str, stream: Arc<str>, format: PixelFormat) -> Result<Self, IngestError> {
        let source =
            Source::parse(uri, &SourceOptions::default()).map_err(|e| IngestError::Open {
                source_name: redact(uri),
                reason: e.to_string(),
            })?;
        Self::open_source(&source, stream, format)
    }

    /// Opens a parsed source. Files preroll (the first frame is decoded before this returns);
    /// live sources answer NO_PREROLL in PAUSED and give nothing until PLAYING, so they go
    /// straight to PLAYING and their first frame, or their error, comes through [`Decoder::next`].
    pub fn open_source(
        source: &Source,
        stream: Arc<str>,
        format: PixelFormat,
    ) -> Result<Self, IngestError> {
        init()?;
        let redacted = source.display().to_string();
        let open_err = |reason: String| IngestError::Open {
            source_name: redacted.clone(),
            reason,
        };
        let (pipeline, appsink) = build(source, &stream, format).map_err(open_err)?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let paused = pipeline
            .set_state(gst::State::Paused)
            .map_err(|_| open_err(first_error(&bus).unwrap_or_else(|| "cannot start".into())))?;
        let live = source.is_live() || paused == gst::StateChangeSuccess::NoPreroll;
        if !live {
            preroll(&pipeline, &bus).map_err(open_err)?;
        }
        let (size, fps) = negotiated(&appsink);
        let (announced_frames, total_frames) = match source.kind() {
            SourceKind::Uri { uri } if !live => {
                let by_duration = match (pipeline.query_duration::<gst::ClockTime>(), fps) {
                    (Some(d), Some(f)) => Some((d.nseconds() as f64 / 1e9 * f).round() as u64),
                    _ => None,
                };
                let announced = avi_header_frames(uri).filter(|&n| n > 0);
                (announced, announced.or(by_duration))
            }
            _ => (None, None),
        };
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| open_err(first_error(&bus).unwrap_or_else(|| "cannot play".into())))?;
        tracing::debug!(source = %redacted, live, ?size, ?fps, ?total_frames, "opened");
        Ok(Self {
            pipeline,
            appsink,
            stream,
            display: redacted,
            next_number: 0,
            total_frames,
            announced_frames,
            fps,
            size,
            live,
        })
    }

    /// True when the source is live: it runs at its own pace and never ends by itself.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Numbers the next frame `n`: a reconnected stream goes on counting where it left off.
    pub fn continue_numbering_at(&mut self, n: u64) {
        self.next_number = n;
    }

    /// Frames expected: the container's own count where it has one, else duration × rate (an
    /// estimate: variable-rate video and loose duration fields miss it). `None` for live or
    /// unknown length.
    pub fn total_frames(&self) -> Option<u64> {
        self.total_frames
    }

    pub fn fps(&self) -> Option<f64> {
        self.fps
    }

    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    pub fn stream(&self) -> &Arc<str> {
        &self.stream
    }

    /// The source, with any credentials hidden.
    pub fn display_name(&self) -> &str {
        &self.display
    }

    /// Frames delivered so far.
    pub fn frames(&self) -> u64 {
        self.next_number
    }

    /// Waits up to `timeout` for the next frame. An error after some frames (a truncated file)
    /// says how many frames came before it; those frames were all delivered.
    pub fn next(&mut self, timeout: Duration) -> Result<Next, IngestError> {
        let t = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
        if let Some(sample) = self.appsink.try_pull_sample(t) {
            let frame = Frame::from_sample(&sample, self.stream.clone(), self.next_number)
                .map_err(|err| IngestError::Frame {
                    source_name: self.display.clone(),
                    err,
                })?;
            self.next_number += 1;
            return Ok(Next::Frame(frame));
        }
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        if let Some(reason) = first_error(&bus) {
            return Err(IngestError::Stream {
                source_name: self.display.clone(),
                frames: self.next_number,
                reason,
            });
        }
        if self.appsink.is_eos() {
            // GStreamer plays a truncated file to its last whole frame and calls that a clean
            // end; only a frame count the container wrote tells the two apart. A count
            // estimated from the duration cannot: a valid Matroska file whose duration field
            // runs long, or any variable-rate video, would be called truncated.
            if let Some(total) = self.announced_frames {
                if self.next_number + truncation_slack(total) < total {
                    return Err(IngestError::Stream {
                        source_name: self.display.clone(),
                        frames: self.next_number,
                        reason: format!(
                            "the file ends early (truncated?): the container announces {total} frames"
                        ),
                    });
                }
            }
            return Ok(Next::Eos);
        }
        Ok(Next::Pending)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The pipeline `source ! videoconvert ! video/x-raw,format=F ! appsink`.
fn build(
    source: &Source,
    stream: &str,
    format: PixelFormat,
) -> Result<(gst::Pipeline, gst_app::AppSink), String> {
    let (pipeline, appsink) = match source.launch_head().map_err(|e| e.to_string())? {
        Some(head) => from_description(&head)?,
        None => {
            let appsink = gst_app::AppSink::builder().build();
            (with_uridecodebin(source, &appsink)?, appsink)
        }
    };
    // A live source must never wait on us: the supervisor pulls every frame as it comes and
    // keeps the newest, and the appsink drops only if that thread is held up.
    appsink.set_caps(Some(
        &gst::Caps::builder("video/x-raw")
            .field("format", format.caps_name())
            .build(),
    ));
    appsink.set_sync(false);
    appsink.set_max_buffers(4);
    appsink.set_drop(source.is_live());
    pipeline.set_property("name", format!("ingest-{stream}"));
    crate::sched::background_streaming_threads(&pipeline);
    Ok((pipeline, appsink))
}

/// `HEAD ! videoconvert ! appsink` from a launch description, parsed whole as gst-launch does,
/// so that its sometimes-pads (decodebin's) link once they appear.
fn from_description(head: &str) -> Result<(gst::Pipeline, gst_app::AppSink), String> {
    let launched = gst::parse::launch(&format!(
        "{head} ! videoconvert ! appsink name=edgesight_sink"
    ))
    .map_err(|e| format!("the GStreamer description does not parse: {e}"))?;
    let pipeline = launched
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the description is not a pipeline".to_string())?;
    let appsink = pipeline
        .by_name("edgesight_sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or("the description's appsink is missing")?;
    Ok((pipeline, appsink))
}

/// `uridecodebin ! videoconvert ! appsink`, for files, http and RTSP. rtspsrc is configured as
/// uridecodebin creates it: latency, transport and credentials, which never enter the URI.
fn with_uridecodebin(source: &Source, appsink: &gst_app::AppSink) -> Result<gst::Pipeline, String> {
    let (uri, rtsp) = match source.kind() {
        SourceKind::Uri { uri } => (uri.clone(), None),
        SourceKind::Rtsp {
            location,
            credentials,
        } => (
            location.clone(),
            Some((source.options().clone(), credentials.clone())),
        ),
        _ => unreachable!("launch_head covers the other kinds"),
    };
    let make = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|e| format!("missing GStreamer element {factory}: {e}"))
    };
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("uridecodebin")
        .property("uri", uri)
        .build()
        .map_err(|e| format!("missing GStreamer element uridecodebin: {e}"))?;
    if let Some((opts, credentials)) = rtsp {
        src.connect("source-setup", false, move |args| {
            if let Some(rtspsrc) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                configure_rtspsrc(&rtspsrc, &opts, credentials.as_ref());
            }
            None
        });
    }
    let convert = make("videoconvert")?;
    pipeline
        .add_many([&src, &convert, appsink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    convert.link(appsink).map_err(|e| e.to_string())?;
    link_first_video_pad(&src, &convert, &pipeline);
    Ok(pipeline)
}

fn configure_rtspsrc(
    rtspsrc: &gst::Element,
    o: &SourceOptions,
    credentials: Option<&(String, crate::source::Secret)>,
) {
    rtspsrc.set_property("latency", o.latency_ms);
    rtspsrc.set_property_from_str("protocols", o.transport.protocols());
    if let Some((user, password)) = credentials {
        rtspsrc.set_property("user-id", user);
        rtspsrc.set_property("user-pw", &password.0);
    }
    // A server that answers nothing must not hold the stream for rtspsrc's own 20 s: the
    // supervisor's stall timer decides.
    rtspsrc.set_property("tcp-timeout", 5_000_000u64);
}

/// Links uridecodebin's first video pad to `convert`; audio, subtitles and further video pads
/// go to fakesinks so that they cannot stall the demuxer. No video at all is an error.
fn link_first_video_pad(src: &gst::Element, convert: &gst::Element, pipeline: &gst::Pipeline) {
    let video_linked = Arc::new(AtomicBool::new(false));
    {
        let convert = convert.clone();
        let pipeline_weak = pipeline.downgrade();
        let video_linked = video_linked.clone();
        src.connect_pad_added(move |_, pad| {
            let is_video = pad
                .current_caps()
                .or_else(|| Some(pad.query_caps(None)))
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            if is_video && !video_linked.load(Ordering::SeqCst) {
                if let Some(sink) = convert.static_pad("sink") {
                    if pad.link(&sink).is_ok() {
                        video_linked.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            if let Some(pipeline) = pipeline_weak.upgrade() {
                drain_pad(&pipeline, pad);
            }
        });
    }
    src.connect_no_more_pads(move |src| {
        if !video_linked.load(Ordering::SeqCst) {
            gst::element_error!(src, gst::StreamError::WrongType, ("no video stream found"));
        }
    });
}

fn drain_pad(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    if let Ok(sink) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
    {
        if pipeline.add(&sink).is_ok() {
            let _ = sink.sync_state_with_parent();
            if let Some(sinkpad) = sink.static_pad("sink") {
                let _ = pad.link(&sinkpad);
            }
        }
    }
}

/// Waits until the first frame has prerolled, or the pipeline fails or ends.
fn preroll(pipeline: &gst::Pipeline, bus: &gst::Bus) -> Result<(), String> {
    let fail = |reason: String| {
        let _ = pipeline.set_state(gst::State::Null);
        Err(reason)
    };
    loop {
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[
                gst::MessageType::AsyncDone,
                gst::MessageType::Error,
                gst::MessageType::Eos,
            ],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::AsyncDone(_)) => return Ok(()),
            Some(gst::MessageView::Error(e)) => return fail(describe_error(e)),
            Some(gst::MessageView::Eos(_)) => return fail("stream holds no video frames".into()),
            Some(_) => continue,
            None => return fail("timed out waiting for the first frame".into()),
        }
    }
}

/// The appsink's negotiated size and rate, once known.
fn negotiated(appsink: &gst_app::AppSink) -> ((u32, u32), Option<f64>) {
    let Some(caps) = appsink.static_pad("sink").and_then(|p| p.current_caps()) else {
        return ((0, 0), None);
    };
    let Ok(info) = gstreamer_video::VideoInfo::from_caps(&caps) else {
        return ((0, 0), None);
    };
    let fr = info.fps();
    let fps = (fr.numer() > 0 && fr.denom() > 0).then(|| fr.numer() as f64 / fr.denom() as f64);
    ((info.width(), info.height()), fps)
}

/// Frames a whole file may come up short of its announced count: durations are rounded, and
/// some muxers count a trailing frame that decoders drop.
fn truncation_slack(total: u64) -> u64 {
    (total / 50).max(2)
}

/// The frame count in an AVI file's main header (`avih.dwTotalFrames`).
///
/// avidemux rebuilds the index of a truncated AVI from what is left and announces that shorter
/// duration, so the header written when the file was whole is the only witness of the damage.
fn avi_header_frames(uri: &str) -> Option<u64> {
    use std::io::Read;
    let (path, _) = gst::glib::filename_from_uri(uri).ok()?;
    let mut head = [0u8; 52];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    let is_avi = &head[0..4] == b"RIFF"
        && &head[8..12] == b"AVI "
        && &head[12..16] == b"LIST"
        && &head[20..24] == b"hdrl"
        && &head[24..28] == b"avih";
    is_avi.then(|| u32::from_le_bytes([head[48], head[49], head[50], head[51]]) as u64)
}

fn describe_error(e: &gst::message::Error) -> String {
    match e.debug() {
        Some(d) if !d.is_empty() => {
            // GStreamer's debug strings carry source paths and element names; the last line is
            // the useful part.
            let detail = d.lines().last().unwrap_or("").trim();
            // Drop the "file.c(123): function (): /GstPipeline:..." prefix that names only
            // GStreamer's own source.
            let detail = detail.rsplit(": ").next().unwrap_or(detail).trim();
            if detail.is_empty() || detail.starts_with('/') || detail.contains(".c(") {
                e.error().to_string()
            } else {
                format!("{} ({})", e.error(), detail)
            }
        }
        _ => e.error().to_string(),
    }
}

fn first_error(bus: &gst::Bus) -> Option<String> {
    bus.pop_filtered(&[gst::MessageType::Error])
        .and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(describe_error(e)),
            _ => None,
        })
}
