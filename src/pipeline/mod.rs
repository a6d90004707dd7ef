//! The pipeline: ingest → preprocess → infer → decode → sinks, for one stream or many.
//!
//! ```text
//!  stream "a": supervisor ─▶ queue ─▶ preprocess ─┐                           ┌─▶ sinks "a"
//!  stream "b": supervisor ─▶ queue ─▶ preprocess ─┼─▶ batcher ▶ infer ×N ▶ postprocess ─┼─▶ sinks "b"
//!  stream "c": supervisor ─▶ queue ─▶ preprocess ─┘     (one per model)               └─▶ sinks "c"
//! ```
//!
//! Each stream has its own supervisor ([`supervisor`]), preprocessing and sinks, on threads of
//! their own; streams that use the same model share its inference stage ([`batch`]). A file's
//! queues block, so nothing is dropped and memory stays flat however long the file; a live
//! stream's queue holds one frame and the newest wins. Shutdown flows downstream: a stream's
//! source stops (end of file, `max_frames`, Ctrl-C, a reload), its preprocessing sends an end
//! mark after its last frame, and its sinks finalize their files once that mark has passed
//! inference. [`run`] drives one stream to the end; [`runner::Runner`] runs many, and adds or
//! removes them while the others go on.

pub mod batch;
pub mod job;
mod recognise;
pub mod runner;
pub mod shared;
pub mod status;
mod stream;
pub mod stream_spec;
pub mod supervisor;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use batch::BatchSettings;
pub use job::{FacesSummary, OutputPaths, Progress, RunSpec, Summary};
pub use runner::{Runner, RunnerSpec};
pub use shared::{load_model, PipelineError};
pub use status::{Observer, StatusBoard, StreamState, StreamStatus};
pub use supervisor::LiveSettings;

/// Runs one source to the end (or until `stop`), writing the outputs into `spec.out_dir`.
///
/// A file that breaks part-way still gives a summary, with `stream_error` set and every frame
/// before the damage kept; any other failure is an error.
pub fn run(
    spec: &RunSpec,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, PipelineError> {
    let (source, name) = spec.resolve()?;
    let runner_spec = RunnerSpec {
        engine: spec.engine.clone(),
        batch: BatchSettings::default(),
        queue_depth: spec.queue_depth,
    };
    let mut runner = Runner::new(runner_spec, StatusBoard::new(Vec::new()));
    let (progress_tx, progress_rx) = crossbeam_channel::unbounded();
    let stream = stream_spec::StreamSpec::from_run_spec(spec, source, name);
    runner.add(stream, Some(progress_tx))?;
    loop {
        if stop.load(Ordering::SeqCst) {
            runner.stop_all();
        }
        match progress_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(p) => on_progress(&p),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut outcomes = runner.finish();
    let outcome = outcomes.pop().expect("one stream was added");
    let mut summary = outcome.result?;
    summary.interrupted = stop.load(Ordering::SeqCst);
    summary.write(&summary.outputs.summary)?;
    Ok(summary)
}
