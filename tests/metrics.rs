//! End-to-end tests: real HTTP over 127.0.0.1 against `MetricsServer`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use edgesight::metrics::{
    Health, HealthFn, Metrics, MetricsError, MetricsServer, OPENMETRICS_CONTENT_TYPE, STREAM_STATES,
};
use serde_json::{json, Value};

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // HTTP/1.0 so the server closes the connection and never chunks the body.
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body split");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path)
}

fn scrape(addr: SocketAddr) -> String {
    let reply = get(addr, "/metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, OPENMETRICS_CONTENT_TYPE);
    assert!(reply.body.ends_with("# EOF\n"), "missing EOF marker");
    reply.body
}

/// Metric name, label pairs sorted by key, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// Splits `name{k="v",...} value` into its parts.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut pairs = Vec::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        pairs.push((k, v.strip_prefix('"')?.strip_suffix('"')?));
    }
    pairs.sort();
    Some((name, pairs, value))
}

/// Value of the sample with exactly this name and label set.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want = labels.to_vec();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .find(|(n, l, _)| *n == name && *l == want)
        .map(|(_, _, v)| v)
}

fn healthy() -> HealthFn {
    Arc::new(|| Health::ok(json!({})))
}

fn start(metrics: &Arc<Metrics>) -> MetricsServer {
    let addr = "127.0.0.1:0".parse().expect("addr");
    MetricsServer::start(addr, Arc::clone(metrics), healthy()).expect("start")
}

#[test]
fn frame_counters_move() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    for _ in 0..3 {
        metrics.frame("cam1", "infer");
    }
    metrics.frame("cam1", "ingest");
    metrics.dropped("cam1", "latest_wins", 4);
    metrics.reconnect("cam1");
    metrics.queue_depth("infer", 7);

    let text = scrape(server.local_addr());
    let frames = |stage| {
        sample(
            &text,
            "edgesight_frames_total",
            &[("stream", "cam1"), ("stage", stage)],
        )
    };
    assert_eq!(frames("infer"), Some(3.0));
    assert_eq!(frames("ingest"), Some(1.0));
    let dropped = [("stream", "cam1"), ("reason", "latest_wins")];
    assert_eq!(
        sample(&text, "edgesight_frames_dropped_total", &dropped),
        Some(4.0)
    );
    let cam1 = [("stream", "cam1")];
    assert_eq!(
        sample(&text, "edgesight_stream_reconnects_total", &cam1),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "edgesight_queue_depth", &[("queue", "infer")]),
        Some(7.0)
    );
    server.stop();
}

#[test]
fn stream_state_and_up_follow_transitions() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    let check = |current: &str, up: f64| {
        let text = scrape(server.local_addr());
        for state in STREAM_STATES {
            let want = if state == current { 1.0 } else { 0.0 };
            let labels = [("stream", "cam1"), ("state", state)];
            assert_eq!(
                sample(&text, "edgesight_stream_state", &labels),
                Some(want),
                "{state}"
            );
        }
        assert_eq!(
            sample(&text, "edgesight_stream_up", &[("stream", "cam1")]),
            Some(up)
        );
    };
    metrics.set_stream_state("cam1", "connecting");
    check("connecting", 0.0);
    metrics.set_stream_state("cam1", "playing");
    check("playing", 1.0);
    metrics.set_stream_state("cam1", "stalled");
    check("stalled", 0.0);
    // Unknown states are ignored, not exported.
    metrics.set_stream_state("cam1", "bogus");
    check("stalled", 0.0);
}

#[test]
fn histograms_count_observations() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    metrics.stage_latency("infer", Duration::from_millis(10));
    metrics.stage_latency("infer", Duration::from_millis(30));
    metrics.capture_to_event("cam1", Duration::from_millis(120));
    metrics.batch(4);
    metrics.batch(16);
    metrics.batch(4);

    let text = scrape(server.local_addr());
    let infer = [("stage", "infer")];
    let count = sample(&text, "edgesight_stage_latency_seconds_count", &infer);
    assert_eq!(count, Some(2.0));
    let sum = sample(&text, "edgesight_stage_latency_seconds_sum", &infer).expect("sum");
    assert!((sum - 0.040).abs() < 1e-9, "sum {sum}");
    // Bucket bounds are 0.5 ms doubling: 10 ms falls in le=0.016, 30 ms does not.
    let bucket = |le| {
        sample(
            &text,
            "edgesight_stage_latency_seconds_bucket",
            &[("stage", "infer"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.016"), Some(1.0));
    assert_eq!(bucket("0.032"), Some(2.0));
    assert_eq!(bucket("+Inf"), Some(2.0));

    let cam1 = [("stream", "cam1")];
    let c2e = sample(&text, "edgesight_capture_to_event_seconds_count", &cam1);
    assert_eq!(c2e, Some(1.0));
    assert_eq!(sample(&text, "edgesight_batch_size_count", &[]), Some(3.0));
    assert_eq!(
        sample(&text, "edgesight_batch_size_bucket", &[("le", "4.0")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "edgesight_batch_size_bucket", &[("le", "16.0")]),
        Some(3.0)
    );
}

#[test]
fn mqtt_dropped_tracks_cumulative_total() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    let overflow = [("reason", "overflow")];
    let text = scrape(server.local_addr());
    assert_eq!(
        sample(&text, "edgesight_mqtt_dropped_total", &overflow),
        Some(0.0)
    );

    metrics.set_mqtt_dropped("overflow", 5);
    metrics.set_mqtt_dropped("overflow", 8);
    let text = scrape(server.local_addr());
    assert_eq!(
        sample(&text, "edgesight_mqtt_dropped_total", &overflow),
        Some(8.0)
    );

    // A counter never goes backwards.
    metrics.set_mqtt_dropped("overflow", 3);
    let text = scrape(server.local_addr());
    assert_eq!(
        sample(&text, "edgesight_mqtt_dropped_total", &overflow),
        Some(8.0)
    );
    let expired = [("reason", "expired")];
    assert_eq!(
        sample(&text, "edgesight_mqtt_dropped_total", &expired),
        Some(0.0)
    );
}

#[test]
fn remove_stream_drops_its_series() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    for stream in ["cam1", "cam2"] {
        metrics.set_stream_state(stream, "playing");
        metrics.frame_seen(stream);
        metrics.frame(stream, "ingest");
        metrics.dropped(stream, "latest_wins", 1);
        metrics.reconnect(stream);
        metrics.capture_to_event(stream, Duration::from_millis(5));
        metrics.zone_objects(stream, "door", "person", 2);
        metrics.line_crossing(stream, "gate", "car", "in");
    }
    let text = scrape(server.local_addr());
    let cam2_lines = |text: &str| {
        text.lines()
            .filter(|l| l.contains("stream=\"cam2\""))
            .count()
    };
    assert!(cam2_lines(&text) > 10, "cam2 series missing before removal");
    let zone = [("stream", "cam2"), ("zone", "door"), ("label", "person")];
    assert_eq!(sample(&text, "edgesight_zone_objects", &zone), Some(2.0));
    let line = [
        ("stream", "cam2"),
        ("line", "gate"),
        ("label", "car"),
        ("direction", "in"),
    ];
    assert_eq!(
        sample(&text, "edgesight_line_crossings_total", &line),
        Some(1.0)
    );

    metrics.remove_stream("cam2");
    let text = scrape(server.local_addr());
    assert_eq!(cam2_lines(&text), 0, "cam2 lingers:\n{text}");
    let cam1 = [("stream", "cam1"), ("stage", "ingest")];
    assert_eq!(sample(&text, "edgesight_frames_total", &cam1), Some(1.0));
    assert_eq!(
        sample(&text, "edgesight_stream_up", &[("stream", "cam1")]),
        Some(1.0)
    );

    // A re-added stream starts from zero.
    metrics.frame("cam2", "ingest");
    let text = scrape(server.local_addr());
    let cam2 = [("stream", "cam2"), ("stage", "ingest")];
    assert_eq!(sample(&text, "edgesight_frames_total", &cam2), Some(1.0));
}

#[test]
fn last_frame_age_is_computed_at_scrape_time() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    let age = || {
        let text = scrape(server.local_addr());
        sample(
            &text,
            "edgesight_last_frame_age_seconds",
            &[("stream", "cam1")],
        )
        .expect("age")
    };
    metrics.frame_seen("cam1");
    let first = age();
    thread::sleep(Duration::from_millis(300));
    let second = age();
    assert!(
        second - first >= 0.25,
        "age did not grow: {first} -> {second}"
    );

    metrics.frame_seen("cam1");
    let third = age();
    assert!(
        third < second && third < 0.25,
        "age did not reset: {second} -> {third}"
    );
}

#[test]
fn healthz_reflects_health_closure() {
    let metrics = Arc::new(Metrics::new());
    let ok = Arc::new(AtomicBool::new(true));
    let health: HealthFn = {
        let ok = Arc::clone(&ok);
        Arc::new(move || {
            let detail = json!({ "streams": { "cam1": "playing" } });
            Health {
                healthy: ok.load(Ordering::SeqCst),
                detail,
            }
        })
    };
    let addr = "127.0.0.1:0".parse().expect("addr");
    let server = MetricsServer::start(addr, metrics, health).expect("start");

    let reply = get(server.local_addr(), "/healthz");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["streams"]["cam1"], "playing");

    ok.store(false, Ordering::SeqCst);
    let reply = get(server.local_addr(), "/healthz");
    assert_eq!(reply.status, 503);
    let body: Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(body["status"], "unhealthy");
}

#[test]
fn bind_conflict_is_a_bind_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err =
        MetricsServer::start(addr, Arc::new(Metrics::new()), healthy()).expect_err("port is taken");
    match &err {
        MetricsError::Bind { addr: got, .. } => assert_eq!(*got, addr),
        other => panic!("unexpected error: {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("metrics endpoint {addr}: address already in use")
    );
}

#[test]
fn unknown_path_is_404_and_wrong_method_405() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    assert_eq!(get(server.local_addr(), "/nope").status, 404);
    assert_eq!(get(server.local_addr(), "/").status, 404);
    assert_eq!(request(server.local_addr(), "POST", "/metrics").status, 405);
    // Query strings do not change routing.
    assert_eq!(get(server.local_addr(), "/metrics?x=1").status, 200);
}

#[test]
fn stop_releases_the_port() {
    let metrics = Arc::new(Metrics::new());
    let server = start(&metrics);
    let addr = server.local_addr();
    server.stop();
    // Rebinding the same address proves the listener is gone.
    let again = MetricsServer::start(addr, Arc::clone(&metrics), healthy()).expect("rebind");
    assert_eq!(get(again.local_addr(), "/metrics").status, 200);
    drop(again);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after drop"
    );
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Metrics>();
    assert_send_sync::<MetricsServer>();
}
