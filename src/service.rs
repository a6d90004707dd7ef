//! The long-running side of `edgesight run`: many streams, live sources, the Prometheus
//! endpoint, MQTT, and `SIGHUP` reloads.
//!
//! The pipeline reports through [`Observer`]s; this module plugs in the two that leave the
//! process (metrics and MQTT), and keeps the streams in step with the pipeline file.
//!
//! ```no_run
//! use std::sync::{atomic::AtomicBool, Arc};
//! use edgesight::{config::PipelineFile, service::{Service, ServiceOptions}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = PipelineFile::load("pipelines/live.toml".as_ref())?;
//! let opts = ServiceOptions::from_file(&file, Some("pipelines/live.toml".into()))?;
//! let stop = Arc::new(AtomicBool::new(false));
//! let reload = Arc::new(AtomicBool::new(false));
//! let outcomes = Service::start(opts)?.run(&stop, &reload, &mut |_| {})?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, PipelineFile};
use crate::metrics::{Health, Metrics, MetricsError, MetricsServer};
use crate::mqtt::{MqttConfig, MqttError, MqttPublisher};
use crate::pipeline::runner::{Runner, RunnerSpec, StreamOutcome};
use crate::pipeline::stream_spec::StreamSpec;
use crate::pipeline::{Observer, PipelineError, RunSpec, StatusBoard, StreamState, StreamStatus};
use crate::rtsp::RtspServer;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error(transparent)]
    Rtsp(#[from] crate::rtsp::RtspError),
}

/// Everything a service needs, resolved.
pub struct ServiceOptions {
    pub streams: Vec<(String, RunSpec)>,
    pub runner: RunnerSpec,
    /// The Prometheus endpoint's address; none for no endpoint.
    pub metrics: Option<SocketAddr>,
    pub mqtt: Option<MqttConfig>,
    /// The RTSP server of annotated video: (address, port).
    pub rtsp_out: Option<(String, u16)>,
    /// The pipeline file a `SIGHUP` rereads.
    pub pipeline_file: Option<PathBuf>,
}

impl ServiceOptions {
    pub fn from_file(file: &PipelineFile, path: Option<PathBuf>) -> Result<Self, ConfigError> {
        let streams = file.stream_specs()?;
        Ok(Self {
            streams,
            runner: RunnerSpec {
                engine: file.engine.clone(),
                batch: file.batch.clone(),
                queue_depth: file.queues.depth,
            },
            metrics: match &file.metrics {
                Some(m) if !m.enabled => None,
                Some(m) => Some(m.addr),
                None => Some(crate::metrics::DEFAULT_ADDR),
            },
            mqtt: file.mqtt.clone(),
            rtsp_out: file.rtsp_out.as_ref().map(|r| (r.address.clone(), r.port)),
            pipeline_file: path,
        })
    }
}

pub struct Service {
    runner: Runner,
    board: Arc<StatusBoard>,
    metrics: Option<(Arc<Metrics>, MetricsServer)>,
    mqtt: Option<Arc<MqttPublisher>>,
    pipeline_file: Option<PathBuf>,
    fingerprints: BTreeMap<String, String>,
    heartbeat: Arc<AtomicU64>,
    rtsp: Option<Arc<RtspServer>>,
}

impl Service {
    /// Opens the endpoints, connects to MQTT (in the background) and starts every stream. A
    /// stream that cannot start (a bad URI, a missing model) fails the whole start: the file
    /// needs fixing. A stream that starts and later fails only fails itself.
    pub fn start(opts: ServiceOptions) -> Result<Self, ServiceError> {
        let mut observers: Vec<Arc<dyn Observer>> = Vec::new();
        let metrics = Arc::new(Metrics::new());
        if opts.metrics.is_some() {
            observers.push(Arc::new(MetricsObserver(metrics.clone())));
        }
        let mqtt = match &opts.mqtt {
            Some(cfg) => {
                let publisher = Arc::new(MqttPublisher::start(cfg.clone())?);
                observers.push(Arc::new(MqttObserver(publisher.clone())));
                Some(publisher)
            }
            None => None,
        };
        let board = StatusBoard::new(observers);
        let heartbeat = Arc::new(AtomicU64::new(0));
        let server = match opts.metrics {
            Some(addr) => {
                let health = health_check(board.clone(), heartbeat.clone());
                let server = MetricsServer::start(addr, metrics.clone(), health)?;
                tracing::info!("metrics at http://{}/metrics", server.local_addr());
                Some((metrics, server))
            }
            None => None,
        };
        let rtsp = match &opts.rtsp_out {
            Some((address, port)) => {
                let server = RtspServer::start(address, *port)?;
                tracing::info!("annotated video at rtsp://{}/<stream>", server.address());
                Some(Arc::new(server))
            }
            None => None,
        };
        let mut runner = Runner::new(opts.runner, board.clone());
        for (name, spec) in &opts.streams {
            add(&mut runner, name, spec, rtsp.as_ref())?;
        }
        let fingerprints = match &opts.pipeline_file {
            Some(p) => PipelineFile::load(p)?.stream_fingerprints(),
            None => BTreeMap::new(),
        };
        Ok(Self {
            runner,
            board,
            metrics: server,
            mqtt,
            pipeline_file: opts.pipeline_file,
            fingerprints,
            heartbeat,
            rtsp,
        })
    }

    /// The metrics endpoint's address, when there is one (port 0 picks a free port).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, s)| s.local_addr())
    }

    pub fn board(&self) -> &Arc<StatusBoard> {
        &self.board
    }

    /// Runs until every stream has ended or `stop` is set; a set `reload` rereads the pipeline
    /// file. `on_tick` sees every stream's status a few times a second.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        reload: &AtomicBool,
        on_tick: &mut dyn FnMut(&BTreeMap<String, StreamStatus>),
    ) -> Result<Vec<StreamOutcome>, ServiceError> {
        let started = Instant::now();
        let mut outcomes = Vec::new();
        while !stop.load(Ordering::SeqCst) && !self.runner.is_empty() {
            self.heartbeat
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            if reload.swap(false, Ordering::SeqCst) {
                outcomes.extend(self.reload());
            }
            for o in self.runner.reap() {
                log_outcome(&o);
                outcomes.push(o);
            }
            self.update_mqtt_metrics();
            on_tick(&self.board.snapshot());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.runner.stop_all();
        let runner = std::mem::replace(
            &mut self.runner,
            Runner::new(RunnerSpec::default(), self.board.clone()),
        );
        for o in runner.finish() {
            log_outcome(&o);
            outcomes.push(o);
        }
        self.update_mqtt_metrics();
        if let Some(m) = self.mqtt.take() {
            match Arc::try_unwrap(m) {
                Ok(p) => p.shutdown(Duration::from_secs(3)),
                Err(m) => drop(m),
            }
        }
        if let Some((_, server)) = self.metrics.take() {
            server.stop();
        }
        Ok(outcomes)
    }

    /// Rereads the pipeline file: added streams start, removed ones stop with their outputs
    /// finalized, changed ones restart, and the others carry on untouched. A file that no longer
    /// parses changes nothing.
    fn reload(&mut self) -> Vec<StreamOutcome> {
        let Some(path) = self.pipeline_file.clone() else {
            return Vec::new();
        };
        let file = match PipelineFile::load(&path).and_then(|f| f.stream_specs().map(|s| (f, s))) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "reload: keeping the running streams");
                return Vec::new();
            }
        };
        let (file, specs) = file;
        let fresh = file.stream_fingerprints();
        let mut outcomes = Vec::new();
        for name in self.runner.names() {
            let changed = fresh.get(&name) != self.fingerprints.get(&name);
            if !fresh.contains_key(&name) || changed {
                tracing::info!(stream = %name, "reload: stopping");
                if let Some(o) = self.runner.remove(&name) {
                    outcomes.push(o);
                }
                if !fresh.contains_key(&name) {
                    self.board.remove(&name);
                }
            }
        }
        let running = self.runner.names();
        for (name, spec) in &specs {
            if !running.contains(name) {
                tracing::info!(stream = %name, "reload: starting");
                if let Err(e) = add(&mut self.runner, name, spec, self.rtsp.as_ref()) {
                    tracing::error!(stream = %name, error = %e, "reload: cannot start");
                }
            }
        }
        self.fingerprints = fresh;
        outcomes
    }

    fn update_mqtt_metrics(&self) {
        if let (Some(m), Some((metrics, _))) = (&self.mqtt, &self.metrics) {
            let s = m.stats();
            metrics.set_mqtt_dropped("overflow", s.dropped_overflow);
            metrics.set_mqtt_dropped("expired", s.dropped_expired);
        }
    }
}

fn add(
    runner: &mut Runner,
    name: &str,
    spec: &RunSpec,
    rtsp: Option<&Arc<RtspServer>>,
) -> Result<(), PipelineError> {
    let (source, _) = spec.resolve()?;
    let mut stream = StreamSpec::from_run_spec(spec, source, name.to_string());
    if spec.rtsp_out {
        stream.rtsp = rtsp.cloned();
    }
    runner.add(stream, None)
}

/// The RTSP server of annotated video, if any.
impl Service {
    pub fn rtsp_addr(&self) -> Option<String> {
        self.rtsp.as_ref().map(|r| r.address().to_string())
    }
}

fn log_outcome(o: &StreamOutcome) {
    match &o.result {
        Ok(s) => {
            tracing::info!(stream = %o.name, state = s.state.as_str(), frames = s.frames, "stream ended")
        }
        Err(e) => tracing::error!(stream = %o.name, error = %e, "stream failed"),
    }
}

/// Healthy while the service loop turns and no stream has failed for good.
fn health_check(board: Arc<StatusBoard>, heartbeat: Arc<AtomicU64>) -> crate::metrics::HealthFn {
    let started = Instant::now();
    Arc::new(move || {
        let streams = board.snapshot();
        let beat = Duration::from_millis(heartbeat.load(Ordering::Relaxed));
        let loop_alive = started.elapsed().saturating_sub(beat) < Duration::from_secs(10);
        let failed: Vec<&String> = streams
            .iter()
            .filter(|(_, s)| s.state == StreamState::Failed)
            .map(|(n, _)| n)
            .collect();
        let detail = serde_json::json!({
            "streams": streams,
            "failed": failed,
        });
        if loop_alive && failed.is_empty() {
            Health::ok(detail)
        } else {
            Health::unhealthy(detail)
        }
    })
}

struct MetricsObserver(Arc<Metrics>);

impl Observer for MetricsObserver {
    fn state(&self, stream: &str, status: &StreamStatus) {
        self.0.set_stream_state(stream, status.state.as_str());
    }
    fn frame(&self, stream: &str, stage: &'static str) {
        self.0.frame(stream, stage);
        if stage == "ingest" {
            self.0.frame_seen(stream);
        }
    }
    fn dropped(&self, stream: &str, reason: &'static str, n: u64) {
        self.0.dropped(stream, reason, n);
    }
    fn reconnect(&self, stream: &str) {
        self.0.reconnect(stream);
    }
    fn latency(&self, stage: &'static str, d: Duration) {
        self.0.stage_latency(stage, d);
    }
    fn capture_to_event(&self, stream: &str, d: Duration) {
        self.0.capture_to_event(stream, d);
    }
    fn batch(&self, n: usize) {
        self.0.batch(n);
    }
    fn queue_depth(&self, queue: &str, n: usize) {
        self.0.queue_depth(queue, n);
    }
    fn removed(&self, stream: &str) {
        self.0.remove_stream(stream);
    }
    fn zone_objects(&self, stream: &str, zone: &str, label: &str, n: u64) {
        self.0.zone_objects(stream, zone, label, n as usize);
    }
    fn line_crossing(&self, stream: &str, line: &str, label: &str, direction: &str) {
        self.0.line_crossing(stream, line, label, direction);
    }
}

/// Frigate's layout: `<prefix>/<stream>/events` per frame that reached the sinks, and a
/// retained `<prefix>/<stream>/status` on every state change.
struct MqttObserver(Arc<MqttPublisher>);

impl Observer for MqttObserver {
    fn state(&self, stream: &str, status: &StreamStatus) {
        let body = serde_json::json!({
            "state": status.state,
            "since": status.since,
            "reason": status.reason,
            "attempts": status.attempts,
            "last_frame_age_ms": status.last_frame_age_ms,
        });
        let _ = self.0.publish(
            &format!("{stream}/status"),
            body.to_string().into_bytes(),
            true,
        );
    }
    fn wants_events(&self) -> bool {
        true
    }
    fn event(&self, stream: &str, json: &[u8]) {
        let _ = self
            .0
            .publish(&format!("{stream}/events"), json.to_vec(), false);
    }
    fn track_event(&self, stream: &str, json: &[u8]) {
        let _ = self
            .0
            .publish(&format!("{stream}/tracks"), json.to_vec(), false);
    }
}
