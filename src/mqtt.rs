//! MQTT publisher for detection events, with an offline queue and Frigate-style availability.
//!
//! [`MqttPublisher`] wraps the synchronous [`rumqttc`] client. A background thread named `mqtt`
//! owns the connection; [`MqttPublisher::publish`] only appends to a bounded in-memory queue, so
//! a video pipeline can call it from its streaming thread without ever waiting for the network.
//!
//! * Every message is published with QoS 1 under `<prefix>/<topic>`.
//! * `<prefix>/available` is `online` (retained) after every (re)connect, and `offline`
//!   (retained) after [`MqttPublisher::shutdown`] or, through the MQTT last will, after the
//!   process died without disconnecting.
//! * While the broker is unreachable, messages wait in the queue (oldest dropped first when it is
//!   full, anything older than the TTL dropped when it would be sent) and are delivered in publish
//!   order after the next connection. Connection attempts follow an exponential backoff with
//!   jitter instead of rumqttc's immediate retry.
//!
//! Delivery is at least once: a message that was in flight when the connection broke is sent
//! again after reconnecting, so a subscriber can see it twice.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use edgesight::mqtt::{MqttConfig, MqttPublisher};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = MqttConfig {
//!     host: "broker.local".into(),
//!     client_id: "edgesight-gate".into(),
//!     ..MqttConfig::default()
//! };
//! let mqtt = MqttPublisher::start(cfg)?;
//! mqtt.publish("cam1/events", br#"{"label":"person"}"#.to_vec(), false)?;
//! println!("{}", serde_json::to_string(&mqtt.stats())?);
//! mqtt.shutdown(Duration::from_secs(2));
//! # Ok(())
//! # }
//! ```
//!
//! In a configuration file the durations are given in seconds:
//!
//! ```text
//! host = "broker.local"
//! port = 1883
//! client_id = "edgesight-gate"
//! ttl_s = 60.0
//! backoff_min_s = 1.0
//! backoff_max_s = 30.0
//! keep_alive_s = 5.0
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::{Deserialize, Serialize};

/// Publishes handed to rumqttc and not yet acknowledged. More than one keeps throughput
/// independent of the broker's round trip; ordering still holds because a single TCP stream
/// carries them to the broker in order, and after a broken connection every unacknowledged one
/// goes back to the head of our own queue (rumqttc's own resend is discarded, see
/// `Shared::on_lost`). The cost is at most this many duplicates per reconnect.
const MAX_IN_FLIGHT: usize = 8;

/// rumqttc's packet-id window. Larger than ours plus the availability messages, so that with
/// in-order acknowledgements a packet id is always free and rumqttc never stalls on a collision.
const RUMQTTC_INFLIGHT: u16 = 4 * MAX_IN_FLIGHT as u16;

/// rumqttc's request channel only ever holds our in-flight publishes, one availability message
/// and one disconnect, so this never fills.
const REQUEST_CHANNEL_CAPACITY: usize = MAX_IN_FLIGHT + 4;

/// Largest packet we hand to rumqttc. Oversized packets make rumqttc drop the connection, and the
/// resend after reconnecting would fail again forever, so they are refused in `publish`.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// How long `shutdown` and `Drop` wait for the thread after the flush phase. A connection attempt
/// can outlast it (rumqttc's connect timeout); the thread is then left to finish on its own.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Settings of the MQTT publisher.
///
/// Deserialized with unknown fields rejected; missing fields take the [`Default`] values.
/// Durations are written in seconds as numbers: `ttl_s`, `backoff_min_s`, `backoff_max_s`,
/// `keep_alive_s`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// MQTT client id; must be unique per broker, or the broker disconnects the older client.
    pub client_id: String,
    /// Topic prefix: events go to `<prefix>/<topic>`, availability to `<prefix>/available`.
    pub prefix: String,
    /// User name for the broker, if it requires one.
    pub username: Option<String>,
    /// Password for the broker; needs `username`. Never logged.
    pub password: Option<String>,
    /// Messages kept while the broker is unreachable; the oldest is dropped when full.
    pub queue_capacity: usize,
    /// A message older than this when it would be sent is dropped.
    #[serde(rename = "ttl_s", deserialize_with = "secs::deserialize")]
    pub ttl: Duration,
    /// First delay between connection attempts.
    #[serde(rename = "backoff_min_s", deserialize_with = "secs::deserialize")]
    pub backoff_min: Duration,
    /// Longest delay between connection attempts.
    #[serde(rename = "backoff_max_s", deserialize_with = "secs::deserialize")]
    pub backoff_max: Duration,
    /// MQTT keep-alive; whole seconds from 1 to 65535, or zero to disable it. A dead broker is
    /// noticed after at most about twice this.
    #[serde(rename = "keep_alive_s", deserialize_with = "secs::deserialize")]
    pub keep_alive: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 1883,
            client_id: "edgesight".into(),
            prefix: "edgesight".into(),
            username: None,
            password: None,
            queue_capacity: 1000,
            ttl: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("queue_capacity", &self.queue_capacity)
            .field("ttl", &self.ttl)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl MqttConfig {
    /// The broker address as `host:port`, as used in errors and logs.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn validate(&self) -> Result<(), MqttError> {
        let problem = if self.host.is_empty() {
            Some("host is empty")
        } else if self.client_id.is_empty() {
            Some("client_id is empty")
        } else if !valid_topic(&self.prefix) {
            Some("prefix must be a non-empty topic without '+', '#' or NUL")
        } else if self.queue_capacity == 0 {
            Some("queue_capacity must be at least 1")
        } else if self.ttl.is_zero() {
            Some("ttl must be positive")
        } else if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            Some("backoff_min must be positive and not above backoff_max")
        } else if !self.keep_alive.is_zero()
            && !(Duration::from_secs(1)..=Duration::from_secs(65535)).contains(&self.keep_alive)
        {
            Some("keep_alive must be 0 or between 1 and 65535 s")
        } else if self.password.is_some() && self.username.is_none() {
            Some("password given without username")
        } else {
            None
        };
        match problem {
            Some(reason) => Err(MqttError::InvalidConfig {
                broker: self.broker(),
                reason: reason.into(),
            }),
            None => Ok(()),
        }
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(self.keep_alive)
            // Our queue, not the broker's session, is what survives a reconnect.
            .set_clean_session(true)
            .set_inflight(RUMQTTC_INFLIGHT)
            .set_max_packet_size(10 * 1024, MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(
                availability_topic(&self.prefix),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &self.username {
            options.set_credentials(user, self.password.as_deref().unwrap_or_default());
        }
        options
    }
}

/// Errors of the MQTT publisher; each names the broker as `host:port`.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The configuration cannot work.
    #[error("invalid MQTT configuration for broker {broker}: {reason}")]
    InvalidConfig { broker: String, reason: String },
    /// The topic suffix is empty or holds a wildcard or NUL.
    #[error("invalid MQTT topic {topic:?} for broker {broker}")]
    InvalidTopic { broker: String, topic: String },
    /// The packet would exceed [`MAX_PACKET_BYTES`].
    #[error("MQTT message of {len} bytes on {topic:?} exceeds {max} bytes (broker {broker})")]
    TooLarge {
        broker: String,
        topic: String,
        len: usize,
        max: usize,
    },
    /// The background thread could not be started.
    #[error("cannot start the MQTT thread for broker {broker}")]
    Spawn {
        broker: String,
        #[source]
        source: std::io::Error,
    },
}

/// Counters of the publisher, as returned by [`MqttPublisher::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MqttStats {
    /// Whether a broker connection is up now.
    pub connected: bool,
    /// Messages acknowledged by the broker (availability messages not counted).
    pub sent: u64,
    /// Messages dropped because the queue was full.
    pub dropped_overflow: u64,
    /// Messages dropped because they were older than the TTL.
    pub dropped_expired: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Connection attempts, successful or not.
    pub connect_attempts: u64,
    /// Messages not yet acknowledged: waiting in the queue or in flight.
    pub queued: usize,
}

/// Handle to the MQTT background thread. See the [module documentation](self).
pub struct MqttPublisher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttPublisher")
            .field("broker", &self.shared.broker)
            .finish_non_exhaustive()
    }
}

impl MqttPublisher {
    /// Starts the background thread and returns at once; the first connection attempt and any
    /// retries happen in the background, so a broker that is down now is not an error.
    pub fn start(cfg: MqttConfig) -> Result<MqttPublisher, MqttError> {
        cfg.validate()?;
        let (client, connection) = Client::new(cfg.options(), REQUEST_CHANNEL_CAPACITY);
        let shared = Arc::new(Shared::new(&cfg, client));
        let backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || run(&thread_shared, connection, backoff))
            .map_err(|source| MqttError::Spawn {
                broker: cfg.broker(),
                source,
            })?;
        Ok(MqttPublisher {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `payload` for `<prefix>/<topic>` with QoS 1; never waits for the network.
    ///
    /// Fails only on an invalid topic or an oversized message. A full queue drops its oldest
    /// message (counted in [`MqttStats::dropped_overflow`]).
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), MqttError> {
        let shared = &self.shared;
        let full_topic = format!("{}/{}", shared.prefix, topic);
        if !valid_topic(topic) || !valid_topic(&full_topic) {
            return Err(MqttError::InvalidTopic {
                broker: shared.broker.clone(),
                topic: topic.into(),
            });
        }
        // Fixed header, topic length and packet id add at most 9 bytes.
        let len = full_topic.len() + payload.len() + 9;
        if len > MAX_PACKET_BYTES {
            return Err(MqttError::TooLarge {
                broker: shared.broker.clone(),
                topic: topic.into(),
                len,
                max: MAX_PACKET_BYTES,
            });
        }
        let msg = Msg {
            topic: full_topic,
            payload,
            retain,
            at: Instant::now(),
        };
        let mut st = shared.lock();
        shared.drop_expired(&mut st);
        st.queue.push_back(msg);
        shared.enforce_capacity(&mut st);
        shared.pump(&mut st);
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MqttStats {
        let mut st = self.shared.lock();
        self.shared.drop_expired(&mut st);
        MqttStats {
            connected: st.connected,
            sent: st.sent,
            dropped_overflow: st.dropped_overflow,
            dropped_expired: st.dropped_expired,
            reconnects: st.reconnects,
            connect_attempts: st.connect_attempts,
            queued: st.queue.len() + st.in_flight.iter().filter(|f| f.msg.is_some()).count(),
        }
    }

    /// Waits up to `timeout` for queued messages to be acknowledged, then publishes `offline`
    /// (retained), disconnects and joins the thread (waiting at most a further couple of seconds).
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop(timeout);
    }

    fn stop(&mut self, flush_timeout: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let shared = &self.shared;
        let st = shared.lock();
        let (st, _) = shared
            .changed
            .wait_timeout_while(st, flush_timeout, |st| {
                !st.finished
                    && (!st.queue.is_empty() || st.in_flight.iter().any(|f| f.msg.is_some()))
            })
            .unwrap_or_else(PoisonError::into_inner);
        let mut st = st;
        st.stop = true;
        if st.connected {
            shared.say_goodbye(&mut st);
        }
        shared.changed.notify_all();
        let (st, _) = shared
            .changed
            .wait_timeout_while(st, STOP_GRACE, |st| !st.finished)
            .unwrap_or_else(PoisonError::into_inner);
        let finished = st.finished;
        drop(st);
        if finished {
            if thread.join().is_err() {
                tracing::warn!(broker = %shared.broker, "MQTT thread panicked");
            }
        } else {
            tracing::warn!(broker = %shared.broker, "MQTT thread still busy; leaving it to finish");
        }
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    at: Instant,
}

struct InFlight {
    /// `None` for availability messages, which are neither counted nor resent.
    msg: Option<Msg>,
    /// Known once rumqttc reports the outgoing publish.
    pkid: Option<u16>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Msg>,
    in_flight: VecDeque<InFlight>,
    connected: bool,
    ever_connected: bool,
    stop: bool,
    finished: bool,
    sent: u64,
    dropped_overflow: u64,
    dropped_expired: u64,
    reconnects: u64,
    connect_attempts: u64,
}

/// State shared by the handle and the thread. Messages are handed to rumqttc only while holding
/// the lock, from either side, so the order of its request channel matches `State::in_flight`.
struct Shared {
    broker: String,
    prefix: String,
    availability: String,
    capacity: usize,
    ttl: Duration,
    client: Client,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn new(cfg: &MqttConfig, client: Client) -> Self {
        Self {
            broker: cfg.broker(),
            prefix: cfg.prefix.clone(),
            availability: availability_topic(&cfg.prefix),
            capacity: cfg.queue_capacity,
            ttl: cfg.ttl,
            client,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue is in enqueue order (resent messages go back to its head, and they are older),
    /// so expired messages are always at the front.
    fn drop_expired(&self, st: &mut State) {
        while st.queue.front().is_some_and(|m| m.at.elapsed() > self.ttl) {
            st.queue.pop_front();
            st.dropped_expired += 1;
        }
    }

    fn enforce_capacity(&self, st: &mut State) {
        while st.queue.len() > self.capacity {
            st.queue.pop_front();
            st.dropped_overflow += 1;
        }
    }

    /// Moves queued messages into rumqttc while the in-flight window has room.
    fn pump(&self, st: &mut State) {
        if !st.connected || st.stop {
            return;
        }
        while st.in_flight.len() < MAX_IN_FLIGHT {
            self.drop_expired(st);
            let Some(msg) = st.queue.pop_front() else {
                break;
            };
            let sent = self.client.try_publish(
                msg.topic.as_str(),
                QoS::AtLeastOnce,
                msg.retain,
                msg.payload.clone(),
            );
            if let Err(e) = sent {
                tracing::debug!(broker = %self.broker, error = %e, "MQTT request channel refused a publish");
                st.queue.push_front(msg);
                break;
            }
            st.in_flight.push_back(InFlight {
                msg: Some(msg),
                pkid: None,
            });
        }
    }

    fn publish_availability(&self, st: &mut State, payload: &'static str) {
        match self
            .client
            .try_publish(self.availability.as_str(), QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => st.in_flight.push_back(InFlight {
                msg: None,
                pkid: None,
            }),
            Err(e) => {
                tracing::debug!(broker = %self.broker, error = %e, "cannot queue MQTT availability")
            }
        }
    }

    /// A clean DISCONNECT makes the broker discard the last will, so `offline` is sent by hand
    /// first; the broker handles both in order on the same connection.
    fn say_goodbye(&self, st: &mut State) {
        self.publish_availability(st, "offline");
        if let Err(e) = self.client.try_disconnect() {
            tracing::debug!(broker = %self.broker, error = %e, "cannot queue MQTT disconnect");
        }
    }

    /// Returns `true` when the thread should stop.
    fn begin_attempt(&self) -> bool {
        let mut st = self.lock();
        st.connect_attempts += 1;
        st.stop
    }

    fn on_connected(&self) {
        let mut st = self.lock();
        st.connected = true;
        if st.ever_connected {
            st.reconnects += 1;
        }
        st.ever_connected = true;
        if st.stop {
            self.say_goodbye(&mut st);
        } else {
            self.publish_availability(&mut st, "online");
            self.pump(&mut st);
        }
        self.changed.notify_all();
    }

    fn on_outgoing_publish(&self, pkid: u16) {
        let mut st = self.lock();
        if let Some(f) = st.in_flight.iter_mut().find(|f| f.pkid.is_none()) {
            f.pkid = Some(pkid);
        }
    }

    fn on_puback(&self, pkid: u16) {
        let mut st = self.lock();
        let Some(pos) = st.in_flight.iter().position(|f| f.pkid == Some(pkid)) else {
            tracing::debug!(broker = %self.broker, pkid, "MQTT ack for an unknown packet id");
            return;
        };
        if st.in_flight.remove(pos).is_some_and(|f| f.msg.is_some()) {
            st.sent += 1;
        }
        self.pump(&mut st);
        self.changed.notify_all();
    }

    /// After a broken connection rumqttc keeps unacknowledged publishes (and anything still in
    /// its request channel) to resend first on the next session, with no expiry and ahead of
    /// whatever we send next. We discard that copy and put our own in-flight messages back at
    /// the head of the queue, so that resends keep publish order and pass the TTL check.
    /// Events it buffered from the old connection go too: their packet ids would be matched
    /// against the next session's publishes.
    fn on_lost(&self, connection: &mut Connection) {
        let mut st = self.lock();
        st.connected = false;
        connection.eventloop.clean();
        connection.eventloop.pending.clear();
        connection.eventloop.state.events.clear();
        let in_flight = std::mem::take(&mut st.in_flight);
        for msg in in_flight.into_iter().rev().filter_map(|f| f.msg) {
            st.queue.push_front(msg);
        }
        self.drop_expired(&mut st);
        self.enforce_capacity(&mut st);
        self.changed.notify_all();
    }

    /// Sleeps for `delay` unless asked to stop; returns `true` when the thread should stop.
    fn wait_stop(&self, delay: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, delay, |st| !st.stop)
            .unwrap_or_else(PoisonError::into_inner);
        st.stop
    }

    fn finish(&self) {
        let mut st = self.lock();
        st.connected = false;
        st.finished = true;
        self.changed.notify_all();
    }
}

/// How a connected session ended.
enum SessionEnd {
    Lost,
    Disconnected,
}

/// Body of the `mqtt` thread: connect, run the session, back off, repeat.
///
/// rumqttc reconnects as soon as the connection is polled again after an error, so the connection
/// is only polled again once our backoff delay has passed.
///
/// Only the first failure of an outage is a warning (a lost connection, or a first attempt that
/// failed); the retries that follow are logged at debug level.
fn run(shared: &Shared, mut connection: Connection, mut backoff: Backoff) {
    let mut warned = false;
    loop {
        if shared.begin_attempt() {
            break;
        }
        match connection.recv() {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                tracing::debug!(broker = %shared.broker, "MQTT connected");
                backoff.reset();
                shared.on_connected();
                if let SessionEnd::Disconnected = session(shared, &mut connection) {
                    break;
                }
                warned = true;
            }
            Ok(Ok(event)) => {
                tracing::debug!(broker = %shared.broker, ?event, "unexpected MQTT event while connecting");
            }
            Ok(Err(e)) if !warned => {
                tracing::warn!(broker = %shared.broker, error = %e, "cannot connect to MQTT broker; retrying");
                warned = true;
            }
            Ok(Err(e)) => {
                tracing::debug!(broker = %shared.broker, error = %e, "MQTT connection attempt failed");
            }
            Err(_) => break,
        }
        if shared.wait_stop(backoff.next_delay()) {
            break;
        }
    }
    shared.finish();
    tracing::debug!(broker = %shared.broker, "MQTT thread stopped");
}

fn session(shared: &Shared, connection: &mut Connection) -> SessionEnd {
    loop {
        match connection.recv() {
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => shared.on_puback(ack.pkid),
            Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => shared.on_outgoing_publish(pkid),
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => return SessionEnd::Disconnected,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(broker = %shared.broker, error = %e, "MQTT connection lost");
                shared.on_lost(connection);
                return SessionEnd::Lost;
            }
            Err(_) => return SessionEnd::Disconnected,
        }
    }
}

/// Exponential backoff: `min`, doubling up to `max`, each delay scaled by a random factor in
/// 0.8..1.2 so that many cameras do not reconnect in lockstep, then clamped to `min..=max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
            .clamp(self.min, self.max)
    }
}

fn availability_topic(prefix: &str) -> String {
    format!("{prefix}/available")
}

fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65535 && !topic.contains(['+', '#', '\0'])
}

/// Durations written as a number of seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_json_uses_seconds_and_defaults() {
        let cfg: MqttConfig =
            serde_json::from_str(r#"{"host":"b","ttl_s":2.5,"backoff_max_s":10}"#).unwrap();
        assert_eq!(cfg.host, "b");
        assert_eq!(cfg.ttl, Duration::from_millis(2500));
        assert_eq!(cfg.backoff_max, Duration::from_secs(10));
        assert_eq!(cfg.prefix, "edgesight");
        assert_eq!(cfg.queue_capacity, 1000);
    }

    #[test]
    fn config_rejects_unknown_fields_and_negative_durations() {
        assert!(serde_json::from_str::<MqttConfig>(r#"{"hots":"b"}"#).is_err());
        assert!(serde_json::from_str::<MqttConfig>(r#"{"ttl_s":-1}"#).is_err());
    }

    #[test]
    fn invalid_config_names_broker_but_not_password() {
        let cfg = MqttConfig {
            host: "b".into(),
            port: 1999,
            password: Some("hunter2".into()),
            ..MqttConfig::default()
        };
        let err = MqttPublisher::start(cfg.clone()).unwrap_err().to_string();
        assert!(err.contains("b:1999"), "{err}");
        assert!(!err.contains("hunter2") && !format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn backoff_doubles_within_bounds_and_resets() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(8));
        let mut b = Backoff::new(min, max);
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| (min..=max).contains(d)), "{delays:?}");
        assert!(delays[2] >= Duration::from_millis(3200), "{delays:?}");
        assert!(delays[5] >= Duration::from_millis(6400), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }

    #[test]
    fn rejects_bad_topics() {
        assert!(valid_topic("cam1/events"));
        for t in ["", "cam/+", "cam/#", "a\0b"] {
            assert!(!valid_topic(t), "{t:?}");
        }
    }
}
