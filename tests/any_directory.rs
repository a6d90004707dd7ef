//! The binary works from any working directory: it finds its models, ONNX Runtime and bundled
//! media through the checkout it was built from (or `EDGESIGHT_HOME`).

mod common;

#[test]
fn run_and_faces_work_from_another_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let bus = common::asset("assets/bus.jpg");
    let out = elsewhere.path().join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgesight"))
        .args(["run", bus.to_str().unwrap(), "--no-video", "--out", "out"])
        .current_dir(elsewhere.path())
        .env_remove("EDGESIGHT_HOME")
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = common::summary(&out);
    assert!(
        s["detections_by_label"]["person"].as_u64().unwrap() >= 2,
        "{s}"
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_edgesight"))
        .args(["faces", "list"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        elsewhere.path().join("faces.db").is_file(),
        "the gallery goes where asked"
    );
}
