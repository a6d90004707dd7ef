//! Whether a face is good enough to recognise or enroll, and how much its vote weighs: its size,
//! its sharpness (the variance of the Laplacian of the aligned crop) and how frontal it is
//! (where the nose sits between the eyes).
//!
//! ```
//! use edgesight::faces::align::{Landmarks, TEMPLATE};
//! use edgesight::faces::quality::frontal;
//! // The template itself looks straight at the camera.
//! assert!(frontal(&Landmarks::Five(TEMPLATE)) > 0.95);
//! ```

use opencv::core::{Mat, Rect, CV_64F};
use opencv::imgproc;
use opencv::prelude::*;
use serde::{Deserialize, Serialize};

use super::align::{Landmarks, CHIP};

/// The gates a face must pass, from the pipeline file's `[faces]` or the CLI.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityGates {
    /// The face box's shorter side, in source pixels.
    pub min_side: f32,
    /// Variance of the Laplacian of the aligned crop's centre.
    pub min_sharpness: f64,
    /// [`frontal`] score: 1 looks straight ahead, 0 in profile.
    pub min_frontal: f32,
}

impl Default for QualityGates {
    fn default() -> Self {
        Self {
            min_side: 40.0,
            min_sharpness: 20.0,
            min_frontal: 0.3,
        }
    }
}

/// One face's measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    pub side: f32,
    pub sharpness: f64,
    pub frontal: f32,
}

impl Quality {
    /// Why the face fails `gates`, if it does.
    pub fn refusal(&self, gates: &QualityGates) -> Option<String> {
        if self.side < gates.min_side {
            return Some(format!(
                "the face is too small ({:.0} px, at least {:.0} needed)",
                self.side, gates.min_side
            ));
        }
        if self.sharpness < gates.min_sharpness {
            return Some(format!(
                "the face is too blurred (sharpness {:.1}, at least {:.1} needed)",
                self.sharpness, gates.min_sharpness
            ));
        }
        if self.frontal < gates.min_frontal {
            return Some(format!(
                "the face is turned away (frontal {:.2}, at least {:.2} needed)",
                self.frontal, gates.min_frontal
            ));
        }
        None
    }

    /// How much a vote from this face counts: bigger, sharper, more frontal faces count more.
    /// Size and sharpness saturate, so that one huge face does not outvote many good ones.
    pub fn weight(&self) -> f32 {
        let size = (self.side / 112.0).min(1.0);
        let sharp = ((self.sharpness / 100.0) as f32).min(1.0);
        size * (0.5 + 0.5 * sharp) * self.frontal.max(0.0)
    }
}

/// How frontal a face is, from 1 (the nose midway between the eyes) down to 0 (the nose as far
/// from the middle as half the distance between the eyes, or further: a profile).
pub fn frontal(l: &Landmarks) -> f32 {
    let (a, b) = l.eyes();
    let nose = l.nose();
    let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
    let dist = (ex * ex + ey * ey).sqrt();
    if dist < 1e-3 {
        return 0.0;
    }
    let mid = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
    // The nose's offset along the eye line, as a fraction of the eye distance.
    let along = ((nose[0] - mid[0]) * ex + (nose[1] - mid[1]) * ey) / (dist * dist);
    (1.0 - 2.0 * along.abs()).clamp(0.0, 1.0)
}

/// Variance of the Laplacian over the centre of an aligned RGB crop (eyes to mouth), where
/// there is face and no black border: low for a blurred face.
pub fn sharpness(chip: &[u8]) -> f64 {
    measure(chip).unwrap_or(0.0)
}

fn measure(chip: &[u8]) -> opencv::Result<f64> {
    // SAFETY: `chip` outlives `rgb` (dropped at the end of this function).
    let rgb = unsafe { crate::cvmat::mat_over(chip, CHIP, CHIP, 3, CHIP * 3)? };
    let centre = Mat::roi(&rgb, Rect::new(28, 36, 56, 64))?;
    let mut grey = Mat::default();
    imgproc::cvt_color_def(&centre, &mut grey, imgproc::COLOR_RGB2GRAY)?;
    let mut lap = Mat::default();
    imgproc::laplacian_def(&grey, &mut lap, CV_64F)?;
    let (mut mean, mut std) = (Mat::default(), Mat::default());
    opencv::core::mean_std_dev(&lap, &mut mean, &mut std, &opencv::core::no_array())?;
    let s = *std.at::<f64>(0)?;
    Ok(s * s)
}

/// The quality of a face with box side `side` and `landmarks`, aligned as `chip`.
pub fn assess(side: f32, landmarks: &Landmarks, chip: &[u8]) -> Quality {
    Quality {
        side,
        sharpness: sharpness(chip),
        frontal: frontal(landmarks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faces::align::TEMPLATE;

    #[test]
    fn a_turned_face_scores_lower() {
        let mut turned = TEMPLATE;
        turned[2][0] += 12.0; // the nose a third of the eye distance to one side
        let f = frontal(&Landmarks::Five(turned));
        assert!(f < 0.4 && f > 0.2, "{f}");
        assert!(frontal(&Landmarks::Five(TEMPLATE)) > 0.95);
    }

    #[test]
    fn a_flat_crop_is_not_sharp_and_a_checkerboard_is() {
        let flat = vec![128u8; CHIP * CHIP * 3];
        assert!(sharpness(&flat) < 1e-6);
        let board: Vec<u8> = (0..CHIP * CHIP * 3)
            .map(|i| {
                if ((i / 3) % CHIP / 4 + (i / 3) / CHIP / 4).is_multiple_of(2) {
                    0
                } else {
                    255
                }
            })
            .collect();
        assert!(sharpness(&board) > 1000.0);
    }

    #[test]
    fn gates_name_what_failed() {
        let q = Quality {
            side: 30.0,
            sharpness: 50.0,
            frontal: 0.9,
        };
        assert!(q
            .refusal(&QualityGates::default())
            .unwrap()
            .contains("too small"));
        let q = Quality { side: 80.0, ..q };
        assert!(q.refusal(&QualityGates::default()).is_none());
        let q = Quality {
            sharpness: 2.0,
            ..q
        };
        assert!(q
            .refusal(&QualityGates::default())
            .unwrap()
            .contains("blurred"));
    }
}
