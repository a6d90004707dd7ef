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
use edgesight::pipeline::{self, RunSpec, Summary};

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
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
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
        if let Some(o) = &self.out {
            spec.out_dir = o.clone();
        }
        if let Some(t) = self.threads {
            spec.engine.threads = t;
        }
        if let Some(p) = self.provider {
            spec.engine.provider = match p {
                ProviderArg::Cpu => Provider::Cpu,
                ProviderArg::Cuda => Provider::Cuda,
                ProviderArg::Tensorrt => Provider::Tensorrt,
            };
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
        Ok(spec)
    }
}

fn progress_bar() -> ProgressBar {
    let pb = ProgressBar::no_length();
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {msg}",
        )
        .expect("static template"),
    );
    pb
}

fn run(args: &RunArgs) -> Result<ExitCode> {
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

fn bench(args: &RunArgs, engine_frames: usize, json: Option<&PathBuf>) -> Result<ExitCode> {
    let mut spec = match (&args.input, &args.pipeline) {
        (None, None) => RunArgs {
            input: Some("assets/vtest.avi".into()),
            ..args.clone()
        }
        .spec()?,
        _ => args.spec()?,
    };
    if args.out.is_none() && args.pipeline.is_none() {
        spec.out_dir = PathBuf::from("out/bench");
    }
    eprintln!("bench: pipeline run on {} ...", spec.input);
    let r = edgesight::bench::run(&spec, engine_frames)?;
    println!("model            {}", r.model);
    println!("input            {}", r.input);
    println!(
        "bare engine      {:.1} fps over {} preprocessed frames (p50 {:.2} ms, p95 {:.2} ms)",
        r.engine_fps, r.engine_runs, r.engine_latency.p50_ms, r.engine_latency.p95_ms
    );
    println!(
        "end to end       {:.1} fps over {} frames (`run` as configured{})",
        r.pipeline_fps,
        r.pipeline_frames,
        if spec.write_video {
            ", annotated MP4 included"
        } else {
            ""
        }
    );
    println!("ratio            {:.3}", r.ratio);
    println!(
        "analytics only   {:.1} fps (no video encode), ratio {:.3}",
        r.analytics_fps, r.analytics_ratio
    );
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,edgesight=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Bench {
            run,
            engine_frames,
            json,
        } => bench(run, *engine_frames, json.as_ref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
