//! GPU execution providers from a pipeline file. This machine has no GPU, no CUDA provider in
//! its ONNX Runtime and no TensorRT anywhere, so what can be tested here is the configuration
//! reaching ONNX Runtime, the clear failure, and the fallback to the CPU when it is asked for.

mod common;
use common::*;

fn pipeline(dir: &std::path::Path, provider: &str, fallback: bool) -> std::path::PathBuf {
    let p = dir.join(format!("{provider}-{fallback}.toml"));
    std::fs::write(
        &p,
        format!(
            "[source]\nuri = \"assets/bus.jpg\"\n[engine]\nprovider = \"{provider}\"\n\
             fallback_to_cpu = {fallback}\n[engine.tensorrt]\nfp16 = true\nengine_cache = \"{}\"\n\
             [output]\ndir = \"{}\"\nvideo = false\n",
            dir.join("trt-cache").display(),
            dir.join("out").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn missing_gpu_provider_fails_clearly_or_falls_back_when_asked() {
    asset("assets/bus.jpg");
    for provider in ["cuda", "tensorrt"] {
        let tmp = tempfile::tempdir().unwrap();
        let o = edgesight(&[
            "run",
            "--pipeline",
            pipeline(tmp.path(), provider, false).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = error_line(&o);
        assert!(e.contains(provider), "{e}");

        let o = edgesight(&[
            "run",
            "--pipeline",
            pipeline(tmp.path(), provider, true).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("falling back to CPU"),
            "a warning says so:\n{}",
            stderr(&o)
        );
        let ev = events(&tmp.path().join("out"));
        assert!(ev[0]["detections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["label"] == "bus"));
        assert_eq!(summary(&tmp.path().join("out"))["provider"], "cpu");
    }
}
