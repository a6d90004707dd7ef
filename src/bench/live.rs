//! `edgesight bench --suite …`: the live side's figures. Each suite runs the real pipeline
//! ([`Runner`]) on real sources: files, live `test://` patterns, and an RTSP camera served in
//! this process by gst-rtsp-server.
//!
//! - `layouts`: one file through `replicas × threads` engine layouts; the fastest is the
//!   default to pick.
//! - `streams`: aggregate frames per second of N file streams batched, against one stream.
//! - `latency`: capture-to-event p50/p99 on a live source at the camera's rate and overloaded.
//! - `reconnect`: kill and restart the RTSP camera N times; how many times the stream resumed,
//!   and how long it took.
//! - `soak`: a long `test://` run with the resident memory sampled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pipeline::runner::{Runner, RunnerSpec};
use crate::pipeline::stream_spec::StreamSpec;
use crate::pipeline::{
    BatchSettings, LiveSettings, PipelineError, RunSpec, StatusBoard, StreamState, Summary,
};
use crate::rtsp::RtspServer;
use crate::stats::rss_mib;

/// Runs `streams` (name, spec) to their end in one runner; their summaries.
fn run_streams(
    runner_spec: RunnerSpec,
    streams: &[(String, RunSpec)],
) -> Result<Vec<Summary>, PipelineError> {
    let mut runner = Runner::new(runner_spec, StatusBoard::new(vec![]));
    for (name, spec) in streams {
        let (source, _) = spec.resolve()?;
        runner.add(StreamSpec::from_run_spec(spec, source, name.clone()), None)?;
    }
    runner.finish().into_iter().map(|o| o.result).collect()
}

/// A runner with one stream, `s` named `name`, and the board that follows it.
fn one_stream(
    spec: &RunSpec,
    s: &RunSpec,
    name: &str,
) -> Result<(Runner, Arc<StatusBoard>), PipelineError> {
    let board = StatusBoard::new(vec![]);
    let mut runner = Runner::new(
        RunnerSpec {
            engine: spec.engine.clone(),
            ..RunnerSpec::default()
        },
        board.clone(),
    );
    let (source, _) = s.resolve()?;
    runner.add(StreamSpec::from_run_spec(s, source, name.into()), None)?;
    Ok((runner, board))
}

fn quiet(spec: &RunSpec, out: &str) -> RunSpec {
    let mut s = spec.clone();
    s.write_video = false;
    s.out_dir = spec.out_dir.join(out);
    s
}

#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub replicas: usize,
    pub threads: usize,
    pub fps: f64,
}

/// One file, no video, through each `(replicas, threads)` layout, `rounds` times (the median
/// kept).
pub fn layouts(
    spec: &RunSpec,
    layouts: &[(usize, usize)],
    rounds: usize,
) -> Result<Vec<Layout>, PipelineError> {
    let mut out = Vec::new();
    for &(replicas, threads) in layouts {
        let mut fps = Vec::new();
        for _ in 0..rounds.max(1) {
            let mut engine = spec.engine.clone();
            engine.threads = threads;
            let runner = RunnerSpec {
                engine,
                batch: BatchSettings {
                    max_batch: 1,
                    replicas,
                    ..BatchSettings::default()
                },
                queue_depth: spec.queue_depth,
            };
            let s = quiet(spec, &format!("layout-{replicas}x{threads}"));
            let summaries = run_streams(runner, &[("layout".into(), s)])?;
            fps.push(summaries[0].fps);
        }
        out.push(Layout {
            replicas,
            threads,
            fps: super::median(fps),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamsReport {
    pub streams: usize,
    pub one_stream_fps: f64,
    /// Frames of all streams together per second of wall time.
    pub aggregate_fps: f64,
    pub batched_fraction: f64,
}

/// `n` copies of the file as separate streams, batched up to `n`, against the file alone.
pub fn streams(spec: &RunSpec, n: usize) -> Result<StreamsReport, PipelineError> {
    let runner = |max_batch| RunnerSpec {
        engine: spec.engine.clone(),
        batch: BatchSettings {
            max_batch,
            ..BatchSettings::default()
        },
        queue_depth: spec.queue_depth,
    };
    let one = run_streams(runner(1), &[("one".into(), quiet(spec, "one"))])?;
    let many: Vec<(String, RunSpec)> = (0..n)
        .map(|i| (format!("s{i}"), quiet(spec, &format!("s{i}"))))
        .collect();
    let t = Instant::now();
    let all = run_streams(runner(n), &many)?;
    let wall = t.elapsed().as_secs_f64();
    let frames: u64 = all.iter().map(|s| s.frames).sum();
    let batched: u64 = all.iter().map(|s| s.batched_frames).sum();
    Ok(StreamsReport {
        streams: n,
        one_stream_fps: one[0].fps,
        aggregate_fps: frames as f64 / wall,
        batched_fraction: batched as f64 / frames.max(1) as f64,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub source: String,
    pub camera_fps: u32,
    pub processed_fps: f64,
    pub dropped: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A live pattern at each camera rate for `seconds`: capture-to-event latency and drops.
pub fn latency(
    spec: &RunSpec,
    rates: &[u32],
    seconds: u32,
) -> Result<Vec<LatencyReport>, PipelineError> {
    let mut out = Vec::new();
    for &fps in rates {
        let mut s = quiet(spec, &format!("latency-{fps}"));
        s.input = format!("test://ball?width=640&height=480&fps={fps}");
        s.max_frames = Some(u64::from(fps * seconds));
        let runner = RunnerSpec {
            engine: spec.engine.clone(),
            ..RunnerSpec::default()
        };
        let sum = run_streams(runner, &[("latency".into(), s.clone())])?.remove(0);
        out.push(LatencyReport {
            source: s.input,
            camera_fps: fps,
            processed_fps: sum.fps,
            dropped: sum.dropped_frames,
            p50_ms: sum.latency.get("end_to_end").map_or(0.0, |p| p.p50_ms),
            p99_ms: sum.end_to_end_p99_ms,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    pub cycles: usize,
    pub resumed: usize,
    pub resume_s_median: f64,
    pub resume_s_max: f64,
    pub stall_timeout_s: f64,
    pub backoff_max_s: f64,
}

/// Serves the file as an RTSP camera in this process, then kills and restarts the server
/// `cycles` times; each time, how long until the stream plays new frames again.
pub fn reconnect(spec: &RunSpec, cycles: usize) -> Result<ReconnectReport, PipelineError> {
    let rtsp_err = |e: crate::rtsp::RtspError| PipelineError::Stream {
        stream: "camera".into(),
        reason: e.to_string(),
    };
    let uri = crate::ingest::resolve_input(&spec.input)?;
    let serve = |port: u16| -> Result<RtspServer, PipelineError> {
        let s = RtspServer::start("127.0.0.1", port).map_err(rtsp_err)?;
        s.serve_file("/cam", &uri, None).map_err(rtsp_err)?;
        Ok(s)
    };
    let mut server = Some(serve(0)?);
    let port = server.as_ref().map(|s| s.port()).unwrap_or(0);
    let live = LiveSettings {
        stall_timeout_s: 2.0,
        backoff_min_s: 0.5,
        backoff_max_s: 2.0,
        max_attempts: None,
    };
    let mut s = quiet(spec, "reconnect");
    s.input = format!("rtsp://127.0.0.1:{port}/cam");
    s.live = live.clone();
    let (runner, board) = one_stream(spec, &s, "cam")?;
    let plays_again = |board: &Arc<StatusBoard>, timeout: Duration| -> Option<Duration> {
        let t = Instant::now();
        let before = board.get("cam").map_or(0, |s| s.frames);
        while t.elapsed() < timeout {
            let st = board.get("cam")?;
            if st.state == StreamState::Playing && st.frames > before + 3 {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };
    plays_again(&board, Duration::from_secs(30));
    let mut times = Vec::new();
    for _ in 0..cycles {
        drop(server.take());
        let t = Instant::now();
        while board
            .get("cam")
            .is_some_and(|s| s.state == StreamState::Playing)
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        server = Some(serve(port)?);
        if let Some(d) = plays_again(&board, Duration::from_secs(60)) {
            times.push(d.as_secs_f64());
        }
    }
    runner.stop_all();
    runner.finish();
    let resumed = times.len();
    let max = times.iter().cloned().fold(0.0, f64::max);
    Ok(ReconnectReport {
        cycles,
        resumed,
        resume_s_median: super::median(times),
        resume_s_max: max,
        stall_timeout_s: live.stall_timeout_s,
        backoff_max_s: live.backoff_max_s,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub frames_in: u64,
    pub frames_done: u64,
    pub dropped: u64,
    pub wall_s: f64,
    /// (seconds, resident MiB), sampled through the run.
    pub rss: Vec<(f64, f64)>,
    /// Growth from the sample at the end of warm-up to the last sample.
    pub rss_growth_pct: f64,
}

/// A live pattern until `frames` frames have come in, with RSS sampled every `every`; warm-up
/// is the first tenth of the run.
pub fn soak(spec: &RunSpec, frames: u64, every: Duration) -> Result<SoakReport, PipelineError> {
    let mut s = quiet(spec, "soak");
    s.input = "test://ball?width=320&height=240&fps=200".into();
    s.max_frames = Some(frames);
    s.write_events = false;
    let (mut runner, _) = one_stream(spec, &s, "soak")?;
    let t = Instant::now();
    let mut rss = Vec::new();
    let mut next = Duration::ZERO;
    let mut outcomes = Vec::new();
    while outcomes.is_empty() {
        if t.elapsed() >= next {
            rss.push((t.elapsed().as_secs_f64(), rss_mib().0));
            next += every;
        }
        outcomes = runner.reap();
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last sample is the one taken while the stream still ran: after it, its buffers are
    // freed, and the drop would hide a leak.
    let sum = outcomes.remove(0).result?;
    let warm = rss[(rss.len() / 10).min(rss.len().saturating_sub(1))].1;
    let last = rss.last().map_or(warm, |x| x.1);
    Ok(SoakReport {
        frames_in: frames,
        frames_done: sum.frames,
        dropped: sum.dropped_frames,
        wall_s: t.elapsed().as_secs_f64(),
        rss,
        rss_growth_pct: 100.0 * (last - warm) / warm.max(1e-9),
    })
}

/// Where the suites write their throwaway outputs.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("edgesight-bench-{}", std::process::id()))
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackerReport {
    pub objects: usize,
    pub frames: u64,
    pub mean_us: f64,
    pub p99_us: f64,
}

/// The tracker alone on `objects` boxes moving about a 1920x1080 frame at 30 fps.
pub fn tracker(objects: usize, frames: u64) -> TrackerReport {
    use crate::detection::{BBox, Detection};
    use crate::track::{Tracker, TrackerSettings};
    let mut t = Tracker::new(TrackerSettings::default());
    let mut lat = crate::stats::Latency::default();
    let mut total = Duration::ZERO;
    for f in 0..frames {
        let mut dets: Vec<Detection> = (0..objects)
            .map(|i| {
                let (col, row) = ((i % 10) as f32, (i / 10) as f32);
                let x = 20.0 + col * 180.0 + (f as f32 * (1.0 + i as f32 % 3.0)) % 150.0;
                let y = 20.0 + row * 200.0;
                Detection {
                    class_id: (i % 2) as u32,
                    label: "object".into(),
                    score: 0.4 + 0.5 * ((i * 7 + f as usize) % 10) as f32 / 10.0,
                    bbox: BBox {
                        x1: x,
                        y1: y,
                        x2: x + 60.0,
                        y2: y + 150.0,
                    },
                    keypoints: vec![],
                    track_id: None,
                    name: None,
                }
            })
            .collect();
        let t0 = Instant::now();
        t.update(f as f64 / 30.0, f, &mut dets);
        let d = t0.elapsed();
        t.drain_events();
        lat.record(d);
        total += d;
    }
    TrackerReport {
        objects,
        frames,
        mean_us: total.as_secs_f64() * 1e6 / frames.max(1) as f64,
        p99_us: lat.quantile_ms(0.99) * 1e3,
    }
}
