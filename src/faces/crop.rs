//! A region of a decoded frame as packed RGB: what a detector runs on when it looks for faces
//! inside a person's box. Only the region is converted, never the whole frame.
//!
//! ```no_run
//! # fn f(frame: &edgesight::frame::Frame) {
//! let (rgb, (x0, y0), (w, h)) = edgesight::faces::crop::rgb_region(frame, [10.0, 20.0, 110.0, 220.0]).unwrap();
//! assert_eq!(rgb.len(), w * h * 3);
//! # }
//! ```

use crate::frame::{Frame, PixelFormat, YuvMatrix};

/// Packed RGB pixels, the region's top-left corner in the frame, and its (width, height).
pub type Region = (Vec<u8>, (usize, usize), (usize, usize));

/// The pixels of `region` (x1, y1, x2, y2, clipped to the frame) as packed RGB, with the
/// region's top-left corner and its size. None when nothing of it lies inside the frame.
pub fn rgb_region(frame: &Frame, region: [f32; 4]) -> Option<Region> {
    let (fw, fh) = (frame.width() as f32, frame.height() as f32);
    let x0 = region[0].clamp(0.0, fw).floor() as usize;
    let y0 = region[1].clamp(0.0, fh).floor() as usize;
    let x1 = region[2].clamp(0.0, fw).ceil() as usize;
    let y1 = region[3].clamp(0.0, fh).ceil() as usize;
    if x1 <= x0 + 1 || y1 <= y0 + 1 {
        return None;
    }
    let (w, h) = (x1 - x0, y1 - y0);
    let mut out = Vec::with_capacity(w * h * 3);
    match frame.format() {
        PixelFormat::Rgb => {
            let (p, stride) = (frame.plane(0), frame.plane_stride(0));
            for y in y0..y1 {
                out.extend_from_slice(&p[y * stride + x0 * 3..y * stride + x1 * 3]);
            }
        }
        PixelFormat::I420 => {
            let m = YuvMatrix::of(frame.info());
            let (py, pu, pv) = (frame.plane(0), frame.plane(1), frame.plane(2));
            let (sy, su, sv) = (
                frame.plane_stride(0),
                frame.plane_stride(1),
                frame.plane_stride(2),
            );
            for y in y0..y1 {
                for x in x0..x1 {
                    let (cx, cy) = (x / 2, y / 2);
                    out.extend(m.to_rgb(py[y * sy + x], pu[cy * su + cx], pv[cy * sv + cx]));
                }
            }
        }
    }
    Some((out, (x0, y0), (w, h)))
}
