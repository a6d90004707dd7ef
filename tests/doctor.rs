//! `edgesight doctor` run from a directory that is not the checkout: it finds the data
//! directory, the runtime, the default model and GStreamer, reports the CPU's int8 features as
//! the CPU has them, and fails, naming the library, where the data directory is wrong.

mod common;
use common::*;

fn doctor(cwd: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_edgesight"));
    c.arg("doctor")
        .current_dir(cwd)
        .env_remove("EDGESIGHT_HOME")
        .env_remove("ORT_DYLIB_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("edgesight runs")
}

fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(2) == Some(what) || l.contains(&format!(" {what} ")))
        .unwrap_or_else(|| panic!("no line for {what} in\n{out}"))
}

#[test]
fn finds_the_installation_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let o = doctor(tmp.path(), &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let root = root().canonicalize().unwrap();
    let home = line(&out, "directory");
    assert!(home.starts_with("ok"), "{home}");
    assert!(home.contains(&root.display().to_string()), "{home}");
    let rt = line(&out, "Runtime");
    assert!(
        rt.starts_with("ok") && rt.contains("libonnxruntime"),
        "{rt}"
    );
    assert!(line(&out, "ssd-mobilenet-v2").starts_with("ok"), "{out}");
    assert!(line(&out, "uridecodebin").starts_with("ok"), "{out}");
    assert!(line(&out, "mp4mux").starts_with("ok"), "{out}");
}

#[test]
fn reports_the_cpus_int8_features_as_the_cpu_has_them() {
    let tmp = tempfile::tempdir().unwrap();
    let o = doctor(tmp.path(), &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    let cpu = line(&out, "features");
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    for (linux, ours) in [("avx2", "avx2"), ("avx512_vnni", "avx512vnni")] {
        let shown = if has(linux) {
            format!(" {ours}")
        } else {
            format!(" -{ours}")
        };
        assert!(
            cpu.contains(&shown),
            "{linux} in /proc/cpuinfo: {}; {cpu}",
            has(linux)
        );
    }
    let range = if has("avx512_vnni") || has("avx_vnni") {
        "picks full"
    } else {
        "picks reduced"
    };
    assert!(cpu.contains(range), "{cpu}");
}

#[test]
fn a_wrong_data_directory_fails_naming_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("not-edgesight");
    std::fs::create_dir(&home).unwrap();
    let o = doctor(tmp.path(), &[("EDGESIGHT_HOME", home.to_str().unwrap())]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let rt = line(&out, "Runtime");
    assert!(rt.starts_with("FAIL"), "{rt}");
    assert!(
        rt.contains(
            &home
                .join(".deps/onnxruntime/libonnxruntime.so")
                .display()
                .to_string()
        ),
        "{rt}"
    );
    assert!(stderr(&o).contains("essential"), "{}", stderr(&o));
}
