//! Frames reach the model through the I420 path (planes resized, then converted at model
//! size). A caller that asks for packed RGB gets GStreamer's full-size conversion instead. Both
//! must give the model the same tensor, for limited-range video (vtest.avi, BT.601) and
//! full-range JPEG (bus.jpg): a wrong matrix or range would shift pixels by 5-20 levels.

mod common;

use std::time::Duration;

use edgesight::frame::{Frame, PixelFormat};
use edgesight::ingest::{resolve_input, Decoder, Next};
use edgesight::preprocess::{Layout, PreprocessSpec, Preprocessor, Resize};
use edgesight::tensor::{ElementType, Tensor};

fn nth_frame(path: &str, format: PixelFormat, n: usize) -> Frame {
    let uri = resolve_input(common::asset(path).to_str().unwrap()).unwrap();
    let mut dec = Decoder::open_as(&uri, "check".into(), format).unwrap();
    let mut seen = 0;
    loop {
        match dec.next(Duration::from_millis(200)).unwrap() {
            Next::Frame(f) if seen == n => return f,
            Next::Frame(_) => seen += 1,
            Next::Pending => continue,
            Next::Eos => panic!("{path} has fewer than {} frames", n + 1),
        }
    }
}

fn tensor(frame: &Frame, resize: Resize) -> Vec<u8> {
    let spec = PreprocessSpec {
        width: 320,
        height: 320,
        resize,
        layout: Layout::Nhwc,
        elem: ElementType::U8,
        mean: [0.0; 3],
        std: [1.0; 3],
        pad: 114,
    };
    let (t, _) = Preprocessor::new(spec).run(frame.pixels()).unwrap();
    let Tensor::U8(a) = t else {
        panic!("u8 tensor")
    };
    a.iter().copied().collect()
}

/// `max_bias`: GStreamer's 8-bit `videoconvert` renders limited-range video 1-3 levels darker
/// than the BT.601 formula (flat grey Y=99 becomes 95, the formula gives 96.6); the I420 path
/// follows the formula, which `preprocess`'s unit tests pin.
fn compare(path: &str, n: usize, max_bias: f64) {
    let (rgb, i420) = (
        nth_frame(path, PixelFormat::Rgb, n),
        nth_frame(path, PixelFormat::I420, n),
    );
    for resize in [Resize::Stretch, Resize::Letterbox] {
        let (a, b) = (tensor(&rgb, resize), tensor(&i420, resize));
        assert_eq!(a.len(), b.len());
        let diffs: Vec<i32> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| x as i32 - y as i32)
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        let mean_abs = diffs.iter().map(|d| d.abs()).sum::<i32>() as f64 / diffs.len() as f64;
        let mut abs: Vec<i32> = diffs.iter().map(|d| d.abs()).collect();
        abs.sort_unstable();
        let p99 = abs[abs.len() * 99 / 100];
        eprintln!("{path} {resize:?}: bias {mean:.2}, mean |diff| {mean_abs:.2}, p99 {p99}");
        // Measured: bias 0.3 (JPEG) and 2.1 (video) levels, mean |diff| 1-2.3, p99 4-6; the
        // rest is chroma edges, where the two chroma upsamplings differ by a fraction of a
        // pixel.
        assert!(
            mean.abs() < max_bias,
            "{path}: colour bias {mean:.2} levels"
        );
        assert!(
            mean_abs < max_bias + 1.5,
            "{path}: mean |diff| {mean_abs:.2}"
        );
        assert!(p99 <= 16, "{path}: 99th percentile |diff| {p99}");
    }
}

#[test]
fn i420_and_rgb_paths_agree_on_limited_range_video() {
    compare("assets/vtest.avi", 100, 3.0);
}

#[test]
fn i420_and_rgb_paths_agree_on_full_range_jpeg() {
    compare("assets/bus.jpg", 0, 1.0);
}
