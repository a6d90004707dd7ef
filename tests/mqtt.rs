//! Tests of `edgesight::mqtt` against a real mosquitto broker (`/usr/sbin/mosquitto`).
//!
//! Each test runs its own broker on a free port of 127.0.0.1, so the tests can run in parallel.
//!
//! Restart tests and the subscriber: the broker runs without persistence, so a restart loses
//! every subscription, and messages reach only subscribers attached before the publisher
//! reconnects. These tests restart the broker right after they see a connection attempt of the
//! publisher (its `connect_attempts` counter grows); the publisher's next attempt then comes no
//! sooner than `backoff_min` (1 s) later, and in that time the test starts a fresh subscriber and
//! waits for its SUBACK, which takes milliseconds. So the subscriber is always in place first.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::mqtt::{free_port, unique_id, wait_until, Broker, Subscriber};
use edgesight::mqtt::{MqttConfig, MqttPublisher};

const CHILD_ENV: &str = "EDGESIGHT_MQTT_CHILD_PORT";
const EVENTS: &str = "edgesight/cam1/events";
const AVAILABLE: &str = "edgesight/available";

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: unique_id("pub"),
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(2),
        ..MqttConfig::default()
    }
}

fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

fn publish_numbers(publisher: &MqttPublisher, range: std::ops::Range<usize>) {
    for i in range {
        publisher
            .publish("cam1/events", i.to_string().into_bytes(), false)
            .unwrap();
    }
}

fn wait_connected(publisher: &MqttPublisher, connected: bool, timeout: Duration) {
    assert!(
        wait_until(timeout, || publisher.stats().connected == connected),
        "publisher connected != {connected}: {:?}",
        publisher.stats()
    );
}

/// Restarts the broker just after a failed connection attempt of `publisher`, then attaches a
/// subscriber before the publisher's next attempt (see the file's doc comment).
fn restart_before_next_attempt(broker: &mut Broker, publisher: &MqttPublisher) -> Subscriber {
    let attempts = publisher.stats().connect_attempts;
    assert!(
        wait_until(Duration::from_secs(5), || {
            publisher.stats().connect_attempts > attempts
        }),
        "no connection attempt while the broker was down"
    );
    broker.restart();
    let subscriber = Subscriber::start(broker.port);
    assert!(
        !publisher.stats().connected,
        "publisher reconnected before the subscriber was ready"
    );
    subscriber
}

#[test]
fn events_arrive_in_order_and_online_is_retained() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port);
    let publisher = MqttPublisher::start(config(broker.port)).unwrap();
    publish_numbers(&publisher, 0..20);

    let got = sub.wait_payloads(EVENTS, 20, Duration::from_secs(5));
    assert_eq!(got, numbers(0..20));
    let first = sub.received().first().cloned();
    assert_eq!(first, Some((AVAILABLE.into(), "online".into(), false)));
    assert!(wait_until(Duration::from_secs(2), || publisher
        .stats()
        .sent
        == 20));

    let late = Subscriber::start(broker.port);
    assert!(wait_until(Duration::from_secs(2), || late
        .received()
        .contains(&(AVAILABLE.into(), "online".into(), true))));
    let stats = publisher.stats();
    assert_eq!((stats.queued, stats.reconnects), (0, 0), "{stats:?}");
    publisher.shutdown(Duration::from_secs(2));
}

#[test]
fn messages_queued_while_broker_down_arrive_in_order_after_restart() {
    let mut broker = Broker::start();
    let publisher = MqttPublisher::start(config(broker.port)).unwrap();
    wait_connected(&publisher, true, Duration::from_secs(5));
    broker.stop();
    wait_connected(&publisher, false, Duration::from_secs(5));

    publish_numbers(&publisher, 0..50);
    assert_eq!(publisher.stats().queued, 50);
    let sub = restart_before_next_attempt(&mut broker, &publisher);

    let got = sub.wait_payloads(EVENTS, 50, Duration::from_secs(6));
    assert_eq!(got, numbers(0..50));
    assert_eq!(sub.payloads(AVAILABLE), ["online"]);
    assert!(wait_until(Duration::from_secs(2), || publisher
        .stats()
        .sent
        == 50));
    let stats = publisher.stats();
    assert_eq!((stats.reconnects, stats.queued), (1, 0), "{stats:?}");
    assert_eq!((stats.dropped_overflow, stats.dropped_expired), (0, 0));
    publisher.shutdown(Duration::from_secs(2));
}

#[test]
fn full_queue_drops_oldest() {
    let mut broker = Broker::start();
    let cfg = MqttConfig {
        queue_capacity: 10,
        ..config(broker.port)
    };
    let publisher = MqttPublisher::start(cfg).unwrap();
    wait_connected(&publisher, true, Duration::from_secs(5));
    broker.stop();
    wait_connected(&publisher, false, Duration::from_secs(5));

    publish_numbers(&publisher, 0..25);
    let stats = publisher.stats();
    assert_eq!(
        (stats.queued, stats.dropped_overflow),
        (10, 15),
        "{stats:?}"
    );
    let sub = restart_before_next_attempt(&mut broker, &publisher);

    let got = sub.wait_payloads(EVENTS, 10, Duration::from_secs(6));
    // Nothing else may follow the ten.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(got, numbers(15..25));
    assert_eq!(sub.payloads(EVENTS), numbers(15..25));
    assert!(wait_until(Duration::from_secs(2), || publisher
        .stats()
        .sent
        == 10));
    assert_eq!(publisher.stats().dropped_overflow, 15);
    publisher.shutdown(Duration::from_secs(2));
}

#[test]
fn expired_messages_are_not_sent() {
    let mut broker = Broker::start();
    let cfg = MqttConfig {
        ttl: Duration::from_secs(1),
        ..config(broker.port)
    };
    let publisher = MqttPublisher::start(cfg).unwrap();
    wait_connected(&publisher, true, Duration::from_secs(5));
    broker.stop();
    wait_connected(&publisher, false, Duration::from_secs(5));

    publish_numbers(&publisher, 0..5);
    thread::sleep(Duration::from_millis(1300));
    let sub = restart_before_next_attempt(&mut broker, &publisher);
    wait_connected(&publisher, true, Duration::from_secs(5));
    publisher
        .publish("cam1/events", b"after".to_vec(), false)
        .unwrap();

    // In-order delivery: had any expired message been sent, it would precede "after".
    let got = sub.wait_payloads(EVENTS, 1, Duration::from_secs(5));
    assert_eq!(got, ["after"]);
    let stats = publisher.stats();
    assert_eq!((stats.dropped_expired, stats.sent), (5, 1), "{stats:?}");
    publisher.shutdown(Duration::from_secs(2));
}

#[test]
fn reconnect_backs_off_and_connects_to_a_late_broker() {
    let port = free_port();
    let cfg = MqttConfig {
        backoff_max: Duration::from_secs(30),
        ..config(port)
    };
    let publisher = MqttPublisher::start(cfg).unwrap();
    thread::sleep(Duration::from_secs(5));
    // Attempts at 0 s, ~1 s and ~3 s; the next is due at ~7 s.
    let attempts = publisher.stats().connect_attempts;
    assert!((2..=4).contains(&attempts), "{attempts} attempts in 5 s");

    let broker = Broker::start_on(port);
    let sub = Subscriber::start(broker.port);
    wait_connected(&publisher, true, Duration::from_secs(6));
    assert_eq!(
        sub.wait_payloads(AVAILABLE, 1, Duration::from_secs(2)),
        ["online"]
    );
    let stats = publisher.stats();
    assert!(stats.connect_attempts <= 5, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    publisher.shutdown(Duration::from_secs(2));
}

/// Kills the child process on drop, whatever happens in the test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run by `last_will_reports_offline_when_killed` in a child process; does nothing otherwise.
#[test]
fn child_process_entry() {
    let Ok(port) = std::env::var(CHILD_ENV) else {
        return;
    };
    let publisher = MqttPublisher::start(config(port.parse().unwrap())).unwrap();
    wait_connected(&publisher, true, Duration::from_secs(5));
    println!("CHILD_CONNECTED");
    thread::sleep(Duration::from_secs(30));
}

#[test]
fn last_will_reports_offline_when_killed() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_process_entry", "--exact", "--nocapture"])
        .env(CHILD_ENV, broker.port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == "CHILD_CONNECTED");
    assert!(ready, "child publisher did not connect");
    assert_eq!(
        sub.wait_payloads(AVAILABLE, 1, Duration::from_secs(5)),
        ["online"]
    );

    child.0.kill().unwrap(); // SIGKILL: no chance to say goodbye
    child.0.wait().unwrap();
    let got = sub.wait_payloads(AVAILABLE, 2, Duration::from_secs(5));
    assert_eq!(got, ["online", "offline"]);

    let late = Subscriber::start(broker.port);
    assert!(wait_until(Duration::from_secs(2), || late
        .received()
        .contains(&(AVAILABLE.into(), "offline".into(), true))));
}

#[test]
fn shutdown_flushes_then_reports_offline() {
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port);
    let publisher = MqttPublisher::start(config(broker.port)).unwrap();
    publish_numbers(&publisher, 0..3);
    let started = Instant::now();
    publisher.shutdown(Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(3));

    let expected = [
        (AVAILABLE, "online"),
        (EVENTS, "0"),
        (EVENTS, "1"),
        (EVENTS, "2"),
        (AVAILABLE, "offline"),
    ];
    wait_until(Duration::from_secs(2), || {
        sub.received().len() >= expected.len()
    });
    let got: Vec<_> = sub.received().into_iter().map(|(t, p, _)| (t, p)).collect();
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, expected);

    let late = Subscriber::start(broker.port);
    assert!(wait_until(Duration::from_secs(2), || late
        .received()
        .contains(&(AVAILABLE.into(), "offline".into(), true))));
}

#[test]
fn shutdown_and_drop_do_not_hang_without_broker() {
    let port = free_port();
    let publisher = MqttPublisher::start(config(port)).unwrap();
    publish_numbers(&publisher, 0..3);
    let started = Instant::now();
    publisher.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "{took:?}"
    );

    let publisher = MqttPublisher::start(config(port)).unwrap();
    publish_numbers(&publisher, 0..3);
    let started = Instant::now();
    drop(publisher);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn invalid_topics_are_refused() {
    let publisher = MqttPublisher::start(config(free_port())).unwrap();
    for topic in ["", "cam1/+", "cam1/#"] {
        let err = publisher.publish(topic, b"x".to_vec(), false).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:"), "{err}");
    }
    assert_eq!(publisher.stats().queued, 0);
}

#[test]
fn messages_in_flight_when_the_broker_dies_are_resent_in_order() {
    const N: usize = 20_000;
    let mut broker = Broker::start();
    let cfg = MqttConfig {
        queue_capacity: N,
        ..config(broker.port)
    };
    let publisher = MqttPublisher::start(cfg).unwrap();
    wait_connected(&publisher, true, Duration::from_secs(5));
    publish_numbers(&publisher, 0..N);
    assert!(wait_until(Duration::from_secs(5), || publisher
        .stats()
        .sent
        >= 100));
    broker.stop();
    wait_connected(&publisher, false, Duration::from_secs(5));
    // No acknowledgement is processed once the loss is noticed.
    let acked = publisher.stats().sent as usize;
    eprintln!("acked before the broker died: {acked} of {N}");
    assert!(acked < N, "everything was sent before the broker died");

    let sub = restart_before_next_attempt(&mut broker, &publisher);
    let got = sub.wait_payloads(EVENTS, N - acked, Duration::from_secs(10));
    let expected = numbers(acked..N);
    let first_difference = got.iter().zip(&expected).position(|(g, e)| g != e);
    assert!(
        got == expected,
        "got {} of {} messages, first {:?}, first difference at {first_difference:?}",
        got.len(),
        expected.len(),
        got.first()
    );
    publisher.shutdown(Duration::from_secs(2));
}
