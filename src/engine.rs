//! Engines run a network; they know tensors, never model families.
//!
//! [`Engine`] wraps an ONNX Runtime session. The runtime is loaded at first use from
//! `ORT_DYLIB_PATH` (the `ort` crate's `load-dynamic` mode): `scripts/setup.sh` installs the
//! library from the PyPI `onnxruntime` wheel and `.cargo/config.toml` points there.
//!
//! ```no_run
//! use edgesight::engine::{Engine, EngineConfig};
//! # fn main() -> Result<(), edgesight::engine::EngineError> {
//! let mut engine = Engine::load("models/cache/ssd_mobilenet_v2_coco_quant_postprocess.onnx".as_ref(),
//!                               &EngineConfig::default())?;
//! println!("{:?}", engine.io().inputs);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};
use serde::Deserialize;

use crate::tensor::{ElementType, ModelIo, Output, Tensor, TensorInfo};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("ONNX Runtime library could not be loaded from {path}: {reason} (run scripts/setup.sh or set ORT_DYLIB_PATH)")]
    Runtime { path: String, reason: String },
    #[error("model file {0}: no such file")]
    NotFound(PathBuf),
    #[error("model file {path}: not a valid ONNX model: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("execution provider {provider} is not usable here: {reason}")]
    Provider { provider: String, reason: String },
    #[error("model {path}: input {name} wants {want:?}, got {got:?}")]
    InputType {
        path: PathBuf,
        name: String,
        want: ElementType,
        got: ElementType,
    },
    #[error("model {path}: inference failed: {reason}")]
    Run { path: PathBuf, reason: String },
}

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
}

/// TensorRT execution-provider options (ONNX Runtime's `trt_*` keys).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TensorRtOptions {
    #[serde(default)]
    pub fp16: bool,
    #[serde(default)]
    pub int8: bool,
    /// Folder for serialized engines, so a second start does not rebuild them.
    pub engine_cache: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Intra-op threads; 0 lets ONNX Runtime pick one per core.
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub provider: Provider,
    /// When the requested provider cannot start, warn and run on the CPU instead of failing.
    #[serde(default)]
    pub fallback_to_cpu: bool,
    /// Let idle intra-op threads busy-wait for work. Off by default: in a pipeline, spinning
    /// threads take the cores that decoding and encoding need.
    #[serde(default)]
    pub spin: bool,
    #[serde(default)]
    pub tensorrt: TensorRtOptions,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            provider: Provider::Cpu,
            fallback_to_cpu: false,
            spin: false,
            tensorrt: TensorRtOptions::default(),
        }
    }
}

/// Loads ONNX Runtime once per process.
pub fn runtime() -> Result<&'static ort::environment::Environment, EngineError> {
    static ENV: OnceLock<Result<ort::environment::Environment, EngineError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
            crate::bundled(".deps/onnxruntime/libonnxruntime.so")
                .to_string_lossy()
                .into_owned()
        });
        let fail = |reason: String| EngineError::Runtime {
            path: path.clone(),
            reason,
        };
        if !Path::new(&path).exists() {
            return Err(fail("no such file".into()));
        }
        ort::init_from(&path)
            .map_err(|e| fail(e.to_string()))?
            .with_name("edgesight")
            .build()
            .map_err(|e| fail(e.to_string()))
    })
    .as_ref()
    .map_err(|e| match e {
        EngineError::Runtime { path, reason } => EngineError::Runtime {
            path: path.clone(),
            reason: reason.clone(),
        },
        other => EngineError::Runtime {
            path: String::new(),
            reason: other.to_string(),
        },
    })
}

pub struct Engine {
    session: Session,
    path: PathBuf,
    io: ModelIo,
    provider: Provider,
}

fn elem_of(t: TensorElementType) -> ElementType {
    match t {
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Int8 => ElementType::I8,
        TensorElementType::Float16 => ElementType::F16,
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Int64 => ElementType::I64,
        _ => ElementType::Other,
    }
}

fn info_of(name: &str, ty: &ValueType) -> TensorInfo {
    match ty {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_string(),
            elem: elem_of(*ty),
            shape: shape.iter().copied().collect(),
        },
        _ => TensorInfo {
            name: name.to_string(),
            elem: ElementType::Other,
            shape: vec![],
        },
    }
}

impl Engine {
    /// Opens a model file. Errors name the file: missing, not ONNX, provider unavailable.
    pub fn load(path: &Path, cfg: &EngineConfig) -> Result<Self, EngineError> {
        Self::load_with(path, cfg, None)
    }

    /// Opens a model with ONNX Runtime's profiler on: every kernel's time goes to a JSON trace
    /// named after `trace_prefix`, which [`Engine::end_profiling`] closes. For breakdowns
    /// (`optimize`'s report), not for timing: the profiler adds its own cost to each run.
    pub fn load_profiled(
        path: &Path,
        cfg: &EngineConfig,
        trace_prefix: &Path,
    ) -> Result<Self, EngineError> {
        Self::load_with(path, cfg, Some(trace_prefix))
    }

    fn load_with(
        path: &Path,
        cfg: &EngineConfig,
        trace_prefix: Option<&Path>,
    ) -> Result<Self, EngineError> {
        if !path.is_file() {
            return Err(EngineError::NotFound(path.to_path_buf()));
        }
        let env = runtime()?;
        let build = |provider| Self::build(env, path, cfg, provider, trace_prefix);
        match build(cfg.provider) {
            Err(EngineError::Provider { provider, reason })
                if cfg.fallback_to_cpu && cfg.provider != Provider::Cpu =>
            {
                tracing::warn!(%provider, %reason, "execution provider unavailable; falling back to CPU");
                build(Provider::Cpu)
            }
            other => other,
        }
    }

    fn build(
        env: &ort::environment::Environment,
        path: &Path,
        cfg: &EngineConfig,
        provider: Provider,
        trace_prefix: Option<&Path>,
    ) -> Result<Self, EngineError> {
        let invalid = |reason: String| EngineError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut builder = Session::builder(env)
            .map_err(|e| invalid(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| invalid(e.to_string()))?;
        builder = builder
            .with_intra_op_spinning(cfg.spin)
            .map_err(|e| invalid(e.to_string()))?;
        if let Some(prefix) = trace_prefix {
            builder = builder
                .with_profiling(prefix)
                .map_err(|e| invalid(e.to_string()))?;
        }
        if cfg.threads > 0 {
            builder = builder
                .with_intra_threads(cfg.threads)
                .map_err(|e| invalid(e.to_string()))?;
        }
        let provider_err = |name: &str, e: String| EngineError::Provider {
            provider: name.to_string(),
            reason: e,
        };
        builder = match provider {
            Provider::Cpu => builder,
            Provider::Cuda => builder
                .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| provider_err("cuda", e.to_string()))?,
            Provider::Tensorrt => builder
                .with_execution_providers([tensorrt_provider(&cfg.tensorrt)
                    .build()
                    .error_on_failure()])
                .map_err(|e| provider_err("tensorrt", e.to_string()))?,
        };
        let session = builder
            .commit_from_file(path)
            .map_err(|e| invalid(one_line(&e.to_string())))?;
        let mut io = ModelIo {
            inputs: session
                .inputs()
                .iter()
                .map(|o| info_of(o.name(), o.dtype()))
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| info_of(o.name(), o.dtype()))
                .collect(),
            metadata: Default::default(),
        };
        if let Ok(meta) = session.metadata() {
            if let Ok(keys) = meta.custom_keys() {
                for k in keys {
                    if let Some(v) = meta.custom(&k) {
                        io.metadata.insert(k, v);
                    }
                }
            }
        }
        Ok(Self {
            session,
            path: path.to_path_buf(),
            io,
            provider,
        })
    }

    /// Closes the profiler's trace (see [`Engine::load_profiled`]) and returns its path.
    pub fn end_profiling(&mut self) -> Result<PathBuf, EngineError> {
        self.session
            .end_profiling()
            .map(PathBuf::from)
            .map_err(|e| EngineError::Run {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    pub fn io(&self) -> &ModelIo {
        &self.io
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The provider the session actually runs on (after any fallback).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Runs the first input with `input`; outputs come back in the model's order, as f32.
    pub fn run(&mut self, input: &Tensor) -> Result<Vec<Output>, EngineError> {
        let want = &self.io.inputs[0];
        if want.elem != input.elem() {
            return Err(EngineError::InputType {
                path: self.path.clone(),
                name: want.name.clone(),
                want: want.elem,
                got: input.elem(),
            });
        }
        let run_err = |e: ort::Error| EngineError::Run {
            path: self.path.clone(),
            reason: one_line(&e.to_string()),
        };
        let name = want.name.clone();
        let outputs = match input {
            Tensor::U8(a) => {
                let v = TensorRef::from_array_view(a.view()).map_err(run_err)?;
                self.session.run(ort::inputs![name.as_str() => v])
            }
            Tensor::F32(a) => {
                let v = TensorRef::from_array_view(a.view()).map_err(run_err)?;
                self.session.run(ort::inputs![name.as_str() => v])
            }
        }
        .map_err(|e| EngineError::Run {
            path: self.path.clone(),
            reason: one_line(&e.to_string()),
        })?;
        let mut result = Vec::with_capacity(self.io.outputs.len());
        for info in &self.io.outputs {
            let value = &outputs[info.name.as_str()];
            let data = to_f32(value).map_err(|e| EngineError::Run {
                path: self.path.clone(),
                reason: format!("output {}: {e}", info.name),
            })?;
            result.push(Output {
                name: info.name.clone(),
                data,
            });
        }
        Ok(result)
    }
}

fn to_f32(value: &DynValue) -> Result<ndarray::ArrayD<f32>, String> {
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("not a tensor: {other:?}")),
    };
    let e = |e: ort::Error| e.to_string();
    Ok(match ty {
        TensorElementType::Float32 => value.try_extract_array::<f32>().map_err(e)?.to_owned(),
        TensorElementType::Int64 => value
            .try_extract_array::<i64>()
            .map_err(e)?
            .mapv(|v| v as f32),
        TensorElementType::Int32 => value
            .try_extract_array::<i32>()
            .map_err(e)?
            .mapv(|v| v as f32),
        TensorElementType::Uint8 => value
            .try_extract_array::<u8>()
            .map_err(e)?
            .mapv(|v| v as f32),
        other => return Err(format!("unsupported output type {other:?}")),
    })
}

fn tensorrt_provider(o: &TensorRtOptions) -> ep::TensorRT {
    let mut trt = ep::TensorRT::default().with_fp16(o.fp16).with_int8(o.int8);
    if let Some(dir) = &o.engine_cache {
        trt = trt
            .with_engine_cache(true)
            .with_engine_cache_path(dir.display())
            .with_timing_cache(true)
            .with_timing_cache_path(dir.display());
    }
    trt
}

/// ONNX Runtime errors span lines; a CLI error should not.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
