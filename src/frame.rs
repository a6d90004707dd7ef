//! A decoded video frame that still lives in its GStreamer buffer.
//!
//! The pixels are never copied on the way from the decoder to preprocessing: [`Frame`] owns the
//! mapped [`gst::Buffer`] and hands out strided `ndarray` views over it. Decoders and
//! `videoconvert` pad rows to 4-byte multiples (a 642-pixel RGB row takes 1928 bytes, not 1926;
//! its I420 luma row 644), so every consumer must go through [`Frame::pixels`], which honours
//! the stride.
//!
//! Frames come in two layouts. Video arrives as I420 (planar 4:2:0, what nearly every decoder
//! emits and what the H.264 encoder takes), so the full-size frame is never converted to RGB:
//! preprocessing resizes the planes and converts only the model-sized result. Packed RGB is
//! there for callers that want plain pixels (calibration images).

use std::sync::Arc;

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use ndarray::{ArrayView2, ArrayView3, ShapeBuilder};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("sample has no buffer")]
    NoBuffer,
    #[error("sample has no usable video caps: {0}")]
    Caps(String),
    #[error("frames must be packed RGB or I420, got {0:?}")]
    Format(gst_video::VideoFormat),
    #[error("buffer could not be mapped as a {0}x{1} video frame")]
    Map(u32, u32),
}

/// One decoded frame (RGB or I420) plus where it came from.
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
            .field("format", &self.format())
            .field("stride", &self.stride())
            .finish()
    }
}

impl Frame {
    /// Wraps a sample pulled from an appsink whose caps are `video/x-raw,format=RGB` or `I420`.
    ///
    /// ```no_run
    /// # use edgesight::frame::{Frame, Pixels};
    /// # fn f(sample: gstreamer::Sample) -> Result<(), Box<dyn std::error::Error>> {
    /// let frame = Frame::from_sample(&sample, "cam0".into(), 0)?;
    /// match frame.pixels() {
    ///     Pixels::Rgb(px) => assert_eq!(px.dim().2, 3), // (height, width, 3), no copy
    ///     Pixels::I420(yuv) => assert_eq!(yuv.y.dim(), (frame.height() as usize, frame.width() as usize)),
    /// }
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
        if PixelFormat::of(info.format()).is_none() {
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

    pub fn format(&self) -> PixelFormat {
        PixelFormat::of(self.frame.format()).expect("from_buffer checked the format")
    }

    /// Bytes from the start of one row of the first plane to the next (>= width * 3 for RGB,
    /// >= width for I420's luma).
    pub fn stride(&self) -> usize {
        self.plane_stride(0)
    }

    /// Row stride of plane `i` (I420: 0 luma, 1 Cb, 2 Cr).
    pub fn plane_stride(&self, i: usize) -> usize {
        self.frame.plane_stride()[i] as usize
    }

    /// The raw bytes of plane `i`, padding included.
    pub fn plane(&self, i: usize) -> &[u8] {
        // Planes of the checked formats exist; an index past them is the caller's bug.
        self.frame.plane_data(i as u32).unwrap_or(&[])
    }

    /// The pixels, borrowing the GStreamer buffer.
    pub fn pixels(&self) -> Pixels<'_> {
        match self.format() {
            PixelFormat::Rgb => Pixels::Rgb(self.rgb_view()),
            PixelFormat::I420 => {
                let info = self.frame.info();
                let plane = |i: usize| {
                    let (ph, pw) = (
                        info.comp_height(i as u8) as usize,
                        info.comp_width(i as u8) as usize,
                    );
                    ArrayView2::from_shape(
                        (ph, pw).strides((self.plane_stride(i), 1)),
                        self.plane(i),
                    )
                    .expect("a mapped I420 plane holds its rows")
                };
                Pixels::I420(Yuv420 {
                    y: plane(0),
                    u: plane(1),
                    v: plane(2),
                    matrix: YuvMatrix::of(info),
                })
            }
        }
    }

    /// The pixels as (height, width, channel) when the frame is packed RGB.
    pub fn rgb(&self) -> Option<ArrayView3<'_, u8>> {
        (self.format() == PixelFormat::Rgb).then(|| self.rgb_view())
    }

    fn rgb_view(&self) -> ArrayView3<'_, u8> {
        let (h, w) = (self.height() as usize, self.width() as usize);
        let shape = (h, w, 3).strides((self.stride(), 3, 1));
        ArrayView3::from_shape(shape, self.plane(0))
            .expect("a mapped RGB frame holds height * stride bytes")
    }

    /// The caps the frame was decoded with (format, size, colorimetry).
    pub fn info(&self) -> &gst_video::VideoInfo {
        self.frame.info()
    }

    /// The frame's rate as the source negotiated it (frames per second), if fixed.
    pub fn fps(&self) -> Option<f64> {
        let fr = self.frame.info().fps();
        (fr.numer() > 0 && fr.denom() > 0).then(|| fr.numer() as f64 / fr.denom() as f64)
    }
}

/// The layouts a [`Frame`] can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit RGB.
    Rgb,
    /// Planar 8-bit YUV 4:2:0: full-size luma, half-size Cb and Cr.
    I420,
}

impl PixelFormat {
    fn of(f: gst_video::VideoFormat) -> Option<Self> {
        match f {
            gst_video::VideoFormat::Rgb => Some(Self::Rgb),
            gst_video::VideoFormat::I420 => Some(Self::I420),
            _ => None,
        }
    }

    /// The GStreamer format name, for caps.
    pub fn caps_name(self) -> &'static str {
        match self {
            Self::Rgb => "RGB",
            Self::I420 => "I420",
        }
    }
}

/// A frame's pixels in whichever layout it holds.
pub enum Pixels<'a> {
    Rgb(ArrayView3<'a, u8>),
    I420(Yuv420<'a>),
}

impl<'a> From<ArrayView3<'a, u8>> for Pixels<'a> {
    fn from(v: ArrayView3<'a, u8>) -> Self {
        Pixels::Rgb(v)
    }
}

/// Strided views of an I420 frame's three planes.
pub struct Yuv420<'a> {
    pub y: ArrayView2<'a, u8>,
    pub u: ArrayView2<'a, u8>,
    pub v: ArrayView2<'a, u8>,
    pub matrix: YuvMatrix,
}

/// How Y'CbCr maps to R'G'B' for one stream: the luma weights of red and blue and whether the
/// samples use the full 0..255 range or the broadcast 16..235 one.
///
/// ```
/// use edgesight::frame::YuvMatrix;
/// // Pure red in BT.601, limited range.
/// assert_eq!(YuvMatrix::BT601.from_rgb([255, 0, 0]), (81, 90, 240));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvMatrix {
    pub kr: f32,
    pub kb: f32,
    pub full_range: bool,
}

impl YuvMatrix {
    /// Standard-definition video, limited range: what GStreamer assumes for SD when the caps
    /// say nothing.
    pub const BT601: Self = Self {
        kr: 0.299,
        kb: 0.114,
        full_range: false,
    };

    /// The matrix the caps name; BT.601 where they name none (RGB, unknown).
    pub fn of(info: &gst_video::VideoInfo) -> Self {
        let c = info.colorimetry();
        let (kr, kb) = c
            .matrix()
            .kr_kb()
            .map(|(r, b)| (r as f32, b as f32))
            .unwrap_or((Self::BT601.kr, Self::BT601.kb));
        Self {
            kr,
            kb,
            full_range: c.range() == gst_video::VideoColorRange::Range0_255,
        }
    }

    /// Per-sample factors: (luma offset, luma scale, chroma scale, R from Cr, G from Cb,
    /// G from Cr, B from Cb), all in 0..255 units.
    pub(crate) fn coefficients(&self) -> [f32; 7] {
        let (yo, ys, cs) = if self.full_range {
            (0.0, 1.0, 1.0)
        } else {
            (16.0, 255.0 / 219.0, 255.0 / 224.0)
        };
        let kg = 1.0 - self.kr - self.kb;
        [
            yo,
            ys,
            cs,
            2.0 * (1.0 - self.kr),
            -2.0 * self.kb * (1.0 - self.kb) / kg,
            -2.0 * self.kr * (1.0 - self.kr) / kg,
            2.0 * (1.0 - self.kb),
        ]
    }

    /// The RGB colour of one (Y, U, V) sample.
    pub fn to_rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let [yo, ys, cs, rv, gu, gv, bu] = self.coefficients();
        let l = (y as f32 - yo) * ys;
        let (cb, cr) = ((u as f32 - 128.0) * cs, (v as f32 - 128.0) * cs);
        let q = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        [q(l + rv * cr), q(l + gu * cb + gv * cr), q(l + bu * cb)]
    }

    pub fn from_rgb(&self, rgb: [u8; 3]) -> (u8, u8, u8) {
        let [r, g, b] = rgb.map(|c| c as f32 / 255.0);
        let l = self.kr * r + (1.0 - self.kr - self.kb) * g + self.kb * b;
        let cb = (b - l) / (2.0 * (1.0 - self.kb));
        let cr = (r - l) / (2.0 * (1.0 - self.kr));
        let (ys, cs, yo) = if self.full_range {
            (255.0, 255.0, 0.0)
        } else {
            (219.0, 224.0, 16.0)
        };
        let q = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        (q(yo + ys * l), q(128.0 + cs * cb), q(128.0 + cs * cr))
    }
}
