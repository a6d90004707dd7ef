//! Box and label drawing with OpenCV, on a packed RGB copy of the frame.

use opencv::core::{Mat, Point, Rect, Scalar, CV_8UC3};
use opencv::imgproc;

use crate::detection::Detection;

/// A stable colour per class, so a class keeps its colour across frames and runs.
fn colour(class_id: u32) -> Scalar {
    const PALETTE: [(f64, f64, f64); 8] = [
        (255.0, 56.0, 56.0),
        (56.0, 255.0, 56.0),
        (56.0, 128.0, 255.0),
        (255.0, 178.0, 29.0),
        (207.0, 56.0, 255.0),
        (0.0, 212.0, 187.0),
        (255.0, 112.0, 31.0),
        (146.0, 204.0, 23.0),
    ];
    let (r, g, b) = PALETTE[class_id as usize % PALETTE.len()];
    Scalar::new(r, g, b, 0.0)
}

/// Draws `dets` onto `rgb`, a packed `width * height * 3` RGB buffer.
pub fn draw_detections(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    dets: &[Detection],
) -> opencv::Result<()> {
    assert_eq!(
        rgb.len(),
        (width * height * 3) as usize,
        "packed RGB buffer"
    );
    // SAFETY: `rgb` outlives `mat` (dropped at the end of this function) and holds exactly
    // height rows of width * 3 bytes, which is what the Mat header describes.
    let mut mat = unsafe {
        Mat::new_rows_cols_with_data_unsafe(
            height as i32,
            width as i32,
            CV_8UC3,
            rgb.as_mut_ptr().cast(),
            (width * 3) as usize,
        )?
    };
    let thickness = ((width.max(height) as f64) / 400.0).ceil().max(1.0) as i32;
    let scale = (width.max(height) as f64 / 1400.0).max(0.4);
    for d in dets {
        let b = d.bbox;
        let c = colour(d.class_id);
        let r = Rect::new(
            b.x1 as i32,
            b.y1 as i32,
            (b.x2 - b.x1).max(1.0) as i32,
            (b.y2 - b.y1).max(1.0) as i32,
        );
        imgproc::rectangle(&mut mat, r, c, thickness, imgproc::LINE_8, 0)?;
        let text = format!("{} {:.2}", d.label, d.score);
        let mut base = 0;
        let size =
            imgproc::get_text_size(&text, imgproc::FONT_HERSHEY_SIMPLEX, scale, 1, &mut base)?;
        // Label above the box, or inside it when the box touches the top edge.
        let top = if r.y - size.height - 4 >= 0 {
            r.y - size.height - 4
        } else {
            r.y
        };
        let bg = Rect::new(r.x, top, size.width + 4, size.height + 4);
        imgproc::rectangle(&mut mat, bg, c, -1, imgproc::LINE_8, 0)?;
        imgproc::put_text(
            &mut mat,
            &text,
            Point::new(r.x + 2, top + size.height + 1),
            imgproc::FONT_HERSHEY_SIMPLEX,
            scale,
            Scalar::new(0.0, 0.0, 0.0, 0.0),
            1,
            imgproc::LINE_AA,
            false,
        )?;
    }
    Ok(())
}
