//! Live sources and many streams, end to end with real parts: an RTSP camera served by
//! gst-rtsp-server in its own process (`edgesight rtsp-serve` on 127.0.0.1), live `test://`
//! sources, the Prometheus endpoint, RTSP output read back by a client, and SIGHUP reloads.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::live::{frames, http_get, rtsp_camera, sample, state, streams, wait_for, Proc};
use common::mqtt::{free_port, Broker, Subscriber};
use common::root;

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).unwrap()
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// The metrics address a service printed.
fn metrics_addr(p: &Proc) -> String {
    let mut addr = String::new();
    wait_for("the metrics endpoint", Duration::from_secs(30), || {
        let out = p.output();
        match out.split("metrics: http://").nth(1) {
            Some(rest) => {
                addr = rest.split('/').next().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    addr
}

#[test]
fn rtsp_camera_gives_detections_over_udp_and_tcp() {
    let port = free_port();
    let _cam = rtsp_camera(port, "assets/vtest.avi", None);
    for transport in ["auto", "tcp"] {
        let out = tempfile::tempdir().unwrap();
        let url = format!("rtsp://127.0.0.1:{port}/cam");
        let mut p = Proc::spawn(
            &[
                "run",
                &url,
                "--rtsp-transport",
                transport,
                "--max-frames",
                "30",
                "--no-metrics",
                "--out",
                out.path().to_str().unwrap(),
            ],
            &root(),
        );
        assert_eq!(p.wait(Duration::from_secs(90)), Some(0), "{}", p.output());
        let s = summary(out.path());
        // A live stream keeps the newest frame: on a busy machine some of the 30 are dropped.
        let (done, dropped) = (
            s["frames"].as_u64().unwrap(),
            s["dropped_frames"].as_u64().unwrap(),
        );
        assert_eq!(done + dropped, 30, "{transport}: {s}");
        assert!(done >= 15, "{transport}: {s}");
        assert_eq!(s["state"], "finished");
        // vtest.avi shows several pedestrians in every frame.
        let people: usize = events(out.path())
            .iter()
            .map(|e| {
                e["detections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["label"] == "person")
                    .count()
            })
            .sum();
        assert!(
            people >= 30 * 2,
            "{transport}: {people} people in 30 frames"
        );
    }
}

#[test]
fn wrong_credentials_and_wrong_path_fail_with_the_reason_and_no_password() {
    let port = free_port();
    let _cam = rtsp_camera(port, "assets/vtest.avi", Some(("admin", "s3cret")));
    for (url, want) in [
        (format!("rtsp://admin:hunter2@127.0.0.1:{port}/cam"), "401"),
        (format!("rtsp://admin:s3cret@127.0.0.1:{port}/nope"), "404"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(
            &[
                "run",
                &url,
                "--max-attempts",
                "2",
                "--no-metrics",
                "--out",
                out.path().to_str().unwrap(),
            ],
            &root(),
        );
        assert_eq!(p.wait(Duration::from_secs(60)), Some(1), "{}", p.output());
        let log = p.output();
        assert!(log.contains(want), "{want}: {log}");
        assert!(log.contains("rtsp://***@127.0.0.1"), "{log}");
        let s = summary(out.path());
        assert_eq!(s["state"], "failed");
        assert!(s["reason"].as_str().unwrap().contains(want), "{s}");
        for f in std::fs::read_dir(out.path()).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("hunter2") && !text.contains("s3cret"),
                "{:?}",
                f.path()
            );
        }
        assert!(!log.contains("hunter2") && !log.contains("s3cret"), "{log}");
    }
}

/// The camera is killed and restarted five times; the stream resumes each time within the
/// stall timeout plus the backoff, while a second stream's frame count never stops.
#[test]
fn rtsp_stream_resumes_after_the_camera_restarts_while_another_stream_carries_on() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.toml");
    write(
        &file,
        &format!(
            r#"
[output]
dir = "{out}"
video = false

[live]
stall_timeout_s = 2.0
backoff_min_s = 0.5
backoff_max_s = 2.0

[metrics]
addr = "127.0.0.1:0"

[[streams]]
name = "cam"
uri = "rtsp://127.0.0.1:{port}/cam"

[[streams]]
name = "pattern"
uri = "test://ball?width=320&height=240&fps=10"
"#,
            out = dir.path().display()
        ),
    );
    let mut cam = rtsp_camera(port, "assets/vtest.avi", None);
    let mut svc = Proc::spawn(&["run", "--pipeline", file.to_str().unwrap()], &root());
    let addr = metrics_addr(&svc);
    let limit = Duration::from_secs_f64(2.0 + 2.0 * 1.5 + 5.0);
    let plays = |cycle: usize| {
        let before = frames(&addr, "cam");
        let resumed = wait_for(
            "the camera stream to play",
            limit + Duration::from_secs(20),
            || state(&addr, "cam") == "playing" && frames(&addr, "cam") > before + 5,
        );
        if cycle > 0 {
            assert!(resumed <= limit, "cycle {cycle}: resumed after {resumed:?}");
        }
    };
    for cycle in 0..5 {
        plays(cycle);
        drop(cam);
        let pattern_before = frames(&addr, "pattern");
        wait_for("the outage to be noticed", Duration::from_secs(10), || {
            let s = state(&addr, "cam");
            s == "stalled" || s == "backoff" || s == "connecting"
        });
        // The camera stays down a while; the pattern stream (10 fps) goes on meanwhile.
        std::thread::sleep(Duration::from_millis(1500));
        let pattern_after = frames(&addr, "pattern");
        assert!(
            pattern_after >= pattern_before + 5,
            "cycle {cycle}: the pattern stream stopped with the camera ({pattern_before} -> {pattern_after})"
        );
        cam = rtsp_camera(port, "assets/vtest.avi", None);
    }
    plays(5);
    let (_, scrape) = http_get(&addr, "/metrics").unwrap();
    assert!(
        sample(
            &scrape,
            r#"edgesight_stream_reconnects_total{stream="cam"}"#
        )
        .unwrap()
            >= 5.0
    );
    assert_eq!(
        sample(&scrape, r#"edgesight_stream_up{stream="pattern"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        sample(
            &scrape,
            r#"edgesight_frames_total{stream="pattern",stage="sink"}"#
        )
        .unwrap()
            > 10.0
    );
    svc.signal("-INT");
    assert_eq!(
        svc.wait(Duration::from_secs(30)),
        Some(130),
        "{}",
        svc.output()
    );
    let s = summary(&dir.path().join("cam"));
    assert!(s["reconnects"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["state"], "stopped");
}

/// A model far slower than the camera: old frames are dropped and counted, and the time from
/// capture to event stays bounded instead of growing with a queue. The camera runs at 120 fps:
/// at 30, two CenterNet engines on a fast CPU kept up, and nothing had to be dropped.
#[test]
fn slow_model_on_a_live_source_drops_frames_and_latency_stays_bounded() {
    let out = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(
        &[
            "run",
            "test://ball?width=640&height=480&fps=120",
            "--model",
            "centernet",
            "--max-frames",
            "240",
            "--no-video",
            "--no-metrics",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &root(),
    );
    assert_eq!(p.wait(Duration::from_secs(120)), Some(0), "{}", p.output());
    let s = summary(out.path());
    let done = s["frames"].as_u64().unwrap();
    let dropped = s["dropped_frames"].as_u64().unwrap();
    assert!(dropped > 0 && done < 240, "{s}");
    assert!(done + dropped >= 200, "frames unaccounted for: {s}");
    let infer = s["latency"]["infer"]["p95_ms"].as_f64().unwrap();
    let e2e = s["latency"]["end_to_end"]["p95_ms"].as_f64().unwrap();
    // One frame in inference, one waiting in each of the two one-frame queues at most.
    assert!(
        e2e < 4.0 * infer + 200.0,
        "end to end p95 {e2e} ms, inference p95 {infer} ms"
    );
    // Events come out in capture order, with gaps where frames were dropped.
    let numbers: Vec<u64> = events(out.path())
        .iter()
        .map(|e| e["frame"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
}

/// Three streams of distinct content through one batched model: each stream's results equal
/// what the same stream gives alone, frame by frame, in order.
#[test]
fn three_streams_batched_each_result_returns_to_its_own_stream_in_order() {
    let vtest = root().join("assets/vtest.avi");
    let model = root().join("models/cache/blazeface-back-256-batch.onnx");
    assert!(model.is_file(), "run scripts/setup.sh");
    let flips = [
        ("plain", "identity"),
        ("mirror", "horiz"),
        ("upside", "180"),
    ];
    let stream = |name: &str, method: &str| {
        format!(
            "[[streams]]\nname = \"{name}\"\nuri = \"gst://filesrc location={} ! avidemux ! decodebin ! videoflip video-direction={method}\"\nmax_frames = 12\n",
            vtest.display()
        )
    };
    let config = |out: &Path, max_batch: usize, body: &str| {
        format!(
            "[model]\nname = \"blazeface\"\nfile = \"{}\"\nscore_threshold = 0.05\n\n[batch]\nmax_batch = {max_batch}\ntimeout_ms = 200\n\n[metrics]\nenabled = false\n\n[output]\ndir = \"{}\"\nvideo = false\n\n{body}",
            model.display(),
            out.display()
        )
    };
    let run = |file: &Path| {
        let mut p = Proc::spawn(&["run", "--pipeline", file.to_str().unwrap()], &root());
        assert_eq!(p.wait(Duration::from_secs(120)), Some(0), "{}", p.output());
    };
    let dir = tempfile::tempdir().unwrap();
    let together = dir.path().join("together");
    let all: String = flips.iter().map(|(n, m)| stream(n, m)).collect();
    write(&dir.path().join("all.toml"), &config(&together, 3, &all));
    run(&dir.path().join("all.toml"));
    let batched: u64 = flips
        .iter()
        .map(|(n, _)| {
            summary(&together.join(n))["batched_frames"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(batched > 0, "no frame ran in a batch");
    for (name, method) in flips {
        let alone = dir.path().join(format!("alone-{name}"));
        let f = dir.path().join(format!("{name}.toml"));
        write(&f, &config(&alone, 1, &stream(name, method)));
        run(&f);
        let (a, b) = (events(&together.join(name)), events(&alone.join(name)));
        assert_eq!(a.len(), 12, "{name}");
        assert_eq!(b.len(), 12, "{name}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x["frame"], i as u64, "{name}: frames out of order");
            assert_eq!(x["stream"], name);
            let (dx, dy) = (
                x["detections"].as_array().unwrap(),
                y["detections"].as_array().unwrap(),
            );
            assert_eq!(dx.len(), dy.len(), "{name} frame {i}");
            for (p, q) in dx.iter().zip(dy) {
                for k in ["x1", "y1", "x2", "y2"] {
                    let (u, v) = (p["box"][k].as_f64().unwrap(), q["box"][k].as_f64().unwrap());
                    assert!((u - v).abs() < 0.5, "{name} frame {i} {k}: {u} vs {v}");
                }
            }
        }
    }
    // The three contents differ, so a result routed to the wrong stream could not match.
    let firsts: Vec<String> = flips
        .iter()
        .map(|(n, _)| events(&together.join(n))[0]["detections"].to_string())
        .collect();
    assert!(
        firsts[0] != firsts[1] && firsts[1] != firsts[2],
        "{firsts:?}"
    );
}

#[test]
fn bad_sources_fail_with_an_error_naming_them() {
    for (uri, want) in [
        ("v4l2:///dev/video99", "no such device /dev/video99"),
        ("csi://0", "nvarguscamerasrc"),
        ("gst://videotestsrc ! no_such_element", "does not parse"),
        ("test://ball?fps=abc", "fps=abc"),
        ("ftp://example/x", "unknown scheme"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(
            &[
                "run",
                uri,
                "--no-metrics",
                "--out",
                out.path().to_str().unwrap(),
            ],
            &root(),
        );
        assert_eq!(
            p.wait(Duration::from_secs(30)),
            Some(1),
            "{uri}: {}",
            p.output()
        );
        let log = p.output();
        assert!(log.contains(want), "{uri}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// No camera exists on the machines this is built on: the monitor finds none and says so.
#[test]
fn devices_lists_what_the_monitor_sees() {
    let mut p = Proc::spawn(&["devices", "--json"], &root());
    assert_eq!(p.wait(Duration::from_secs(30)), Some(0), "{}", p.output());
    let json = p.output();
    let start = json.find('[').expect("a JSON list");
    let cams: serde_json::Value = serde_json::from_str(&json[start..]).unwrap();
    for c in cams.as_array().unwrap() {
        assert!(
            c["uri"].as_str().unwrap().starts_with("v4l2:///dev/"),
            "{c}"
        );
    }
}

#[test]
fn a_duplicate_stream_name_and_ports_in_use_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("dup.toml");
    write(
        &f,
        "[[streams]]\nname = \"a\"\nuri = \"test://ball\"\n\n[[streams]]\nname = \"a\"\nuri = \"test://snow\"\n",
    );
    let mut p = Proc::spawn(&["run", "--pipeline", f.to_str().unwrap()], &root());
    assert_eq!(p.wait(Duration::from_secs(30)), Some(1));
    assert!(
        p.output()
            .contains("stream a: a second stream has this name"),
        "{}",
        p.output()
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut p = Proc::spawn(
        &[
            "run",
            "test://ball",
            "--metrics",
            &addr,
            "--out",
            dir.path().to_str().unwrap(),
        ],
        &root(),
    );
    assert_eq!(p.wait(Duration::from_secs(30)), Some(1));
    assert!(
        p.output().contains(&format!("metrics endpoint {addr}")),
        "{}",
        p.output()
    );

    let port = taken.local_addr().unwrap().port().to_string();
    let mut p = Proc::spawn(
        &[
            "run",
            "test://ball",
            "--rtsp-out",
            &port,
            "--no-metrics",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        &root(),
    );
    assert_eq!(p.wait(Duration::from_secs(30)), Some(1));
    assert!(
        p.output()
            .contains(&format!("RTSP server 127.0.0.1:{port}")),
        "{}",
        p.output()
    );
}

/// SIGHUP rereads the pipeline file: an added stream starts, a removed one stops with its video
/// finalized, and the stream left alone carries on without a restart.
#[test]
fn sighup_adds_and_removes_streams_while_another_runs_undisturbed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reload.toml");
    let head = format!(
        "[output]\ndir = \"{}\"\n\n[metrics]\naddr = \"127.0.0.1:0\"\n\n",
        dir.path().display()
    );
    let keep =
        "[[streams]]\nname = \"keep\"\nuri = \"test://ball?width=320&height=240&fps=10\"\n\n";
    let extra =
        "[[streams]]\nname = \"extra\"\nuri = \"test://snow?width=320&height=240&fps=10\"\n\n";
    write(&file, &format!("{head}{keep}"));
    let mut svc = Proc::spawn(&["run", "--pipeline", file.to_str().unwrap()], &root());
    let addr = metrics_addr(&svc);
    wait_for("keep to play", Duration::from_secs(30), || {
        frames(&addr, "keep") > 5
    });
    let since = streams(&addr)["keep"]["since"].as_f64().unwrap();

    write(&file, &format!("{head}{keep}{extra}"));
    svc.signal("-HUP");
    wait_for("extra to play", Duration::from_secs(30), || {
        frames(&addr, "extra") > 5
    });

    write(&file, &format!("{head}{keep}"));
    let before = frames(&addr, "keep");
    svc.signal("-HUP");
    wait_for("extra to go", Duration::from_secs(30), || {
        streams(&addr).get("extra").is_none()
    });
    let s = summary(&dir.path().join("extra"));
    assert_eq!(s["state"], "stopped");
    let video = dir.path().join("extra/annotated-0000.mp4");
    assert!(
        common::decode_count(&video).0 > 0,
        "extra's video is not playable"
    );

    wait_for("keep to go on", Duration::from_secs(10), || {
        frames(&addr, "keep") > before + 10
    });
    let keep_now = &streams(&addr)["keep"];
    assert_eq!(keep_now["state"], "playing");
    assert_eq!(
        keep_now["since"].as_f64().unwrap(),
        since,
        "keep was restarted"
    );
    svc.signal("-INT");
    assert_eq!(
        svc.wait(Duration::from_secs(30)),
        Some(130),
        "{}",
        svc.output()
    );
}

/// The annotated video served over RTSP is read back by a client, and clients that come and go
/// leave the service's memory flat.
#[test]
fn rtsp_output_is_read_back_and_clients_come_and_go_without_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let rtsp_port = free_port();
    let svc = Proc::spawn(
        &[
            "run",
            "test://ball?width=320&height=240&fps=15",
            "--rtsp-out",
            &rtsp_port.to_string(),
            "--metrics",
            "127.0.0.1:0",
            "--no-video",
            "--out",
            dir.path().join("svc").to_str().unwrap(),
        ],
        &root(),
    );
    let addr = metrics_addr(&svc);
    wait_for("the stream to play", Duration::from_secs(30), || {
        frames(&addr, "test-ball") > 5
    });
    let url = format!("rtsp://127.0.0.1:{rtsp_port}/test-ball");
    let read_back = |n: u32| {
        let out = dir.path().join(format!("client{n}"));
        let mut c = Proc::spawn(
            &[
                "run",
                &url,
                "--max-frames",
                "10",
                "--no-metrics",
                "--no-video",
                "--out",
                out.to_str().unwrap(),
            ],
            &root(),
        );
        assert_eq!(c.wait(Duration::from_secs(60)), Some(0), "{}", c.output());
        let s = summary(&out);
        let (done, dropped) = (
            s["frames"].as_u64().unwrap(),
            s["dropped_frames"].as_u64().unwrap(),
        );
        assert_eq!(done + dropped, 10, "{s}");
        done
    };
    assert!(read_back(0) >= 3, "the annotated stream did not come back");
    let mut rss = Vec::new();
    let t = Instant::now();
    for n in 1..=8 {
        read_back(n);
        rss.push(svc.rss_kib());
    }
    let growth = rss[7] as f64 - rss[2] as f64;
    assert!(
        growth < 12.0 * 1024.0,
        "RSS grew {growth} KiB over 5 client cycles: {rss:?} ({:?})",
        t.elapsed()
    );
    assert_eq!(state(&addr, "test-ball"), "playing");
    // A clean stop closes the server and its clients, and finalizes the outputs.
    let mut svc = svc;
    svc.signal("-INT");
    assert_eq!(
        svc.wait(Duration::from_secs(30)),
        Some(130),
        "{}",
        svc.output()
    );
    assert!(!svc.output().contains("panicked"), "{}", svc.output());
}

/// A real mosquitto receives the events and a retained status; while the broker is down, events
/// queue and arrive in order once it is back; the last will says `offline` when edgesight is
/// killed.
#[test]
fn mqtt_gets_events_in_order_across_a_broker_outage_and_the_last_will() {
    let mut broker = Broker::start();
    let sub = Subscriber::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mqtt.toml");
    write(
        &file,
        &format!(
            "[output]\ndir = \"{}\"\nvideo = false\n\n[metrics]\naddr = \"127.0.0.1:0\"\n\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"edgesight-live-test\"\n\
             backoff_min_s = 1.0\nbackoff_max_s = 2.0\n\n\
             [[streams]]\nname = \"cam\"\nuri = \"test://ball?width=320&height=240&fps=10\"\n",
            dir.path().display(),
            broker.port
        ),
    );
    let svc = Proc::spawn(&["run", "--pipeline", file.to_str().unwrap()], &root());
    let addr = metrics_addr(&svc);
    let frame_of = |p: &String| {
        serde_json::from_str::<serde_json::Value>(p).unwrap()["frame"]
            .as_u64()
            .unwrap()
    };
    let first = sub.wait_payloads("edgesight/cam/events", 10, Duration::from_secs(30));
    assert!(first.len() >= 10, "{} events", first.len());
    let numbers: Vec<u64> = first.iter().map(frame_of).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let status = sub.payloads("edgesight/cam/status");
    assert!(status.last().unwrap().contains("\"playing\""), "{status:?}");
    assert_eq!(
        sub.payloads("edgesight/available")
            .last()
            .map(String::as_str),
        Some("online")
    );

    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    let at_restart = frames(&addr, "cam");
    broker.restart();
    let sub2 = Subscriber::start(broker.port);
    let after = sub2.wait_payloads("edgesight/cam/events", 30, Duration::from_secs(30));
    let numbers: Vec<u64> = after.iter().map(frame_of).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "out of order: {numbers:?}"
    );
    assert!(
        numbers[0] + 10 < at_restart,
        "events of the outage did not arrive: first {} at restart {at_restart}",
        numbers[0]
    );
    let (_, scrape) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(
        sample(
            &scrape,
            r#"edgesight_mqtt_dropped_total{reason="overflow"}"#
        ),
        Some(0.0)
    );

    svc.signal("-KILL");
    common::mqtt::wait_until(Duration::from_secs(15), || {
        sub2.payloads("edgesight/available")
            .last()
            .map(String::as_str)
            == Some("offline")
    });
    assert_eq!(
        sub2.payloads("edgesight/available")
            .last()
            .map(String::as_str),
        Some("offline"),
        "no last will"
    );
}

/// A live stream's video is cut into segments; each one is finalized and plays.
#[test]
fn live_video_is_cut_into_playable_segments() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seg.toml");
    write(
        &f,
        &format!(
            "[output]\ndir = \"{}\"\nsegment_s = 1.0\n\n[metrics]\nenabled = false\n\n\
             [[streams]]\nname = \"cam\"\nuri = \"test://ball?width=320&height=240&fps=15\"\nmax_frames = 50\n",
            dir.path().display()
        ),
    );
    let mut p = Proc::spawn(&["run", "--pipeline", f.to_str().unwrap()], &root());
    assert_eq!(p.wait(Duration::from_secs(60)), Some(0), "{}", p.output());
    let mut total = 0;
    for i in 0..2 {
        let seg = dir.path().join(format!("cam/annotated-{i:04}.mp4"));
        let (frames, w, h) = common::decode_count(&seg);
        assert!(
            frames > 0 && (w, h) == (320, 240),
            "{}: {frames} frames {w}x{h}",
            seg.display()
        );
        total += frames;
    }
    assert!(total >= 20, "{total} frames in the first two segments");
}
