//! Many streams in one process: add them, stop them, and collect how each ended, while the
//! others carry on. Streams that use the same model (same file, family and thresholds) share one
//! inference stage, and so one batch.
//!
//! ```no_run
//! use edgesight::pipeline::runner::{Runner, RunnerSpec};
//! use edgesight::pipeline::{stream_spec::StreamSpec, RunSpec, StatusBoard};
//! use edgesight::models::Manifest;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut runner = Runner::new(RunnerSpec::default(), StatusBoard::new(vec![]));
//! for (i, uri) in ["test://ball", "test://snow"].iter().enumerate() {
//!     let spec = RunSpec::new(*uri, Manifest::find("ssd-mobilenet-v2")?, format!("out/cam{i}"));
//!     let (source, _) = spec.resolve()?;
//!     runner.add(StreamSpec::from_run_spec(&spec, source, format!("cam{i}")), None)?;
//! }
//! std::thread::sleep(std::time::Duration::from_secs(5));
//! runner.stop_all();
//! for outcome in runner.finish() {
//!     println!("{}: {} frames", outcome.name, outcome.result?.frames);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::batch::BatchSettings;
use super::batch::{ModelStage, Routes, Work};
use super::job::Progress;
use super::shared::{load_model, PipelineError};
use super::status::StatusBoard;
use super::stream::{RunningStream, StreamWiring};
use super::stream_spec::StreamSpec;
use crate::engine::{Engine, EngineConfig};
use crate::models::{Detector, Manifest};

pub use super::stream::StreamOutcome;

/// What every stream of a runner shares: the engines' settings, batching and queue depth.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    pub engine: EngineConfig,
    pub batch: BatchSettings,
    pub queue_depth: usize,
}

impl Default for RunnerSpec {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            batch: BatchSettings::default(),
            queue_depth: 4,
        }
    }
}

struct ModelEntry {
    stage: ModelStage,
    detector: Arc<dyn Detector>,
    provider: String,
}

pub struct Runner {
    spec: RunnerSpec,
    board: Arc<StatusBoard>,
    routes: Arc<Routes>,
    models: HashMap<String, ModelEntry>,
    streams: Vec<RunningStream>,
    next_key: u64,
}

impl Runner {
    pub fn new(spec: RunnerSpec, board: Arc<StatusBoard>) -> Self {
        Self {
            spec,
            board,
            routes: Arc::new(Routes::default()),
            models: HashMap::new(),
            streams: Vec::new(),
            next_key: 0,
        }
    }

    pub fn board(&self) -> &Arc<StatusBoard> {
        &self.board
    }

    /// Names of the streams still running (or not yet reaped).
    pub fn names(&self) -> Vec<String> {
        self.streams.iter().map(|s| s.name.clone()).collect()
    }

    /// Starts a stream. Its model is loaded unless another stream already uses it.
    pub fn add(
        &mut self,
        spec: StreamSpec,
        progress: Option<Sender<Progress>>,
    ) -> Result<(), PipelineError> {
        if self.streams.iter().any(|s| s.name == spec.name) {
            return Err(PipelineError::Stream {
                stream: spec.name,
                reason: "a stream of that name is already running".into(),
            });
        }
        let model_key = format!("{:?}", spec.model);
        if !self.models.contains_key(&model_key) {
            let entry = self.load(&spec.model)?;
            self.models.insert(model_key.clone(), entry);
        }
        let m = &self.models[&model_key];
        self.next_key += 1;
        let wiring = StreamWiring {
            key: self.next_key,
            model_key,
            provider: m.provider.clone(),
            detector: m.detector.clone(),
            stage: m.stage.tx.clone(),
            routes: self.routes.clone(),
            board: self.board.clone(),
            depth: self.spec.queue_depth,
            progress,
        };
        self.streams.push(RunningStream::start(spec, wiring)?);
        Ok(())
    }

    fn load(&self, model: &Manifest) -> Result<ModelEntry, PipelineError> {
        let (replicas, threads) = self.spec.batch.layout(&self.spec.engine);
        let engine_cfg = EngineConfig {
            threads,
            ..self.spec.engine.clone()
        };
        let (first, detector) = load_model(model, &engine_cfg)?;
        let provider = format!("{:?}", first.provider()).to_lowercase();
        let mut engines = vec![first];
        for _ in 1..replicas.max(1) {
            engines.push(Engine::load(&model.file, &engine_cfg)?);
        }
        let detector: Arc<dyn Detector> = Arc::from(detector);
        let stage = ModelStage::start(
            engines,
            detector.clone(),
            &self.spec.batch,
            self.routes.clone(),
            self.board.observers().to_vec(),
            1,
        );
        Ok(ModelEntry {
            stage,
            detector,
            provider,
        })
    }

    /// Stops one stream, waits for its outputs to be finalized, and frees its model if no
    /// other stream uses it.
    pub fn remove(&mut self, name: &str) -> Option<StreamOutcome> {
        let i = self.streams.iter().position(|s| s.name == name)?;
        let s = self.streams.remove(i);
        s.stop();
        let outcome = s.join();
        self.close_unused_models();
        Some(outcome)
    }

    /// Asks every stream to stop; [`Runner::finish`] waits for them.
    pub fn stop_all(&self) {
        for s in &self.streams {
            s.stop();
        }
    }

    /// The streams that have ended by themselves since the last call.
    pub fn reap(&mut self) -> Vec<StreamOutcome> {
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.streams)
            .into_iter()
            .partition(|s| s.is_done());
        self.streams = running;
        let outcomes = done.into_iter().map(RunningStream::join).collect();
        self.close_unused_models();
        outcomes
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Waits for every stream to end (they end by themselves, or after [`Runner::stop_all`]),
    /// then closes the inference stages.
    pub fn finish(mut self) -> Vec<StreamOutcome> {
        let outcomes = std::mem::take(&mut self.streams)
            .into_iter()
            .map(RunningStream::join)
            .collect();
        self.close_unused_models();
        outcomes
    }

    fn close_unused_models(&mut self) {
        let used: Vec<&str> = self.streams.iter().map(|s| s.model_key.as_str()).collect();
        let unused: Vec<String> = self
            .models
            .keys()
            .filter(|k| !used.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unused {
            if let Some(m) = self.models.remove(&k) {
                close(m.stage);
            }
        }
    }
}

/// Closing the stage's input ends its batcher, engines and postprocessing in turn.
fn close(stage: ModelStage) {
    let ModelStage { tx, handles } = stage;
    drop::<Sender<Work>>(tx);
    for h in handles {
        let _ = h.join();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop_all();
        for s in std::mem::take(&mut self.streams) {
            let _ = s.join();
        }
        self.close_unused_models();
    }
}
