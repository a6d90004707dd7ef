//! Preprocessing: a strided RGB frame becomes the tensor a model wants.
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

use fast_image_resize::{self as fr, images::TypedImage, pixels::U8x3, ImageView};
use ndarray::{Array4, ArrayView3};
use serde::{Deserialize, Serialize};

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

/// A strided RGB view that fast_image_resize can read without a copy.
struct StridedRgb<'a> {
    data: &'a [u8],
    width: u32,
    height: u32,
    stride: usize,
}

// SAFETY: rows handed out lie inside `data` (checked in `from_view`) and U8x3 is a
// `#[repr(C)]` wrapper of `[u8; 3]`, so a row of `width * 3` bytes is `width` pixels.
unsafe impl ImageView for StridedRgb<'_> {
    type Pixel = U8x3;

    fn width(&self) -> u32 {
        self.width
    }

    fn height(&self) -> u32 {
        self.height
    }

    fn iter_rows(&self, start_row: u32) -> impl Iterator<Item = &[U8x3]> {
        let w = self.width as usize;
        (start_row as usize..self.height as usize).map(move |y| {
            let row = &self.data[y * self.stride..y * self.stride + w * 3];
            unsafe { std::slice::from_raw_parts(row.as_ptr() as *const U8x3, w) }
        })
    }
}

impl<'a> StridedRgb<'a> {
    fn from_view(img: &ArrayView3<'a, u8>) -> Option<Self> {
        let (h, w, c) = img.dim();
        let s = img.strides();
        if c != 3 || s[1] != 3 || s[2] != 1 || s[0] < (w * 3) as isize || h == 0 || w == 0 {
            return None;
        }
        let stride = s[0] as usize;
        let len = (h - 1) * stride + w * 3;
        // SAFETY: the view covers exactly these bytes with the strides checked above.
        let data = unsafe { std::slice::from_raw_parts(img.as_ptr(), len) };
        Some(Self {
            data,
            width: w as u32,
            height: h as u32,
            stride,
        })
    }
}

pub struct Preprocessor {
    spec: PreprocessSpec,
    resizer: fr::Resizer,
    options: fr::ResizeOptions,
    scratch: Option<TypedImage<'static, U8x3>>,
    packed: Vec<u8>,
}

impl Preprocessor {
    pub fn new(spec: PreprocessSpec) -> Self {
        Self {
            spec,
            resizer: fr::Resizer::new(),
            options: fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
            scratch: None,
            packed: Vec::new(),
        }
    }

    pub fn spec(&self) -> &PreprocessSpec {
        &self.spec
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

    /// One frame to a batch-of-one tensor.
    pub fn run(&mut self, img: ArrayView3<'_, u8>) -> Result<(Tensor, Transform), PreprocessError> {
        let spec = self.spec.clone();
        let (w, h) = (spec.width as usize, spec.height as usize);
        let t = self.resize(img)?;
        let rgb = self.letterboxed(&t);
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

    /// Resizes into the scratch image; returns the placement.
    fn resize(&mut self, img: ArrayView3<'_, u8>) -> Result<Transform, PreprocessError> {
        let (h, w, _) = img.dim();
        if h == 0 || w == 0 {
            return Err(PreprocessError::Empty(w, h));
        }
        let t = self.geometry(w, h);
        let rw = (w as f32 * t.scale_x).round() as u32;
        let rh = (h as f32 * t.scale_y).round() as u32;
        let scratch = match &mut self.scratch {
            Some(s) if s.width() == rw && s.height() == rh => s,
            slot => slot.insert(TypedImage::new(rw, rh)),
        };
        match StridedRgb::from_view(&img) {
            Some(src) => self
                .resizer
                .resize_typed(&src, scratch, &self.options)
                .map_err(|e| PreprocessError::Resize(e.to_string()))?,
            None => {
                // Not a plain strided RGB view (e.g. a transposed array): pack it first.
                let owned = img.as_standard_layout().to_owned();
                let src =
                    StridedRgb::from_view(&owned.view()).ok_or(PreprocessError::Empty(w, h))?;
                self.resizer
                    .resize_typed(&src, scratch, &self.options)
                    .map_err(|e| PreprocessError::Resize(e.to_string()))?
            }
        }
        Ok(t)
    }

    /// The resized image placed on the padded canvas, packed HWC.
    fn letterboxed(&mut self, t: &Transform) -> &[u8] {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        let scratch = self.scratch.as_ref().expect("resize ran first");
        let (rw, rh) = (scratch.width() as usize, scratch.height() as usize);
        self.packed.clear();
        self.packed.resize(w * h * 3, self.spec.pad);
        let (px, py) = (t.pad_x as usize, t.pad_y as usize);
        let src = scratch.pixels();
        for y in 0..rh {
            let row = &src[y * rw..(y + 1) * rw];
            let dst = ((py + y) * w + px) * 3;
            for (i, p) in row.iter().enumerate() {
                self.packed[dst + i * 3..dst + i * 3 + 3].copy_from_slice(&p.0);
            }
        }
        &self.packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};

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
