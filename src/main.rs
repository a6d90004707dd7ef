//! The `edgesight` command line. Library errors are typed; here they become one-line messages
//! and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use edgesight::config::{PipelineFile, DEFAULT_MODEL};
use edgesight::engine::Provider;
use edgesight::models::Manifest;
use edgesight::pipeline::{self, runner::RunnerSpec, RunSpec, StreamState, Summary};
use edgesight::service::{Service, ServiceOptions};
use edgesight::source::{RtspTransport, Source};

#[path = "cli/faces.rs"]
mod faces_cli;
#[path = "cli/progress.rs"]
mod progress;

use progress::progress_bar;

#[derive(Parser)]
#[command(
    name = "edgesight",
    version,
    about = "Real-time video analytics on edge devices"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Analyse a video file or stream: annotated MP4, events.jsonl and summary.json in --out.
    Run(RunArgs),
    /// Measure the bare engine, the whole pipeline and their ratio on one model and video
    /// (assets/vtest.avi unless given).
    Bench {
        #[command(flatten)]
        run: RunArgs,
        /// Frames the bare engine is timed on.
        #[arg(long, default_value_t = 300)]
        engine_frames: usize,
        /// Rounds of (bare engine, pipeline, analytics only), taken back to back so that CPU
        /// drift hits all three alike; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// What to measure: the bare engine against the pipeline (`pipeline`), or a live suite:
        /// `layouts` (replicas x threads), `streams` (N file streams batched), `latency`
        /// (capture to event on a live source), `reconnect` (RTSP camera kill/restart), `soak`,
        /// `tracker` (the tracker alone, 50 objects a frame), `faces` (verification, speed and
        /// per-track saving of face recognition; --model-dir adds an INT8 embedder).
        #[arg(long, value_enum, default_value_t = Suite::Pipeline)]
        suite: Suite,
        /// streams: how many; reconnect: cycles; soak: frames; tracker: objects per frame.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Turn an FP32 ONNX model into an INT8 (Q/DQ) or FP16 artifact, with a report; or
    /// `optimize inspect MODEL.onnx`.
    Optimize(OptimizeArgs),
    /// Replay a clip as an RTSP camera (H.264, real time), e.g. to try `run rtsp://…` without one.
    RtspServe {
        /// A video file or URI.
        input: String,
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        #[arg(long, default_value_t = 8554)]
        port: u16,
        #[arg(long, default_value = "/cam")]
        mount: String,
        /// Require this user (basic authentication); with --password.
        #[arg(long, requires = "password")]
        user: Option<String>,
        #[arg(long, requires = "user")]
        password: Option<String>,
    },
    /// Enroll, list and identify faces: the gallery a `run` with `[faces]` names people from.
    Faces(faces_cli::FacesArgs),
    /// List the cameras GStreamer's device monitor sees, with their modes.
    Devices {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Show what this installation found and where: the data directory, ONNX Runtime, each
    /// model, the calibration sets, the GStreamer elements and the CPU's int8 features. Exits
    /// 1 when something the default job needs is missing.
    Doctor {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct OptimizeArgs {
    #[command(subcommand)]
    sub: Option<OptimizeSub>,
    /// The FP32 ONNX model.
    model_file: Option<PathBuf>,
    /// Its manifest in models/ (family, preprocessing, labels) [default: the manifest whose
    /// file is MODEL_FILE].
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Int8)]
    precision: PrecisionArg,
    #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
    target: TargetArg,
    /// Calibration images [default: calibration/<the manifest's calibration set>].
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Held-out images for fidelity and speed [default: calibration/heldout/<set>, or
    /// <DIR>/heldout for --calibration DIR].
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// minmax, percentile[:P] (P defaults to 99.99) or entropy.
    #[arg(long, default_value = "percentile:99.99")]
    method: String,
    /// Keep this layer (node name) in float; repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// Keep every node of this op type in float; repeatable.
    #[arg(long)]
    exclude_op: Vec<String>,
    /// Fidelity to keep (0..1: agreement mAP50 for detectors, output cosine otherwise); the most
    /// sensitive layers stay in float until it holds.
    #[arg(long)]
    keep_accuracy: Option<f64>,
    /// Artifact folder [default: out/optimize/<model>-<precision>-<target>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Inference threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Timed runs per model for the latency figures.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Equalize the weight ranges of Conv → ReLU → Conv pairs before calibrating
    /// (cross-layer equalization).
    #[arg(long)]
    equalize: bool,
    /// Fit each int8 convolution's weights and bias to the inputs the int8 model gives it
    /// (GPTQ-style reconstruction on the calibration images) instead of rounding to nearest.
    #[arg(long)]
    reconstruct: bool,
    /// How far int8 weights reach on the CPU: `reduced` (±64) for an x86 CPU without VNNI,
    /// whose int8 kernels saturate on full-range weights; `full` (±127) for VNNI and ARM;
    /// `auto` picks for this machine's CPU. TensorRT always takes the full range.
    #[arg(long, value_enum, default_value_t = WeightRangeArg::Auto)]
    weight_range: WeightRangeArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WeightRangeArg {
    Auto,
    Full,
    Reduced,
}

#[derive(Subcommand)]
enum OptimizeSub {
    /// Print a model's inputs, outputs, ops and parameter counts.
    Inspect {
        model_file: PathBuf,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    Int8,
    Fp16,
    Fp32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Cpu,
    Tensorrt,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Video file, image, or URI (file://, rtsp://, ...).
    input: Option<String>,
    /// A pipeline TOML file; the flags below override it.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Model manifest name in models/ (ssd-mobilenet-v2, yolov8) or a manifest path.
    #[arg(long)]
    model: Option<String>,
    /// An artifact folder written by `edgesight optimize` (model, manifest, engine settings).
    #[arg(long, conflicts_with_all = ["model", "model_file"])]
    model_dir: Option<PathBuf>,
    /// An ONNX file to use instead of the manifest's (e.g. your own YOLOv8 export).
    #[arg(long)]
    model_file: Option<PathBuf>,
    /// Output folder [default: out/<input name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Inference threads (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, value_enum)]
    provider: Option<ProviderArg>,
    #[arg(long)]
    score_threshold: Option<f32>,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// Skip the annotated video.
    #[arg(long)]
    no_video: bool,
    /// Serve Prometheus metrics and /healthz here [default for live streams: 127.0.0.1:9090].
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// No metrics endpoint.
    #[arg(long, conflicts_with = "metrics")]
    no_metrics: bool,
    /// RTSP transport: auto, tcp or udp.
    #[arg(long, value_enum)]
    rtsp_transport: Option<TransportArg>,
    /// RTSP jitter-buffer latency in milliseconds [default: 200].
    #[arg(long)]
    latency_ms: Option<u32>,
    /// A live stream gives up after this many failed connections in a row [default: never].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// No object tracking (no track IDs, no tracks.jsonl).
    #[arg(long)]
    no_track: bool,
    /// Name the faces of the tracks from this gallery (`edgesight faces enroll`): the model
    /// must be a face detector (blazeface), or the pipeline file's [faces] gives
    /// face_detector to look inside person boxes.
    #[arg(long, value_name = "FILE")]
    gallery: Option<PathBuf>,
    /// Serve each stream's annotated video at rtsp://127.0.0.1:PORT/<stream>.
    #[arg(long, value_name = "PORT")]
    rtsp_out: Option<u16>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    Pipeline,
    Layouts,
    Streams,
    Latency,
    Reconnect,
    Soak,
    Tracker,
    Faces,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Auto,
    Tcp,
    Udp,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProviderArg {
    Cpu,
    Cuda,
    Tensorrt,
}

impl RunArgs {
    fn spec(&self) -> Result<RunSpec> {
        let mut spec = match &self.pipeline {
            Some(p) => {
                let file = PipelineFile::load(p)?;
                let mut spec = file.to_run_spec()?;
                if let Some(i) = &self.input {
                    spec.input = i.clone();
                }
                if let Some(m) = &self.model {
                    let keep_file = file.model.file.clone();
                    spec.model = Manifest::find(m)?;
                    if let Some(f) = keep_file {
                        spec.model.file = f;
                    }
                }
                spec
            }
            None => {
                let input = self.input.clone().context(
                    "no input: give a video path or URI, or --pipeline pipelines/file.toml",
                )?;
                let model = Manifest::find(self.model.as_deref().unwrap_or(DEFAULT_MODEL))?;
                let stem = std::path::Path::new(&input)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .filter(|s| !s.is_empty() && !input.contains("://"))
                    .unwrap_or_else(|| "stream".into());
                RunSpec::new(input, model, PathBuf::from("out").join(stem))
            }
        };
        if let Some(f) = &self.model_file {
            spec.model.file = f.clone();
        }
        if let Some(dir) = &self.model_dir {
            let art = edgesight::optimize::artifact::Artifact::load(dir)?;
            if art.saturates_here() {
                tracing::warn!(
                    artifact = %dir.display(),
                    "this CPU has no VNNI: ONNX Runtime's int8 kernels saturate on this \
                     artifact's full-range weights and compute something other than its \
                     figures; optimize again here, or with --weight-range reduced"
                );
            }
            spec.engine = art.engine_config(dir, &spec.engine);
            spec.model = art.model;
        }
        if let Some(o) = &self.out {
            spec.out_dir = o.clone();
        }
        if let Some(p) = self.provider {
            spec.engine.provider = match p {
                ProviderArg::Cpu => Provider::Cpu,
                ProviderArg::Cuda => Provider::Cuda,
                ProviderArg::Tensorrt => Provider::Tensorrt,
            };
        }
        self.apply_overrides(&mut spec);
        edgesight::config::check_faces(&spec).map_err(anyhow::Error::msg)?;
        Ok(spec)
    }

    fn apply_live(&self, spec: &mut RunSpec) {
        if let Some(t) = self.rtsp_transport {
            spec.source.transport = match t {
                TransportArg::Auto => RtspTransport::Auto,
                TransportArg::Tcp => RtspTransport::Tcp,
                TransportArg::Udp => RtspTransport::Udp,
            };
        }
        if let Some(l) = self.latency_ms {
            spec.source.latency_ms = l;
        }
        if self.max_attempts.is_some() {
            spec.live.max_attempts = self.max_attempts;
        }
    }

    /// The service's options when this run is one: a pipeline file with `[[streams]]`, a live
    /// source, or an explicit `--metrics`. `None` for a plain file run.
    fn service(&self) -> Result<Option<ServiceOptions>> {
        if let Some(p) = &self.pipeline {
            let file = PipelineFile::load(p)?;
            if !file.streams.is_empty() {
                let mut opts = ServiceOptions::from_file(&file, Some(p.clone()))?;
                for (_, spec) in opts.streams.iter_mut() {
                    self.apply_overrides(spec);
                }
                self.apply_metrics(&mut opts);
                return Ok(Some(opts));
            }
        }
        let spec = self.spec()?;
        let live = Source::parse(&spec.input, &spec.source).is_ok_and(|s| s.is_live());
        if !live && self.metrics.is_none() && self.rtsp_out.is_none() {
            return Ok(None);
        }
        let (_, name) = spec.resolve()?;
        let mut opts = ServiceOptions {
            runner: RunnerSpec {
                engine: spec.engine.clone(),
                queue_depth: spec.queue_depth,
                ..RunnerSpec::default()
            },
            streams: vec![(name, spec)],
            metrics: Some(edgesight::metrics::DEFAULT_ADDR),
            mqtt: None,
            rtsp_out: None,
            pipeline_file: None,
        };
        self.apply_metrics(&mut opts);
        Ok(Some(opts))
    }

    /// Flags that apply to every stream, of a pipeline file or of the command line.
    fn apply_overrides(&self, spec: &mut RunSpec) {
        if let Some(t) = self.threads {
            spec.engine.threads = t;
        }
        if let Some(s) = self.score_threshold {
            spec.model.score_threshold = s;
        }
        if self.max_frames.is_some() {
            spec.max_frames = self.max_frames;
        }
        if self.no_video {
            spec.write_video = false;
        }
        if self.no_track {
            spec.tracker.enabled = false;
        }
        if let Some(g) = &self.gallery {
            spec.faces.get_or_insert_with(Default::default).gallery = g.clone();
        }
        self.apply_live(spec);
    }

    fn apply_metrics(&self, opts: &mut ServiceOptions) {
        if self.no_metrics {
            opts.metrics = None;
        } else if let Some(a) = self.metrics {
            opts.metrics = Some(a);
        }
        if let Some(t) = self.threads {
            opts.runner.engine.threads = t;
        }
        if let Some(port) = self.rtsp_out {
            let address = opts
                .rtsp_out
                .take()
                .map(|(a, _)| a)
                .unwrap_or_else(|| "127.0.0.1".into());
            opts.rtsp_out = Some((address, port));
        }
    }
}

fn run(args: &RunArgs) -> Result<ExitCode> {
    if let Some(opts) = args.service()? {
        return serve(opts);
    }
    let spec = args.spec()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while finalizing is ignored on purpose: the MP4 index is being written.
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    let pb = progress_bar();
    let summary = pipeline::run(&spec, &stop, &mut |p| {
        if let Some(t) = p.total {
            pb.set_length(t.max(p.frames));
        }
        pb.set_position(p.frames);
        if p.frames % 10 == 0 {
            let fps = p.frames as f64 / p.elapsed.as_secs_f64().max(1e-9);
            pb.set_message(format!("{fps:.1} fps"));
        }
    });
    pb.finish_and_clear();
    let summary = summary?;
    print_summary(&summary);
    if let Some(e) = &summary.stream_error {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    if summary.interrupted {
        eprintln!(
            "interrupted: outputs hold the {} frames done",
            summary.frames
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Live and many streams: one status line per stream until every stream has ended or Ctrl-C.
fn serve(opts: ServiceOptions) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("cannot install the SIGHUP handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("cannot install the SIGTERM handler")?;
    let service = Service::start(opts)?;
    if let Some(addr) = service.metrics_addr() {
        eprintln!("metrics: http://{addr}/metrics  health: http://{addr}/healthz");
    }
    let bars = indicatif::MultiProgress::new();
    let mut lines: std::collections::BTreeMap<String, ProgressBar> = Default::default();
    let outcomes = service.run(&stop, &reload, &mut |streams| {
        for (name, st) in streams {
            let bar = lines.entry(name.clone()).or_insert_with(|| {
                let b = bars.add(ProgressBar::new_spinner());
                b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static"));
                b
            });
            let reason = st
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            bar.set_message(format!(
                "{name}: {} {} frames, {} dropped, {} reconnects{reason}",
                st.state.as_str(),
                st.frames,
                st.dropped,
                st.reconnects
            ));
            bar.tick();
        }
    })?;
    for b in lines.values() {
        b.finish_and_clear();
    }
    let mut failed = false;
    for o in &outcomes {
        match &o.result {
            Ok(s) => print_summary(s),
            Err(e) => {
                failed = true;
                eprintln!("error: stream {}: {e}", o.name);
            }
        }
        if let Ok(s) = &o.result {
            if s.state == StreamState::Failed {
                failed = true;
                let why = s.reason.as_deref().unwrap_or("failed");
                eprintln!("error: stream {}: {why}", o.name);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else if stop.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn rtsp_serve(
    input: &str,
    address: &str,
    port: u16,
    mount: &str,
    credentials: Option<(&str, &str)>,
) -> Result<ExitCode> {
    let uri = edgesight::ingest::resolve_input(input)?;
    let server = edgesight::rtsp::RtspServer::start(address, port)?;
    server.serve_file(mount, &uri, credentials)?;
    // The line a script (or a test) waits for: the server is listening.
    println!("serving rtsp://{}{mount}", server.address());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("cannot install the Ctrl-C handler")?;
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor(json: bool) -> Result<ExitCode> {
    let checks = edgesight::doctor::checks();
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let mark = match (c.ok, c.essential) {
                (true, _) => "ok  ",
                (false, true) => "FAIL",
                (false, false) => "--  ",
            };
            println!("{mark} {:<12} {:<18} {}", c.kind, c.what, c.detail);
        }
    }
    let broken = checks.iter().filter(|c| c.essential && !c.ok).count();
    if broken > 0 {
        eprintln!("error: {broken} essential check(s) failed (marked FAIL)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn devices(json: bool) -> Result<ExitCode> {
    let cams = edgesight::devices::list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&cams)?);
    } else if cams.is_empty() {
        println!("no cameras found");
    } else {
        for c in &cams {
            println!("{}  {}", c.uri, c.name);
            for m in &c.modes {
                println!("    {m}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &Summary) {
    println!(
        "{}: {} frames in {:.1} s ({:.1} fps) with {} on {}",
        s.stream, s.frames, s.wall_s, s.fps, s.model, s.provider
    );
    let labels: Vec<String> = s
        .detections_by_label
        .iter()
        .map(|(l, n)| format!("{l} {n}"))
        .collect();
    println!("detections: {} ({})", s.detections, labels.join(", "));
    for (stage, p) in &s.latency {
        println!(
            "  {stage:<12} p50 {:>8.2} ms   p95 {:>8.2} ms",
            p.p50_ms, p.p95_ms
        );
    }
    println!("peak RSS: {:.0} MiB", s.peak_rss_mib);
    for p in [&s.outputs.events, &s.outputs.video].into_iter().flatten() {
        println!("wrote {}", p.display());
    }
    println!("wrote {}", s.outputs.summary.display());
}

fn bench(
    args: &RunArgs,
    engine_frames: usize,
    rounds: usize,
    json: Option<&PathBuf>,
) -> Result<ExitCode> {
    let mut spec = match (&args.input, &args.pipeline) {
        (None, None) => RunArgs {
            input: Some(
                edgesight::bundled("assets/vtest.avi")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ..args.clone()
        }
        .spec()?,
        _ => args.spec()?,
    };
    if args.out.is_none() && args.pipeline.is_none() {
        spec.out_dir = PathBuf::from("out/bench");
    }
    let baseline = args
        .model_dir
        .as_deref()
        .map(artifact_source)
        .transpose()?
        .flatten();
    eprintln!("bench: {rounds} rounds on {} ...", spec.input);
    let r = edgesight::bench::run(
        &spec,
        engine_frames,
        rounds,
        baseline.as_deref(),
        &mut |i, r| {
            let vs_source = r
                .speedup()
                .map(|x| format!(" ({x:.2}x the source's)"))
                .unwrap_or_default();
            eprintln!(
                "  round {}: engine {:.1} fps{vs_source}, pipeline {:.1} fps ({:.3}), analytics {:.1} fps ({:.3}), RSS {:.0} MiB",
                i + 1,
                r.engine_fps,
                r.pipeline_fps,
                r.ratio(),
                r.analytics_fps,
                r.analytics_ratio(),
                r.rss_mib
            )
        },
    )?;
    println!("model            {}", r.model);
    println!("input            {}", r.input);
    println!(
        "bare engine      {:.1} fps over {} preprocessed frames a round (p50 {:.2} ms, p95 {:.2} ms)",
        r.engine_fps, r.engine_runs, r.engine_latency.p50_ms, r.engine_latency.p95_ms
    );
    println!(
        "end to end       {:.1} fps over {} frames a round (`run` as configured{})",
        r.pipeline_fps,
        r.pipeline_frames,
        if spec.write_video {
            ", annotated MP4 included"
        } else {
            ""
        }
    );
    println!(
        "ratio            {:.3} (rounds {:.3}..{:.3})",
        r.ratio, r.ratio_range.0, r.ratio_range.1
    );
    println!(
        "analytics only   {:.1} fps (no video encode), ratio {:.3} (rounds {:.3}..{:.3})",
        r.analytics_fps, r.analytics_ratio, r.analytics_ratio_range.0, r.analytics_ratio_range.1
    );
    if let Some(b) = &r.baseline {
        println!(
            "vs. the source   {:.2}x the bare engine on {} ({:.1} fps; rounds {:.2}..{:.2})",
            b.speedup, b.model, b.engine_fps, b.speedup_range.0, b.speedup_range.1
        );
    }
    println!("peak RSS         {:.0} MiB", r.peak_rss_mib);
    let rss: Vec<String> = r
        .rss_samples
        .iter()
        .map(|(f, m)| format!("{f}:{m:.0}"))
        .collect();
    println!("RSS by frame     {} (MiB)", rss.join("  "));
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The live suites of `bench`: each prints its figures as JSON (and writes them to `json`).
fn bench_live(
    args: &RunArgs,
    suite: Suite,
    rounds: usize,
    count: Option<u64>,
    json: Option<&PathBuf>,
) -> Result<ExitCode> {
    use edgesight::bench::live;
    if let Suite::Faces = suite {
        let root = edgesight::home();
        eprintln!("bench faces: verification, speed, per-track saving, faces inside persons ...");
        let r =
            edgesight::bench::faces::run(&root, args.model_dir.as_deref(), &live::scratch_dir())?;
        let text = serde_json::to_string_pretty(&r)?;
        println!("{text}");
        if let Some(p) = json {
            std::fs::write(p, text + "\n")
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        let _ = std::fs::remove_dir_all(live::scratch_dir());
        return Ok(ExitCode::SUCCESS);
    }
    let mut spec = RunArgs {
        input: args.input.clone().or_else(|| {
            Some(
                edgesight::bundled("assets/vtest.avi")
                    .to_string_lossy()
                    .into_owned(),
            )
        }),
        ..args.clone()
    }
    .spec()?;
    if args.out.is_none() {
        spec.out_dir = live::scratch_dir();
    }
    eprintln!(
        "bench {}: {} with {} ...",
        suite_name(suite),
        spec.input,
        spec.model.name
    );
    let report = match suite {
        Suite::Pipeline => unreachable!("handled by bench()"),
        Suite::Layouts => serde_json::to_value(live::layouts(
            &spec,
            &[(1, 2), (2, 1), (1, 1), (2, 2)],
            rounds,
        )?)?,
        Suite::Streams => serde_json::to_value(live::streams(&spec, count.unwrap_or(4) as usize)?)?,
        Suite::Latency => serde_json::to_value(live::latency(&spec, &[10, 30, 120], 20)?)?,
        Suite::Reconnect => {
            serde_json::to_value(live::reconnect(&spec, count.unwrap_or(20) as usize)?)?
        }
        Suite::Tracker => {
            serde_json::to_value(live::tracker(count.unwrap_or(50) as usize, 10_000))?
        }
        Suite::Faces => unreachable!("handled above"),
        Suite::Soak => serde_json::to_value(live::soak(
            &spec,
            count.unwrap_or(100_000),
            std::time::Duration::from_secs(10),
        )?)?,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = json {
        std::fs::write(p, text + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    let _ = std::fs::remove_dir_all(live::scratch_dir());
    Ok(ExitCode::SUCCESS)
}

fn suite_name(s: Suite) -> &'static str {
    match s {
        Suite::Pipeline => "pipeline",
        Suite::Layouts => "layouts",
        Suite::Streams => "streams",
        Suite::Latency => "latency",
        Suite::Reconnect => "reconnect",
        Suite::Soak => "soak",
        Suite::Tracker => "tracker",
        Suite::Faces => "faces",
    }
}

/// The FP32 model an artifact was optimized from, when it is still where `optimize` read it
/// and unchanged; otherwise a warning, and no comparison.
fn artifact_source(dir: &std::path::Path) -> Result<Option<PathBuf>> {
    let art = edgesight::optimize::artifact::Artifact::load(dir)?;
    let source = PathBuf::from(&art.source_model);
    let same =
        edgesight::optimize::calibrate::file_sha256(&source).is_ok_and(|h| h == art.source_sha256);
    if !same {
        tracing::warn!(
            artifact = %dir.display(),
            source = %source.display(),
            "the artifact's source model is missing or changed since `optimize`; timing the artifact alone"
        );
    }
    Ok(same.then_some(source))
}

/// The manifest whose ONNX file is `file`.
fn manifest_for_file(file: &std::path::Path) -> Result<Manifest> {
    let want = file.canonicalize().ok();
    let dir = edgesight::models::manifest::models_dir();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    entries.sort();
    for p in entries {
        if let Ok(m) = Manifest::load(&p) {
            if want.is_some() && m.file.canonicalize().ok() == want {
                return Ok(m);
            }
        }
    }
    anyhow::bail!(
        "no manifest in {} names {}: pass --model NAME to give its family and preprocessing",
        dir.display(),
        file.display()
    )
}

fn optimize(a: &OptimizeArgs) -> Result<ExitCode> {
    use edgesight::optimize::{
        self, calibrator::Method, qdq::Exclusions, weights::WeightRange, Precision, Target,
    };
    if let Some(OptimizeSub::Inspect { model_file, json }) = &a.sub {
        let m = edgesight::onnx::Model::load(model_file)?;
        let i = m.inspect();
        if *json {
            println!("{}", serde_json::to_string_pretty(&i)?);
        } else {
            print!("{i}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let file = a
        .model_file
        .clone()
        .context("no model: `edgesight optimize MODEL.onnx` (or `optimize inspect MODEL.onnx`)")?;
    if !file.is_file() {
        anyhow::bail!("model file {}: no such file", file.display());
    }
    let manifest = match &a.model {
        Some(name) => {
            let mut m = Manifest::find(name)?;
            m.file = file.clone();
            m
        }
        // A file that is not ONNX is the error to report, not a manifest that cannot name it.
        None => manifest_for_file(&file).or_else(|e| {
            edgesight::onnx::Model::load(&file)?;
            Err(e)
        })?,
    };
    let method: Method = a
        .method
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--method: {e}"))?;
    let set = manifest
        .calibration
        .clone()
        .unwrap_or_else(|| "street".into());
    let calibration = a
        .calibration
        .clone()
        .unwrap_or_else(|| edgesight::bundled("calibration").join(&set));
    let heldout = match (&a.heldout, &a.calibration) {
        (Some(h), _) => h.clone(),
        (None, Some(c)) => c.join("heldout"),
        (None, None) => edgesight::bundled("calibration/heldout").join(&set),
    };
    let precision = match a.precision {
        PrecisionArg::Int8 => Precision::Int8,
        PrecisionArg::Fp16 => Precision::Fp16,
        PrecisionArg::Fp32 => Precision::Fp32,
    };
    let target = match a.target {
        TargetArg::Cpu => Target::Cpu,
        TargetArg::Tensorrt => Target::Tensorrt,
    };
    if let Some(k) = a.keep_accuracy {
        if !(0.0..=1.0).contains(&k) {
            anyhow::bail!("--keep-accuracy {k}: must lie between 0 and 1");
        }
    }
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("out/optimize").join(format!("{}-{precision}-{target}", manifest.name))
    });
    let spec = optimize::OptimizeSpec {
        manifest,
        precision,
        target,
        calibration,
        heldout,
        method,
        exclude: Exclusions {
            names: a.exclude.iter().cloned().collect(),
            ops: a.exclude_op.iter().cloned().collect(),
        },
        keep_accuracy: a.keep_accuracy,
        out,
        engine: edgesight::engine::EngineConfig {
            threads: a.threads,
            ..Default::default()
        },
        bench_runs: a.runs,
        equalize: a.equalize,
        reconstruct: a.reconstruct,
        weight_range: match a.weight_range {
            WeightRangeArg::Auto => WeightRange::for_this_cpu(),
            WeightRangeArg::Full => WeightRange::Full,
            WeightRangeArg::Reduced => WeightRange::Reduced,
        },
    };
    let pb = ProgressBar::no_length();
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg:28} {wide_bar} {pos}/{len}",
        )
        .expect("static template"),
    );
    let outcome = optimize::run(&spec, &|step, done, total| {
        pb.set_message(step.to_string());
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let outcome = outcome?;
    print!("{}", optimize::report::markdown(&outcome.artifact));
    println!("\nwrote {}", outcome.out.display());
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`edgesight faces list | head`), as command-line tools do,
    // instead of panicking in println!.
    // SAFETY: called first, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,ort=error,edgesight=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Bench {
            run,
            engine_frames,
            rounds,
            json,
            suite: Suite::Pipeline,
            ..
        } => bench(run, *engine_frames, *rounds, json.as_ref()),
        Cmd::Bench {
            run,
            rounds,
            json,
            suite,
            count,
            ..
        } => bench_live(run, *suite, *rounds, *count, json.as_ref()),
        Cmd::Optimize(a) => optimize(a),
        Cmd::Devices { json } => devices(*json),
        Cmd::Doctor { json } => doctor(*json),
        Cmd::Faces(a) => faces_cli::run(a),
        Cmd::RtspServe {
            input,
            address,
            port,
            mount,
            user,
            password,
        } => rtsp_serve(
            input,
            address,
            *port,
            mount,
            user.as_deref().zip(password.as_deref()),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
