//! `report.md` and its SVG plots: what changed in accuracy and speed, for a person to look at.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::artifact::Artifact;
use super::figures::{Figures, LayerSensitivity};
use super::spec::OptimizeError;
use super::weights::WeightRange;

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

/// The report's sections, in the order it reads: what was made and from what, how it was
/// measured, the figures, then the details behind them.
const SECTIONS: &[fn(&mut String, &Artifact)] = &[
    section_header,
    section_calibration,
    section_weight_range,
    section_method,
    section_figures,
    section_score_ceiling,
    section_yardstick,
    section_latency_plot,
    section_per_class,
    section_kernels,
    section_comparison,
    section_excluded,
    section_rewrites,
    section_unknown_ops,
    section_layer_error,
    section_sensitivity,
    section_tensorrt,
];

pub fn markdown(a: &Artifact) -> String {
    let mut s = String::new();
    for section in SECTIONS {
        section(&mut s, a);
    }
    s
}

/// The title, and the source model the artifact was made from.
fn section_header(s: &mut String, a: &Artifact) {
    let _ = writeln!(s, "# {} → {} for {}\n", a.model.name, a.precision, a.target);
    let _ = writeln!(
        s,
        "Source `{}` (sha256 `{}`), written by {}.\n",
        a.source_model,
        &a.source_sha256[..16.min(a.source_sha256.len())],
        a.created_by
    );
}

fn section_calibration(s: &mut String, a: &Artifact) {
    let Some(c) = &a.calibration else {
        return;
    };
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

/// Which CPUs run the int8 weights as quantized.
fn section_weight_range(s: &mut String, a: &Artifact) {
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
}

/// How fidelity and speed were measured, and how to read the intervals when there are any.
fn section_method(s: &mut String, a: &Artifact) {
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
}

/// The table of fidelity, latency and size, one row per precision.
fn section_figures(s: &mut String, a: &Artifact) {
    let _ = writeln!(
        s,
        "| precision | agreement mAP50 | mean cosine | worst-frame cosine | verification AUC (fp32 → this) | p50 ms | p95 ms | speed-up | best batch: ms/image | size |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    // The first row is FP32, which the speed-ups are relative to.
    let base = a
        .figures
        .first()
        .map(|f| f.latency_b1.p50_ms)
        .unwrap_or(0.0);
    for f in &a.figures {
        figures_row(s, f, base);
    }
}

fn figures_row(s: &mut String, f: &Figures, base: f64) {
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

fn section_score_ceiling(s: &mut String, a: &Artifact) {
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
}

/// FP32 against a harmless change of its own input: the scale the figures are read on.
fn section_yardstick(s: &mut String, a: &Artifact) {
    let Some(y) = &a.yardstick else {
        return;
    };
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

fn section_latency_plot(s: &mut String, _: &Artifact) {
    let _ = writeln!(s, "\n![latency]({LATENCY_SVG})\n");
}

/// Detectors: agreement AP50 by class for each precision that has it.
fn section_per_class(s: &mut String, a: &Artifact) {
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
}

/// Detectors: the held-out frame where FP32's boxes and the artifact's differ most.
fn section_comparison(s: &mut String, a: &Artifact) {
    let Some(c) = &a.comparison else {
        return;
    };
    let p = a.precision;
    let _ = writeln!(
        s,
        "## Where they differ\n\nThe held-out frame where the boxes differ most, `{}`: {} \
         boxes of either model have no box of the same class at IoU ≥ 0.5 from the other.\n\n\
         | fp32 | {p} |\n|---|---|\n| ![fp32]({}) | ![{p}]({}) |\n",
        c.frame, c.disagreements, c.fp32, c.candidate
    );
}

/// The layers quantized, and those kept in float.
fn section_excluded(s: &mut String, a: &Artifact) {
    if a.quantized_layers == 0 && a.excluded.is_empty() {
        return;
    }
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

fn section_rewrites(s: &mut String, a: &Artifact) {
    if a.rewrites.is_empty() {
        return;
    }
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

fn section_unknown_ops(s: &mut String, a: &Artifact) {
    if a.unknown_ops.is_empty() {
        return;
    }
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

/// The nodes whose outputs stray furthest from FP32's, the whole model quantized.
fn section_layer_error(s: &mut String, a: &Artifact) {
    if a.layer_error.is_empty() {
        return;
    }
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

/// The units most sensitive alone, and which of them the accuracy search kept in float.
fn section_sensitivity(s: &mut String, a: &Artifact) {
    if a.sensitivity.is_empty() {
        return;
    }
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

fn section_tensorrt(s: &mut String, a: &Artifact) {
    if let Some(t) = &a.tensorrt {
        let _ = writeln!(
            s,
            "\nTensorRT engines (fp16 {}, int8 {}) are cached in `{}/`.",
            t.fp16, t.int8, t.engine_cache
        );
    }
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

/// The profiler's kernel time by op type, for each precision profiled.
fn section_kernels(s: &mut String, a: &Artifact) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::optimize::artifact::{CalibrationInfo, Comparison, TensorRtInfo};
    use crate::optimize::fidelity::{ClassAgreement, Fidelity, OpTime};
    use crate::optimize::figures::{Figures, LayerSensitivity};
    use crate::optimize::spec::{Precision, Target};
    use crate::stats::Percentiles;

    /// Set to regenerate the golden files from the current `markdown` instead of comparing.
    const BLESS: &str = "EDGESIGHT_BLESS";

    fn manifest(name: &str, family: &str) -> crate::models::Manifest {
        // Parsed from text rather than `Manifest::find`, so the test reads no manifest folder.
        toml::from_str(&format!(
            "name = \"{name}\"\nfamily = \"{family}\"\nfile = \"model.onnx\"\n"
        ))
        .expect("a minimal manifest parses")
    }

    fn ms(p50_ms: f64, p95_ms: f64) -> Percentiles {
        Percentiles {
            p50_ms,
            p95_ms,
            mean_ms: (p50_ms + p95_ms) / 2.0,
        }
    }

    fn ops(v: &[(&str, f64)]) -> Vec<OpTime> {
        v.iter()
            .map(|&(op, ms)| OpTime { op: op.into(), ms })
            .collect()
    }

    fn units(v: &[(&str, f64, bool)]) -> Vec<LayerSensitivity> {
        v.iter()
            .map(|&(layer, fidelity, kept_in_float)| LayerSensitivity {
                layer: layer.into(),
                fidelity,
                kept_in_float,
            })
            .collect()
    }

    fn class(label: &str, instances: usize, ap50: f64) -> ClassAgreement {
        ClassAgreement {
            label: label.into(),
            instances,
            ap50,
        }
    }

    fn fidelity(mean_cosine: f64, min_cosine: f64) -> Fidelity {
        Fidelity {
            mean_cosine,
            min_cosine,
            per_output_cosine: BTreeMap::new(),
            map50: None,
            per_class: Vec::new(),
            map50_interval: None,
            auc: None,
        }
    }

    /// The detector's rows: FP32, INT8 with every layer quantized, and INT8 as the search left it.
    fn detector_figures() -> Vec<Figures> {
        let fp32_kernels = ops(&[
            ("Conv", 9.5),
            ("Add", 1.25),
            ("Relu", 0.5),
            ("MaxPool", 0.75),
            ("Transpose", 0.4),
            ("Concat", 0.3),
            ("Sigmoid", 0.2),
            ("Resize", 0.6),
            ("TopK", 0.35),
            ("Mul", 0.15),
            ("Reshape", 0.05),
            ("Gather", 0.04),
            ("Slice", 0.03),
            ("Cast", 0.02),
            ("Unsqueeze", 0.01),
            ("Shape", 0.005),
        ]);
        let int8_kernels = ops(&[
            ("QLinearConv", 3.25),
            ("QuantizeLinear", 0.8),
            ("DequantizeLinear", 0.7),
            ("Add", 1.0),
            ("MaxPool", 0.5),
            ("ReorderInput", 0.45),
            ("ReorderOutput", 0.42),
            ("Transpose", 0.4),
            ("Resize", 0.55),
            ("TopK", 0.33),
            ("Concat", 0.25),
            ("Reshape", 0.06),
        ]);
        vec![
            Figures {
                precision: "fp32".into(),
                fidelity: None,
                latency_b1: ms(14.0, 16.5),
                best_batch: None,
                size_bytes: 9_800_000,
                kernels: fp32_kernels,
            },
            Figures {
                precision: "int8 (every layer)".into(),
                fidelity: Some(Fidelity {
                    map50: Some(0.81234),
                    map50_interval: Some((0.77, 0.85)),
                    ..fidelity(0.98765, 0.91234)
                }),
                latency_b1: ms(7.0, 8.25),
                best_batch: None,
                size_bytes: 2_600_000,
                kernels: Vec::new(),
            },
            Figures {
                precision: "int8".into(),
                fidelity: Some(Fidelity {
                    map50: Some(0.90125),
                    map50_interval: Some((0.87, 0.93)),
                    per_class: vec![
                        class("person", 310, 0.935),
                        class("car", 95, 0.88),
                        class("bus", 4, 0.5),
                    ],
                    ..fidelity(0.99512, 0.96021)
                }),
                latency_b1: ms(8.0, 9.5),
                best_batch: None,
                size_bytes: 2_700_000,
                kernels: int8_kernels,
            },
        ]
    }

    /// A CPU INT8 detector with every section of the report filled in: made-up figures, chosen
    /// so each branch of `markdown` that a detector reaches shows in the text.
    fn detector() -> Artifact {
        Artifact {
            precision: Precision::Int8,
            target: Target::Cpu,
            source_model: "models/cache/centernet-mobilenetv3.onnx".into(),
            source_sha256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .into(),
            heldout_dir: "heldout/street".into(),
            heldout_images: 120,
            quantized_layers: 57,
            excluded: vec!["head/hm/conv".into(), "head/wh/conv".into()],
            unknown_ops: BTreeMap::from([("NonMaxSuppression".into(), 1), ("TopK".into(), 2)]),
            rewrites: vec![
                "backbone/dw3: depthwise weights widened to a channel multiple of 8 (exact)".into(),
                "head/hm/mul: masked heatmap scores in uint8 on a grid of 1/255".into(),
            ],
            created_by: "edgesight 0.0.0-test".into(),
            calibration: Some(CalibrationInfo {
                method: "percentile:99.99".into(),
                dir: "calibration/street".into(),
                sha256: "fedcba9876543210fedcba9876543210".into(),
                images: 200,
                skipped: 3,
                cached: true,
            }),
            tensorrt: None,
            model: manifest("centernet", "centernet"),
            figures: detector_figures(),
            sensitivity: units(&[
                ("backbone/conv0", 0.9991, false),
                ("backbone/dw1", 0.9412, false),
                ("backbone/pw1", 0.9987, false),
                ("backbone/dw2", 0.9723, false),
                ("head/hm/conv", 0.8821, true),
                ("head/wh/conv", 0.9105, true),
                ("activation head/hm/logits", 0.9034, true),
                ("backbone/pw2", 0.9950, false),
                ("backbone/dw3", 0.9601, false),
                ("backbone/pw3", 0.9978, false),
                ("neck/up1", 0.9899, false),
                ("neck/up2", 0.9930, false),
            ]),
            layer_error: units(&[
                ("backbone/conv0", 0.99991, false),
                ("backbone/dw1", 0.99812, false),
                ("backbone/pw1", 0.99754, false),
                ("neck/up1", 0.99503, false),
                ("neck/up2", 0.99310, false),
                ("head/reg/conv", 0.98877, false),
                ("head/off/conv", 0.99120, false),
            ]),
            comparison: Some(Comparison {
                frame: "heldout/street/0042.jpg".into(),
                disagreements: 5,
                fp32: "compare-fp32.jpg".into(),
                candidate: "compare-int8.jpg".into(),
            }),
            yardstick: Some(Fidelity {
                map50: Some(0.93375),
                map50_interval: Some((0.91, 0.95)),
                per_class: vec![
                    class("person", 305, 0.95),
                    class("car", 97, 0.9),
                    class("bus", 4, 0.75),
                ],
                ..fidelity(0.99801, 0.98002)
            }),
            score_ceiling: Some(0.8765),
            weight_range: Some(WeightRange::Reduced),
        }
    }

    /// An embedder on TensorRT FP16: the branches a detector leaves out (no mAP, verification
    /// AUC, no calibration, a ceiling too high to show, the TensorRT engines, a dynamic batch).
    fn embedder() -> Artifact {
        let auc = |auc: (f64, f64), mean: f64, min: f64| Fidelity {
            auc: Some(auc),
            ..fidelity(mean, min)
        };
        Artifact {
            precision: Precision::Fp16,
            target: Target::Tensorrt,
            source_model: "models/cache/mobilefacenet.onnx".into(),
            source_sha256: "abc".into(),
            heldout_dir: "heldout/faces".into(),
            heldout_images: 64,
            quantized_layers: 0,
            excluded: Vec::new(),
            unknown_ops: BTreeMap::new(),
            rewrites: Vec::new(),
            created_by: "edgesight 0.0.0-test".into(),
            calibration: None,
            tensorrt: Some(TensorRtInfo {
                fp16: true,
                int8: false,
                engine_cache: "trt-cache".into(),
            }),
            model: manifest("mobilefacenet", "embedder"),
            figures: vec![
                Figures {
                    precision: "fp32".into(),
                    fidelity: None,
                    latency_b1: ms(2.5, 3.0),
                    best_batch: Some((8, ms(0.75, 0.8))),
                    size_bytes: 4_900_000,
                    kernels: Vec::new(),
                },
                Figures {
                    precision: "fp16".into(),
                    fidelity: Some(auc((0.9912, 0.9908), 0.99993, 0.99971)),
                    latency_b1: ms(1.25, 1.5),
                    best_batch: Some((16, ms(0.25, 0.3))),
                    size_bytes: 2_450_000,
                    kernels: Vec::new(),
                },
            ],
            sensitivity: Vec::new(),
            layer_error: Vec::new(),
            comparison: None,
            yardstick: Some(auc((0.9912, 0.9899), 0.99950, 0.99500)),
            score_ceiling: Some(0.995),
            weight_range: None,
        }
    }

    /// Compares `text` with the golden file `name`, or writes it there under `EDGESIGHT_BLESS=1`.
    fn golden(name: &str, text: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var(BLESS).is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (write it with {BLESS}=1)", path.display()));
        if want == text {
            return;
        }
        let (mut w, mut g) = (want.split('\n'), text.split('\n'));
        for line in 1.. {
            match (w.next(), g.next()) {
                (Some(x), Some(y)) if x == y => continue,
                (x, y) => panic!(
                    "{} differs at line {line}:\n  golden: {x:?}\n  now:    {y:?}\n\
                     (if the change is meant, regenerate with {BLESS}=1)",
                    path.display()
                ),
            }
        }
    }

    #[test]
    fn markdown_matches_golden_detector() {
        golden("report.md", &markdown(&detector()));
    }

    #[test]
    fn markdown_matches_golden_embedder() {
        golden("report-embedder.md", &markdown(&embedder()));
    }
}
