//! The annotated video: frames with their boxes, encoded to H.264 in MP4 through GStreamer.
//!
//! `appsrc ! videoconvert ! video/x-raw,format=I420 ! x264enc ! h264parse ! mp4mux ! filesink`.
//! The I420 caps matter: left alone, x264enc negotiates 4:4:4, which most players and hardware
//! decoders refuse. Frames that arrive as I420 (all video from [`crate::ingest`]) are drawn on
//! in I420, so `videoconvert` passes them through: no colour conversion on the way out either. The file is only playable once mp4mux has written its index, so
//! [`Sink::finish`] sends EOS and waits for it to reach the file.

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use gstreamer_video as gst_video;

use super::{Sink, SinkError};
use crate::detection::Detection;
use crate::draw::{annotated_copy, Overlay};
use crate::frame::{Frame, YuvMatrix};

pub struct AnnotatedVideo {
    path: PathBuf,
    fps: f64,
    running: Option<Running>,
    scratch_frames: u64,
    /// A live stream's video is cut into segments, stamped by the wall clock.
    segments: Option<Segments>,
}

/// A live stream never ends by itself: its video goes to `annotated-NNNN.mp4` files of
/// `length` each, so that a crash loses at most the segment being written and a months-long
/// run writes no endless file. Timestamps come from the wall clock, since a reconnected
/// source starts its own from zero again.
struct Segments {
    dir: PathBuf,
    length: std::time::Duration,
    index: u32,
    started: Option<std::time::Instant>,
}

struct Running {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// Size of the frames coming in.
    source_size: (u32, u32),
    /// Layout of the buffers pushed: the frame's format and colorimetry, unpadded strides,
    /// even sides.
    info: gst_video::VideoInfo,
    matrix: YuvMatrix,
}

impl AnnotatedVideo {
    /// The encoder starts with the first frame, once its size is known.
    pub fn create(path: &Path, fps: Option<f64>) -> Result<Self, SinkError> {
        gst::init().map_err(|e| SinkError::Video {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        // Fail now, not at the first frame, when the folder is not writable.
        std::fs::File::create(path).map_err(|e| SinkError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            fps: fps.filter(|f| *f > 0.0).unwrap_or(25.0),
            running: None,
            scratch_frames: 0,
            segments: None,
        })
    }

    /// The file name of segment `i` of a live stream's video.
    pub fn segment_name(i: u32) -> String {
        format!("annotated-{i:04}.mp4")
    }

    /// A live stream's video in `dir`, cut every `length`.
    pub fn segmented(dir: &Path, length: std::time::Duration) -> Result<Self, SinkError> {
        let mut v = Self::create(&dir.join(Self::segment_name(0)), None)?;
        v.segments = Some(Segments {
            dir: dir.to_path_buf(),
            length: length.max(std::time::Duration::from_secs(1)),
            index: 0,
            started: None,
        });
        Ok(v)
    }

    /// Finalizes the current segment and moves on to the next file when it is due.
    fn roll_segment(&mut self) -> Result<(), SinkError> {
        let Some(seg) = &mut self.segments else {
            return Ok(());
        };
        let due = seg.started.is_some_and(|t| t.elapsed() >= seg.length);
        if !due {
            return Ok(());
        }
        seg.index += 1;
        seg.started = None;
        let next = seg.dir.join(Self::segment_name(seg.index));
        if let Some(r) = self.running.take() {
            self.finalize(&r)?;
        }
        self.path = next;
        self.scratch_frames = 0;
        Ok(())
    }

    /// The timestamp of the next frame: the source's own for a file, the wall clock since the
    /// segment began for a live stream.
    fn next_pts(&mut self, frame: &Frame, dur: gst::ClockTime) -> gst::ClockTime {
        match &mut self.segments {
            Some(seg) => {
                let started = *seg.started.get_or_insert_with(std::time::Instant::now);
                gst::ClockTime::from_nseconds(started.elapsed().as_nanos() as u64)
            }
            // Sources without timestamps (a still image) get a steady clock from the rate.
            None => frame.pts.unwrap_or(dur * self.scratch_frames),
        }
    }

    fn err(&self, reason: impl ToString) -> SinkError {
        SinkError::Video {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn start(&self, frame: &Frame) -> Result<Running, SinkError> {
        let fps = gst::Fraction::approximate_f64(self.fps).unwrap_or(gst::Fraction::new(25, 1));
        let src = frame.info();
        // H.264 in 4:2:0 needs even sides (x264 refuses 641x361): an odd last column or row
        // is left out of the annotated video.
        let (w, h) = (src.width() & !1, src.height() & !1);
        if w == 0 || h == 0 {
            return Err(self.err(format!(
                "a {}x{} frame is too small to encode",
                src.width(),
                src.height()
            )));
        }
        let info = gst_video::VideoInfo::builder(src.format(), w, h)
            .fps(fps)
            .colorimetry(&src.colorimetry())
            .build()
            .map_err(|e| self.err(e))?;
        let caps = info.to_caps().map_err(|e| self.err(e))?;
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            // Back-pressure is done in `push`, which also watches for encoder errors: a
            // blocking appsrc would wait forever on an encoder that has failed.
            .block(false)
            .max_bytes(QUEUED_FRAMES * info.size() as u64)
            .build();
        let pipeline = gst::Pipeline::with_name("annotated-video");
        crate::sched::background_streaming_threads(&pipeline);
        let make = |name: &str| {
            gst::ElementFactory::make(name)
                .build()
                .map_err(|e| self.err(format!("missing GStreamer element {name}: {e}")))
        };
        let convert = make("videoconvert")?;
        let filter = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            )
            .build()
            .map_err(|e| self.err(e))?;
        let enc = make("x264enc")?;
        enc.set_property_from_str("speed-preset", "ultrafast");
        enc.set_property_from_str("tune", "zerolatency");
        // Constant quantizer, no rate control: about half the CPU of x264's default 2 Mbit/s
        // target in a smaller file (docs/benchmarks.md), and QP 23 keeps boxes, labels and
        // faces sharp.
        enc.set_property_from_str("pass", "quant");
        enc.set_property("quantizer", 23u32);
        // One thread: the encoder must not compete with inference for the cores.
        enc.set_property("threads", 1u32);
        let parse = make("h264parse")?;
        let mux = make("mp4mux")?;
        let sink = gst::ElementFactory::make("filesink")
            .property("location", self.path.to_string_lossy().to_string())
            .build()
            .map_err(|e| self.err(e))?;
        let elems = [
            appsrc.upcast_ref::<gst::Element>(),
            &convert,
            &filter,
            &enc,
            &parse,
            &mux,
            &sink,
        ];
        pipeline.add_many(elems).map_err(|e| self.err(e))?;
        gst::Element::link_many(elems).map_err(|e| self.err(e))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| self.err(e))?;
        Ok(Running {
            pipeline,
            appsrc,
            source_size: (src.width(), src.height()),
            info,
            matrix: YuvMatrix::of(src),
        })
    }
}

/// Frames the encoder may have queued before `write` waits for it.
const QUEUED_FRAMES: u64 = 8;

impl AnnotatedVideo {
    /// Hands a frame to the encoder, waiting while it has `QUEUED_FRAMES` queued, and fails
    /// with the encoder's own error as soon as it posts one.
    fn push(&self, buffer: gst::Buffer) -> Result<(), SinkError> {
        let r = self
            .running
            .as_ref()
            .expect("started before the first push");
        let bus = r.pipeline.bus().expect("a pipeline has a bus");
        loop {
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = msg.view() {
                    let detail = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                    return Err(self.err(format!("encoder failed: {}{detail}", e.error())));
                }
            }
            if r.appsrc.current_level_bytes() < r.appsrc.max_bytes() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        r.appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| self.err(format!("encoder refused a frame: {e:?}")))
    }
}

impl Sink for AnnotatedVideo {
    fn write(
        &mut self,
        frame: &Frame,
        dets: &[Detection],
        overlay: &Overlay,
    ) -> Result<(), SinkError> {
        self.roll_segment()?;
        if self.running.is_none() {
            if let Some(f) = frame.fps().filter(|f| *f > 0.0) {
                self.fps = f;
            }
            self.running = Some(self.start(frame)?);
        }
        let running = self.running.as_ref().expect("started above");
        let info = &running.info;
        let (sw, sh) = (frame.width(), frame.height());
        if running.source_size != (sw, sh) || info.format() != frame.info().format() {
            return Err(self.err(format!(
                "frame changed from {}x{} {:?} to {sw}x{sh} {:?} mid-stream",
                running.source_size.0,
                running.source_size.1,
                info.format(),
                frame.info().format()
            )));
        }
        let data =
            annotated_copy(frame, info, &running.matrix, dets, overlay).map_err(|e| self.err(e))?;
        let mut buffer = gst::Buffer::from_mut_slice(data);
        let dur = gst::ClockTime::from_nseconds((1e9 / self.fps) as u64);
        let pts = self.next_pts(frame, dur);
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(pts);
            b.set_duration(dur);
        }
        self.scratch_frames += 1;
        self.push(buffer)
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        let Some(r) = &self.running else {
            // No frame came: leave no empty file that looks like a broken video.
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&self.path);
            }
            return Ok(());
        };
        self.finalize(r)
    }
}

impl AnnotatedVideo {
    /// Sends EOS and waits until mp4mux has written its index: only then does the file play.
    fn finalize(&self, r: &Running) -> Result<(), SinkError> {
        let _ = r.appsrc.end_of_stream();
        let bus = r.pipeline.bus().expect("a pipeline has a bus");
        let result = match bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .as_ref()
            .map(|m| m.view())
        {
            Some(gst::MessageView::Eos(_)) => Ok(()),
            Some(gst::MessageView::Error(e)) => Err(self.err(e.error())),
            _ => Err(self.err("timed out finalizing the file")),
        };
        let _ = r.pipeline.set_state(gst::State::Null);
        result
    }
}

/// An unpadded, even-sided copy of `frame` with `dets` drawn, and its layout: what an encoder
/// outside this module (the RTSP output) is fed.
pub fn annotated(
    frame: &Frame,
    dets: &[Detection],
    overlay: &Overlay,
) -> Result<(Vec<u8>, gst_video::VideoInfo), String> {
    let src = frame.info();
    let (w, h) = (src.width() & !1, src.height() & !1);
    if w == 0 || h == 0 {
        return Err(format!(
            "a {}x{} frame is too small to encode",
            src.width(),
            src.height()
        ));
    }
    let mut b = gst_video::VideoInfo::builder(src.format(), w, h).colorimetry(&src.colorimetry());
    if let Some(fps) = frame.fps().and_then(gst::Fraction::approximate_f64) {
        b = b.fps(fps);
    }
    let info = b.build().map_err(|e| e.to_string())?;
    let data = annotated_copy(frame, &info, &YuvMatrix::of(src), dets, overlay)
        .map_err(|e| e.to_string())?;
    Ok((data, info))
}
