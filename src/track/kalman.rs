//! The constant-velocity Kalman filter of ByteTrack (and SORT/DeepSORT) on a box's centre,
//! aspect ratio (width / height) and height, with time steps in seconds so that dropped frames
//! and reconnects stretch the prediction instead of breaking it.
//!
//! ByteTrack's 8-dimensional filter has diagonal noises and a transition that couples each
//! quantity only with its own velocity, so its covariance never links two quantities: it is
//! exactly four independent filters of (value, velocity), which is how it is written here.
//!
//! ```
//! use edgesight::track::kalman::BoxFilter;
//! let mut f = BoxFilter::new([100.0, 50.0, 0.5, 40.0]);
//! for i in 1..=10 {
//!     f.predict(0.1);
//!     f.update([100.0 + 10.0 * i as f32, 50.0, 0.5, 40.0]);
//! }
//! f.predict(0.1);
//! let [cx, ..] = f.mean();
//! assert!((cx - 210.0).abs() < 5.0, "{cx}"); // about 100 px/s to the right
//! ```

/// Noise as a fraction of the box height: ByteTrack's per-frame weights (1/20, 1/160), the
/// velocity's taken per second at a nominal 30 frames per second.
const STD_POSITION: f32 = 1.0 / 20.0;
const STD_VELOCITY: f32 = 30.0 / 160.0;

/// One quantity and its velocity: mean and 2x2 covariance.
#[derive(Debug, Clone, Copy)]
struct Axis {
    x: [f32; 2],
    p: [[f32; 2]; 2],
}

impl Axis {
    fn new(value: f32, std_pos: f32, std_vel: f32) -> Self {
        Self {
            x: [value, 0.0],
            p: [[std_pos * std_pos, 0.0], [0.0, std_vel * std_vel]],
        }
    }

    fn predict(&mut self, dt: f32, q_pos: f32, q_vel: f32) {
        let [x, v] = self.x;
        self.x = [x + dt * v, v];
        let [[a, b], [c, d]] = self.p;
        // F P F^T with F = [[1, dt], [0, 1]], plus Q.
        let a2 = a + dt * (b + c) + dt * dt * d;
        self.p = [
            [a2 + q_pos * q_pos, b + dt * d],
            [c + dt * d, d + q_vel * q_vel],
        ];
    }

    fn update(&mut self, z: f32, r: f32) {
        let [[a, b], [c, d]] = self.p;
        let s = a + r * r;
        if s <= 0.0 {
            return;
        }
        let (k0, k1) = (a / s, c / s);
        let y = z - self.x[0];
        self.x = [self.x[0] + k0 * y, self.x[1] + k1 * y];
        self.p = [[(1.0 - k0) * a, (1.0 - k0) * b], [c - k1 * a, d - k1 * b]];
    }
}

#[derive(Debug, Clone)]
pub struct BoxFilter {
    axes: [Axis; 4],
}

impl BoxFilter {
    /// A filter at `[cx, cy, aspect, height]`, at rest.
    pub fn new(m: [f32; 4]) -> Self {
        let h = m[3].max(1.0);
        let (sp, sv) = (2.0 * STD_POSITION * h, 10.0 * STD_VELOCITY * h);
        Self {
            axes: [
                Axis::new(m[0], sp, sv),
                Axis::new(m[1], sp, sv),
                Axis::new(m[2], 1e-2, 1e-5),
                Axis::new(m[3], sp, sv),
            ],
        }
    }

    /// Moves the state `dt` seconds on; a longer gap is a less certain prediction.
    pub fn predict(&mut self, dt: f32) {
        let dt = dt.clamp(0.0, 5.0);
        let h = self.axes[3].x[0].max(1.0);
        let s = dt.max(1e-3);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            let (qp, qv) = if i == 2 {
                (1e-2 * s, 1e-5 * s)
            } else {
                (STD_POSITION * h * s, STD_VELOCITY * h * s)
            };
            axis.predict(dt, qp, qv);
        }
    }

    /// Corrects the state with a measured `[cx, cy, aspect, height]`.
    pub fn update(&mut self, m: [f32; 4]) {
        let h = self.axes[3].x[0].max(1.0);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            let r = if i == 2 { 1e-1 } else { STD_POSITION * h };
            axis.update(m[i], r);
        }
    }

    /// `[cx, cy, aspect, height]` now.
    pub fn mean(&self) -> [f32; 4] {
        self.axes.map(|a| a.x[0])
    }
}
