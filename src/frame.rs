//! A decoded video frame that still lives in its GStreamer buffer.
//!
//! The pixels are never copied on the way from the decoder to preprocessing: [`Frame`] owns the
//! mapped [`gst::Buffer`] and hands out a strided [`ndarray::ArrayView3`] over it. Decoders and
//! `videoconvert` pad rows to 4-byte multiples (a 642-pixel RGB row takes 1928 bytes, not 1926),
//! so every consumer must go through [`Frame::view`], which honours the stride.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use ndarray::{ArrayView3, ShapeBuilder};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("sample has no buffer")]
    NoBuffer,
    #[error("sample has no usable video caps: {0}")]
    Caps(String),
    #[error("frames must be packed RGB, got {0:?}")]
    Format(gst_video::VideoFormat),
    #[error("buffer could not be mapped as a {0}x{1} video frame")]
    Map(u32, u32),
}

/// One decoded RGB frame plus where it came from.
pub struct Frame {
    frame: gst_video::VideoFrame<gst_video::video_frame::Readable>,
    /// Name of the stream this frame belongs to (unique within a run).
    pub stream: Arc<str>,
    /// 0-based index of the frame within its stream.
    pub number: u64,
    /// Presentation timestamp, when the source gave one.
    pub pts: Option<gst::ClockTime>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("stream", &self.stream)
            .field("number", &self.number)
            .field("pts", &self.pts)
            .field("size", &(self.width(), self.height()))
            .field("stride", &self.stride())
            .finish()
    }
}

impl Frame {
    /// Wraps a sample pulled from an appsink whose caps are `video/x-raw,format=RGB`.
    ///
    /// ```no_run
    /// # use edgesight::frame::Frame;
    /// # fn f(sample: gstreamer::Sample) -> Result<(), Box<dyn std::error::Error>> {
    /// let frame = Frame::from_sample(&sample, "cam0".into(), 0)?;
    /// let px = frame.view(); // (height, width, 3), no copy
    /// assert_eq!(px.dim().2, 3);
    /// # Ok(()) }
    /// ```
    pub fn from_sample(
        sample: &gst::Sample,
        stream: Arc<str>,
        number: u64,
    ) -> Result<Self, FrameError> {
        let caps = sample
            .caps()
            .ok_or_else(|| FrameError::Caps("none".into()))?;
        let info =
            gst_video::VideoInfo::from_caps(caps).map_err(|e| FrameError::Caps(e.to_string()))?;
        let buffer = sample.buffer_owned().ok_or(FrameError::NoBuffer)?;
        Self::from_buffer(buffer, &info, stream, number)
    }

    /// Wraps a buffer described by `info`; the buffer is mapped once, read-only, for the frame's
    /// whole life.
    pub fn from_buffer(
        buffer: gst::Buffer,
        info: &gst_video::VideoInfo,
        stream: Arc<str>,
        number: u64,
    ) -> Result<Self, FrameError> {
        if info.format() != gst_video::VideoFormat::Rgb {
            return Err(FrameError::Format(info.format()));
        }
        let pts = buffer.pts();
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, info)
            .map_err(|_| FrameError::Map(info.width(), info.height()))?;
        Ok(Self {
            frame,
            stream,
            number,
            pts,
        })
    }

    pub fn width(&self) -> u32 {
        self.frame.width()
    }

    pub fn height(&self) -> u32 {
        self.frame.height()
    }

    /// Bytes from the start of one row to the start of the next (>= width * 3).
    pub fn stride(&self) -> usize {
        self.frame.plane_stride()[0] as usize
    }

    /// The raw plane, padding included.
    pub fn plane(&self) -> &[u8] {
        // A mapped RGB frame always has plane 0; `from_buffer` checked the format.
        self.frame.plane_data(0).unwrap_or(&[])
    }

    /// The pixels as (height, width, channel), borrowing the GStreamer buffer.
    pub fn view(&self) -> ArrayView3<'_, u8> {
        let (h, w) = (self.height() as usize, self.width() as usize);
        let shape = (h, w, 3).strides((self.stride(), 3, 1));
        ArrayView3::from_shape(shape, self.plane())
            .expect("a mapped RGB frame holds height * stride bytes")
    }

    /// The frame's rate as the source negotiated it (frames per second), if fixed.
    pub fn fps(&self) -> Option<f64> {
        let fr = self.frame.info().fps();
        (fr.numer() > 0 && fr.denom() > 0).then(|| fr.numer() as f64 / fr.denom() as f64)
    }
}
