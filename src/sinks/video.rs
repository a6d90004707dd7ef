//! The annotated video: frames with their boxes, encoded to H.264 in MP4 through GStreamer.
//!
//! `appsrc ! videoconvert ! video/x-raw,format=I420 ! x264enc ! h264parse ! mp4mux ! filesink`.
//! The I420 caps matter: left alone, x264enc negotiates 4:4:4, which most players and hardware
//! decoders refuse. The file is only playable once mp4mux has written its index, so
//! [`Sink::finish`] sends EOS and waits for it to reach the file.

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{draw::draw_detections, Sink, SinkError};
use crate::detection::Detection;
use crate::frame::Frame;

pub struct AnnotatedVideo {
    path: PathBuf,
    fps: f64,
    running: Option<Running>,
    scratch_frames: u64,
}

struct Running {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    size: (u32, u32),
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
        })
    }

    fn err(&self, reason: impl ToString) -> SinkError {
        SinkError::Video {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn start(&self, width: u32, height: u32) -> Result<Running, SinkError> {
        let fps = gst::Fraction::approximate_f64(self.fps).unwrap_or(gst::Fraction::new(25, 1));
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", fps)
            .build();
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            .block(true)
            .max_bytes((width * height * 3 * 8) as u64)
            .build();
        let pipeline = gst::Pipeline::with_name("annotated-video");
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
            size: (width, height),
        })
    }
}

impl Sink for AnnotatedVideo {
    fn write(&mut self, frame: &Frame, dets: &[Detection]) -> Result<(), SinkError> {
        let (w, h) = (frame.width(), frame.height());
        if self.running.is_none() {
            self.running = Some(self.start(w, h)?);
        }
        let running = self.running.as_ref().expect("started above");
        if running.size != (w, h) {
            return Err(self.err(format!(
                "frame size changed from {:?} to {:?} mid-stream",
                running.size,
                (w, h)
            )));
        }
        // The decoded buffer is read-only and padded; draw on a packed copy.
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        let (stride, row) = (frame.stride(), (w * 3) as usize);
        let plane = frame.plane();
        for y in 0..h as usize {
            rgb.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        draw_detections(&mut rgb, w, h, dets).map_err(|e| self.err(e))?;
        let mut buffer = gst::Buffer::from_mut_slice(rgb);
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            let dur = gst::ClockTime::from_nseconds((1e9 / self.fps) as u64);
            // Sources without timestamps (a still image) get a steady clock from the rate.
            let pts = frame.pts.unwrap_or(dur * self.scratch_frames);
            b.set_pts(pts);
            b.set_duration(dur);
        }
        self.scratch_frames += 1;
        running
            .appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| self.err(format!("encoder refused a frame: {e:?}")))
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        let Some(r) = &self.running else {
            return Ok(()); // no frame: nothing to encode
        };
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
