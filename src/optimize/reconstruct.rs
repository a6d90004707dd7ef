//! Convolution weights fitted to what the int8 model really feeds them (`--reconstruct`).
//!
//! Round-to-nearest weights with bias correction ([`super::qdq`]) make each layer as close to
//! its float self as the grid allows *on float inputs*. But the int8 model's layers read
//! inputs that upstream rounding has already moved. For each convolution this fits, on the
//! calibration images, the int8 weights and the bias that bring its output on the quantized
//! model's input `x̃` closest to the float layer's output on the float input `x`:
//!
//! `min Σ ‖Ŵ x̃ + b̂ − (W x + b)‖²` over int8 `Ŵ` on a per-channel grid.
//!
//! The unconstrained optimum is a least-squares fit, `[W b]·C·H̃⁻¹` with `H̃ = Σ x̃ x̃ᵀ` and
//! `C = Σ x x̃ᵀ` over the layer's input patches (a trailing 1 carries the bias). Rounding it to
//! the grid is GPTQ's problem (Frantar et al., 2023, after Optimal Brain Quantization): one
//! weight at a time, each rounding error spread over the weights not yet rounded, in the
//! proportions `H̃⁻¹` gives. The bias comes last and is never rounded (int32), so it takes what
//! is left: a bias correction that sees the quantized inputs. Everything is closed form over
//! the Gram matrices; nothing needs gradients.
//!
//! Layers are fitted one at a time, in graph order, each on the inputs its already-fitted
//! predecessors give it ([`fit`]). Half the calibration images fit, the other half check: a
//! fit is kept only where it beats round-to-nearest (with its best bias) on the check half.
//!
//! ```
//! use edgesight::optimize::reconstruct::{gptq, Gram};
//! // The int8 model feeds this layer its first input 0.05 too high: the fit takes the
//! // weight's share of that, 1.0 * 0.05, back out of the bias.
//! let mut rng = fastrand::Rng::with_seed(3);
//! let mut g = Gram::new(3);
//! for _ in 0..2000 {
//!     let (a, b) = (rng.f64(), rng.f64());
//!     g.add(&[a, b, 1.0], &[a + 0.05, b, 1.0]);
//! }
//! let fit = gptq(&g, &[1.0, 0.5, 0.0], 1, 1e-6, 127.0).unwrap(); // two weights, then the bias
//! assert!((fit.w[2] + 0.05).abs() < 0.01, "bias {}", fit.w[2]);
//! ```

use std::collections::HashMap;
use std::path::Path;

use ndarray::{s, Array2, ArrayView3, ArrayViewD};

use super::spec::OptimizeError;
use super::weights::{is_depthwise, Preset, Presets, WeightRange};
use crate::engine::{Engine, EngineConfig};
use crate::onnx::graph::{node_label, with_extra_outputs};
use crate::onnx::{self, pb, Model};
use crate::tensor::Tensor;

/// The Gram matrices of one group of a layer's input patches, each with a trailing 1.
#[derive(Debug, Clone)]
pub struct Gram {
    d: usize,
    /// Σ x̃ x̃ᵀ: quantized patches.
    hq: Array2<f64>,
    /// Σ x x̃ᵀ: float patch times quantized patch.
    c: Array2<f64>,
    /// Σ x xᵀ: the float patches, for the error relative to the float output.
    hf: Array2<f64>,
}

impl Gram {
    pub fn new(d: usize) -> Self {
        let z = || Array2::zeros((d, d));
        Self {
            d,
            hq: z(),
            c: z(),
            hf: z(),
        }
    }

    /// One patch pair: the float input `x` and the quantized one `xq`.
    pub fn add(&mut self, x: &[f64], xq: &[f64]) {
        let a = ndarray::ArrayView2::from_shape((1, self.d), x).expect("patch length");
        let b = ndarray::ArrayView2::from_shape((1, self.d), xq).expect("patch length");
        self.add_rows(a, b);
    }

    /// Patches seen: the trailing 1s summed.
    pub fn samples(&self) -> f64 {
        self.hq[[self.d - 1, self.d - 1]]
    }

    /// Many patch pairs at once, one per row.
    fn add_rows(&mut self, x: ndarray::ArrayView2<f64>, xq: ndarray::ArrayView2<f64>) {
        use ndarray::linalg::general_mat_mul;
        general_mat_mul(1.0, &xq.t(), &xq, 1.0, &mut self.hq);
        general_mat_mul(1.0, &x.t(), &xq, 1.0, &mut self.c);
        general_mat_mul(1.0, &x.t(), &x, 1.0, &mut self.hf);
    }
}

/// One group's fit: its weights, and the squared output error against the float layer (on
/// the calibration patches) of the fit and of round-to-nearest, each relative to the float
/// output's energy.
#[derive(Debug, Clone)]
pub struct Fit {
    /// Rows of `d` values: `d − 1` weights on the grid, then the bias.
    pub w: Vec<f64>,
    /// Round-to-nearest's rows, with their best bias.
    pub rtn: Vec<f64>,
    pub q: Vec<i8>,
    pub scales: Vec<f64>,
    pub error: f64,
    pub rtn_error: f64,
}

/// Fits `rows` output channels whose float weights and bias are `w` (rows of `d`, the bias
/// last) to the quantized inputs `g` saw. `damp` (a share of the mean diagonal) keeps `H̃`
/// invertible where inputs are constant or copies of each other. Each channel's largest weight
/// lands on `qmax`, as `quantize` would round it ([`WeightRange`]). `None` when even the
/// damped `H̃` is not positive definite.
pub fn gptq(g: &Gram, w: &[f64], rows: usize, damp: f64, qmax: f64) -> Option<Fit> {
    let d = g.d;
    assert_eq!(w.len(), rows * d, "weights and Gram disagree");
    let mean_diag = (0..d).map(|i| g.hq[[i, i]]).sum::<f64>() / d as f64;
    let damped = |share: f64| {
        let mut h = g.hq.clone();
        for i in 0..d {
            // A column that never varies (a zero channel) gets damping alone, and so the
            // weight it had.
            h[[i, i]] += share * mean_diag.max(1e-12);
        }
        spd_inverse(&h)
    };
    let w0 = Array2::from_shape_vec((rows, d), w.to_vec()).ok()?;
    // The least-squares optimum on the quantized inputs, `W·C·H̃⁻¹`, written as the float
    // weights plus a correction, `W + W·(C − H̃)·H̃⁻¹`, so that damping shrinks only the
    // correction: an image's neighbouring pixels make `H̃` so ill-conditioned (CenterNet's
    // stem) that damping the whole product moved weights a long way where the inputs had not
    // moved at all (docs/optimize-findings.md).
    let target = &w0 + &w0.dot(&(&g.c - &g.hq)).dot(&damped(TARGET_DAMP)?);
    // GPTQ walks the upper Cholesky factor of the damped H̃⁻¹.
    let u = cholesky_lower(&damped(damp)?)?.reversed_axes();
    let grid = |row: ndarray::ArrayView1<f64>| -> f64 {
        let m = row
            .slice(s![..d - 1])
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        if m > 0.0 {
            m / qmax
        } else {
            1.0
        }
    };
    let scales: Vec<f64> = target.rows().into_iter().map(grid).collect();
    let mut fit = target.clone();
    let mut q = vec![0i8; rows * (d - 1)];
    for i in 0..d - 1 {
        for r in 0..rows {
            let v = fit[[r, i]];
            let qi = (v / scales[r]).round().clamp(-qmax, qmax);
            q[r * (d - 1) + i] = qi as i8;
            let err = (v - qi * scales[r]) / u[[i, i]];
            fit[[r, i]] = qi * scales[r];
            for j in i + 1..d {
                fit[[r, j]] -= err * u[[i, j]];
            }
        }
    }
    // The baseline: round-to-nearest of the float weights, with the bias that suits them
    // best on these inputs (what bias correction aims at).
    let rtn_scales: Vec<f64> = w0.rows().into_iter().map(grid).collect();
    let mut rtn = w0.clone();
    let wc = w0.dot(&g.c);
    let one = d - 1;
    for r in 0..rows {
        for i in 0..one {
            rtn[[r, i]] = (w0[[r, i]] / rtn_scales[r]).round().clamp(-qmax, qmax) * rtn_scales[r];
        }
        if g.hq[[one, one]] > 0.0 {
            let spent: f64 = (0..one).map(|i| rtn[[r, i]] * g.hq[[i, one]]).sum();
            rtn[[r, one]] = (wc[[r, one]] - spent) / g.hq[[one, one]];
        }
    }
    Some(Fit {
        error: relative_error(g, &w0, &fit),
        rtn_error: relative_error(g, &w0, &rtn),
        w: fit.into_raw_vec_and_offset().0,
        rtn: rtn.into_raw_vec_and_offset().0,
        q,
        scales,
    })
}

/// `Σ‖Ŵx̃ − Wx‖²` over the patches of `g`, relative to the float output's `Σ‖Wx‖²`, for float
/// weights `w` and candidate `m` (rows with the bias last).
pub fn relative_error(g: &Gram, w: &Array2<f64>, m: &Array2<f64>) -> f64 {
    let energy = w
        .rows()
        .into_iter()
        .map(|r| quad(&g.hf, r, r))
        .sum::<f64>()
        .max(1e-30);
    // ŴH̃Ŵᵀ − 2ŴCᵀWᵀ + WH_fWᵀ, row by row.
    w.rows()
        .into_iter()
        .zip(m.rows())
        .map(|(b, a)| quad(&g.hq, a, a) - 2.0 * quad(&g.c, b, a) + quad(&g.hf, b, b))
        .sum::<f64>()
        .max(0.0)
        / energy
}

/// `aᵀ M b`.
fn quad(m: &Array2<f64>, a: ndarray::ArrayView1<f64>, b: ndarray::ArrayView1<f64>) -> f64 {
    a.dot(&m.dot(&b))
}

/// The lower Cholesky factor of a symmetric positive definite matrix.
fn cholesky_lower(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= l[[j, k]] * l[[j, k]];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[[j, j]] = d;
        for i in j + 1..n {
            let mut v = a[[i, j]];
            for k in 0..j {
                v -= l[[i, k]] * l[[j, k]];
            }
            l[[i, j]] = v / d;
        }
    }
    Some(l)
}

/// The inverse of a symmetric positive definite matrix, through its Cholesky factor.
fn spd_inverse(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let l = cholesky_lower(a)?;
    // L⁻¹ by forward substitution, then A⁻¹ = L⁻ᵀ L⁻¹.
    let mut li = Array2::<f64>::zeros((n, n));
    for c in 0..n {
        for i in c..n {
            let mut v = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                v -= l[[i, k]] * li[[k, c]];
            }
            li[[i, c]] = v / l[[i, i]];
        }
    }
    Some(li.t().dot(&li))
}

/// Where a convolution reads its input: enough to lay out its patches.
#[derive(Debug, Clone)]
struct Geometry {
    channels: usize,
    group: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Top and left padding.
    pad: [usize; 2],
    out: [usize; 2],
}

impl Geometry {
    fn of(n: &pb::NodeProto, w_dims: &[i64], input: [usize; 3]) -> Option<Self> {
        if w_dims.len() != 4 {
            return None;
        }
        let ints = |name: &str| -> Option<Vec<i64>> {
            n.attribute
                .iter()
                .find(|a| a.name() == name)
                .map(|a| a.ints.clone())
        };
        let two = |name: &str| -> Option<[usize; 2]> {
            match ints(name) {
                Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => {
                    Some([v[0] as usize, v[1] as usize])
                }
                Some(_) => None,
                None => Some([1, 1]),
            }
        };
        let [c, h, w] = input;
        let group = onnx::get_attr_int(n, "group").unwrap_or(1).max(1) as usize;
        let kernel = [w_dims[2] as usize, w_dims[3] as usize];
        let (stride, dilation) = (two("strides")?, two("dilations")?);
        let auto_pad = n
            .attribute
            .iter()
            .find(|a| a.name() == "auto_pad")
            .map(|a| String::from_utf8_lossy(a.s()).to_string())
            .unwrap_or_default();
        let span = |i: usize| dilation[i] * (kernel[i] - 1) + 1;
        let size = [h, w];
        let (pad, out) = match auto_pad.as_str() {
            "" | "NOTSET" => {
                let p = ints("pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 || p.iter().any(|&x| x < 0) {
                    return None;
                }
                let o = |i: usize| {
                    (size[i] + p[i] as usize + p[i + 2] as usize)
                        .checked_sub(span(i))
                        .map(|v| v / stride[i] + 1)
                };
                ([p[0] as usize, p[1] as usize], [o(0)?, o(1)?])
            }
            "VALID" => {
                let o = |i: usize| size[i].checked_sub(span(i)).map(|v| v / stride[i] + 1);
                ([0, 0], [o(0)?, o(1)?])
            }
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = |i: usize| size[i].div_ceil(stride[i]);
                let total = |i: usize| ((o(i) - 1) * stride[i] + span(i)).saturating_sub(size[i]);
                let before = |i: usize| {
                    if auto_pad == "SAME_UPPER" {
                        total(i) / 2
                    } else {
                        total(i).div_ceil(2)
                    }
                };
                ([before(0), before(1)], [o(0), o(1)])
            }
            _ => return None,
        };
        let cg = w_dims[1] as usize;
        (c == cg * group && (w_dims[0] as usize).is_multiple_of(group)).then_some(Self {
            channels: c,
            group,
            kernel,
            stride,
            dilation,
            pad,
            out,
        })
    }

    /// Patch length of one group, with the trailing 1.
    fn d(&self) -> usize {
        self.channels / self.group * self.kernel[0] * self.kernel[1] + 1
    }

    fn positions(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Rows `[from, to)` of group `gi`'s patch matrix, in the weight's `[cin, kh, kw]` order.
    fn patches(&self, x: &ArrayView3<f32>, gi: usize, from: usize, to: usize) -> Array2<f64> {
        let d = self.d();
        let cg = self.channels / self.group;
        let (h, w) = (x.shape()[1] as isize, x.shape()[2] as isize);
        let mut m = Array2::<f64>::zeros((to - from, d));
        for (r, pos) in (from..to).enumerate() {
            let (oy, ox) = (pos / self.out[1], pos % self.out[1]);
            let mut row = m.row_mut(r);
            let mut k = 0;
            for ci in gi * cg..(gi + 1) * cg {
                let plane = x.index_axis(ndarray::Axis(0), ci);
                for ky in 0..self.kernel[0] {
                    let y = (oy * self.stride[0] + ky * self.dilation[0]) as isize
                        - self.pad[0] as isize;
                    for kx in 0..self.kernel[1] {
                        let xx = (ox * self.stride[1] + kx * self.dilation[1]) as isize
                            - self.pad[1] as isize;
                        if (0..h).contains(&y) && (0..w).contains(&xx) {
                            row[k] = f64::from(plane[[y as usize, xx as usize]]);
                        }
                        k += 1;
                    }
                }
            }
            row[d - 1] = 1.0;
        }
        m
    }
}

/// One convolution to fit: where its inputs are, its float weights and bias.
struct Layer {
    node: pb::NodeProto,
    label: String,
    float_input: String,
    quant_input: String,
    weight_dims: Vec<i64>,
    weights: Vec<f32>,
    bias: Vec<f32>,
    geometry: Option<Geometry>,
    /// Per group: the patches the fit is made on, and those it is checked on.
    grams: Vec<Gram>,
    check: Vec<Gram>,
}

/// What the fit did to one layer, for the report.
#[derive(Debug, Clone)]
pub struct LayerFit {
    pub layer: String,
    /// Output error relative to the float layer on the check images (the calibration images
    /// the fit did not see), with round-to-nearest and with the fit.
    pub rtn_error: f64,
    pub error: f64,
    /// The fit was kept: it beat round-to-nearest with its best bias.
    pub kept: bool,
    /// Why the layer was left rounded to nearest before any fit was tried (its errors are
    /// then NaN).
    pub rounded: Option<Rounded>,
}

impl LayerFit {
    /// A layer left rounded to nearest, for `why`, with no fit tried.
    fn rounded(layer: String, why: Rounded) -> Self {
        Self {
            layer,
            rtn_error: f64::NAN,
            error: f64::NAN,
            kept: false,
            rounded: Some(why),
        }
    }
}

/// Why a layer gets no fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounded {
    /// It writes a graph output that a decoder judges: see [`fit`]'s `round_outputs`.
    WritesOutput,
    /// Its calibration images give fewer than [`MIN_PATCHES_PER_WEIGHT`] patches per weight.
    FewPatches,
}

/// One line for the artifact's rewrites: how many of the convolutions that run in int8 got
/// fitted weights, and their output error before and after (median over those layers);
/// `None` when the reconstruction fitted none of them.
pub fn summary(fits: &[LayerFit], quantized: &[String]) -> Option<String> {
    let kept: Vec<&LayerFit> = fits
        .iter()
        .filter(|f| f.kept && quantized.contains(&f.layer))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut before: Vec<f64> = kept.iter().map(|f| f.rtn_error).collect();
    let mut after: Vec<f64> = kept.iter().map(|f| f.error).collect();
    let int8 = |f: &&LayerFit| quantized.contains(&f.layer);
    let count = |r: Option<Rounded>| fits.iter().filter(int8).filter(|f| f.rounded == r).count();
    let tried = fits.iter().filter(int8).count() - count(Some(Rounded::WritesOutput));
    let mut left = String::new();
    if let n @ 1.. = count(Some(Rounded::FewPatches)) {
        left += &format!("; {n} with too few patches per weight for a fit left rounded");
    }
    if let n @ 1.. = count(Some(Rounded::WritesOutput)) {
        left += &format!(
            "; the {n} that write the graph's outputs left rounded (what decodes them judges \
             them, not a squared error)"
        );
    }
    Some(format!(
        "reconstruction: {} of {tried} int8 convolutions with weights and bias fitted to their \
         int8 inputs (GPTQ on the calibration images); median output error {:.2e} → {:.2e} of \
         the float layer's{left}",
        kept.len(),
        median(&mut before),
        median(&mut after)
    ))
}

/// Patch rows per Gram update: bounds the memory of the largest layers.
const CHUNK: usize = 2048;
/// The least-squares correction's damping, as a share of the mean diagonal of `H̃`: on
/// CenterNet's layers it keeps nearly all of the undamped correction's gain with weights that
/// move far less (docs/optimize-findings.md).
const TARGET_DAMP: f64 = 1e-2;
/// GPTQ's damping, as a share of the mean diagonal of `H̃` (the paper's 1%).
const DAMP: f64 = 0.01;
/// Fewer patches than this per weight of an output channel, and a fit follows the few images
/// it saw: BlazeFace's one 1×1 layer on an 8×8 map passed the check half's squared error, yet
/// turned one face's best anchor from a detection into a miss. Such layers (wide ones on small
/// maps) are left rounded; what that does to BlazeFace and CenterNet is in
/// docs/optimize-findings.md.
const MIN_PATCHES_PER_WEIGHT: f64 = 4.0;

/// Presets for every quantized convolution that a fit improves, layer by layer in graph
/// order. `float` is the graph [`super::qdq::quantize`] quantizes, after its own layout changes
/// ([`super::qdq::layout_for`]), so that node names, weights and channel counts line up;
/// `quantize_with` gives the int8 model with the presets so far, its weights on `range`'s
/// grid, which the fits keep to. Each layer is fitted to the
/// inputs its already-fitted predecessors give it: fitted all at once on round-to-nearest
/// inputs, every layer also cancels upstream error that upstream layers had cancelled
/// themselves, and CenterNet's heatmap fell apart (agreement mAP50 0.55 → 0.00).
///
/// With `round_outputs`, a convolution that writes a graph output (directly or through
/// shape-only ops) is left rounded to nearest: a decoder that thresholds its values judges
/// it, and a squared error over every position misjudges that. BlazeFace's score logits run
/// from +3 down to −6556; fitted, the background's huge negatives took the whole fit, the
/// faces' logits near zero came out as noise of ±30, and agreement fell 0.98 → 0.07 while the
/// outputs' cosine with FP32 rose. An embedder's output is judged by its cosine, which a
/// squared error does follow: there it is fitted.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    float: &Model,
    quantize_with: &dyn Fn(&Presets) -> Result<Model, OptimizeError>,
    range: WeightRange,
    round_outputs: bool,
    inputs: &[Tensor],
    engine: &EngineConfig,
    scratch: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<(Presets, Vec<LayerFit>), OptimizeError> {
    let mut presets = Presets::new();
    let mut fits = Vec::new();
    let fg = float.graph();
    let inits: HashMap<&str, &pb::TensorProto> =
        fg.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut quantized = quantize_with(&presets)?;
    let readers = onnx::Readers::of(fg);
    let candidates: Vec<&pb::NodeProto> =
        fg.node.iter().filter(|n| n.op_type() == "Conv").collect();
    for (k, n) in candidates.iter().enumerate() {
        progress(k as u64, candidates.len() as u64);
        let Some(mut layer) = layer_of(n, &inits, &quantized) else {
            continue;
        };
        if round_outputs && n.output.iter().any(|o| readers.reaches_output(fg, o)) {
            fits.push(LayerFit::rounded(layer.label, Rounded::WritesOutput));
            continue;
        }
        let load = |m: &Model, t: &str, tag: &str| -> Result<Engine, OptimizeError> {
            let path = scratch.join(format!("reconstruct-{tag}.onnx"));
            with_extra_outputs(m, &[t.to_string()]).save(&path)?;
            let e = Engine::load(&path, engine)?;
            let _ = std::fs::remove_file(&path);
            Ok(e)
        };
        let mut fe = load(float, &layer.float_input, "float")?;
        let mut qe = load(&quantized, &layer.quant_input, "int8")?;
        let fitting_images = inputs.len().div_ceil(2) as f64;
        for (i, t) in inputs.iter().enumerate() {
            // One image tells how many patches the rest will bring: too few, and no fit.
            if i == 1
                && !enough_patches(
                    &layer,
                    layer.grams.first().map_or(0.0, |g| g.samples()) * fitting_images,
                )
            {
                break;
            }
            let pick = |outs: Vec<crate::tensor::Output>, name: &str| {
                outs.into_iter().find(|o| o.name == name).map(|o| o.data)
            };
            let x = pick(fe.run(t)?, &layer.float_input);
            let xq = pick(qe.run(t)?, &layer.quant_input);
            if let (Some(x), Some(xq)) = (x, xq) {
                // Every other image checks the fit instead: judged on the images it was made
                // on, a fit always looks better than rounding.
                accumulate(&mut layer, x.view(), xq.view(), i % 2 == 1);
            }
        }
        let enough = layer
            .grams
            .first()
            .is_some_and(|g| enough_patches(&layer, g.samples()));
        if !enough {
            if layer.geometry.is_some() {
                fits.push(LayerFit::rounded(layer.label, Rounded::FewPatches));
            }
            continue;
        }
        let Some((preset, lf)) = fit_layer(&layer, range) else {
            continue;
        };
        tracing::debug!(layer = %lf.layer, rtn = lf.rtn_error, fit = lf.error, kept = lf.kept, "reconstruction");
        if lf.kept {
            presets.insert(layer.label.clone(), preset);
            // Only a kept fit changes what the layers after it read.
            quantized = quantize_with(&presets)?;
        }
        fits.push(lf);
    }
    progress(candidates.len() as u64, candidates.len() as u64);
    Ok((presets, fits))
}

/// The fitting problem of Conv `n`, when `quantized` runs it in int8: both its input and its
/// weight come out of a DequantizeLinear there.
fn layer_of(
    n: &pb::NodeProto,
    inits: &HashMap<&str, &pb::TensorProto>,
    quantized: &Model,
) -> Option<Layer> {
    let qg = quantized.graph();
    let qn = qg
        .node
        .iter()
        .find(|q| !n.name().is_empty() && q.name() == n.name())?;
    let producer = onnx::producers(qg);
    let dequantized = |t: &str| {
        producer
            .get(t)
            .is_some_and(|&p| qg.node[p].op_type() == "DequantizeLinear")
    };
    if qn.input.len() < 2 || !dequantized(&qn.input[0]) || !dequantized(&qn.input[1]) {
        return None;
    }
    let w = inits.get(n.input.get(1)?.as_str())?;
    let weights = onnx::tensor_f32(w)?;
    let m = *w.dims.first()? as usize;
    let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => Some(onnx::tensor_f32(inits.get(b.as_str())?)?).filter(|v| v.len() == m)?,
        None => vec![0.0; m],
    };
    Some(Layer {
        node: n.clone(),
        label: node_label(n),
        float_input: n.input[0].clone(),
        quant_input: qn.input[0].clone(),
        weight_dims: w.dims.clone(),
        weights,
        bias,
        geometry: None,
        grams: Vec::new(),
        check: Vec::new(),
    })
}

/// Adds one image's patches of `l` to its Grams (the fit's, or the check's); a shape the
/// layer cannot read is skipped.
fn accumulate(l: &mut Layer, x: ArrayViewD<f32>, xq: ArrayViewD<f32>, check: bool) {
    if x.shape() != xq.shape() || x.ndim() != 4 {
        return;
    }
    let s = x.shape();
    let input = [s[1], s[2], s[3]];
    if l.geometry.is_none() {
        l.geometry = Geometry::of(&l.node, &l.weight_dims, input);
    }
    let Some(geo) = l.geometry.clone() else {
        return;
    };
    if l.grams.is_empty() {
        l.grams = vec![Gram::new(geo.d()); geo.group];
        l.check = l.grams.clone();
    }
    let grams = if check { &mut l.check } else { &mut l.grams };
    for b in 0..s[0] {
        let (xb, qb) = (
            x.index_axis(ndarray::Axis(0), b),
            xq.index_axis(ndarray::Axis(0), b),
        );
        let (Ok(xb), Ok(qb)) = (
            xb.into_dimensionality::<ndarray::Ix3>(),
            qb.into_dimensionality::<ndarray::Ix3>(),
        ) else {
            return;
        };
        for (gi, gram) in grams.iter_mut().enumerate() {
            let mut from = 0;
            while from < geo.positions() {
                let to = (from + CHUNK).min(geo.positions());
                let (pf, pq) = (
                    geo.patches(&xb, gi, from, to),
                    geo.patches(&qb, gi, from, to),
                );
                gram.add_rows(pf.view(), pq.view());
                from = to;
            }
        }
    }
}

/// Whether `patches` per group are enough to fit `l`'s weights on.
fn enough_patches(l: &Layer, patches: f64) -> bool {
    l.geometry
        .as_ref()
        .is_some_and(|g| patches >= MIN_PATCHES_PER_WEIGHT * g.d() as f64)
}

/// The preset of one layer, group by group, and how it compares with round-to-nearest.
fn fit_layer(l: &Layer, range: WeightRange) -> Option<(Preset, LayerFit)> {
    let geo = l.geometry.as_ref()?;
    let m = l.weight_dims[0] as usize;
    let per_group = m / geo.group;
    let d = geo.d();
    // The grid `quantize` would round this layer to: the fit replaces that rounding.
    let qmax = f64::from(range.qmax(is_depthwise(&l.node, &l.weight_dims)));
    let mut q = vec![0i8; l.weights.len()];
    let mut scales = vec![0f32; m];
    let mut bias = vec![0f32; m];
    let (mut err, mut rtn) = (0.0, 0.0);
    for (gi, gram) in l.grams.iter().enumerate() {
        let rows = gi * per_group..(gi + 1) * per_group;
        let w: Vec<f64> = rows
            .clone()
            .flat_map(|o| {
                l.weights[o * (d - 1)..(o + 1) * (d - 1)]
                    .iter()
                    .map(|&v| f64::from(v))
                    .chain(std::iter::once(f64::from(l.bias[o])))
            })
            .collect();
        let f = gptq(gram, &w, per_group, DAMP, qmax)?;
        for (r, o) in rows.enumerate() {
            q[o * (d - 1)..(o + 1) * (d - 1)].copy_from_slice(&f.q[r * (d - 1)..(r + 1) * (d - 1)]);
            scales[o] = f.scales[r] as f32;
            bias[o] = f.w[r * d + d - 1] as f32;
        }
        // Judged on the check images where there are some. Each group's share of the
        // layer's error weighs alike: groups of one layer see inputs of one scale.
        let (e, r) = match l.check.get(gi).filter(|c| c.samples() > 0.0) {
            Some(c) => {
                let shape = (per_group, d);
                let m = |v: &[f64]| Array2::from_shape_vec(shape, v.to_vec()).ok();
                let (w0, fw, rw) = (m(&w)?, m(&f.w)?, m(&f.rtn)?);
                (relative_error(c, &w0, &fw), relative_error(c, &w0, &rw))
            }
            None => (f.error, f.rtn_error),
        };
        err += e / l.grams.len() as f64;
        rtn += r / l.grams.len() as f64;
    }
    let kept = err < rtn && bias.iter().all(|b| b.is_finite());
    Some((
        Preset { q, scales, bias },
        LayerFit {
            layer: l.label.clone(),
            rtn_error: rtn,
            error: err,
            kept,
            rounded: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_inverse_by_hand() {
        let a = ndarray::arr2(&[[4.0, 2.0], [2.0, 3.0]]);
        let inv = spd_inverse(&a).unwrap();
        // [[3, -2], [-2, 4]] / 8
        let want = ndarray::arr2(&[[0.375, -0.25], [-0.25, 0.5]]);
        assert!((inv - want).iter().all(|v| v.abs() < 1e-12));
        assert!(cholesky_lower(&ndarray::arr2(&[[1.0, 2.0], [2.0, 1.0]])).is_none());
    }

    /// Correlated inputs, float weights between grid points: the fit's output error is below
    /// round-to-nearest's, and its weights lie on its grid.
    #[test]
    fn fit_beats_rounding_on_correlated_inputs() {
        let mut rng = fastrand::Rng::with_seed(7);
        let d = 9;
        let mut g = Gram::new(d);
        for _ in 0..4000 {
            let base = rng.f64() * 2.0 - 1.0;
            let x: Vec<f64> = (0..d - 1)
                .map(|_| base + 0.3 * (rng.f64() - 0.5))
                .chain([1.0])
                .collect();
            g.add(&x, &x);
        }
        let rows = 4;
        let w: Vec<f64> = (0..rows * d)
            .map(|i| if i % d == d - 1 { 0.1 } else { rng.f64() - 0.5 })
            .collect();
        let f = gptq(&g, &w, rows, 0.01, 127.0).unwrap();
        assert!(
            f.error < 0.5 * f.rtn_error,
            "{} vs {}",
            f.error,
            f.rtn_error
        );
        for r in 0..rows {
            for i in 0..d - 1 {
                let on_grid = f.q[r * (d - 1) + i] as f64 * f.scales[r];
                assert!((f.w[r * d + i] - on_grid).abs() < 1e-12);
            }
        }
    }

    /// Inputs the int8 model shifted by a constant: the float optimum moves the bias back.
    #[test]
    fn a_shifted_input_moves_the_bias() {
        let d = 3;
        let mut g = Gram::new(d);
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..2000 {
            let (a, b) = (rng.f64(), rng.f64());
            g.add(&[a, b, 1.0], &[a + 0.05, b, 1.0]);
        }
        let w = vec![1.0, 0.5, 0.0];
        let f = gptq(&g, &w, 1, 1e-6, 127.0).unwrap();
        // 1.0 · 0.05 comes off the bias.
        assert!((f.w[2] + 0.05).abs() < 0.01, "bias {}", f.w[2]);
        // Round-to-nearest's best bias takes the same shift back, undamped: the fit is no
        // better, and within a factor of two.
        assert!(f.error <= f.rtn_error * 2.0, "{} {}", f.error, f.rtn_error);
    }

    /// Fewer patches than [`MIN_PATCHES_PER_WEIGHT`] per weight are not enough for a fit,
    /// though its fit beats rounding on the patches it saw; more are.
    #[test]
    fn too_few_patches_per_weight_are_not_enough() {
        let layer = |patches: usize| {
            let mut rng = fastrand::Rng::with_seed(11);
            let d = 9;
            let mut g = Gram::new(d);
            for _ in 0..patches {
                let base = rng.f64() * 2.0 - 1.0;
                let x: Vec<f64> = (0..d - 1)
                    .map(|_| base + 0.3 * (rng.f64() - 0.5))
                    .chain([1.0])
                    .collect();
                let xq: Vec<f64> = x.iter().map(|v| v + 0.02 * (rng.f64() - 0.5)).collect();
                g.add(&x, &xq);
            }
            let node = onnx::node("Conv", "c", &["x", "w"], &["y"], vec![]);
            Layer {
                geometry: Geometry::of(&node, &[2, 8, 1, 1], [8, 4, 4]),
                node,
                label: "c".into(),
                float_input: "x".into(),
                quant_input: "x".into(),
                weight_dims: vec![2, 8, 1, 1],
                weights: (0..16).map(|_| rng.f32() - 0.5).collect(),
                bias: vec![0.1, -0.1],
                grams: vec![g],
                check: Vec::new(),
            }
        };
        // On its own patches the fit looks better than rounding: only their count stops it.
        let (few, many) = (layer(30), layer(400));
        let (_, fit) = fit_layer(&few, WeightRange::Full).unwrap();
        assert!(fit.kept && fit.error < fit.rtn_error, "{fit:?}");
        assert!(!enough_patches(&few, few.grams[0].samples()));
        assert!(enough_patches(&many, many.grams[0].samples()));
    }

    #[test]
    fn patches_follow_the_weight_layout_and_padding() {
        // 2 channels of 3x3, a 2x2 kernel, stride 1, one pixel of padding top and left.
        let x = ndarray::Array3::from_shape_fn((2, 3, 3), |(c, y, x)| (c * 9 + y * 3 + x) as f32);
        let n = onnx::node(
            "Conv",
            "c",
            &[],
            &[],
            vec![onnx::attr_ints("pads", &[1, 1, 0, 0])],
        );
        let geo = Geometry::of(&n, &[4, 2, 2, 2], [2, 3, 3]).unwrap();
        assert_eq!(geo.out, [3, 3]);
        let p = geo.patches(&x.view(), 0, 0, 9);
        // Output (0, 0) reads padding except its bottom-right tap.
        assert_eq!(p.row(0).to_vec(), vec![0., 0., 0., 0., 0., 0., 0., 9., 1.]);
        // Output (1, 1): x[0..2, 0..2] of each channel.
        assert_eq!(
            p.row(4).to_vec(),
            vec![0., 1., 3., 4., 9., 10., 12., 13., 1.]
        );
    }
}
