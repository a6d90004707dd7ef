//! One annotated frame as a JPEG, for pictures in reports (`optimize`'s comparison of FP32 and
//! the optimized model): `appsrc ! videoconvert ! jpegenc ! filesink`.
//!
//! ```no_run
//! use edgesight::optimize::calibrate::decode_image;
//! use edgesight::picture::write_jpeg;
//! let frame = decode_image("assets/bus.jpg".as_ref())?;
//! write_jpeg(&frame, &[], "/tmp/bus.jpg".as_ref())?; // no boxes: the frame as it is
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::detection::Detection;
use crate::draw::{annotated_copy, Overlay};
use crate::frame::{Frame, YuvMatrix};

/// A picture that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("picture {path}: {reason}")]
pub struct PictureError {
    pub path: String,
    pub reason: String,
}

/// One annotated frame as a JPEG, for pictures in reports:
/// `appsrc ! videoconvert ! jpegenc ! filesink`.
pub fn write_jpeg(frame: &Frame, dets: &[Detection], path: &Path) -> Result<(), PictureError> {
    let err = |reason: String| PictureError {
        path: path.display().to_string(),
        reason,
    };
    let src = frame.info();
    // Even sides, as for the video: 4:2:0 chroma of an odd side is ambiguous to encoders.
    let (w, h) = (src.width() & !1, src.height() & !1);
    if w == 0 || h == 0 {
        return Err(err(format!(
            "a {}x{} frame is too small to encode",
            src.width(),
            src.height()
        )));
    }
    let info = gst_video::VideoInfo::builder(src.format(), w, h)
        .colorimetry(&src.colorimetry())
        .build()
        .map_err(|e| err(e.to_string()))?;
    let data = annotated_copy(frame, &info, &YuvMatrix::of(src), dets, &Overlay::NONE)
        .map_err(|e| err(e.to_string()))?;
    let caps = info.to_caps().map_err(|e| err(e.to_string()))?;
    let appsrc = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let pipeline = gst::Pipeline::with_name("picture");
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|e| err(format!("missing GStreamer element {name}: {e}")))
    };
    let (convert, enc) = (make("videoconvert")?, make("jpegenc")?);
    let sink = gst::ElementFactory::make("filesink")
        .property("location", path.to_string_lossy().to_string())
        .build()
        .map_err(|e| err(e.to_string()))?;
    let elems = [appsrc.upcast_ref::<gst::Element>(), &convert, &enc, &sink];
    pipeline.add_many(elems).map_err(|e| err(e.to_string()))?;
    gst::Element::link_many(elems).map_err(|e| err(e.to_string()))?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| err(e.to_string()))?;
    let mut buffer = gst::Buffer::from_mut_slice(data);
    buffer
        .get_mut()
        .expect("a new buffer is writable")
        .set_pts(gst::ClockTime::ZERO);
    let pushed = appsrc
        .push_buffer(buffer)
        .and_then(|_| appsrc.end_of_stream())
        .map_err(|e| err(format!("encoder refused the frame: {e:?}")));
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let done = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    pushed?;
    match done.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => Err(err(format!("encoder failed: {}", e.error()))),
        _ => Err(err("the encoder did not finish within 10 s".into())),
    }
}
