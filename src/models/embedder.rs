//! Face embedders (MobileFaceNet): an aligned 112×112 RGB face crop in, one L2-normalised
//! vector out, compared by cosine (a dot product). The crop's normalisation and layout come from
//! the manifest's `[preprocess]` table.
//!
//! ```
//! use edgesight::models::embedder::l2_normalised;
//! let v = l2_normalised(vec![3.0, 4.0]);
//! assert_eq!(v, vec![0.6, 0.8]);
//! ```

use ndarray::Array4;

use super::detector::{IoCheck, ModelError};
use super::manifest::Manifest;
use super::preprocess_spec;
use crate::preprocess::{Layout, PreprocessSpec};
use crate::tensor::{ModelIo, Output, Tensor};

pub struct Embedder {
    spec: PreprocessSpec,
    dim: usize,
    model: String,
}

/// `v` scaled to unit length (left as is when it is all zeros).
pub fn l2_normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

impl Embedder {
    /// Checks that the model takes square RGB crops and gives one vector per crop.
    pub fn new(m: &Manifest, io: &ModelIo) -> Result<Self, ModelError> {
        let check = IoCheck::new(m);
        let spec = preprocess_spec(m, io)?;
        let out = check.output(io)?;
        let dim = match out.shape.as_slice() {
            [_, d] if *d > 0 => *d as usize,
            s => {
                return Err(check.err(format!(
                    "output {} has shape {s:?}: an embedder gives [N, D]",
                    out.name
                )))
            }
        };
        if spec.width != spec.height {
            return Err(check.err(format!(
                "input is {}x{}: face crops are square",
                spec.width, spec.height
            )));
        }
        Ok(Self {
            spec,
            dim,
            model: check.model,
        })
    }

    /// Side of the crop the model takes.
    pub fn side(&self) -> usize {
        self.spec.width as usize
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One batch from packed RGB crops of `side()`² pixels each.
    pub fn tensor(&self, chips: &[&[u8]]) -> Tensor {
        let s = self.side();
        let (mean, std) = (self.spec.mean, self.spec.std);
        let nhwc = self.spec.layout == Layout::Nhwc;
        let shape = if nhwc {
            (chips.len(), s, s, 3)
        } else {
            (chips.len(), 3, s, s)
        };
        let mut t = Array4::<f32>::zeros(shape);
        for (n, chip) in chips.iter().enumerate() {
            for (i, px) in chip.chunks_exact(3).take(s * s).enumerate() {
                let (y, x) = (i / s, i % s);
                for c in 0..3 {
                    let v = (px[c] as f32 - mean[c]) / std[c];
                    if nhwc {
                        t[[n, y, x, c]] = v;
                    } else {
                        t[[n, c, y, x]] = v;
                    }
                }
            }
        }
        Tensor::F32(t.into_dyn())
    }

    /// One unit vector per crop of the batch.
    pub fn decode(&self, outputs: &[Output]) -> Result<Vec<Vec<f32>>, ModelError> {
        let out = outputs.first().ok_or_else(|| ModelError::Io {
            model: self.model.clone(),
            reason: "gave no output".into(),
        })?;
        let shape = out.data.shape().to_vec();
        if shape.len() != 2 || shape[1] != self.dim {
            return Err(ModelError::OutputShape {
                model: self.model.clone(),
                output: out.name.clone(),
                shape,
                reason: format!("expected [N, {}]", self.dim),
            });
        }
        Ok(out
            .data
            .outer_iter()
            .map(|row| l2_normalised(row.iter().copied().collect()))
            .collect())
    }
}
