//! Face recognition in the running pipeline: tracks named from a real SQLite gallery, on real
//! video (`carphone_pristine.mp4`) and on a photo played as a stream.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{asset, edgesight, events};

fn photo(rel: &str) -> String {
    let p = common::root().join(rel);
    assert!(p.exists(), "{}: run scripts/setup.sh", p.display());
    p.to_string_lossy().into_owned()
}

/// Enrolls Obama from one photo into the gallery at `g`, through the real CLI.
fn enroll_obama(g: &Path) {
    ok(&edgesight(&[
        "faces",
        "--gallery",
        g.to_str().unwrap(),
        "enroll",
        "--name",
        "obama",
        &photo("calibration/faces/facerec-obama3.jpg"),
    ]));
}

fn ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn track_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("tracks.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One face track over the whole clip, one ID; once its face is enrolled from a few of its own
/// frames, the track is named, and so is every detection of it after that.
#[test]
fn the_carphone_driver_is_one_track_and_is_named_once_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    let clip = asset("assets/carphone_pristine.mp4");
    let c = clip.to_str().unwrap();
    ok(&edgesight(&[
        "faces",
        "--gallery",
        g.to_str().unwrap(),
        "enroll",
        "--name",
        "driver",
        "--frames",
        "3",
        c,
    ]));
    let out = dir.path().join("out");
    ok(&edgesight(&[
        "run",
        c,
        "--model",
        "blazeface",
        "--gallery",
        g.to_str().unwrap(),
        "--no-video",
        "--out",
        out.to_str().unwrap(),
    ]));
    let tracks = track_events(&out);
    let new: Vec<_> = tracks.iter().filter(|e| e["event"] == "new").collect();
    assert_eq!(new.len(), 1, "one face, one track: {new:?}");
    let id = new[0]["track_id"].as_u64().unwrap();
    let named: Vec<_> = tracks
        .iter()
        .filter(|e| e["event"] == "identified")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["name"], "driver");
    assert_eq!(named[0]["track_id"].as_u64(), Some(id));
    assert!(named[0]["score"].as_f64().unwrap() > 0.5);
    let frames = events(&out);
    let with_face: Vec<_> = frames
        .iter()
        .flat_map(|f| f["detections"].as_array().unwrap().iter())
        .filter(|d| d["track_id"].as_u64() == Some(id))
        .collect();
    assert!(
        with_face.len() > 100,
        "the track covers the clip: {}",
        with_face.len()
    );
    assert!(with_face.iter().all(|d| d["name"] == "driver"));
    let s = common::summary(&out);
    let (seen, embedded) = (
        s["faces"]["faces_seen"].as_u64().unwrap(),
        s["faces"]["embedded"].as_u64().unwrap(),
    );
    assert!(
        embedded >= 1 && embedded * 10 < seen,
        "recognised per track, not per frame: {embedded} of {seen}"
    );
}

/// A photo played as a 10 fps stream: nobody is enrolled when it starts; a `faces enroll` made
/// while it runs names the track without a restart.
#[test]
fn a_running_pipeline_names_a_person_enrolled_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    ok(&edgesight(&[
        "faces",
        "--gallery",
        g.to_str().unwrap(),
        "list",
    ]));
    let out = dir.path().join("out");
    let pipeline = dir.path().join("door.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[source]\nuri = \"gst://filesrc location={} ! jpegdec ! imagefreeze ! video/x-raw,framerate=10/1 ! identity sync=true\"\nname = \"door\"\nmax_frames = 120\n\n\
             [model]\nname = \"blazeface\"\n\n[output]\ndir = \"{}\"\nvideo = false\n\n\
             [faces]\ngallery = \"{}\"\nrecheck_s = 1.0\n",
            photo("calibration/faces/facerec-obama.jpg"),
            out.display(),
            g.display()
        ),
    )
    .unwrap();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_edgesight"))
        .args([
            "run",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--no-metrics",
        ])
        .current_dir(common::root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the track, then enroll.
    let t0 = Instant::now();
    while !track_events(&out).iter().any(|e| e["event"] == "new") {
        assert!(t0.elapsed() < Duration::from_secs(30), "no track started");
        std::thread::sleep(Duration::from_millis(100));
    }
    enroll_obama(&g);
    let enrolled_at = events(&out).len();
    let status = run.wait().unwrap();
    assert!(status.success());
    let named: Vec<_> = track_events(&out)
        .into_iter()
        .filter(|e| e["event"] == "identified")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["name"], "obama");
    let frame = named[0]["frame"].as_u64().unwrap() as usize;
    assert!(
        frame + 1 >= enrolled_at.saturating_sub(2),
        "named at frame {frame}, enrolled near {enrolled_at}"
    );
    assert!(frame < 115, "named only at frame {frame}");
    // Before the enrollment the face had no name; after its naming, every frame has it.
    let frames = events(&out);
    assert!(frames[5]["detections"][0].get("name").is_none());
    assert_eq!(frames[frame + 1]["detections"][0]["name"], "obama");
}

/// Faces searched inside person boxes: SSD finds the person, BlazeFace the face in the top of
/// the box, and the person's track is named.
#[test]
fn faces_inside_person_boxes_name_the_person_track() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    enroll_obama(&g);
    let out = dir.path().join("out");
    let pipeline = dir.path().join("persons.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[source]\nuri = \"gst://filesrc location={} ! jpegdec ! imagefreeze ! video/x-raw,framerate=10/1\"\nname = \"hall\"\nmax_frames = 10\n\n\
             [model]\nname = \"ssd-mobilenet-v2\"\n\n[output]\ndir = \"{}\"\nvideo = false\n\n\
             [faces]\ngallery = \"{}\"\nface_detector = \"blazeface\"\n",
            photo("calibration/heldout/faces/facerec-obama2.jpg"),
            out.display(),
            g.display()
        ),
    )
    .unwrap();
    ok(&edgesight(&[
        "run",
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--no-metrics",
    ]));
    let named: Vec<_> = track_events(&out)
        .into_iter()
        .filter(|e| e["event"] == "identified")
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["name"], "obama");
    let last = events(&out).pop().unwrap();
    let person = last["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "person" && d["name"] == "obama");
    assert!(person.is_some(), "{last}");
}

#[test]
fn faces_with_a_model_without_landmarks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    let o = edgesight(&[
        "run",
        &photo("assets/bus.jpg"),
        "--model",
        "ssd-mobilenet-v2",
        "--gallery",
        g.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = common::error_line(&o);
    assert!(
        e.contains("landmarks") && e.contains("face_detector"),
        "{e}"
    );
}

/// With a broker, the `identified` event goes to MQTT `edgesight/<stream>/tracks` too.
#[test]
fn identified_events_reach_mqtt() {
    use common::mqtt::{Broker, Subscriber};
    let broker = Broker::start();
    let sub = Subscriber::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    enroll_obama(&g);
    let file = dir.path().join("door.toml");
    std::fs::write(
        &file,
        format!(
            "[output]\ndir = \"{}\"\nvideo = false\n\n[metrics]\naddr = \"127.0.0.1:0\"\n\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"edgesight-faces-test\"\n\n\
             [model]\nname = \"blazeface\"\n\n[faces]\ngallery = \"{}\"\n\n\
             [[streams]]\nname = \"door\"\nuri = \"gst://filesrc location={} ! jpegdec ! imagefreeze ! video/x-raw,framerate=10/1 ! identity sync=true\"\n",
            dir.path().display(),
            broker.port,
            g.display(),
            photo("calibration/heldout/faces/facerec-obama2.jpg"),
        ),
    )
    .unwrap();
    let mut svc = std::process::Command::new(env!("CARGO_BIN_EXE_edgesight"))
        .args(["run", "--pipeline", file.to_str().unwrap()])
        .current_dir(common::root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let found = common::mqtt::wait_until(Duration::from_secs(30), || {
        sub.payloads("edgesight/door/tracks")
            .iter()
            .any(|p| p.contains("\"identified\"") && p.contains("\"obama\""))
    });
    let _ = svc.kill();
    let _ = svc.wait();
    assert!(found, "{:?}", sub.payloads("edgesight/door/tracks"));
}
