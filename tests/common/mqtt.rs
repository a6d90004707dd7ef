//! A real mosquitto broker for tests (Debian's `mosquitto`, started on a free loopback port),
//! and a subscriber that records what it receives.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto process on a fixed port; killed on drop.
pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nmax_queued_messages 0\n"
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut broker = Broker {
            port,
            conf,
            log: dir.path().join("mosquitto.log"),
            child: None,
            _dir: dir,
        };
        broker.restart();
        broker
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts on the same port and returns once it accepts TCP connections.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open mosquitto log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mosquitto exited with {status}: {}", self.log_text());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("mosquitto not ready on {addr}: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

pub fn unique_id(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{what}-{}-{n}", std::process::id())
}

/// (topic, payload, retain) as received.
pub type Received = (String, String, bool);

/// A subscriber to `edgesight/#` at QoS 1 that records what it receives, in order.
pub struct Subscriber {
    client: Client,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    /// Returns once the broker acknowledged the subscription.
    pub fn start(port: u16) -> Subscriber {
        let mut options = MqttOptions::new(unique_id("sub"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 10);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (c, r, s, sub) = (
            client.clone(),
            received.clone(),
            stop.clone(),
            subscribed.clone(),
        );
        thread::spawn(move || {
            for event in connection.iter() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe("edgesight/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => sub.store(true, Ordering::SeqCst),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        r.lock().unwrap().push((p.topic, payload, p.retain));
                    }
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        assert!(
            wait_until(Duration::from_secs(5), || subscribed.load(Ordering::SeqCst)),
            "subscriber got no SUBACK"
        );
        Subscriber {
            client,
            received,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Payloads received on `topic`, in order.
    pub fn payloads(&self, topic: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| p)
            .collect()
    }

    pub fn wait_payloads(&self, topic: &str, n: usize, timeout: Duration) -> Vec<String> {
        wait_until(timeout, || self.payloads(topic).len() >= n);
        self.payloads(topic)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
