//! One model with one calibration, quantized again and again with other exclusions and
//! weight presets: what the accuracy search and the reconstruction vary.

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
