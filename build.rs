//! Generates the ONNX protobuf types (prost) from `onnx-ml.proto`, which `scripts/setup.sh`
//! extracts from the pinned `onnx` wheel into `.deps/proto/` (set `EDGESIGHT_ONNX_PROTO` to use
//! another copy). protoc comes from Debian's `protobuf-compiler`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=EDGESIGHT_ONNX_PROTO");
    let proto = std::env::var_os("EDGESIGHT_ONNX_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps/proto/onnx-ml.proto")
        });
    println!("cargo:rerun-if-changed={}", proto.display());
    if !proto.is_file() {
        // One line, not a panic's backtrace: this is the first thing a fresh clone meets.
        eprintln!(
            "error: {} is missing: run `bash scripts/setup.sh` first (it extracts onnx.proto from the pinned onnx wheel)",
            proto.display()
        );
        std::process::exit(1);
    }
    let dir = proto.parent().expect("a file has a parent folder");
    prost_build::Config::new()
        .compile_protos(&[&proto], &[dir])
        .unwrap_or_else(|e| panic!("prost-build over {}: {e}", proto.display()));
}
