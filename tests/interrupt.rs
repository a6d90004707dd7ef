//! Ctrl-C mid-file: the run stops promptly, the outputs hold exactly the frames done, and the
//! MP4 is finalized (playable), not left without its index.

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigint_finalizes_outputs() {
    asset("assets/vtest.avi");
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgesight"))
        .args([
            "run",
            "assets/vtest.avi",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it get going: the run takes about 10 s on two cores.
    std::thread::sleep(Duration::from_secs(3));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("still running 30 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(130), "{err}");

    let s = summary(out.path());
    assert_eq!(s["interrupted"], true);
    let frames = s["frames"].as_u64().unwrap();
    assert!(frames > 0 && frames < 795, "{frames} frames before Ctrl-C");
    assert_eq!(events(out.path()).len() as u64, frames);
    assert_eq!(decode_count(&out.path().join("annotated.mp4")).0, frames);
}
