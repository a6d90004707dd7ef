//! The inference stage of one model, shared by every stream that uses it: a batcher, `replicas`
//! engine sessions fed in turn, and the output decoding, which puts results back in order and
//! hands each to its own stream's sinks.
//!
//! ```text
//!  streams' preprocess ─┐            ┌─▶ infer #0 ─┐
//!  streams' preprocess ─┼─▶ batcher ─┤             ├─▶ postprocess (in turn) ─▶ each stream's sinks
//!  streams' preprocess ─┘            └─▶ infer #1 ─┘
//! ```
//!
//! The batcher takes the first frame waiting, then whatever else arrives within a short window
//! (one frame interval of the fastest stream unless configured), up to `max_batch`. It never
//! waits for a particular stream, so a stalled camera delays nobody. Models whose batch axis is
//! fixed get batches of one. The batcher takes frames only once an engine is free, and
//! postprocess takes results in the order batches were dealt, so a stream's frames leave in the
//! order they came.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use ndarray::Axis;
use serde::Deserialize;

use super::shared::{Decoded, Detected, PipelineError, StreamKey, StreamShared};
use super::status::Observer;
use crate::engine::Engine;
use crate::models::Detector;
use crate::preprocess::Transform;
use crate::tensor::{Output, Tensor};

/// `[batch]` in a pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Frames per run at most, for models with a dynamic batch axis.
    pub max_batch: usize,
    /// How long a batch waits for more frames; one frame interval of the fastest stream when
    /// unset.
    pub timeout_ms: Option<f64>,
    /// Engine sessions run side by side, each with `[engine] threads` threads; 0 picks
    /// [`BatchSettings::layout`]'s.
    pub replicas: usize,
}

impl BatchSettings {
    /// The engine layout to run: `(replicas, threads per engine)`. Left to choose (`replicas`
    /// and `threads` 0), a CPU gets one single-threaded engine per core: `bench --suite
    /// layouts` measured it faster than one engine spread over every core, on SSD and on
    /// CenterNet (docs/benchmarks.md), since one operator split over the cores leaves them idle
    /// between small operators. A GPU gets one engine.
    pub fn layout(&self, engine: &crate::engine::EngineConfig) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = engine.provider == crate::engine::Provider::Cpu;
        match (self.replicas, engine.threads) {
            (0, _) if !cpu => (1, engine.threads),
            (0, 0) => (cores, 1),
            (0, t) => ((cores / t).max(1), t),
            (r, t) => (r, t),
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_batch: 4,
            timeout_ms: None,
            replicas: 0,
        }
    }
}

/// A frame ready for the network.
pub(crate) struct Prepared {
    pub d: Decoded,
    pub tensor: Tensor,
    pub transform: Transform,
}

/// What flows into a model's stage: frames, and the mark that a stream has sent its last one.
// Frames are moved on at once; boxing each would cost an allocation per frame.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Work {
    Frame(Prepared),
    End(StreamKey),
}

enum Job {
    Batch(Vec<Prepared>),
    End(StreamKey),
}

enum JobDone {
    Batch(Vec<(Decoded, Vec<Output>, Transform)>),
    End(StreamKey),
    Failed(Vec<StreamKey>, PipelineError),
}

/// Where each stream's results go.
#[derive(Default)]
pub(crate) struct Routes {
    map: Mutex<HashMap<StreamKey, Route>>,
}

pub(crate) struct Route {
    pub tx: Sender<Detected>,
    pub shared: Arc<StreamShared>,
}

impl Routes {
    pub fn add(&self, key: StreamKey, route: Route) {
        self.lock().insert(key, route);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Route>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a result to its stream. A live stream's sinks that cannot keep up lose the frame
    /// (counted) rather than hold every other stream; a file's sinks are waited for.
    fn send(&self, det: Detected, observers: &[Arc<dyn Observer>]) {
        let Some((tx, shared)) = self
            .lock()
            .get(&det.d.key)
            .map(|r| (r.tx.clone(), r.shared.clone()))
        else {
            return;
        };
        if shared.live {
            if let Err(TrySendError::Full(_)) = tx.try_send(det) {
                shared.board_dropped("sink_busy", observers);
            }
        } else {
            let _ = tx.send(det);
        }
    }

    /// The stream's last frame has passed: its sinks may finish.
    fn end(&self, key: StreamKey) {
        self.lock().remove(&key);
    }

    fn fail(&self, key: StreamKey, e: &PipelineError) {
        if let Some(r) = self.lock().get(&key) {
            r.shared.fail(PipelineError::Panic(e.to_string()));
        }
    }
}

/// One model's running stage.
pub(crate) struct ModelStage {
    pub tx: Sender<Work>,
    pub handles: Vec<std::thread::JoinHandle<()>>,
}

impl ModelStage {
    pub fn start(
        engines: Vec<Engine>,
        detector: Arc<dyn Detector>,
        settings: &BatchSettings,
        routes: Arc<Routes>,
        observers: Vec<Arc<dyn Observer>>,
        depth: usize,
    ) -> Self {
        let dynamic = engines
            .first()
            .and_then(|e| e.io().inputs.first())
            .is_some_and(|i| i.shape.first().is_some_and(|&d| d < 0));
        let max_batch = if dynamic {
            settings.max_batch.max(1)
        } else {
            1
        };
        let (tx, rx) = bounded::<Work>(depth.max(1));
        let (order_tx, order_rx) = bounded::<usize>(engines.len() * 2 + 2);
        let (ready_tx, ready_rx) = bounded::<usize>(engines.len());
        let mut handles = Vec::new();
        let mut job_txs = Vec::new();
        let mut done_rxs = Vec::new();
        for (i, engine) in engines.into_iter().enumerate() {
            let (job_tx, job_rx) = bounded::<Job>(1);
            let (done_tx, done_rx) = bounded::<JobDone>(1);
            job_txs.push(job_tx);
            done_rxs.push(done_rx);
            let ready = ready_tx.clone();
            handles.push(spawn(&format!("infer{}", suffix(i)), move || {
                infer_worker(engine, i, job_rx, done_tx, ready)
            }));
        }
        drop(ready_tx);
        let batcher = Batcher {
            rx,
            max_batch,
            timeout: settings
                .timeout_ms
                .map(|ms| Duration::from_secs_f64(ms / 1e3)),
            observers: observers.clone(),
        };
        handles.push(spawn("batcher", move || {
            batcher.run(job_txs, ready_rx, order_tx)
        }));
        handles.push(spawn("postprocess", move || {
            postprocess(detector, order_rx, done_rxs, routes, observers)
        }));
        Self { tx, handles }
    }
}

fn suffix(i: usize) -> String {
    if i == 0 {
        String::new()
    } else {
        i.to_string()
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("the OS can start a thread")
}

struct Batcher {
    rx: Receiver<Work>,
    max_batch: usize,
    timeout: Option<Duration>,
    observers: Vec<Arc<dyn Observer>>,
}

impl Batcher {
    /// Waits for a free engine before taking frames, so that no frame ages in a batch that
    /// cannot run yet: a live stream's newest frame stays in its own slot until then.
    fn run(self, workers: Vec<Sender<Job>>, ready: Receiver<usize>, order: Sender<usize>) {
        crate::sched::background();
        let mut fastest_fps: f64 = 0.0;
        let mut pending: Option<Work> = None;
        loop {
            let Ok(i) = ready.recv() else { return };
            let first = match pending.take().map(Ok).unwrap_or_else(|| self.rx.recv()) {
                Ok(w) => w,
                Err(_) => return,
            };
            let job = match first {
                Work::End(key) => Job::End(key),
                Work::Frame(p) => {
                    fastest_fps = fastest_fps.max(p.d.frame.fps().unwrap_or(0.0));
                    let (batch, next) = self.fill(p, fastest_fps);
                    pending = next;
                    for o in &self.observers {
                        o.batch(batch.len());
                        o.queue_depth("inference", self.rx.len());
                    }
                    Job::Batch(batch)
                }
            };
            if order.send(i).is_err() || workers[i].send(job).is_err() {
                return;
            }
        }
    }

    /// A batch that starts with `first`; an end mark that arrives meanwhile closes the batch and
    /// is given back, so that it follows the frames before it.
    fn fill(&self, first: Prepared, fastest_fps: f64) -> (Vec<Prepared>, Option<Work>) {
        let mut batch = vec![first];
        if self.max_batch <= 1 {
            return (batch, None);
        }
        let window = self.timeout.unwrap_or_else(|| {
            let interval = if fastest_fps > 0.0 {
                1.0 / fastest_fps
            } else {
                0.04
            };
            Duration::from_secs_f64(interval.clamp(0.001, 0.2))
        });
        let deadline = Instant::now() + window;
        while batch.len() < self.max_batch {
            match self.rx.recv_deadline(deadline) {
                Ok(Work::Frame(p)) => batch.push(p),
                Ok(end @ Work::End(_)) => return (batch, Some(end)),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        (batch, None)
    }
}

fn infer_worker(
    mut engine: Engine,
    me: usize,
    jobs: Receiver<Job>,
    done: Sender<JobDone>,
    ready: Sender<usize>,
) {
    if ready.send(me).is_err() {
        return;
    }
    for job in jobs {
        let out = match job {
            Job::End(key) => JobDone::End(key),
            Job::Batch(batch) => run_batch(&mut engine, batch),
        };
        if done.send(out).is_err() {
            return;
        }
        let _ = ready.send(me);
    }
}

fn run_batch(engine: &mut Engine, batch: Vec<Prepared>) -> JobDone {
    let keys: Vec<StreamKey> = batch.iter().map(|p| p.d.key).collect();
    let t = Instant::now();
    let result = if batch.len() == 1 {
        engine.run(&batch[0].tensor).map(|o| vec![o])
    } else {
        stack(&batch)
            .and_then(|t| engine.run(&t))
            .and_then(|o| split(o, batch.len(), engine))
    };
    let outputs = match result {
        Ok(o) => o,
        Err(e) => return JobDone::Failed(keys, e.into()),
    };
    let took = t.elapsed();
    let n = batch.len();
    JobDone::Batch(
        batch
            .into_iter()
            .zip(outputs)
            .map(|(mut p, o)| {
                p.d.times.infer = took;
                p.d.batch = n;
                (p.d, o, p.transform)
            })
            .collect(),
    )
}

/// Frames of one batch stacked along the batch axis.
fn stack(batch: &[Prepared]) -> Result<Tensor, crate::engine::EngineError> {
    fn cat<T: Clone>(a: Vec<ndarray::ArrayViewD<'_, T>>) -> Option<ndarray::ArrayD<T>> {
        ndarray::concatenate(Axis(0), &a).ok()
    }
    let mismatch = || crate::engine::EngineError::Run {
        path: Default::default(),
        reason: "frames of one batch differ in tensor type or shape".into(),
    };
    match &batch[0].tensor {
        Tensor::U8(_) => batch
            .iter()
            .map(|p| match &p.tensor {
                Tensor::U8(a) => Some(a.view()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .and_then(cat)
            .map(Tensor::U8),
        Tensor::F32(_) => batch
            .iter()
            .map(|p| match &p.tensor {
                Tensor::F32(a) => Some(a.view()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .and_then(cat)
            .map(Tensor::F32),
    }
    .ok_or_else(mismatch)
}

/// A batch's outputs, one set per frame, each with a batch axis of one.
fn split(
    outputs: Vec<Output>,
    n: usize,
    engine: &Engine,
) -> Result<Vec<Vec<Output>>, crate::engine::EngineError> {
    let mut per_frame: Vec<Vec<Output>> = (0..n).map(|_| Vec::new()).collect();
    for o in outputs {
        if o.data.shape().first() != Some(&n) {
            return Err(crate::engine::EngineError::Run {
                path: engine.path().to_path_buf(),
                reason: format!(
                    "output {} has shape {:?}: no batch axis of {n} to split",
                    o.name,
                    o.data.shape()
                ),
            });
        }
        for (i, frame) in per_frame.iter_mut().enumerate() {
            frame.push(Output {
                name: o.name.clone(),
                data: o
                    .data
                    .index_axis(Axis(0), i)
                    .insert_axis(Axis(0))
                    .to_owned(),
            });
        }
    }
    Ok(per_frame)
}

/// Takes results in the order batches were dealt, decodes them, and routes each to its stream.
fn postprocess(
    detector: Arc<dyn Detector>,
    order: Receiver<usize>,
    done: Vec<Receiver<JobDone>>,
    routes: Arc<Routes>,
    observers: Vec<Arc<dyn Observer>>,
) {
    crate::sched::background();
    for i in order {
        let Ok(job) = done[i].recv() else { return };
        match job {
            JobDone::End(key) => routes.end(key),
            JobDone::Failed(keys, e) => {
                tracing::error!(error = %e, "inference failed");
                for k in keys {
                    routes.fail(k, &e);
                }
            }
            JobDone::Batch(items) => {
                for (mut d, outputs, transform) in items {
                    let t = Instant::now();
                    match detector.decode(&outputs, &transform) {
                        Ok(detections) => {
                            d.times.postprocess = t.elapsed();
                            routes.send(Detected { d, detections }, &observers);
                        }
                        Err(e) => routes.fail(d.key, &PipelineError::Model(e)),
                    }
                }
            }
        }
    }
}

impl StreamShared {
    fn board_dropped(&self, reason: &'static str, observers: &[Arc<dyn Observer>]) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        for o in observers {
            o.dropped(&self.name, reason, 1);
        }
    }
}
