//! The two image sets of an optimization: calibration images set the int8 ranges, held-out
//! frames measure the result. One image in both would flatter the figures, so that is refused.

use super::calibrate::{self, ImageSet};
use super::fidelity;
use super::spec::{OptimizeError, OptimizeSpec, Precision, ProgressFn};
use crate::preprocess::PreprocessSpec;
use crate::tensor::Tensor;

/// The opened sets, and the held-out frames as model inputs.
pub struct ImageSets {
    /// For INT8 only.
    pub calibration: Option<ImageSet>,
    pub heldout: ImageSet,
    /// The held-out frames that decoded, preprocessed for the model.
    pub held: Vec<Tensor>,
    /// Each held-out frame's identity, when the folder names one per image (face sets).
    pub identities: Option<Vec<String>>,
}

impl ImageSets {
    pub fn open(
        spec: &OptimizeSpec,
        pre: &PreprocessSpec,
        progress: ProgressFn,
    ) -> Result<Self, OptimizeError> {
        // The calibration set first: a missing or empty one is the likelier mistake.
        let calibration = match spec.precision {
            Precision::Int8 => Some(ImageSet::open(&spec.calibration)?),
            _ => None,
        };
        let heldout = ImageSet::open(&spec.heldout)?;
        if let Some((held, twin)) = calibration.as_ref().and_then(|c| heldout.shared_with(c)) {
            return Err(OptimizeError::Calibration {
                dir: spec.heldout.clone(),
                reason: format!(
                    "held-out image {} is also in the calibration set (as {}); fidelity on images \
                     that set the ranges would flatter the model",
                    held.display(),
                    twin.display()
                ),
            });
        }
        let (held, _) =
            calibrate::tensors(&heldout, pre, &|d, t| progress("held-out frames", d, t))?;
        let identities: Option<Vec<String>> = heldout
            .images
            .iter()
            .map(|p| fidelity::identity_of(p))
            .collect();
        Ok(ImageSets {
            calibration,
            heldout,
            held,
            identities,
        })
    }
}
