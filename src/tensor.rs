//! Plain tensor types shared by engines and model families.
//!
//! They live apart from both so that an engine never needs to know a model family and a family
//! never needs to know which engine ran it: each side speaks only these types.

use ndarray::{ArrayD, ArrayViewD};
use serde::Serialize;

/// Element types edgesight feeds to or reads from a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    U8,
    I8,
    F16,
    F32,
    I32,
    I64,
    /// Anything else (strings, doubles, ...): reported, never fed.
    Other,
}

/// Name, element type and shape of one model input or output; `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub elem: ElementType,
    pub shape: Vec<i64>,
}

impl std::fmt::Display for TensorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {:?}", self.name, self.elem, self.shape)
    }
}

/// What a model exposes: its inputs, outputs and custom metadata (e.g. Ultralytics `names`).
#[derive(Debug, Clone, Default)]
pub struct ModelIo {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// An input tensor, already laid out and typed as the model wants it.
#[derive(Debug, Clone)]
pub enum Tensor {
    U8(ArrayD<u8>),
    F32(ArrayD<f32>),
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::U8(a) => a.shape(),
            Tensor::F32(a) => a.shape(),
        }
    }

    /// `n` copies of a batch-of-one tensor stacked along the batch axis.
    pub fn repeat_batch(&self, n: usize) -> Tensor {
        fn rep<T: Clone>(a: &ArrayD<T>, n: usize) -> ArrayD<T> {
            let views: Vec<_> = (0..n).map(|_| a.view()).collect();
            ndarray::concatenate(ndarray::Axis(0), &views).expect("same shapes stack")
        }
        match self {
            Tensor::U8(a) => Tensor::U8(rep(a, n)),
            Tensor::F32(a) => Tensor::F32(rep(a, n)),
        }
    }

    pub fn elem(&self) -> ElementType {
        match self {
            Tensor::U8(_) => ElementType::U8,
            Tensor::F32(_) => ElementType::F32,
        }
    }
}

/// One output of a run, converted to f32 whatever the model's own type.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub data: ArrayD<f32>,
}

impl Output {
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        self.data.view()
    }
}
