//! Preprocessing cost per frame, the CPU that decoding-side work takes from inference.
//!
//! Compares the two ways a decoded vtest.avi frame reaches SSD MobileNetV2's 300x300 input:
//! converted to RGB at full size by GStreamer and then resized, or resized plane by plane
//! from I420 and converted at model size (what `edgesight run` does). Run with
//! `cargo bench --bench preprocess`; needs `make setup` for assets/vtest.avi.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use edgesight::frame::{Frame, PixelFormat};
use edgesight::ingest::{resolve_input, Decoder, Next};
use edgesight::preprocess::{Layout, PreprocessSpec, Preprocessor, Resize};
use edgesight::tensor::ElementType;

fn frame(format: PixelFormat) -> Frame {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let uri = resolve_input(root.join("assets/vtest.avi").to_str().unwrap())
        .expect("assets/vtest.avi: run `make setup` first");
    let mut dec = Decoder::open_as(&uri, "bench".into(), format).unwrap();
    loop {
        match dec.next(Duration::from_millis(200)).unwrap() {
            Next::Frame(f) => return f,
            Next::Pending => continue,
            Next::Eos => panic!("vtest.avi gave no frame"),
        }
    }
}

fn preprocess(c: &mut Criterion) {
    // SSD MobileNetV2's input, as the model reports it: 300x300 uint8 NHWC, stretched.
    let spec = PreprocessSpec {
        width: 300,
        height: 300,
        resize: Resize::Stretch,
        layout: Layout::Nhwc,
        elem: ElementType::U8,
        mean: [0.0; 3],
        std: [1.0; 3],
        pad: 0,
    };
    let mut g = c.benchmark_group("ssd-300x300-from-768x576");
    for format in [PixelFormat::Rgb, PixelFormat::I420] {
        let f = frame(format);
        let mut pre = Preprocessor::new(spec.clone());
        g.bench_function(format.caps_name(), |b| {
            b.iter(|| pre.run(f.pixels()).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
