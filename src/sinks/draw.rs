//! Box and label drawing with OpenCV, on a writable copy of the frame: packed RGB, or the
//! three planes of I420 (drawn in place, so the encoder needs no colour conversion).

use opencv::core::{Mat, Point, Rect, Scalar};
use opencv::imgproc;

use crate::cvmat::mat_over_mut;
use crate::detection::Detection;
use crate::frame::YuvMatrix;

/// A stable colour per class, so a class keeps its colour across frames and runs.
fn colour(class_id: u32) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [255, 56, 56],
        [56, 255, 56],
        [56, 128, 255],
        [255, 178, 29],
        [207, 56, 255],
        [0, 212, 187],
        [255, 112, 31],
        [146, 204, 23],
    ];
    PALETTE[class_id as usize % PALETTE.len()]
}

/// Where one detection's marks go, in full-resolution pixels.
struct Mark {
    rect: Rect,
    label_bg: Rect,
    text: String,
    text_org: Point,
    colour: [u8; 3],
    /// Landmark centres, drawn as filled dots.
    points: Vec<Point>,
}

/// Line thickness, font scale and the marks: one layout for every pixel format, so RGB and
/// I420 output look alike.
fn layout(width: u32, height: u32, dets: &[Detection]) -> opencv::Result<(i32, f64, Vec<Mark>)> {
    let thickness = ((width.max(height) as f64) / 400.0).ceil().max(1.0) as i32;
    let scale = (width.max(height) as f64 / 1400.0).max(0.4);
    let mut marks = Vec::with_capacity(dets.len());
    for d in dets {
        let b = d.bbox;
        let rect = Rect::new(
            b.x1 as i32,
            b.y1 as i32,
            (b.x2 - b.x1).max(1.0) as i32,
            (b.y2 - b.y1).max(1.0) as i32,
        );
        let text = match d.track_id {
            Some(id) => format!("{} #{id} {:.2}", d.label, d.score),
            None => format!("{} {:.2}", d.label, d.score),
        };
        let mut base = 0;
        let size =
            imgproc::get_text_size(&text, imgproc::FONT_HERSHEY_SIMPLEX, scale, 1, &mut base)?;
        // Label above the box, or inside it when the box touches the top edge.
        let top = if rect.y - size.height - 4 >= 0 {
            rect.y - size.height - 4
        } else {
            rect.y
        };
        marks.push(Mark {
            rect,
            label_bg: Rect::new(rect.x, top, size.width + 4, size.height + 4),
            text_org: Point::new(rect.x + 2, top + size.height + 1),
            text,
            colour: colour(d.class_id),
            points: d
                .keypoints
                .iter()
                .map(|k| Point::new(k.x as i32, k.y as i32))
                .collect(),
        });
    }
    Ok((thickness, scale, marks))
}

fn text(mat: &mut Mat, m: &Mark, scale: f64, ink: Scalar) -> opencv::Result<()> {
    imgproc::put_text(
        mat,
        &m.text,
        m.text_org,
        imgproc::FONT_HERSHEY_SIMPLEX,
        scale,
        ink,
        1,
        imgproc::LINE_AA,
        false,
    )
}

/// Draws `dets` onto `rgb`, `height` rows of `stride` bytes holding `width` RGB pixels each.
pub fn draw_rgb(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    dets: &[Detection],
) -> opencv::Result<()> {
    // SAFETY: `rgb` outlives `mat` (dropped at the end of this function).
    let mut mat = unsafe { mat_over_mut(rgb, height as usize, width as usize, 3, stride)? };
    let (thickness, scale, marks) = layout(width, height, dets)?;
    for m in &marks {
        let [r, g, b] = m.colour.map(f64::from);
        let c = Scalar::new(r, g, b, 0.0);
        imgproc::rectangle(&mut mat, m.rect, c, thickness, imgproc::LINE_8, 0)?;
        imgproc::rectangle(&mut mat, m.label_bg, c, -1, imgproc::LINE_8, 0)?;
        for &p in &m.points {
            imgproc::circle(&mut mat, p, thickness + 1, c, -1, imgproc::LINE_8, 0)?;
        }
        text(&mut mat, m, scale, Scalar::all(0.0))?;
    }
    Ok(())
}

/// One writable I420 plane.
pub struct Plane<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
}

/// Draws `dets` onto the planes of a `width` x `height` I420 frame. Boxes and label
/// backgrounds go on all three planes (chroma at half resolution); the text is luma only,
/// dark on the label's colour.
pub fn draw_i420(
    planes: [Plane<'_>; 3],
    width: u32,
    height: u32,
    matrix: &YuvMatrix,
    dets: &[Detection],
) -> opencv::Result<()> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let [py, pu, pv] = planes;
    // SAFETY: the planes outlive the Mats (dropped at the end of this function).
    let mut mats = unsafe {
        [
            mat_over_mut(py.data, h, w, 1, py.stride)?,
            mat_over_mut(pu.data, ch, cw, 1, pu.stride)?,
            mat_over_mut(pv.data, ch, cw, 1, pv.stride)?,
        ]
    };
    let (thickness, scale, marks) = layout(width, height, dets)?;
    let half = |r: Rect| {
        Rect::new(
            r.x / 2,
            r.y / 2,
            (r.width / 2).max(1),
            (r.height / 2).max(1),
        )
    };
    let black = matrix.from_rgb([0, 0, 0]).0;
    for m in &marks {
        let (y, u, v) = matrix.from_rgb(m.colour);
        for (i, (mat, value)) in mats.iter_mut().zip([y, u, v]).enumerate() {
            let c = Scalar::all(value as f64);
            let (rect, bg, t) = if i == 0 {
                (m.rect, m.label_bg, thickness)
            } else {
                (half(m.rect), half(m.label_bg), (thickness / 2).max(1))
            };
            imgproc::rectangle(mat, rect, c, t, imgproc::LINE_8, 0)?;
            imgproc::rectangle(mat, bg, c, -1, imgproc::LINE_8, 0)?;
            for &p in &m.points {
                let (p, r) = if i == 0 {
                    (p, thickness + 1)
                } else {
                    (Point::new(p.x / 2, p.y / 2), (thickness + 1) / 2 + 1)
                };
                imgproc::circle(mat, p, r, c, -1, imgproc::LINE_8, 0)?;
            }
        }
        text(&mut mats[0], m, scale, Scalar::all(black as f64))?;
    }
    Ok(())
}
