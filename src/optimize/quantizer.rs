//! One model with one calibration, quantized again and again with other exclusions and
//! weight presets: what the accuracy search and the reconstruction vary.
//!
//! ```no_run
//! use edgesight::engine::EngineConfig;
//! use edgesight::onnx::Model;
//! use edgesight::optimize::qdq::{ActivationType, Exclusions};
//! use edgesight::optimize::{calibrate, quantizer::Quantizer, weights::WeightRange};
//! # fn inputs() -> Vec<edgesight::tensor::Tensor> { vec![] }
//! let model = Model::load("models/cache/mobilefacenet.onnx".as_ref())?;
//! let cfg = EngineConfig::default();
//! let stats = calibrate::collect(&model, &inputs(), &cfg, "/tmp".as_ref(), &|_, _| {})?;
//! let method = "percentile:99.99".parse().unwrap();
//! let act = ActivationType::U8Asymmetric;
//! let q = Quantizer::new(&model, &stats, method, act, WeightRange::for_this_cpu());
//! let (int8, report) = q.rounded(&Exclusions::default())?;
//! println!("{} layers in int8", report.quantized_layers.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;

use super::calibrate::Statistics;
use super::calibrator::{Method, Range, TensorStats};
use super::qdq::{self, ActivationType, Exclusions, QdqReport, QuantizeConfig};
use super::spec::OptimizeError;
use super::weights::{Presets, WeightRange};
use crate::onnx::Model;

/// One model with one calibration, quantized with any exclusions and weight presets: what the
/// search and the fit vary while everything else stays.
pub struct Quantizer<'a> {
    model: &'a Model,
    ranges: HashMap<String, Range>,
    channel_means: &'a HashMap<String, Vec<f32>>,
    act: ActivationType,
    weights: WeightRange,
}

impl<'a> Quantizer<'a> {
    pub fn new(
        model: &'a Model,
        stats: &'a Statistics,
        method: Method,
        act: ActivationType,
        weights: WeightRange,
    ) -> Self {
        Quantizer {
            model,
            ranges: ranges_of(&stats.tensors, method),
            channel_means: &stats.channel_means,
            act,
            weights,
        }
    }

    /// The float model it quantizes.
    pub fn model(&self) -> &'a Model {
        self.model
    }

    pub fn act(&self) -> ActivationType {
        self.act
    }

    pub fn weights(&self) -> WeightRange {
        self.weights
    }

    pub fn quantize(
        &self,
        presets: &Presets,
        exclude: &Exclusions,
    ) -> Result<(Model, QdqReport), OptimizeError> {
        let cfg = QuantizeConfig {
            ranges: &self.ranges,
            channel_means: self.channel_means,
            presets,
            act: self.act,
            weights: self.weights,
            exclude,
        };
        Ok(qdq::quantize(self.model, &cfg)?)
    }

    /// With weights rounded to nearest.
    pub fn rounded(&self, exclude: &Exclusions) -> Result<(Model, QdqReport), OptimizeError> {
        self.quantize(&Presets::new(), exclude)
    }
}

/// Each tensor's range under `method`.
pub fn ranges_of(stats: &HashMap<String, TensorStats>, method: Method) -> HashMap<String, Range> {
    stats
        .iter()
        .map(|(k, s)| (k.clone(), s.range(method)))
        .collect()
}
