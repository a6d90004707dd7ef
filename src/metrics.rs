//! Prometheus metrics for edgesight and a small HTTP endpoint that serves them.
//!
//! [`Metrics`] owns every metric family and is shared as `Arc<Metrics>` by the
//! stream, inference, sink and MQTT code. [`MetricsServer`] exposes it over
//! plain HTTP on a background thread named `metrics`:
//!
//! * `GET /metrics` – OpenMetrics text exposition,
//! * `GET /healthz` – JSON health report, `200` when healthy and `503` otherwise,
//! * anything else – `404` (`405` for a wrong method on a known path).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use edgesight::metrics::{Health, Metrics, MetricsServer, DEFAULT_ADDR};
//!
//! let metrics = Arc::new(Metrics::new());
//! let health = Arc::new(|| Health::ok(serde_json::json!({ "streams": { "cam1": "playing" } })));
//! let server = MetricsServer::start(DEFAULT_ADDR, Arc::clone(&metrics), health)?;
//!
//! metrics.set_stream_state("cam1", "playing");
//! metrics.frame_seen("cam1");
//! metrics.frame("cam1", "ingest");
//! metrics.stage_latency("infer", Duration::from_millis(12));
//!
//! println!("serving on http://{}/metrics", server.local_addr());
//! server.stop();
//! # Ok::<(), edgesight::metrics::MetricsError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::io::{self, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text, DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;
use tiny_http::{Header, Method, Request, Response, Server};

/// Loopback, so the endpoint is not exposed unless the operator asks for it.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));

/// Content type matching [`prometheus_client::encoding::text::encode`], which
/// emits OpenMetrics text (with the trailing `# EOF`).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every state `edgesight_stream_state` reports; exactly one is `1` per stream.
pub const STREAM_STATES: [&str; 7] = [
    "connecting",
    "playing",
    "stalled",
    "backoff",
    "failed",
    "stopped",
    "finished",
];

const PLAYING: &str = "playing";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamStageLabels {
    stream: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamReasonLabels {
    stream: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    stream: String,
    zone: String,
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LineLabels {
    stream: String,
    line: String,
    label: String,
    direction: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms doubling up to ~16 s: covers a fast stage as well as a stalled one.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Poisoning only means another thread panicked mid-update; the maps stay
/// structurally valid, so metrics keep working rather than cascading panics.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream-labelled series, remembered so [`Metrics::remove_stream`] can find
/// it: `Family` cannot be searched by a single label.
#[derive(Debug)]
enum StreamSeries {
    Reconnects,
    Frames(StreamStageLabels),
    Dropped(StreamReasonLabels),
    CaptureToEvent,
    Zone(ZoneLabels),
    Line(LineLabels),
}

#[derive(Debug, Default)]
struct StreamStatus {
    state: Option<&'static str>,
    last_frame: Option<Instant>,
}

/// Encodes `stream_up`, `stream_state` and `last_frame_age_seconds` from one
/// snapshot at scrape time, so the age is current and a scrape never sees a
/// half-applied state change (two states at 1, or up disagreeing with state).
#[derive(Debug, Default)]
struct StreamCollector {
    streams: Mutex<HashMap<String, StreamStatus>>,
}

type StreamRow = (String, Option<&'static str>, Option<f64>);

impl StreamCollector {
    fn snapshot(&self) -> Vec<StreamRow> {
        let now = Instant::now();
        let mut rows: Vec<StreamRow> = lock(&self.streams)
            .iter()
            .map(|(stream, s)| {
                let age = s
                    .last_frame
                    .map(|t| now.saturating_duration_since(t).as_secs_f64());
                (stream.clone(), s.state, age)
            })
            .collect();
        // Stable output order makes scrapes diffable.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

impl Collector for StreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let rows = self.snapshot();
        let mut up = encoder.encode_descriptor(
            "edgesight_stream_up",
            "1 while the stream is playing, 0 otherwise.",
            None,
            MetricType::Gauge,
        )?;
        for (stream, state) in rows.iter().filter_map(|r| r.1.map(|s| (&r.0, s))) {
            let labels = [("stream", stream.as_str())];
            up.encode_family(&labels)?
                .encode_gauge(&i64::from(state == PLAYING))?;
        }
        let mut states = encoder.encode_descriptor(
            "edgesight_stream_state",
            "Current stream state: 1 for the active state, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for (stream, current) in rows.iter().filter_map(|r| r.1.map(|s| (&r.0, s))) {
            for state in STREAM_STATES {
                let labels = [("stream", stream.as_str()), ("state", state)];
                states
                    .encode_family(&labels)?
                    .encode_gauge(&i64::from(state == current))?;
            }
        }
        let mut ages = encoder.encode_descriptor(
            "edgesight_last_frame_age",
            "Seconds since the stream's last frame, computed at scrape time.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (stream, age) in rows.iter().filter_map(|r| r.2.map(|a| (&r.0, a))) {
            let labels = [("stream", stream.as_str())];
            ages.encode_family(&labels)?.encode_gauge(&age)?;
        }
        Ok(())
    }
}

/// All edgesight metric families. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    streams: Arc<StreamCollector>,
    reconnects: Family<StreamLabels, Counter>,
    frames: Family<StreamStageLabels, Counter>,
    dropped: Family<StreamReasonLabels, Counter>,
    stage_latency: HistogramFamily<StageLabels>,
    capture_to_event: HistogramFamily<StreamLabels>,
    batch_size: Histogram,
    queue_depth: Family<QueueLabels, Gauge>,
    mqtt_dropped: Family<ReasonLabels, Counter>,
    zone_objects: Family<ZoneLabels, Gauge>,
    line_crossings: Family<LineLabels, Counter>,
    /// Series per stream, for `remove_stream`.
    series: Mutex<HashMap<String, Vec<StreamSeries>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family. Counter names carry no `_total`:
    /// the OpenMetrics encoder appends it.
    pub fn new() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            streams: Arc::default(),
            reconnects: Family::default(),
            frames: Family::default(),
            dropped: Family::default(),
            stage_latency: Family::new_with_constructor(latency_histogram),
            capture_to_event: Family::new_with_constructor(latency_histogram),
            batch_size: Histogram::new(linear_buckets(1.0, 1.0, 16)),
            queue_depth: Family::default(),
            mqtt_dropped: Family::default(),
            zone_objects: Family::default(),
            line_crossings: Family::default(),
            series: Mutex::default(),
        };
        // Dropped MQTT messages should read 0, not be absent, before the first drop.
        for reason in ["overflow", "expired"] {
            m.mqtt_dropped
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc_by(0);
        }
        m.register_all()
    }

    /// Help texts have no trailing period: the encoder adds one.
    fn register_all(mut self) -> Self {
        let r = &mut self.registry;
        r.register_collector(Box::new(Arc::clone(&self.streams)));
        r.register(
            "edgesight_stream_reconnects",
            "Reconnect attempts per stream",
            self.reconnects.clone(),
        );
        r.register(
            "edgesight_frames",
            "Frames that passed a pipeline stage",
            self.frames.clone(),
        );
        r.register(
            "edgesight_frames_dropped",
            "Frames dropped before processing, by reason",
            self.dropped.clone(),
        );
        r.register_with_unit(
            "edgesight_stage_latency",
            "Time spent in a pipeline stage",
            Unit::Seconds,
            self.stage_latency.clone(),
        );
        r.register_with_unit(
            "edgesight_capture_to_event",
            "Time from frame capture to the emitted event",
            Unit::Seconds,
            self.capture_to_event.clone(),
        );
        r.register(
            "edgesight_batch_size",
            "Frames per inference batch",
            self.batch_size.clone(),
        );
        r.register(
            "edgesight_queue_depth",
            "Items waiting in an internal queue",
            self.queue_depth.clone(),
        );
        r.register(
            "edgesight_mqtt_dropped",
            "MQTT messages dropped before publishing, by reason",
            self.mqtt_dropped.clone(),
        );
        r.register(
            "edgesight_zone_objects",
            "Objects currently inside a zone",
            self.zone_objects.clone(),
        );
        r.register(
            "edgesight_line_crossings",
            "Objects that crossed a line, by direction",
            self.line_crossings.clone(),
        );
        self
    }

    /// Records the stream's state; `edgesight_stream_up` is 1 only for
    /// `playing`. States outside [`STREAM_STATES`] are logged and ignored so a
    /// typo cannot create an unbounded label.
    pub fn set_stream_state(&self, stream: &str, state: &str) {
        let Some(state) = STREAM_STATES.iter().copied().find(|s| *s == state) else {
            tracing::warn!(stream, state, "ignoring unknown stream state");
            return;
        };
        self.update_stream(stream, |s| s.state = Some(state));
    }

    /// Marks that a frame arrived now; feeds `edgesight_last_frame_age_seconds`.
    pub fn frame_seen(&self, stream: &str) {
        let now = Instant::now();
        self.update_stream(stream, |s| s.last_frame = Some(now));
    }

    fn update_stream(&self, stream: &str, f: impl FnOnce(&mut StreamStatus)) {
        let mut streams = lock(&self.streams.streams);
        // Look up before inserting so the per-frame path does not allocate.
        match streams.get_mut(stream) {
            Some(status) => f(status),
            None => f(streams.entry(stream.to_owned()).or_default()),
        }
    }

    pub fn reconnect(&self, stream: &str) {
        let labels = StreamLabels {
            stream: stream.into(),
        };
        self.tracked(
            &self.reconnects,
            stream,
            &labels,
            || StreamSeries::Reconnects,
            |c| {
                c.inc();
            },
        );
    }

    pub fn frame(&self, stream: &str, stage: &str) {
        let labels = StreamStageLabels {
            stream: stream.into(),
            stage: stage.into(),
        };
        let key = || StreamSeries::Frames(labels.clone());
        self.tracked(&self.frames, stream, &labels, key, |c| {
            c.inc();
        });
    }

    pub fn dropped(&self, stream: &str, reason: &str, n: u64) {
        let labels = StreamReasonLabels {
            stream: stream.into(),
            reason: reason.into(),
        };
        let key = || StreamSeries::Dropped(labels.clone());
        self.tracked(&self.dropped, stream, &labels, key, |c| {
            c.inc_by(n);
        });
    }

    pub fn stage_latency(&self, stage: &str, elapsed: Duration) {
        self.stage_latency
            .get_or_create(&StageLabels {
                stage: stage.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn capture_to_event(&self, stream: &str, elapsed: Duration) {
        let labels = StreamLabels {
            stream: stream.into(),
        };
        let key = || StreamSeries::CaptureToEvent;
        self.tracked(&self.capture_to_event, stream, &labels, key, |h| {
            h.observe(elapsed.as_secs_f64());
        });
    }

    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    pub fn queue_depth(&self, queue: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabels {
                queue: queue.into(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Makes the counter equal to the MQTT module's cumulative `total`.
    /// `fetch_max` keeps it monotonic and race-free; a smaller total (the
    /// source restarted its count) is ignored until it catches up.
    pub fn set_mqtt_dropped(&self, reason: &str, total: u64) {
        self.mqtt_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inner()
            .fetch_max(total, Ordering::Relaxed);
    }

    pub fn zone_objects(&self, stream: &str, zone: &str, label: &str, count: usize) {
        let labels = ZoneLabels {
            stream: stream.into(),
            zone: zone.into(),
            label: label.into(),
        };
        let key = || StreamSeries::Zone(labels.clone());
        self.tracked(&self.zone_objects, stream, &labels, key, |g| {
            g.set(i64::try_from(count).unwrap_or(i64::MAX));
        });
    }

    pub fn line_crossing(&self, stream: &str, line: &str, label: &str, direction: &str) {
        let labels = LineLabels {
            stream: stream.into(),
            line: line.into(),
            label: label.into(),
            direction: direction.into(),
        };
        let key = || StreamSeries::Line(labels.clone());
        self.tracked(&self.line_crossings, stream, &labels, key, |c| {
            c.inc();
        });
    }

    /// Drops every series labelled with `stream`, so a removed camera does not
    /// linger with stale values.
    pub fn remove_stream(&self, stream: &str) {
        let mut index = lock(&self.series);
        for series in index.remove(stream).unwrap_or_default() {
            match series {
                StreamSeries::Reconnects => {
                    self.reconnects.remove(&StreamLabels {
                        stream: stream.into(),
                    });
                }
                StreamSeries::CaptureToEvent => {
                    self.capture_to_event.remove(&StreamLabels {
                        stream: stream.into(),
                    });
                }
                StreamSeries::Frames(l) => _ = self.frames.remove(&l),
                StreamSeries::Dropped(l) => _ = self.dropped.remove(&l),
                StreamSeries::Zone(l) => _ = self.zone_objects.remove(&l),
                StreamSeries::Line(l) => _ = self.line_crossings.remove(&l),
            }
        }
        drop(index);
        lock(&self.streams.streams).remove(stream);
    }

    /// Applies `f` to the series, recording it for `remove_stream` the first
    /// time it is created.
    fn tracked<L, M, C>(
        &self,
        family: &Family<L, M, C>,
        stream: &str,
        labels: &L,
        key: impl FnOnce() -> StreamSeries,
        f: impl FnOnce(&M),
    ) where
        L: Clone + Hash + Eq,
        M: Clone,
        C: MetricConstructor<M>,
    {
        if let Some(metric) = family.get(labels) {
            f(&metric);
            return;
        }
        // Creating the series under the index lock keeps a concurrent
        // `remove_stream` from leaving behind an untracked series.
        let mut index = lock(&self.series);
        if family.get(labels).is_none() {
            index.entry(stream.to_owned()).or_default().push(key());
        }
        f(&family.get_or_create(labels));
    }

    /// Encodes all families as OpenMetrics text (see [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn try_encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Like [`Metrics::try_encode`]; logs and returns an empty string on the
    /// (practically impossible) formatting error.
    pub fn encode(&self) -> String {
        self.try_encode().unwrap_or_else(|e| {
            tracing::error!(error = %e, "encoding metrics failed");
            String::new()
        })
    }
}

/// Result of the health closure behind `/healthz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub healthy: bool,
    /// Merged into the JSON body when it is an object, e.g. `{"streams": {...}}`.
    pub detail: Value,
}

impl Health {
    pub fn ok(detail: Value) -> Self {
        Health {
            healthy: true,
            detail,
        }
    }

    pub fn unhealthy(detail: Value) -> Self {
        Health {
            healthy: false,
            detail,
        }
    }

    /// `{"status":"ok"|"unhealthy", ...detail}`; a non-object detail goes
    /// under `"detail"`.
    pub fn to_json(&self) -> Value {
        let mut body = serde_json::Map::new();
        match &self.detail {
            Value::Object(map) => body.extend(map.clone()),
            Value::Null => {}
            other => _ = body.insert("detail".into(), other.clone()),
        }
        let status = if self.healthy { "ok" } else { "unhealthy" };
        body.insert("status".into(), Value::from(status));
        Value::Object(body)
    }
}

/// Health check called on every `/healthz` request.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics endpoint {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("metrics endpoint {addr}: cannot start thread: {source}")]
    Spawn {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The HTTP endpoint. Stops (and joins its thread) on [`MetricsServer::stop`] or drop.
pub struct MetricsServer {
    /// `None` once stopped; dropping it is what closes tiny_http's listener.
    server: Option<Arc<Server>>,
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl MetricsServer {
    pub fn start(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: HealthFn,
    ) -> Result<Self, MetricsError> {
        let bind_err = |reason: String| MetricsError::Bind { addr, reason };
        // Binding ourselves (rather than `Server::http`) gives a typed
        // `io::Error`, so "address in use" can be reported plainly.
        let listener = TcpListener::bind(addr).map_err(|e| bind_err(io_reason(&e)))?;
        let local_addr = listener.local_addr().map_err(|e| bind_err(io_reason(&e)))?;
        let server = Server::from_listener(listener, None).map_err(|e| bind_err(e.to_string()))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stopping) = (Arc::clone(&server), Arc::clone(&stopping));
            thread::Builder::new()
                .name("metrics".into())
                .spawn(move || serve(&server, &stopping, &metrics, &health))
                .map_err(|source| MetricsError::Spawn { addr, source })?
        };
        tracing::info!(addr = %local_addr, "metrics endpoint listening");
        Ok(MetricsServer {
            server: Some(server),
            local_addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The bound address; differs from the requested one when port 0 was used.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving, joins the thread and waits (up to 1 s) for the port to
    /// be released, so the same address can be bound again right away.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        // The flag must be set before unblocking: the serve loop reads it to
        // tell the unblock apart from an accept error.
        self.stopping.store(true, Ordering::SeqCst);
        server.unblock();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("metrics thread panicked");
            }
        }
        // Last reference: tiny_http's Drop wakes its accept thread, which
        // closes the listener on its own schedule.
        drop(server);
        wait_until_closed(self.local_addr);
        tracing::debug!(addr = %self.local_addr, "metrics endpoint stopped");
    }
}

/// tiny_http closes the listening socket from a detached accept thread, so
/// without this a stop-then-restart on the same port fails intermittently.
fn wait_until_closed(addr: SocketAddr) {
    let probe = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!(%addr, "metrics listener still open after stop");
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        _ => e.to_string(),
    }
}

fn serve(server: &Server, stopping: &AtomicBool, metrics: &Metrics, health: &HealthFn) {
    loop {
        match server.recv() {
            Ok(request) => handle(request, metrics, health),
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                // tiny_http's accept thread exits after reporting an accept
                // error (e.g. out of file descriptors), so the endpoint is dead
                // from here on; keep waiting for `stop` rather than exiting.
                tracing::error!(error = %e, "metrics endpoint stopped accepting connections");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

type Body = Response<Cursor<Vec<u8>>>;

fn handle(request: Request, metrics: &Metrics, health: &HealthFn) {
    let url = request.url();
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let readable = matches!(request.method(), Method::Get | Method::Head);
    let response = match path {
        "/metrics" if readable => metrics_response(metrics),
        "/healthz" if readable => health_response(health),
        "/metrics" | "/healthz" => with_header(
            text_response(405, "method not allowed\n"),
            "Allow",
            "GET, HEAD",
        ),
        _ => text_response(404, "not found\n"),
    };
    tracing::trace!(method = %request.method(), path, status = response.status_code().0, "metrics request");
    if let Err(e) = request.respond(response) {
        // Usually the scraper hung up; nothing to recover.
        tracing::debug!(error = %e, "metrics endpoint: writing response failed");
    }
}

fn metrics_response(metrics: &Metrics) -> Body {
    match metrics.try_encode() {
        Ok(body) => with_header(
            Response::from_string(body),
            "Content-Type",
            OPENMETRICS_CONTENT_TYPE,
        ),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            text_response(500, "encoding metrics failed\n")
        }
    }
}

fn health_response(health: &HealthFn) -> Body {
    // A panicking check must not take the metrics thread down with it.
    let report = panic::catch_unwind(AssertUnwindSafe(|| health())).unwrap_or_else(|_| {
        Health::unhealthy(serde_json::json!({ "error": "health check panicked" }))
    });
    let status = if report.healthy { 200 } else { 503 };
    let response = Response::from_string(report.to_json().to_string()).with_status_code(status);
    with_header(response, "Content-Type", "application/json")
}

fn text_response(status: u16, body: &str) -> Body {
    let response = Response::from_string(body).with_status_code(status);
    with_header(response, "Content-Type", "text/plain; charset=utf-8")
}

fn with_header(response: Body, name: &str, value: &str) -> Body {
    match Header::from_bytes(name, value) {
        Ok(header) => response.with_header(header),
        Err(()) => {
            tracing::error!(name, value, "invalid response header");
            response
        }
    }
}
