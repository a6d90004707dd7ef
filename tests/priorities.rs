//! Inference keeps its priority; everything around it runs in the background (nice +10), so
//! decoding, encoding and the sinks fill the gaps inference leaves instead of preempting it
//! (see `edgesight::sched`). Checked on real threads: GStreamer's streaming threads and the
//! pipeline's named stage threads, read back from /proc.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use edgesight::models::Manifest;
use edgesight::pipeline::{self, RunSpec};
use edgesight::sched::{self, BACKGROUND_NICE};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

#[test]
fn gstreamer_streaming_threads_run_in_the_background() {
    gst::init().unwrap();
    let before = sched::current_nice();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=5 ! queue ! video/x-raw,width=64,height=48 ! appsink name=sink",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    sched::background_streaming_threads(&pipeline);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let s = seen.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let _ = sink.pull_sample();
                s.lock().unwrap().push(sched::current_nice());
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos])
        .expect("end of stream");
    pipeline.set_state(gst::State::Null).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    // The appsink runs in the queue's streaming thread.
    assert!(
        seen.iter().all(|&n| n == before.max(BACKGROUND_NICE)),
        "streaming thread nice values {seen:?}"
    );
    assert_eq!(
        sched::current_nice(),
        before,
        "the caller's thread is left alone"
    );
}

/// (thread name, nice) of every thread of this process.
fn threads() -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, nice field 19.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            if let Some(nice) = rest.split(' ').nth(16).and_then(|n| n.parse().ok()) {
                out.push((comm.trim().to_string(), nice));
            }
        }
    }
    out
}

#[test]
fn pipeline_stages_around_inference_run_in_the_background() {
    let before = sched::current_nice();
    let model = Manifest::find("ssd-mobilenet-v2").unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut spec = RunSpec::new(
        common::asset("assets/vtest.avi").to_str().unwrap(),
        model,
        out.path(),
    );
    spec.max_frames = Some(40);
    let stop = AtomicBool::new(false);
    let mut seen: BTreeMap<String, i32> = BTreeMap::new();
    pipeline::run(&spec, &stop, &mut |p| {
        if p.frames == 20 {
            seen.extend(threads());
        }
    })
    .unwrap();
    let bg = before.max(BACKGROUND_NICE);
    for (name, want) in [
        ("infer", before),
        ("ingest", bg),
        ("preprocess", bg),
        ("postprocess", bg),
        ("sinks", bg),
    ] {
        assert_eq!(seen.get(name), Some(&want), "thread {name}: {seen:?}");
    }
    assert_eq!(
        sched::current_nice(),
        before,
        "the caller's thread is left alone"
    );
}
