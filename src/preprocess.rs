//! Preprocessing: a strided RGB or I420 frame becomes the tensor a model wants.
//!
//! An I420 frame is resized plane by plane and only the model-sized result is converted to
//! RGB. Resizing and the Y'CbCr-to-RGB matrix are both linear, so this gives the pixels a
//! full-size conversion followed by a resize would (up to rounding), at a fraction of the cost.
//!
//! Resizing is OpenCV's bilinear `INTER_LINEAR`, for both layouts, so calibration (RGB images)
//! and video (I420) see the same resampling; it is also what Ultralytics' letterbox and
//! TensorFlow's detection training used. `fast_image_resize` was measured here first and its
//! 8-bit single-plane path was several times slower than OpenCV's (figures in
//! docs/benchmarks.md; `cargo bench --bench preprocess` compares the layouts end to end).
//!
//! The model family says *what* it wants in a [`PreprocessSpec`] (size, letterbox or stretch,
//! layout, element type, normalisation); this module does it, and returns the [`Transform`]
//! that maps the model's coordinates back to source pixels.
//!
//! ```
//! use edgesight::preprocess::{Preprocessor, PreprocessSpec, Resize, Layout};
//! use edgesight::tensor::ElementType;
//! let spec = PreprocessSpec {
//!     width: 64, height: 64, resize: Resize::Letterbox, layout: Layout::Nchw,
//!     elem: ElementType::F32, mean: [0.0; 3], std: [255.0; 3], pad: 114,
//! };
//! let img = ndarray::Array3::<u8>::zeros((48, 96, 3));
//! let mut pre = Preprocessor::new(spec);
//! let (tensor, t) = pre.run(img.view()).unwrap();
//! assert_eq!(tensor.shape(), &[1, 3, 64, 64]);
//! assert_eq!(t.to_source(32.0, 32.0), (48.0, 24.0));
//! ```

use std::borrow::Cow;

use ndarray::{Array4, ArrayView, ArrayView3};
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cvmat::{mat_over, mat_over_mut};
use crate::frame::{Pixels, Yuv420, YuvMatrix};
use crate::tensor::{ElementType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Scale each axis independently to fill the input (SSD's training-time resize).
    Stretch,
    /// Keep the aspect ratio and pad the rest (YOLO's).
    Letterbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nhwc,
    Nchw,
}

/// How pixels are interpolated when a frame is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Bilinear: what every model family here is run with.
    #[default]
    Linear,
    /// Bicubic: a different but equally reasonable resize, for measuring how much a model's
    /// output moves under a change nobody would call a loss (`optimize`'s yardstick).
    Cubic,
}

impl Interpolation {
    fn cv(self) -> i32 {
        match self {
            Self::Linear => imgproc::INTER_LINEAR,
            Self::Cubic => imgproc::INTER_CUBIC,
        }
    }
}

/// What a model family wants from a frame. For float tensors each channel becomes
/// `(x - mean) / std`; uint8 tensors take the pixels as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessSpec {
    pub width: u32,
    pub height: u32,
    pub resize: Resize,
    pub layout: Layout,
    pub elem: ElementType,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Grey level of letterbox padding.
    pub pad: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot preprocess an empty {0}x{1} frame")]
    Empty(usize, usize),
    #[error("unsupported input element type {0:?}")]
    Elem(ElementType),
    #[error("resize failed: {0}")]
    Resize(String),
}

/// Maps model-input coordinates back to source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub src_width: u32,
    pub src_height: u32,
}

impl Transform {
    /// Source-pixel position of a model-input position, clamped to the frame.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = ((x - self.pad_x) / self.scale_x).clamp(0.0, self.src_width as f32);
        let sy = ((y - self.pad_y) / self.scale_y).clamp(0.0, self.src_height as f32);
        (sx, sy)
    }
}

/// (rows, cols, row step in bytes) of an 8-bit image in memory.
type Geometry = (usize, usize, usize);

/// (width, height) in pixels.
type Size2 = (u32, u32);

/// Resizes `rows` x `cols` pixels of `channels` bytes, `step` bytes apart, into `dst`, packed,
/// at `dw` x `dh`.
fn cv_resize(
    src: &[u8],
    (rows, cols, step): Geometry,
    channels: usize,
    dst: &mut Vec<u8>,
    (dw, dh): (u32, u32),
    interpolation: Interpolation,
) -> Result<(), PreprocessError> {
    let (dw, dh) = (dw as usize, dh as usize);
    dst.resize(dw * dh * channels, 0);
    let err = |e: opencv::Error| PreprocessError::Resize(e.to_string());
    // SAFETY: both headers are dropped at the end of this function, before their buffers;
    // the source is only read.
    let (src_mat, mut dst_mat) = unsafe {
        (
            mat_over(src, rows, cols, channels, step).map_err(err)?,
            mat_over_mut(dst, dh, dw, channels, dw * channels).map_err(err)?,
        )
    };
    let before = dst_mat.data();
    imgproc::resize(
        &src_mat,
        &mut dst_mat,
        Size::new(dw as i32, dh as i32),
        0.0,
        0.0,
        interpolation.cv(),
    )
    .map_err(err)?;
    if before != dst_mat.data() {
        // Cannot happen with matching size and type, but a silent reallocation would leave
        // `dst` stale.
        return Err(PreprocessError::Resize(
            "OpenCV reallocated the destination".into(),
        ));
    }
    Ok(())
}

/// The view's bytes and geometry for OpenCV: borrowed when its rows are packed pixels (padding
/// allowed), else copied into a packed buffer (e.g. a transposed array).
fn packed_bytes<'a, D: ndarray::Dimension>(
    v: &ArrayView<'a, u8, D>,
    px: usize,
) -> (Cow<'a, [u8]>, Geometry) {
    if let Some((bytes, geo)) = strided_bytes(v, px) {
        return (Cow::Borrowed(bytes), geo);
    }
    let (h, w) = (v.shape()[0], v.shape()[1]);
    // `iter` walks in logical (row-major) order, which is the packed layout.
    (Cow::Owned(v.iter().copied().collect()), (h, w, w * px))
}

/// The bytes a strided view covers and its (rows, cols, row step), when its pixels are packed
/// (`px` bytes, innermost axes contiguous) and rows may be padded; None otherwise.
fn strided_bytes<'a, D: ndarray::Dimension>(
    v: &ArrayView<'a, u8, D>,
    px: usize,
) -> Option<(&'a [u8], Geometry)> {
    let (shape, strides) = (v.shape(), v.strides());
    let (h, w) = (shape[0], shape[1]);
    let packed = strides[1] == px as isize && (px == 1 || strides[2] == 1);
    if !packed || strides[0] < (w * px) as isize || h == 0 || w == 0 {
        return None;
    }
    let step = strides[0] as usize;
    let len = (h - 1) * step + w * px;
    // SAFETY: with the strides checked above, the view's elements span exactly these `len`
    // bytes from its first element, and the slice borrows for the view's lifetime.
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr(), len) };
    Some((bytes, (h, w, step)))
}

/// Y'CbCr to RGB for equal-sized planes, as OpenCV's `merge` then `transform` (one 3x4
/// matrix per pixel, SIMD, saturating). Per-pixel Rust (float, table or fixed point) took
/// longer than the resize itself.
fn yuv_to_rgb(
    matrix: &YuvMatrix,
    planes: &[Vec<u8>; 3],
    (w, h): (u32, u32),
    merged: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), PreprocessError> {
    let [yo, ys, cs, rv, gu, gv, bu] = matrix.coefficients().map(f64::from);
    // R = ys*(Y-yo) + rv*cs*(V-128), and so on, as rows over (Y, U, V, 1).
    let m = [
        [ys, 0.0, rv * cs, -ys * yo - rv * cs * 128.0],
        [ys, gu * cs, gv * cs, -ys * yo - (gu + gv) * cs * 128.0],
        [ys, bu * cs, 0.0, -ys * yo - bu * cs * 128.0],
    ];
    let err = |e: opencv::Error| PreprocessError::Resize(e.to_string());
    let (w, h) = (w as usize, h as usize);
    let n = w * h;
    merged.resize(n * 3, 0);
    out.resize(n * 3, 0);
    let m = Mat::from_slice_2d(&m).map_err(err)?;
    // SAFETY: every buffer holds exactly h rows of w pixels (planes: 1 byte, merged and out: 3)
    // and outlives its header; the headers' sizes and types match what merge and transform
    // write, so neither reallocates (checked below).
    unsafe {
        let mut src = opencv::core::Vector::<Mat>::new();
        for p in planes.iter() {
            src.push(mat_over(p, h, w, 1, w).map_err(err)?);
        }
        let mut yuv = mat_over_mut(merged, h, w, 3, w * 3).map_err(err)?;
        let mut rgb = mat_over_mut(out, h, w, 3, w * 3).map_err(err)?;
        let (a, b) = (yuv.data(), rgb.data());
        opencv::core::merge(&src, &mut yuv).map_err(err)?;
        opencv::core::transform(&yuv, &mut rgb, &m).map_err(err)?;
        if a != yuv.data() || b != rgb.data() {
            return Err(PreprocessError::Resize(
                "OpenCV reallocated a buffer".into(),
            ));
        }
    }
    Ok(())
}

pub struct Preprocessor {
    spec: PreprocessSpec,
    interpolation: Interpolation,
    /// The resized image, packed RGB.
    scratch: Vec<u8>,
    /// Resized Y, Cb, Cr planes of an I420 frame.
    planes: [Vec<u8>; 3],
    merged: Vec<u8>,
    packed: Vec<u8>,
}

impl Preprocessor {
    pub fn new(spec: PreprocessSpec) -> Self {
        // Preprocessing has its own pipeline thread; OpenCV's worker pool would only take
        // cores from inference.
        let _ = opencv::core::set_num_threads(1);
        Self {
            spec,
            interpolation: Interpolation::default(),
            scratch: Vec::new(),
            planes: Default::default(),
            merged: Vec::new(),
            packed: Vec::new(),
        }
    }

    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
    }

    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// Resized size and placement of the image inside the model input.
    fn geometry(&self, w: usize, h: usize) -> Transform {
        let (dw, dh) = (self.spec.width as f32, self.spec.height as f32);
        match self.spec.resize {
            Resize::Stretch => Transform {
                scale_x: dw / w as f32,
                scale_y: dh / h as f32,
                pad_x: 0.0,
                pad_y: 0.0,
                src_width: w as u32,
                src_height: h as u32,
            },
            Resize::Letterbox => {
                let s = (dw / w as f32).min(dh / h as f32);
                let rw = (w as f32 * s).round().clamp(1.0, dw);
                let rh = (h as f32 * s).round().clamp(1.0, dh);
                Transform {
                    scale_x: rw / w as f32,
                    scale_y: rh / h as f32,
                    pad_x: ((dw - rw) / 2.0).floor(),
                    pad_y: ((dh - rh) / 2.0).floor(),
                    src_width: w as u32,
                    src_height: h as u32,
                }
            }
        }
    }

    /// One frame (a [`crate::frame::Frame`]'s pixels or an RGB array view) to a batch-of-one
    /// tensor.
    pub fn run<'a>(
        &mut self,
        img: impl Into<Pixels<'a>>,
    ) -> Result<(Tensor, Transform), PreprocessError> {
        let spec = self.spec.clone();
        let (w, h) = (spec.width as usize, spec.height as usize);
        let (t, size) = match img.into() {
            Pixels::Rgb(v) => self.resize(v)?,
            Pixels::I420(yuv) => self.resize_yuv(&yuv)?,
        };
        let rgb = self.letterboxed(&t, size);
        let tensor = match (spec.elem, spec.layout) {
            (ElementType::U8, Layout::Nhwc) => Tensor::U8(
                Array4::from_shape_vec((1, h, w, 3), rgb.to_vec())
                    .expect("packed buffer is h*w*3")
                    .into_dyn(),
            ),
            (ElementType::U8, Layout::Nchw) => {
                let mut out = Array4::<u8>::zeros((1, 3, h, w));
                for (i, px) in rgb.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[[0, c, i / w, i % w]] = px[c];
                    }
                }
                Tensor::U8(out.into_dyn())
            }
            (ElementType::F32, layout) => {
                let scale = spec.std.map(|s| 1.0 / s);
                let mean = spec.mean;
                let mut data = vec![0f32; h * w * 3];
                match layout {
                    Layout::Nhwc => {
                        for (d, (i, &v)) in data.iter_mut().zip(rgb.iter().enumerate()) {
                            let c = i % 3;
                            *d = (v as f32 - mean[c]) * scale[c];
                        }
                        Tensor::F32(
                            Array4::from_shape_vec((1, h, w, 3), data)
                                .expect("sized above")
                                .into_dyn(),
                        )
                    }
                    Layout::Nchw => {
                        let plane = h * w;
                        for (i, px) in rgb.chunks_exact(3).enumerate() {
                            for c in 0..3 {
                                data[c * plane + i] = (px[c] as f32 - mean[c]) * scale[c];
                            }
                        }
                        Tensor::F32(
                            Array4::from_shape_vec((1, 3, h, w), data)
                                .expect("sized above")
                                .into_dyn(),
                        )
                    }
                }
            }
            (other, _) => return Err(PreprocessError::Elem(other)),
        };
        Ok((tensor, t))
    }

    /// Placement of a `w` x `h` frame and its resized size.
    fn placement(&self, w: usize, h: usize) -> Result<(Transform, Size2), PreprocessError> {
        if h == 0 || w == 0 {
            return Err(PreprocessError::Empty(w, h));
        }
        let t = self.geometry(w, h);
        let rw = (w as f32 * t.scale_x).round() as u32;
        let rh = (h as f32 * t.scale_y).round() as u32;
        Ok((t, (rw, rh)))
    }

    /// Resizes into the scratch image; returns the placement and the resized size.
    fn resize(&mut self, img: ArrayView3<'_, u8>) -> Result<(Transform, Size2), PreprocessError> {
        let (h, w, _) = img.dim();
        let (t, size) = self.placement(w, h)?;
        let (bytes, geo) = packed_bytes(&img, 3);
        cv_resize(&bytes, geo, 3, &mut self.scratch, size, self.interpolation)?;
        Ok((t, size))
    }

    /// Resizes the three planes to the placement size, then converts that small image to RGB
    /// in the scratch image.
    fn resize_yuv(&mut self, yuv: &Yuv420<'_>) -> Result<(Transform, Size2), PreprocessError> {
        let (h, w) = yuv.y.dim();
        let (t, size) = self.placement(w, h)?;
        for (src, dst) in [&yuv.y, &yuv.u, &yuv.v]
            .into_iter()
            .zip(self.planes.iter_mut())
        {
            let (bytes, geo) = packed_bytes(src, 1);
            cv_resize(&bytes, geo, 1, dst, size, self.interpolation)?;
        }
        yuv_to_rgb(
            &yuv.matrix,
            &self.planes,
            size,
            &mut self.merged,
            &mut self.scratch,
        )?;
        Ok((t, size))
    }

    /// The resized image (`rw` x `rh`) placed on the padded canvas, packed HWC.
    fn letterboxed(&mut self, t: &Transform, (rw, rh): Size2) -> &[u8] {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        let (rw, rh) = (rw as usize, rh as usize);
        if (rw, rh) == (w, h) {
            return &self.scratch; // stretched, or letterboxed without padding
        }
        self.packed.clear();
        self.packed.resize(w * h * 3, self.spec.pad);
        let (px, py) = (t.pad_x as usize, t.pad_y as usize);
        for (y, row) in self.scratch.chunks_exact(rw * 3).take(rh).enumerate() {
            let dst = ((py + y) * w + px) * 3;
            self.packed[dst..dst + rw * 3].copy_from_slice(row);
        }
        &self.packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2, Array3};

    fn spec(resize: Resize, layout: Layout, elem: ElementType) -> PreprocessSpec {
        PreprocessSpec {
            width: 8,
            height: 8,
            resize,
            layout,
            elem,
            mean: [0.0; 3],
            std: [1.0; 3],
            pad: 114,
        }
    }

    /// Flat I420 planes through the whole I420 path.
    fn flat_i420(y: u8, u: u8, v: u8, matrix: crate::frame::YuvMatrix) -> [u8; 3] {
        let (py, pc) = (
            Array2::from_elem((6, 10), y),
            [Array2::from_elem((3, 5), u), Array2::from_elem((3, 5), v)],
        );
        let yuv = Yuv420 {
            y: py.view(),
            u: pc[0].view(),
            v: pc[1].view(),
            matrix,
        };
        let mut pre = Preprocessor::new(spec(Resize::Stretch, Layout::Nhwc, ElementType::U8));
        let (t, _) = pre.run(Pixels::I420(yuv)).unwrap();
        let Tensor::U8(a) = t else { panic!() };
        let px = [a[[0, 3, 3, 0]], a[[0, 3, 3, 1]], a[[0, 3, 3, 2]]];
        assert!(
            a.iter().step_by(3).all(|&r| r == px[0]),
            "flat in, flat out"
        );
        px
    }

    /// Bicubic and bilinear agree on a flat image and part, a little, on a textured one.
    #[test]
    fn cubic_resize_is_another_reasonable_resize() {
        let resized = |img: &Array3<u8>, i: Interpolation| {
            let s = spec(Resize::Stretch, Layout::Nhwc, ElementType::U8);
            let mut pre = Preprocessor::new(s).with_interpolation(i);
            let (t, _) = pre.run(img.view()).unwrap();
            let Tensor::U8(a) = t else { panic!() };
            a
        };
        let flat = Array3::from_elem((20, 28, 3), 77u8);
        assert_eq!(
            resized(&flat, Interpolation::Linear),
            resized(&flat, Interpolation::Cubic)
        );
        let texture = Array3::from_shape_fn((20, 28, 3), |(y, x, _)| {
            (((x * 37 + y * 11) % 97) * 2) as u8
        });
        let (lin, cub) = (
            resized(&texture, Interpolation::Linear),
            resized(&texture, Interpolation::Cubic),
        );
        let diffs: Vec<u32> = lin
            .iter()
            .zip(&cub)
            .map(|(a, b)| a.abs_diff(*b) as u32)
            .collect();
        let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
        assert!(diffs.iter().any(|&d| d > 0), "bicubic is another resize");
        assert!(mean < 20.0, "and a close one: mean difference {mean}");
    }

    #[test]
    fn i420_follows_bt601_limited_and_full_range() {
        use crate::frame::YuvMatrix;
        let lim = YuvMatrix::BT601;
        // Black, white and a grey of limited range: (Y - 16) * 255 / 219.
        assert_eq!(flat_i420(16, 128, 128, lim), [0, 0, 0]);
        assert_eq!(flat_i420(235, 128, 128, lim), [255, 255, 255]);
        assert_eq!(flat_i420(99, 128, 128, lim), [97, 97, 97]); // 96.64
                                                                // BT.601 red is (81, 90, 240) in limited range.
        let red = flat_i420(81, 90, 240, lim);
        assert!(red[0] >= 253 && red[1] <= 2 && red[2] <= 2, "{red:?}");
        let full = YuvMatrix {
            full_range: true,
            ..lim
        };
        assert_eq!(flat_i420(99, 128, 128, full), [99, 99, 99]);
        // BT.709 weights: pure green differs from BT.601's.
        let bt709 = YuvMatrix {
            kr: 0.2126,
            kb: 0.0722,
            full_range: false,
        };
        for m in [lim, full, bt709] {
            for rgb in [[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 120, 40]] {
                let (y, u, v) = m.from_rgb(rgb);
                let back = flat_i420(y, u, v, m);
                for c in 0..3 {
                    assert!(
                        (back[c] as i32 - rgb[c] as i32).abs() <= 2,
                        "{m:?} {rgb:?} -> {back:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn letterbox_pads_and_maps_back() {
        // 16x8 image, red: scaled to 8x4 and centred vertically with 2 rows of padding.
        let mut img = Array3::<u8>::zeros((8, 16, 3));
        img.slice_mut(s![.., .., 0]).fill(200);
        let mut pre = Preprocessor::new(spec(Resize::Letterbox, Layout::Nhwc, ElementType::U8));
        let (t, tr) = pre.run(img.view()).unwrap();
        let Tensor::U8(a) = t else { panic!() };
        assert_eq!(a.shape(), &[1, 8, 8, 3]);
        assert_eq!(a[[0, 0, 0, 0]], 114, "top padding");
        assert_eq!(a[[0, 4, 4, 0]], 200, "image content");
        assert_eq!(a[[0, 7, 0, 1]], 114, "bottom padding");
        assert_eq!((tr.pad_x, tr.pad_y), (0.0, 2.0));
        assert_eq!(tr.to_source(8.0, 6.0), (16.0, 8.0));
    }

    #[test]
    fn nchw_float_normalises_per_channel() {
        let mut img = Array3::<u8>::zeros((4, 4, 3));
        img.slice_mut(s![.., .., 1]).fill(255);
        let mut sp = spec(Resize::Stretch, Layout::Nchw, ElementType::F32);
        sp.std = [255.0; 3];
        let mut pre = Preprocessor::new(sp);
        let (t, _) = pre.run(img.view()).unwrap();
        let Tensor::F32(a) = t else { panic!() };
        assert_eq!(a.shape(), &[1, 3, 8, 8]);
        assert!(a.slice(s![0, 0, .., ..]).iter().all(|&v| v == 0.0));
        assert!(a
            .slice(s![0, 1, .., ..])
            .iter()
            .all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn non_strided_view_is_packed_first() {
        // A transposed view has no row step OpenCV can use; it is copied, not misread.
        let img = Array3::from_shape_fn((7, 5, 3), |(y, x, c)| (y * 31 + x * 7 + c) as u8);
        let t = img.view().permuted_axes([1, 0, 2]);
        let packed = t.as_standard_layout().to_owned();
        let mut pre = Preprocessor::new(spec(Resize::Stretch, Layout::Nhwc, ElementType::U8));
        let (a, _) = pre.run(t).unwrap();
        let (b, _) = pre.run(packed.view()).unwrap();
        let (Tensor::U8(a), Tensor::U8(b)) = (a, b) else {
            panic!()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn strided_source_matches_packed_source() {
        // Same pixels with and without row padding must give the same tensor.
        let packed = Array3::from_shape_fn((5, 7, 3), |(y, x, c)| (y * 31 + x * 7 + c) as u8);
        let mut padded = Array3::<u8>::zeros((5, 8, 3));
        padded.slice_mut(s![.., ..7, ..]).assign(&packed);
        let strided = padded.slice(s![.., ..7, ..]);
        let mut pre = Preprocessor::new(spec(Resize::Stretch, Layout::Nhwc, ElementType::U8));
        let (a, _) = pre.run(packed.view()).unwrap();
        let (b, _) = pre.run(strided).unwrap();
        let (Tensor::U8(a), Tensor::U8(b)) = (a, b) else {
            panic!()
        };
        assert_eq!(a, b);
    }
}
