//! A 642-pixel RGB row takes 1928 bytes in a GStreamer buffer, not 1926, and its I420 planes
//! 644 and 324 bytes, not 642 and 321: the Frame views must step by the stride, and they must
//! borrow the buffer rather than copy it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use edgesight::frame::{Frame, PixelFormat, Pixels};
use edgesight::ingest::{resolve_input, Decoder, Next};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

const W: usize = 642;
const H: usize = 40;

fn padded_sample(format: &str) -> gst::Sample {
    gst::init().unwrap();
    // SMPTE bars: the top two thirds are vertical bars, so every row there is identical. A
    // view that stepped by width * 3 would drift two bytes per row and break that.
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,format={format},width={W},height={H} ! appsink name=sink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    sample
}

fn check_bars(frame: &Frame) {
    let bars = H * 2 / 3;
    match frame.pixels() {
        Pixels::Rgb(view) => {
            assert_eq!(view.dim(), (H, W, 3));
            for y in 1..bars {
                assert_eq!(
                    view.index_axis(ndarray::Axis(0), y),
                    view.index_axis(ndarray::Axis(0), 0),
                    "row {y} of the bars"
                );
            }
            // The bars are not one colour: the first (light grey) and the last (blue) differ.
            assert_ne!(view[[0, 0, 0]], view[[0, W - 1, 0]]);
        }
        Pixels::I420(yuv) => {
            assert_eq!(yuv.y.dim(), (H, W));
            assert_eq!(yuv.u.dim(), (H / 2, W.div_ceil(2)));
            assert_eq!(yuv.v.dim(), (H / 2, W.div_ceil(2)));
            for y in 1..bars {
                assert_eq!(yuv.y.row(y), yuv.y.row(0), "luma row {y} of the bars");
            }
            for y in 1..bars / 2 {
                assert_eq!(yuv.u.row(y), yuv.u.row(0), "Cb row {y} of the bars");
            }
            // Light grey is neutral, blue is not.
            assert_ne!(yuv.u[[0, 0]], yuv.u[[0, W.div_ceil(2) - 1]]);
        }
    }
}

#[test]
fn view_honours_row_padding_without_copying() {
    let sample = padded_sample("RGB");
    let buffer = sample.buffer().unwrap();
    let map = buffer.map_readable().unwrap();
    let buffer_ptr = map.as_ptr();
    assert_eq!(map.len(), 1928 * H, "GStreamer pads each row to 1928 bytes");
    let bytes = map.to_vec();
    drop(map);

    let frame = Frame::from_sample(&sample, Arc::from("padded"), 7).unwrap();
    assert_eq!(frame.stride(), 1928);
    assert_eq!(frame.number, 7);
    assert_eq!(frame.format(), PixelFormat::Rgb);
    let view = frame.rgb().unwrap();
    // Zero copy: the view points into the GStreamer buffer's memory.
    assert_eq!(view.as_ptr(), buffer_ptr);
    assert_eq!(view.strides(), &[1928, 3, 1]);
    for y in 0..H {
        for x in 0..W {
            for c in 0..3 {
                assert_eq!(view[[y, x, c]], bytes[y * 1928 + x * 3 + c]);
            }
        }
    }
    check_bars(&frame);
}

#[test]
fn i420_planes_honour_row_padding_without_copying() {
    let sample = padded_sample("I420");
    let buffer = sample.buffer().unwrap();
    let map = buffer.map_readable().unwrap();
    let base = map.as_ptr();
    // Luma rows of 644 bytes, then Cb and Cr rows of 324 (321 pixels, padded to 4).
    let (ys, cs, ch) = (644, 324, H / 2);
    assert_eq!(map.len(), ys * H + 2 * cs * ch);
    let bytes = map.to_vec();
    drop(map);

    let frame = Frame::from_sample(&sample, Arc::from("padded"), 0).unwrap();
    assert_eq!(frame.format(), PixelFormat::I420);
    assert!(
        frame.rgb().is_none(),
        "an I420 frame has no packed RGB view"
    );
    let Pixels::I420(yuv) = frame.pixels() else {
        panic!("I420 frame")
    };
    assert_eq!(yuv.y.strides(), &[ys as isize, 1]);
    assert_eq!(yuv.u.strides(), &[cs as isize, 1]);
    // Zero copy: each plane points into the buffer at its offset.
    assert_eq!(yuv.y.as_ptr(), base);
    assert_eq!(yuv.u.as_ptr(), base.wrapping_add(ys * H));
    assert_eq!(yuv.v.as_ptr(), base.wrapping_add(ys * H + cs * ch));
    for y in 0..H {
        for x in 0..W {
            assert_eq!(yuv.y[[y, x]], bytes[y * ys + x]);
        }
    }
    for y in 0..ch {
        for x in 0..W.div_ceil(2) {
            assert_eq!(yuv.u[[y, x]], bytes[ys * H + y * cs + x]);
            assert_eq!(yuv.v[[y, x]], bytes[ys * H + cs * ch + y * cs + x]);
        }
    }
    check_bars(&frame);
}

#[test]
fn decoder_delivers_padded_frames_from_a_file() {
    gst::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bars642.mkv");
    // Raw I420 in Matroska: lossless, so the bars survive exactly.
    common::launch_to_eos(
        &format!(
            "videotestsrc num-buffers=3 pattern=smpte ! video/x-raw,format=I420,width={W},height={H},framerate=5/1 ! matroskamux ! filesink location={}",
            file.display()
        ),
        10,
    );

    let uri = resolve_input(file.to_str().unwrap()).unwrap();
    // I420 by default (what the pipeline uses), packed RGB on request.
    for (format, stride) in [(PixelFormat::I420, 644), (PixelFormat::Rgb, 1928)] {
        let mut dec = Decoder::open_as(&uri, "bars".into(), format).unwrap();
        assert_eq!(dec.size(), (W as u32, H as u32));
        let mut frames = Vec::new();
        loop {
            match dec.next(Duration::from_millis(200)).unwrap() {
                Next::Frame(f) => frames.push(f),
                Next::Pending => continue,
                Next::Eos => break,
            }
        }
        assert_eq!(frames.len(), 3);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.format(), format);
            assert_eq!(f.number, i as u64);
            assert_eq!(f.stride(), stride);
            assert_eq!(f.pts, Some(gst::ClockTime::from_mseconds(200 * i as u64)));
            check_bars(f);
        }
    }
}
