//! Box, label, trail, zone and line drawing with OpenCV, on a writable copy of the frame: packed
//! RGB, or the three planes of I420 (drawn in place, so the encoder needs no colour conversion).
//!
//! Everything to draw is first laid out as [`Shape`]s in full-resolution pixels, then painted by
//! one painter per pixel format, so RGB and I420 output look alike.

use opencv::core::{Mat, Point, Rect, Scalar, Vector};
use opencv::imgproc;

use crate::cvmat::mat_over_mut;
use crate::detection::Detection;
use crate::frame::{Frame, PixelFormat, YuvMatrix};
use gstreamer_video as gst_video;

/// What the annotated outputs draw besides the boxes: the recent path of each track, and the
/// stream's zones and lines with their live counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    pub trails: Vec<Trail>,
    pub regions: Vec<Region>,
}

/// A track's recent bottom-centre points, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Trail {
    pub class_id: u32,
    pub points: Vec<[f32; 2]>,
}

/// A zone (closed polygon) or a counting line (open, with an arrow towards its `in` side), and
/// the caption drawn at its first point.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub points: Vec<[f32; 2]>,
    pub closed: bool,
    pub caption: String,
}

impl Overlay {
    pub const NONE: Overlay = Overlay {
        trails: Vec::new(),
        regions: Vec::new(),
    };
}

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

/// Zones and lines are drawn in one colour that no class uses.
const REGION_COLOUR: [u8; 3] = [255, 255, 255];

/// One drawing primitive in full-resolution pixels.
#[derive(Debug, Clone)]
enum Shape {
    /// `thickness` < 0 fills.
    Rect {
        rect: Rect,
        colour: [u8; 3],
        thickness: i32,
    },
    Dot {
        at: Point,
        radius: i32,
        colour: [u8; 3],
    },
    Path {
        points: Vec<Point>,
        closed: bool,
        colour: [u8; 3],
        thickness: i32,
    },
    /// Dark text (luma only on I420).
    Text { at: Point, text: String },
}

/// Line thickness and font scale for a frame size.
struct Style {
    thickness: i32,
    scale: f64,
}

impl Style {
    fn of(width: u32, height: u32) -> Self {
        let side = width.max(height) as f64;
        Self {
            thickness: (side / 400.0).ceil().max(1.0) as i32,
            scale: (side / 1400.0).max(0.4),
        }
    }
}

fn point(p: [f32; 2]) -> Point {
    Point::new(p[0].round() as i32, p[1].round() as i32)
}

/// A filled label box with its text, above `anchor` or below it when there is no room above.
fn caption(
    out: &mut Vec<Shape>,
    style: &Style,
    anchor: Point,
    text: String,
    colour: [u8; 3],
) -> opencv::Result<()> {
    let mut base = 0;
    let size = imgproc::get_text_size(
        &text,
        imgproc::FONT_HERSHEY_SIMPLEX,
        style.scale,
        1,
        &mut base,
    )?;
    let top = if anchor.y - size.height - 4 >= 0 {
        anchor.y - size.height - 4
    } else {
        anchor.y
    };
    out.push(Shape::Rect {
        rect: Rect::new(anchor.x, top, size.width + 4, size.height + 4),
        colour,
        thickness: -1,
    });
    out.push(Shape::Text {
        at: Point::new(anchor.x + 2, top + size.height + 1),
        text,
    });
    Ok(())
}

fn detection_shapes(out: &mut Vec<Shape>, style: &Style, d: &Detection) -> opencv::Result<()> {
    let b = d.bbox;
    let rect = Rect::new(
        b.x1 as i32,
        b.y1 as i32,
        (b.x2 - b.x1).max(1.0) as i32,
        (b.y2 - b.y1).max(1.0) as i32,
    );
    let colour = colour(d.class_id);
    out.push(Shape::Rect {
        rect,
        colour,
        thickness: style.thickness,
    });
    for k in &d.keypoints {
        out.push(Shape::Dot {
            at: point([k.x, k.y]),
            radius: style.thickness + 1,
            colour,
        });
    }
    let mut text = d.label.clone();
    if let Some(id) = d.track_id {
        text += &format!(" #{id}");
    }
    if let Some(name) = &d.name {
        text += &format!(" {name}");
    }
    text += &format!(" {:.2}", d.score);
    caption(out, style, Point::new(rect.x, rect.y), text, colour)
}

/// The arrowhead at a line's middle, pointing to the side a crossing counts as `in` (the left
/// of from → to, in image coordinates).
fn arrow(a: [f32; 2], b: [f32; 2], side: f32) -> Vec<Point> {
    let mid = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let n = [dy / len, -dx / len]; // left normal with y down
    let tip = [mid[0] + n[0] * side, mid[1] + n[1] * side];
    let along = [dx / len * side * 0.4, dy / len * side * 0.4];
    vec![
        point([mid[0] - along[0], mid[1] - along[1]]),
        point(tip),
        point([mid[0] + along[0], mid[1] + along[1]]),
    ]
}

fn region_shapes(out: &mut Vec<Shape>, style: &Style, r: &Region) -> opencv::Result<()> {
    let Some(&first) = r.points.first() else {
        return Ok(());
    };
    out.push(Shape::Path {
        points: r.points.iter().copied().map(point).collect(),
        closed: r.closed,
        colour: REGION_COLOUR,
        thickness: style.thickness,
    });
    if !r.closed && r.points.len() == 2 {
        let side = (style.scale * 30.0) as f32;
        out.push(Shape::Path {
            points: arrow(r.points[0], r.points[1], side),
            closed: false,
            colour: REGION_COLOUR,
            thickness: style.thickness,
        });
    }
    caption(out, style, point(first), r.caption.clone(), REGION_COLOUR)
}

/// Everything to draw on one frame, back to front: regions, trails, boxes.
fn layout(
    width: u32,
    height: u32,
    dets: &[Detection],
    overlay: &Overlay,
) -> opencv::Result<(Style, Vec<Shape>)> {
    let style = Style::of(width, height);
    let mut out = Vec::new();
    for r in &overlay.regions {
        region_shapes(&mut out, &style, r)?;
    }
    for t in overlay.trails.iter().filter(|t| t.points.len() > 1) {
        out.push(Shape::Path {
            points: t.points.iter().copied().map(point).collect(),
            closed: false,
            colour: colour(t.class_id),
            thickness: (style.thickness / 2).max(1),
        });
    }
    for d in dets {
        detection_shapes(&mut out, &style, d)?;
    }
    Ok((style, out))
}

/// Paints `shapes` on one plane. `half` scales full-resolution coordinates to a chroma plane;
/// `ink` gives a colour's value on this plane, and `text` is the text's ink (None: no text here).
fn paint(
    mat: &mut Mat,
    shapes: &[Shape],
    half: bool,
    ink: &dyn Fn([u8; 3]) -> Scalar,
    text: Option<Scalar>,
    style: &Style,
) -> opencv::Result<()> {
    let s = |v: i32| if half { v / 2 } else { v };
    let p = |q: Point| Point::new(s(q.x), s(q.y));
    let t = |v: i32| if half { (v / 2).max(1) } else { v };
    for shape in shapes {
        match shape {
            Shape::Rect {
                rect,
                colour,
                thickness,
            } => {
                let r = Rect::new(
                    s(rect.x),
                    s(rect.y),
                    s(rect.width).max(1),
                    s(rect.height).max(1),
                );
                let th = if *thickness < 0 { -1 } else { t(*thickness) };
                imgproc::rectangle(mat, r, ink(*colour), th, imgproc::LINE_8, 0)?;
            }
            Shape::Dot { at, radius, colour } => {
                let r = if half { radius / 2 + 1 } else { *radius };
                imgproc::circle(mat, p(*at), r, ink(*colour), -1, imgproc::LINE_8, 0)?;
            }
            Shape::Path {
                points,
                closed,
                colour,
                thickness,
            } => {
                let pts: Vector<Point> = points.iter().map(|q| p(*q)).collect();
                let th = t(*thickness);
                imgproc::polylines(mat, &pts, *closed, ink(*colour), th, imgproc::LINE_8, 0)?;
            }
            Shape::Text { at, text: body } => {
                if let Some(c) = text {
                    imgproc::put_text(
                        mat,
                        body,
                        *at,
                        imgproc::FONT_HERSHEY_SIMPLEX,
                        style.scale,
                        c,
                        1,
                        imgproc::LINE_AA,
                        false,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Draws `dets` and `overlay` onto `rgb`, `height` rows of `stride` bytes holding `width` RGB
/// pixels each.
pub fn draw_rgb(
    rgb: &mut [u8],
    (width, height, stride): (u32, u32, usize),
    dets: &[Detection],
    overlay: &Overlay,
) -> opencv::Result<()> {
    // SAFETY: `rgb` outlives `mat` (dropped at the end of this function).
    let mut mat = unsafe { mat_over_mut(rgb, height as usize, width as usize, 3, stride)? };
    let (style, shapes) = layout(width, height, dets, overlay)?;
    let ink = |[r, g, b]: [u8; 3]| Scalar::new(r as f64, g as f64, b as f64, 0.0);
    paint(
        &mut mat,
        &shapes,
        false,
        &ink,
        Some(Scalar::all(0.0)),
        &style,
    )
}

/// One writable I420 plane.
pub struct Plane<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
}

/// Draws `dets` and `overlay` onto the planes of a `width` x `height` I420 frame. Shapes go on
/// all three planes (chroma at half resolution); text is luma only, dark on the label's colour.
pub fn draw_i420(
    planes: [Plane<'_>; 3],
    (width, height): (u32, u32),
    matrix: &YuvMatrix,
    dets: &[Detection],
    overlay: &Overlay,
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
    let (style, shapes) = layout(width, height, dets, overlay)?;
    let black = Scalar::all(matrix.from_rgb([0, 0, 0]).0 as f64);
    for (i, mat) in mats.iter_mut().enumerate() {
        let ink = |c: [u8; 3]| {
            let (y, u, v) = matrix.from_rgb(c);
            Scalar::all([y, u, v][i] as f64)
        };
        let text = (i == 0).then_some(black);
        paint(mat, &shapes, i > 0, &ink, text, &style)?;
    }
    Ok(())
}

/// An unpadded copy of `frame` laid out as `info` says (same format; `info` may drop an odd last
/// column or row), with `dets` drawn on it.
pub fn annotated_copy(
    frame: &Frame,
    info: &gst_video::VideoInfo,
    matrix: &YuvMatrix,
    dets: &[Detection],
    overlay: &Overlay,
) -> opencv::Result<Vec<u8>> {
    let (w, h) = (info.width(), info.height());
    // The decoded buffer is read-only and padded; draw on an unpadded copy. In both formats
    // plane i starts with component i, so its rows hold that component's pixels.
    let mut data = vec![0u8; info.size()];
    for i in 0..info.n_planes() as usize {
        let c = i as u8;
        let n = info.comp_height(c) as usize;
        let bytes = info.comp_width(c) as usize * info.comp_pstride(c) as usize;
        let (src, src_stride) = (frame.plane(i), frame.plane_stride(i));
        let (off, dst_stride) = (info.offset()[i], info.stride()[i] as usize);
        for y in 0..n {
            data[off + y * dst_stride..off + y * dst_stride + bytes]
                .copy_from_slice(&src[y * src_stride..y * src_stride + bytes]);
        }
    }
    match frame.format() {
        PixelFormat::Rgb => draw_rgb(&mut data, (w, h, info.stride()[0] as usize), dets, overlay)?,
        PixelFormat::I420 => {
            let (o, s) = (info.offset(), info.stride());
            let (y, rest) = data.split_at_mut(o[1]);
            let (u, v) = rest.split_at_mut(o[2] - o[1]);
            let plane = |data, i: usize| Plane {
                data,
                stride: s[i] as usize,
            };
            draw_i420(
                [plane(y, 0), plane(u, 1), plane(v, 2)],
                (w, h),
                matrix,
                dets,
                overlay,
            )?
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> Overlay {
        Overlay {
            trails: vec![Trail {
                class_id: 0,
                points: vec![[10.0, 150.0], [150.0, 150.0]],
            }],
            regions: vec![Region {
                points: vec![[20.0, 20.0], [180.0, 20.0], [180.0, 100.0], [20.0, 100.0]],
                closed: true,
                caption: "bay: 2 car".into(),
            }],
        }
    }

    #[test]
    fn zones_and_trails_are_drawn_where_they_are() {
        let (w, h) = (200usize, 200usize);
        let mut rgb = vec![0u8; w * h * 3];
        draw_rgb(&mut rgb, (w as u32, h as u32, w * 3), &[], &overlay()).unwrap();
        let px = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(px(100, 100), [255, 255, 255], "the zone's bottom edge");
        assert_eq!(px(180, 60), [255, 255, 255], "the zone's right edge");
        assert_eq!(px(80, 150), colour(0), "the trail, in its class's colour");
        assert_eq!(px(100, 60), [0, 0, 0], "inside the zone stays clear");
        // The caption's label box sits above the first corner.
        assert!(px(24, 12).iter().any(|&c| c > 0));
    }

    #[test]
    fn i420_gets_the_same_shapes_on_luma() {
        let (w, h) = (200usize, 200usize);
        let mut y = vec![16u8; w * h];
        let (mut u, mut v) = (vec![128u8; w * h / 4], vec![128u8; w * h / 4]);
        let planes = [
            Plane {
                data: &mut y,
                stride: w,
            },
            Plane {
                data: &mut u,
                stride: w / 2,
            },
            Plane {
                data: &mut v,
                stride: w / 2,
            },
        ];
        let m = YuvMatrix::BT601;
        draw_i420(planes, (w as u32, h as u32), &m, &[], &overlay()).unwrap();
        assert_eq!(y[100 * w + 100], m.from_rgb(REGION_COLOUR).0);
        assert_eq!(y[150 * w + 80], m.from_rgb(colour(0)).0);
        assert_eq!(y[60 * w + 100], 16);
    }
}
