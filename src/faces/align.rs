//! Face alignment: a similarity transform (rotation, uniform scale, translation) that takes a
//! face's landmarks onto InsightFace's ArcFace 112×112 template, then one `warpAffine`. The
//! embedder was trained on crops made this way, so its accuracy depends on it.
//!
//! The transform is the least-squares fit of Umeyama (1991), the estimator InsightFace itself
//! uses (`skimage`'s `SimilarityTransform`). It is exact and has no random sampling: OpenCV's
//! `estimateAffinePartial2D` wraps the same model in RANSAC, which buys nothing with four or
//! five points and no outliers, and needs OpenCV's calib3d module.
//!
//! BlazeFace gives the eyes, the nose tip and the mouth *centre*, not the mouth corners, so its
//! fit uses four points: the template's eyes, nose and the midpoint of its mouth corners
//! ([`Landmarks::Four`]). SCRFD-style detectors give all five ([`Landmarks::Five`]).
//!
//! ```
//! use edgesight::faces::align::{similarity, Landmarks, TEMPLATE};
//! // The template's own points map onto themselves: the identity transform.
//! let m = similarity(&Landmarks::Five(TEMPLATE).points(), &Landmarks::Five(TEMPLATE).targets()).unwrap();
//! assert!((m[0][0] - 1.0).abs() < 1e-9 && m[0][1].abs() < 1e-9 && m[0][2].abs() < 1e-6);
//! ```

use opencv::core::{Mat, Scalar, Size, BORDER_CONSTANT, CV_64F};
use opencv::imgproc;
use opencv::prelude::*;

/// Side of the aligned crop the embedder takes.
pub const CHIP: usize = 112;

/// Version of the alignment, stored with every embedding: a gallery made with another
/// alignment is refused rather than silently compared. Bump it when the template, the point set
/// or the interpolation changes.
pub const ALIGNMENT_VERSION: u32 = 1;

/// InsightFace's ArcFace 112×112 template: the subject's right eye (image left), left eye, nose
/// tip, right mouth corner, left mouth corner.
pub const TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Face landmarks in source pixels, in the template's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Landmarks {
    /// Eyes, nose tip, mouth corners.
    Five([[f32; 2]; 5]),
    /// Eyes, nose tip, mouth centre (BlazeFace).
    Four([[f32; 2]; 4]),
}

impl Landmarks {
    pub fn points(&self) -> Vec<[f32; 2]> {
        match self {
            Landmarks::Five(p) => p.to_vec(),
            Landmarks::Four(p) => p.to_vec(),
        }
    }

    /// The template points these landmarks are fitted to.
    pub fn targets(&self) -> Vec<[f32; 2]> {
        match self {
            Landmarks::Five(_) => TEMPLATE.to_vec(),
            Landmarks::Four(_) => {
                let mouth = [
                    (TEMPLATE[3][0] + TEMPLATE[4][0]) / 2.0,
                    (TEMPLATE[3][1] + TEMPLATE[4][1]) / 2.0,
                ];
                vec![TEMPLATE[0], TEMPLATE[1], TEMPLATE[2], mouth]
            }
        }
    }

    /// The eyes, (image left, image right).
    pub fn eyes(&self) -> ([f32; 2], [f32; 2]) {
        match self {
            Landmarks::Five(p) => (p[0], p[1]),
            Landmarks::Four(p) => (p[0], p[1]),
        }
    }

    pub fn nose(&self) -> [f32; 2] {
        match self {
            Landmarks::Five(p) => p[2],
            Landmarks::Four(p) => p[2],
        }
    }

    /// The mouth's centre (the corners' midpoint where there are corners).
    pub fn mouth(&self) -> [f32; 2] {
        match self {
            Landmarks::Five(p) => [(p[3][0] + p[4][0]) / 2.0, (p[3][1] + p[4][1]) / 2.0],
            Landmarks::Four(p) => p[3],
        }
    }

    /// The four points BlazeFace gives (the mouth corners merged into their midpoint): to
    /// measure what the coarser fit costs on the same faces.
    pub fn to_four(&self) -> Self {
        let (re, le) = self.eyes();
        Landmarks::Four([re, le, self.nose(), self.mouth()])
    }

    /// Landmarks from a detection's keypoints, by name: BlazeFace's `right_eye`, `left_eye`,
    /// `nose_tip`, `mouth`, or five-point detectors' `mouth_right`/`mouth_left`.
    pub fn from_keypoints(kps: &[crate::detection::Keypoint]) -> Option<Self> {
        let get = |n: &str| kps.iter().find(|k| k.name == n).map(|k| [k.x, k.y]);
        let (re, le, nose) = (get("right_eye")?, get("left_eye")?, get("nose_tip")?);
        match (get("mouth_right"), get("mouth_left")) {
            (Some(mr), Some(ml)) => Some(Landmarks::Five([re, le, nose, mr, ml])),
            _ => Some(Landmarks::Four([re, le, nose, get("mouth")?])),
        }
    }
}

/// The 2×3 similarity transform that takes `src` onto `dst` in the least-squares sense
/// (Umeyama's closed form). None for fewer than two distinct points.
pub fn similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<[[f64; 3]; 2]> {
    let n = src.len();
    if n < 2 || dst.len() != n {
        return None;
    }
    let mean = |p: &[[f32; 2]]| {
        let (sx, sy) = p
            .iter()
            .fold((0.0, 0.0), |(x, y), q| (x + q[0] as f64, y + q[1] as f64));
        (sx / n as f64, sy / n as f64)
    };
    let ((mx, my), (nx, ny)) = (mean(src), mean(dst));
    // With complex numbers z = x + iy, the best rotation-and-scale is
    // a + ib = Σ conj(s)·d / Σ |s|², over centred points.
    let (mut re, mut im, mut var) = (0.0f64, 0.0f64, 0.0f64);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] as f64 - mx, s[1] as f64 - my);
        let (dx, dy) = (d[0] as f64 - nx, d[1] as f64 - ny);
        re += sx * dx + sy * dy;
        im += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    if var < 1e-9 {
        return None;
    }
    let (a, b) = (re / var, im / var);
    Some([
        [a, -b, nx - (a * mx - b * my)],
        [b, a, ny - (b * mx + a * my)],
    ])
}

/// Where `m` takes the point `p`.
pub fn apply(m: &[[f64; 3]; 2], p: [f32; 2]) -> [f32; 2] {
    let (x, y) = (p[0] as f64, p[1] as f64);
    [
        (m[0][0] * x + m[0][1] * y + m[0][2]) as f32,
        (m[1][0] * x + m[1][1] * y + m[1][2]) as f32,
    ]
}

/// The aligned 112×112 RGB crop of the face with `landmarks` in `rgb` (`height` rows of
/// `stride` bytes). Pixels outside the image are black.
pub fn aligned_chip(
    rgb: &[u8],
    (width, height, stride): (u32, u32, usize),
    landmarks: &Landmarks,
) -> Option<Vec<u8>> {
    let m = similarity(&landmarks.points(), &landmarks.targets())?;
    warp(rgb, (width, height, stride), &m).ok()
}

/// The aligned crop of a decoded frame, RGB or I420. An I420 frame's planes are warped one by
/// one (chroma with the transform scaled to its half resolution) and only the 112×112 result
/// is converted to RGB, so no full frame is ever converted.
pub fn aligned_chip_of(frame: &crate::frame::Frame, landmarks: &Landmarks) -> Option<Vec<u8>> {
    use crate::frame::PixelFormat;
    let m = similarity(&landmarks.points(), &landmarks.targets())?;
    let (w, h) = (frame.width(), frame.height());
    match frame.format() {
        PixelFormat::Rgb => warp(frame.plane(0), (w, h, frame.plane_stride(0)), &m).ok(),
        PixelFormat::I420 => {
            // Chroma pixel (u, v) sits at source (2u, 2v): chip = M · 2 · chroma.
            let mut half = m;
            for row in &mut half {
                row[0] *= 2.0;
                row[1] *= 2.0;
            }
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let matrix = crate::frame::YuvMatrix::of(frame.info());
            let (black, grey) = (matrix.from_rgb([0, 0, 0]).0 as f64, 128.0);
            let plane = |i: usize, size: (u32, u32), m: &[[f64; 3]; 2], border: f64| {
                let (pw, ph) = size;
                warp_plane(
                    frame.plane(i),
                    (pw, ph, frame.plane_stride(i)),
                    1,
                    m,
                    border,
                )
                .ok()
            };
            let y = plane(0, (w, h), &m, black)?;
            let u = plane(1, (cw, ch), &half, grey)?;
            let v = plane(2, (cw, ch), &half, grey)?;
            Some(
                (0..CHIP * CHIP)
                    .flat_map(|i| matrix.to_rgb(y[i], u[i], v[i]))
                    .collect(),
            )
        }
    }
}

fn warp(rgb: &[u8], size: (u32, u32, usize), m: &[[f64; 3]; 2]) -> opencv::Result<Vec<u8>> {
    warp_plane(rgb, size, 3, m, 0.0)
}

/// One `channels`-channel plane of `h` rows of `stride` bytes, warped by `m` to the crop, with
/// `border` outside the image.
fn warp_plane(
    data: &[u8],
    (w, h, stride): (u32, u32, usize),
    channels: usize,
    m: &[[f64; 3]; 2],
    border: f64,
) -> opencv::Result<Vec<u8>> {
    // SAFETY: `data` outlives `src` (dropped at the end of this function).
    let src = unsafe { crate::cvmat::mat_over(data, h as usize, w as usize, channels, stride)? };
    let mut mm = Mat::new_rows_cols_with_default(2, 3, CV_64F, Scalar::all(0.0))?;
    for (r, row) in m.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            *mm.at_2d_mut::<f64>(r as i32, c as i32)? = *v;
        }
    }
    let mut out = Mat::default();
    imgproc::warp_affine(
        &src,
        &mut out,
        &mm,
        Size::new(CHIP as i32, CHIP as i32),
        imgproc::INTER_LINEAR,
        BORDER_CONSTANT,
        Scalar::all(border),
    )?;
    Ok(out.data_bytes()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate(p: [f32; 2], deg: f32, c: [f32; 2], scale: f32) -> [f32; 2] {
        let (s, co) = deg.to_radians().sin_cos();
        let (x, y) = (p[0] - c[0], p[1] - c[1]);
        [
            c[0] + scale * (co * x - s * y) + 100.0,
            c[1] + scale * (s * x + co * y) + 40.0,
        ]
    }

    #[test]
    fn the_template_maps_to_itself() {
        for l in [
            Landmarks::Five(TEMPLATE),
            Landmarks::Four(Landmarks::Four([[0.0; 2]; 4]).targets().try_into().unwrap()),
        ] {
            let m = similarity(&l.points(), &l.targets()).unwrap();
            for (p, q) in l.points().iter().zip(l.targets()) {
                let r = apply(&m, *p);
                assert!((r[0] - q[0]).abs() < 1e-3 && (r[1] - q[1]).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn a_rotated_scaled_face_is_brought_back() {
        let c = [56.0, 72.0];
        for deg in [-40.0f32, -10.0, 25.0, 60.0] {
            let moved: Vec<[f32; 2]> = TEMPLATE.iter().map(|&p| rotate(p, deg, c, 2.5)).collect();
            let m = similarity(&moved, &TEMPLATE).unwrap();
            // The fitted transform undoes the rotation: its angle is -deg and its scale 1/2.5.
            let angle = m[1][0].atan2(m[0][0]).to_degrees() as f32;
            assert!((angle + deg).abs() < 1e-3, "{deg}: {angle}");
            let scale = m[0][0].hypot(m[1][0]) as f32;
            assert!((scale - 0.4).abs() < 1e-5);
            for (p, q) in moved.iter().zip(TEMPLATE) {
                let r = apply(&m, *p);
                assert!((r[0] - q[0]).abs() < 1e-3 && (r[1] - q[1]).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn degenerate_points_give_no_transform() {
        assert!(similarity(&[[5.0, 5.0]; 4], &TEMPLATE[..4]).is_none());
        assert!(similarity(&[[5.0, 5.0]], &TEMPLATE[..1]).is_none());
    }
}
