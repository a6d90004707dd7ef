//! Video that is valid but awkward: odd frame sides, a container whose duration field runs
//! past its last frame, and an annotated video whose file cannot be written.

mod common;
use common::*;

use std::sync::mpsc;
use std::time::Duration;

use edgesight::ingest::{resolve_input, Decoder, Next};
use edgesight::sinks::{video::AnnotatedVideo, Sink};

/// The first `frames` frames of vtest.avi cropped to 641x361 (odd sides), raw I420 in
/// Matroska. `identity eos-after` ends the stream early, and matroskamux then writes a duration
/// longer than the frames it holds (1.7 s for 11 frames at 10 fps).
fn odd_clip(dir: &std::path::Path, frames: u32) -> std::path::PathBuf {
    let file = dir.join("odd.mkv");
    // `identity eos-after` races decodebin's queues on a loaded machine: now and then the clip
    // holds one frame fewer, or the whole video. The clip is checked by decoding it, and made
    // again when it came out wrong, so that the tests below judge `run`, not this fixture.
    for _ in 0..5 {
        launch_to_eos(
            &format!(
                "filesrc location={} ! decodebin ! videocrop right=127 bottom=215 \
                 ! video/x-raw,format=I420 ! identity eos-after={frames} ! matroskamux \
                 ! filesink location={}",
                asset("assets/vtest.avi").display(),
                file.display()
            ),
            30,
        );
        if decode_count(&file).0 == u64::from(frames) {
            return file;
        }
    }
    panic!("could not cut a {frames}-frame clip from vtest.avi in 5 tries");
}

#[test]
fn odd_sides_and_a_long_duration_field_are_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clip = odd_clip(dir.path(), 11);
    let out = dir.path().join("out");
    let o = edgesight(&[
        "run",
        clip.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    // Before: "the file ends early (truncated?)" from duration x rate, and x264 refusing 641
    // wide hung the run.
    assert!(o.status.success(), "run failed:\n{}", stderr(&o));
    let ev = events(&out);
    assert_eq!(ev.len(), 11);
    assert_eq!(
        (ev[0]["width"].as_u64(), ev[0]["height"].as_u64()),
        (Some(641), Some(361))
    );
    assert!(
        ev.iter()
            .any(|e| !e["detections"].as_array().unwrap().is_empty()),
        "the people of vtest.avi are still in the crop"
    );
    assert!(summary(&out)["stream_error"].is_null());
    // The annotated video drops the odd last column and row: 4:2:0 H.264 needs even sides.
    assert_eq!(decode_count(&out.join("annotated.mp4")), (11, 640, 360));
}

#[test]
fn an_unwritable_annotated_video_fails_instead_of_hanging() {
    // /dev/full opens, then refuses every write: the encoder pipeline errors while frames
    // keep coming. The sink must report it, not wait forever on a full queue.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let uri = resolve_input(asset("assets/vtest.avi").to_str().unwrap()).unwrap();
        let mut dec = Decoder::open(&uri, "full".into()).unwrap();
        let mut sink = AnnotatedVideo::create(std::path::Path::new("/dev/full"), Some(10.0))
            .expect("/dev/full opens");
        let mut written = 0;
        let result = loop {
            match dec.next(Duration::from_millis(200)).unwrap() {
                Next::Frame(f) => match sink.write(&f, &[], &edgesight::sinks::Overlay::NONE) {
                    Ok(()) => written += 1,
                    Err(e) => break Err(e.to_string()),
                },
                Next::Pending => continue,
                Next::Eos => break Box::new(sink).finish().map_err(|e| e.to_string()),
            }
        };
        let _ = tx.send((written, result));
    });
    let (written, result) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the sink returns instead of hanging");
    let err = result.expect_err("writing to /dev/full must fail");
    assert!(err.contains("/dev/full"), "{err} (after {written} frames)");
}

#[test]
fn packed_rgb_frames_encode_too() {
    // `run` feeds I420; a library caller may decode to RGB and use the same sink.
    let dir = tempfile::tempdir().unwrap();
    let clip = odd_clip(dir.path(), 5);
    let uri = resolve_input(clip.to_str().unwrap()).unwrap();
    let mut dec = Decoder::open_as(&uri, "rgb".into(), edgesight::frame::PixelFormat::Rgb).unwrap();
    let path = dir.path().join("rgb.mp4");
    let mut sink = AnnotatedVideo::create(&path, dec.fps()).unwrap();
    loop {
        match dec.next(Duration::from_millis(200)).unwrap() {
            Next::Frame(f) => sink
                .write(&f, &[], &edgesight::sinks::Overlay::NONE)
                .unwrap(),
            Next::Pending => continue,
            Next::Eos => break,
        }
    }
    Box::new(sink).finish().unwrap();
    assert_eq!(decode_count(&path), (5, 640, 360));
}
