//! `report.md` and its SVG plots: what changed in accuracy and speed, for a person to look at.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::artifact::Artifact;
use super::weights::WeightRange;
use super::figures::{Figures, LayerSensitivity};
use super::spec::OptimizeError;

pub const LATENCY_SVG: &str = "latency.svg";
pub const SENSITIVITY_SVG: &str = "sensitivity.svg";
pub const LAYER_ERROR_SVG: &str = "layer-error.svg";
pub const KERNELS_SVG: &str = "kernels.svg";

pub fn write(a: &Artifact, dir: &Path) -> Result<(), OptimizeError> {
    let io_err = |e: String| OptimizeError::Io {
        path: dir.join("report.md"),
        reason: e,
    };
    latency_plot(a, &dir.join(LATENCY_SVG)).map_err(io_err)?;
    if a.figures.iter().any(|f| !f.kernels.is_empty()) {
        kernel_plot(a, &dir.join(KERNELS_SVG)).map_err(io_err)?;
    }
    if !a.sensitivity.is_empty() {
        layer_plot(
            a,
            &a.sensitivity,
            "Fidelity with one unit quantized: nodes, then activations (graph order)",
            &dir.join(SENSITIVITY_SVG),
        )
        .map_err(io_err)?;
    }
    if !a.layer_error.is_empty() {
        layer_plot(
            a,
            &a.layer_error,
            "Output cosine with FP32, per node, whole model quantized (graph order)",
            &dir.join(LAYER_ERROR_SVG),
        )
        .map_err(io_err)?;
    }
    std::fs::write(dir.join("report.md"), markdown(a)).map_err(|e| io_err(e.to_string()))
}

pub fn markdown(a: &Artifact) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} → {} for {}\n", a.model.name, a.precision, a.target);
    let _ = writeln!(
        s,
        "Source `{}` (sha256 `{}`), written by {}.\n",
        a.source_model,
        &a.source_sha256[..16.min(a.source_sha256.len())],
        a.created_by
    );
    if let Some(c) = &a.calibration {
        let _ = writeln!(
            s,
            "Calibrated with **{}** on {} images in `{}` (set sha256 `{}`, {} skipped{}).\n",
            c.method,
            c.images,
            c.dir,
            &c.sha256[..16.min(c.sha256.len())],
            c.skipped,
            if c.cached {
                ", statistics from the cache"
            } else {
                ""
            }
        );
    }
    match a.weight_range {
        Some(WeightRange::Reduced) => {
            let _ = writeln!(
                s,
                "Weights on **±64** (depthwise convolutions ±127), for an x86 CPU without VNNI, \
                 whose int8 kernels saturate on full-range weights. A VNNI or ARM CPU runs \
                 these weights as they are, a grid step coarser than it needs.\n"
            );
        }
        Some(WeightRange::Full) => {
            let _ = writeln!(
                s,
                "Weights on **±127**, for a CPU with VNNI or an ARM CPU. An x86 CPU without VNNI \
                 saturates on them: optimize there with `--weight-range reduced`.\n"
            );
        }
        None => {}
    }
    let _ = writeln!(
        s,
        "Fidelity and speed are measured against FP32 on {} held-out frames in `{}`, none of \
         them in the calibration set. Latency is batch 1 on ONNX Runtime's CPU provider.{}\n",
        a.heldout_images,
        a.heldout_dir,
        if a.figures.iter().any(|f| f
            .fidelity
            .as_ref()
            .is_some_and(|x| x.map50_interval.is_some()))
        {
            " In brackets after agreement mAP50: where 90% of its values fall when the held-out \
             frames are drawn again with replacement, a measure of how much the figure rests on \
             these particular frames."
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| precision | agreement mAP50 | mean cosine | worst-frame cosine | verification AUC (fp32 → this) | p50 ms | p95 ms | speed-up | best batch: ms/image | size |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    let base = a
        .figures
        .first()
        .map(|f| f.latency_b1.p50_ms)
        .unwrap_or(0.0);
    for f in &a.figures {
        let (map, cos, worst, auc) = match &f.fidelity {
            Some(x) => (
                map50_text(x).unwrap_or("–".into()),
                format!("{:.5}", x.mean_cosine),
                format!("{:.5}", x.min_cosine),
                x.auc
                    .map(|(r, c)| format!("{r:.4} → {c:.4}"))
                    .unwrap_or("–".into()),
            ),
            None => ("reference".into(), "1".into(), "1".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2}× | {} | {:.2} MB |",
            f.precision,
            map,
            cos,
            worst,
            auc,
            f.latency_b1.p50_ms,
            f.latency_b1.p95_ms,
            if f.latency_b1.p50_ms > 0.0 {
                base / f.latency_b1.p50_ms
            } else {
                0.0
            },
            f.best_batch
                .map(|(b, p)| format!("{b}: {:.2}", p.p50_ms))
                .unwrap_or("fixed batch".into()),
            f.size_bytes as f64 / 1e6
        );
    }
    // A ceiling of 0.99 or more bounds nothing a threshold would ask for.
    if let Some(c) = a.score_ceiling.filter(|&c| c < 0.99) {
        let _ = writeln!(
            s,
            "\nNo {} score can pass **{c:.2}**: that is the sigmoid of the top of the heatmap \
             logits' grid, the highest logit the calibration images gave. A threshold above it \
             finds nothing; calibration images where the detector is sure of something raise it.",
            a.precision
        );
    }
    if let Some(y) = &a.yardstick {
        let reads = match map50_text(y) {
            Some(m) => {
                let classes: Vec<String> = y
                    .per_class
                    .iter()
                    .map(|c| format!("{} {:.2}", c.label, c.ap50))
                    .collect();
                format!("agreement mAP50 {m} (by class: {})", classes.join(", "))
            }
            None => format!(
                "mean cosine {:.5} (worst frame {:.5}){}",
                y.mean_cosine,
                y.min_cosine,
                y.auc
                    .map(|(_, c)| format!(", verification AUC {c:.4}"))
                    .unwrap_or_default()
            ),
        };
        let _ = writeln!(
            s,
            "\nFor scale: FP32 against itself on the same frames resized bicubic instead of \
             bilinear, a change nobody would call a loss, reads {reads}. A model that reads at or \
             above it differs from FP32 no more than the resize method does."
        );
    }
    let _ = writeln!(s, "\n![latency]({LATENCY_SVG})\n");
    for f in &a.figures {
        let Some(x) = f.fidelity.as_ref().filter(|x| !x.per_class.is_empty()) else {
            continue;
        };
        let _ = writeln!(
            s,
            "Agreement AP50 of {} by class, most frequent first (the mean weighs a class FP32 \
             found once as much as one it found a hundred times):\n\n\
             | class | FP32 detections | AP50 |\n|---|---|---|",
            f.precision
        );
        for c in &x.per_class {
            let _ = writeln!(s, "| {} | {} | {:.3} |", c.label, c.instances, c.ap50);
        }
        let n: usize = x.per_class.iter().map(|c| c.instances).sum();
        let weighted = x
            .per_class
            .iter()
            .map(|c| c.ap50 * c.instances as f64)
            .sum::<f64>()
            / n.max(1) as f64;
        let _ = writeln!(
            s,
            "\nWeighted by FP32's detections instead: {weighted:.3} (the mean above: {:.3}).\n",
            x.map50.unwrap_or(0.0)
        );
    }
    kernel_section(&mut s, a);
    if let Some(c) = &a.comparison {
        let p = a.precision;
        let _ = writeln!(
            s,
            "## Where they differ\n\nThe held-out frame where the boxes differ most, `{}`: {} \
             boxes of either model have no box of the same class at IoU ≥ 0.5 from the other.\n\n\
             | fp32 | {p} |\n|---|---|\n| ![fp32]({}) | ![{p}]({}) |\n",
            c.frame, c.disagreements, c.fp32, c.candidate
        );
    }
    if a.quantized_layers > 0 || !a.excluded.is_empty() {
        let _ = writeln!(
            s,
            "{} weighted layers in INT8; kept in float: {}.\n",
            a.quantized_layers,
            if a.excluded.is_empty() {
                "none".to_string()
            } else {
                a.excluded.join(", ")
            }
        );
    }
    if !a.rewrites.is_empty() {
        let _ = writeln!(
            s,
            "Rewritten for the CPU's kernels (each keeps what the model computes, or says what it rounds):\n\n{}\n",
            a.rewrites
                .iter()
                .map(|r| format!("- `{}", r.replacen(": ", "`: ", 1)))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if !a.unknown_ops.is_empty() {
        let ops: Vec<String> = a
            .unknown_ops
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect();
        let _ = writeln!(
            s,
            "Ops unknown to the quantizer, left in float: {}.\n",
            ops.join(", ")
        );
    }
    if !a.layer_error.is_empty() {
        let _ = writeln!(
            s,
            "## Per-layer output error\n\nThe cosine between each quantized node's output and \
             FP32's, with the whole model quantized, on held-out frames: where the error enters \
             and how it grows.\n\n![layer error]({LAYER_ERROR_SVG})\n"
        );
        let mut v: Vec<_> = a.layer_error.iter().collect();
        v.sort_by(|x, y| x.fidelity.total_cmp(&y.fidelity));
        let _ = writeln!(s, "| node | output cosine |\n|---|---|");
        for l in v.iter().take(5) {
            let _ = writeln!(s, "| `{}` | {:.5} |", l.layer, l.fidelity);
        }
        let _ = writeln!(s);
    }
    if !a.sensitivity.is_empty() {
        let _ = writeln!(
            s,
            "## Per-layer sensitivity\n\nFidelity with only that node quantized, or with only that \
             activation rounded in the float model (lower is more sensitive); the accuracy search \
             tries the most sensitive units in float first and keeps those that help (red).\n\n![sensitivity]({SENSITIVITY_SVG})\n"
        );
        let mut v: Vec<_> = a.sensitivity.iter().collect();
        v.sort_by(|x, y| x.fidelity.total_cmp(&y.fidelity));
        let _ = writeln!(
            s,
            "| unit | fidelity alone | kept in float |\n|---|---|---|"
        );
        for l in v.iter().take(10) {
            let kept = if l.kept_in_float { "yes" } else { "" };
            let _ = writeln!(s, "| `{}` | {:.5} | {kept} |", l.layer, l.fidelity);
        }
    }
    if let Some(t) = &a.tensorrt {
        let _ = writeln!(
            s,
            "\nTensorRT engines (fp16 {}, int8 {}) are cached in `{}/`.",
            t.fp16, t.int8, t.engine_cache
        );
    }
    s
}

/// Agreement mAP50 with its interval over redrawn frames, as the tables show it.
fn map50_text(x: &super::fidelity::Fidelity) -> Option<String> {
    let m = x.map50?;
    Some(match x.map50_interval {
        Some((lo, hi)) => format!("{m:.4} ({lo:.2}–{hi:.2})"),
        None => format!("{m:.4}"),
    })
}

const KERNEL_KINDS: &[&str] = &[
    "convolution",
    "matrix multiply",
    "element-wise",
    "layout and copies",
    "quantize / dequantize",
    "other (pooling, resize, TopK, ...)",
];

/// What an op the runtime ran does, for the breakdown plot, as an index into [`KERNEL_KINDS`]:
/// int8 kernels (QLinearConv) sit with their float counterparts (Conv), so the bars compare
/// like with like.
fn kernel_kind(op: &str) -> usize {
    const LAYOUT: &[&str] = &[
        "Transpose",
        "ReorderInput",
        "ReorderOutput",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Split",
        "Gather",
        "Pad",
        "Cast",
        "Expand",
        "Tile",
        "Identity",
    ];
    const ELEMENTWISE: &[&str] = &[
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Clip",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "LeakyRelu",
        "PRelu",
        "Tanh",
        "Erf",
        "Gelu",
        "Exp",
        "Sqrt",
        "Pow",
        "Equal",
        "Where",
        "Max",
        "Min",
        "Abs",
        "Neg",
    ];
    let base = op.strip_prefix("QLinear").unwrap_or(op);
    if base.contains("Conv") {
        0
    } else if base.contains("MatMul") || base.contains("Gemm") {
        1
    } else if ELEMENTWISE.contains(&base) {
        2
    } else if LAYOUT.contains(&base) {
        3
    } else if base.ends_with("QuantizeLinear") {
        4
    } else {
        5
    }
}

/// Kernel time by kind, in [`KERNEL_KINDS`] order.
fn by_kind(kernels: &[super::fidelity::OpTime]) -> Vec<f64> {
    let mut v = vec![0.0; KERNEL_KINDS.len()];
    for o in kernels {
        v[kernel_kind(&o.op)] += o.ms;
    }
    v
}

fn kernel_section(s: &mut String, a: &Artifact) {
    let profiled: Vec<_> = a.figures.iter().filter(|f| !f.kernels.is_empty()).collect();
    if profiled.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Where the time goes\n\nKernel time per batch-1 run, by the op types ONNX Runtime \
         ran after its own graph rewrites, from its profiler in sessions apart from the \
         timing above. The profiler adds its own cost to every kernel, more to graphs of many \
         small ones, so read each op's share here and the real times in the latency table. \
         Where the speed-up is smaller than the convolutions' own, the rest of the graph is \
         why: layout changes, element-wise ops, quantize/dequantize passes and \
         post-processing.\n\n![kernels]({KERNELS_SVG})\n"
    );
    let _ = write!(s, "| op |");
    for f in &profiled {
        let _ = write!(s, " {} ms |", f.precision);
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(profiled.len()));
    // Ops in order of their largest time in any precision; the small ones summed.
    let mut ops: Vec<(&str, f64)> = Vec::new();
    for f in &profiled {
        for o in &f.kernels {
            match ops.iter_mut().find(|(n, _)| *n == o.op) {
                Some(e) => e.1 = e.1.max(o.ms),
                None => ops.push((&o.op, o.ms)),
            }
        }
    }
    ops.sort_by(|x, y| y.1.total_cmp(&x.1));
    const ROWS: usize = 14;
    let cell = |f: &Figures, op: &str| {
        f.kernels
            .iter()
            .find(|o| o.op == op)
            .map(|o| format!("{:.2}", o.ms))
            .unwrap_or("–".into())
    };
    for (op, _) in ops.iter().take(ROWS) {
        let _ = write!(s, "| {op} |");
        for f in &profiled {
            let _ = write!(s, " {} |", cell(f, op));
        }
        let _ = writeln!(s);
    }
    if ops.len() > ROWS {
        let shown: Vec<&str> = ops.iter().take(ROWS).map(|(o, _)| *o).collect();
        let _ = write!(s, "| all other ops |");
        for f in &profiled {
            let rest: f64 = f
                .kernels
                .iter()
                .filter(|o| !shown.contains(&o.op.as_str()))
                .map(|o| o.ms)
                .sum();
            let _ = write!(s, " {rest:.2} |");
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "| **total** |");
    for f in &profiled {
        let _ = write!(
            s,
            " **{:.2}** |",
            f.kernels.iter().map(|o| o.ms).sum::<f64>()
        );
    }
    let _ = writeln!(s, "\n");
}

/// One stacked bar per precision: kernel time by kind.
fn kernel_plot(a: &Artifact, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let bars: Vec<(String, Vec<f64>)> = a
        .figures
        .iter()
        .filter(|f| !f.kernels.is_empty())
        .map(|f| (f.precision.clone(), by_kind(&f.kernels)))
        .collect();
    let max = bars
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        // Headroom for the legend above the bars.
        * 1.6;
    let names: Vec<String> = bars.iter().map(|(p, _)| p.clone()).collect();
    let caption = format!("{}: kernel time per run, by kind", a.model.name);
    let mut chart = bar_chart(&root, &caption, &names, max)?;
    for (k, kind) in KERNEL_KINDS.iter().enumerate() {
        let color = Palette99::pick(k).mix(0.8);
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let below: f64 = v[..k].iter().sum();
                Rectangle::new(
                    [
                        (SegmentValue::Exact(i), below),
                        (SegmentValue::Exact(i + 1), below + v[k]),
                    ],
                    color.filled(),
                )
            }))
            .map_err(|e| e.to_string())?
            .label(*kind)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn latency_plot(a: &Artifact, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (640, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = a
        .figures
        .iter()
        .map(|f| f.latency_b1.p95_ms)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let names: Vec<String> = a.figures.iter().map(|f| f.precision.clone()).collect();
    let caption = format!(
        "{}: batch-1 latency on CPU (p50 bar, p95 tick)",
        a.model.name
    );
    let mut chart = bar_chart(&root, &caption, &names, max)?;
    chart
        .draw_series(a.figures.iter().enumerate().map(|(i, f)| {
            let color = if i == 0 {
                BLUE.mix(0.6)
            } else {
                GREEN.mix(0.7)
            };
            Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), f.latency_b1.p50_ms),
                ],
                color.filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(a.figures.iter().enumerate().map(|(i, f)| {
            PathElement::new(
                vec![
                    (SegmentValue::Exact(i), f.latency_b1.p95_ms),
                    (SegmentValue::Exact(i + 1), f.latency_b1.p95_ms),
                ],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

type BarChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize>,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// A chart of one bar per name, in ms from 0 to `max`, its mesh drawn.
fn bar_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    names: &[String],
    max: f64,
) -> Result<BarChart<'a, 'b>, String> {
    // A segmented range holds one segment per value, its end included.
    let last = names.len().saturating_sub(1);
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("ms")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

fn layer_plot(
    a: &Artifact,
    layers: &[LayerSensitivity],
    title: &str,
    path: &Path,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let v: Vec<f64> = layers.iter().map(|s| s.fidelity).collect();
    let lo = v.iter().copied().fold(1.0f64, f64::min);
    let lo = (lo - (1.0 - lo) * 0.1).clamp(0.0, 0.999);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0..v.len(), lo..1.0f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("unit (graph order)")
        .y_desc("fidelity (red: kept in float)")
        .draw()
        .map_err(|e| e.to_string())?;
    let excluded: std::collections::HashSet<&str> = a.excluded.iter().map(String::as_str).collect();
    chart
        .draw_series(layers.iter().enumerate().map(|(i, s)| {
            let color = if s.kept_in_float || excluded.contains(s.layer.as_str()) {
                RED.filled()
            } else {
                BLUE.mix(0.6).filled()
            };
            Rectangle::new([(i, lo), (i + 1, s.fidelity)], color)
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
