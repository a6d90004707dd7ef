//! Helpers for the live tests: real processes on 127.0.0.1 (an `edgesight rtsp-serve` camera,
//! `edgesight run` services, mosquitto), free ports, and plain HTTP scrapes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::root;

/// Waits until `f` holds, polling; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A child process whose stderr is collected, killed on drop.
pub struct Proc {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgesight"))
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "warn,edgesight=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgesight starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        Proc { child, stderr }
    }

    pub fn output(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("process did not exit in {timeout:?}:\n{}", self.output());
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `edgesight rtsp-serve` on 127.0.0.1:`port`, serving `clip` at `/cam`; returns once it listens.
pub fn rtsp_camera(port: u16, clip: &str, credentials: Option<(&str, &str)>) -> Proc {
    let clip = root().join(clip);
    let port_s = port.to_string();
    let mut args = vec!["rtsp-serve", clip.to_str().unwrap(), "--port", &port_s];
    if let Some((u, p)) = credentials {
        args.extend(["--user", u, "--password", p]);
    }
    let p = Proc::spawn(&args, &root());
    wait_for("the RTSP camera to listen", Duration::from_secs(20), || {
        p.output().contains("serving rtsp://")
    });
    p
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((status, body))
}

/// The `/healthz` JSON's per-stream status.
pub fn streams(addr: &str) -> serde_json::Value {
    http_get(addr, "/healthz")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .map(|v| v["streams"].clone())
        .unwrap_or(serde_json::Value::Null)
}

pub fn frames(addr: &str, stream: &str) -> u64 {
    streams(addr)[stream]["frames"].as_u64().unwrap_or(0)
}

pub fn state(addr: &str, stream: &str) -> String {
    streams(addr)[stream]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A sample's value from a Prometheus scrape: `name{labels}` exactly as written.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}
