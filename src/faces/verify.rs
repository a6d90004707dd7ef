//! Verification figures from labelled embeddings: every pair is either the same person or two
//! different people, and a threshold on their cosine similarity calls it. Gives the ROC, its
//! area, the equal-error rate and the threshold for a chosen false-accept rate.
//!
//! ```
//! use edgesight::faces::verify::Roc;
//! let e = vec![vec![1.0, 0.0], vec![0.9, 0.436], vec![0.0, 1.0]];
//! let ids = vec!["a".to_string(), "a".into(), "b".into()];
//! let roc = Roc::of(&e, &ids).unwrap();
//! assert_eq!((roc.same.len(), roc.different.len()), (1, 2));
//! assert_eq!(roc.auc, 1.0);
//! ```

use serde::Serialize;

/// Similarities of same-person and different-person pairs, and what they give.
#[derive(Debug, Clone, Serialize)]
pub struct Roc {
    pub same: Vec<f32>,
    pub different: Vec<f32>,
    /// Probability that a same pair scores above a different pair (ties count half).
    pub auc: f64,
    /// Where the false-accept and false-reject rates meet: (rate, threshold).
    pub eer: (f64, f32),
}

/// The scores `score(i, j)` of every pair of items, split into same-identity and
/// different-identity pairs.
pub fn pairs<T>(ids: &[String], score: impl Fn(usize, usize) -> T) -> (Vec<T>, Vec<T>) {
    let (mut same, mut different) = (Vec::new(), Vec::new());
    for i in 0..ids.len() {
        for j in i + 1..ids.len() {
            let s = score(i, j);
            if ids[i] == ids[j] {
                same.push(s);
            } else {
                different.push(s);
            }
        }
    }
    (same, different)
}

/// Probability that a same pair scores above a different pair (ties count half).
pub fn auc<T: PartialOrd>(same: &[T], different: &[T]) -> f64 {
    let mut wins = 0.0;
    for s in same {
        for d in different {
            wins += if s > d {
                1.0
            } else if s == d {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (same.len() * different.len()).max(1) as f64
}

impl Roc {
    /// None without at least one pair of each kind.
    pub fn of(embeddings: &[Vec<f32>], ids: &[String]) -> Option<Self> {
        let (mut same, mut different) = pairs(ids, |i, j| {
            super::gallery::similarity(&embeddings[i], &embeddings[j])
        });
        if same.is_empty() || different.is_empty() {
            return None;
        }
        same.sort_by(f32::total_cmp);
        different.sort_by(f32::total_cmp);
        let auc = auc(&same, &different);
        let mut roc = Self {
            same,
            different,
            auc,
            eer: (1.0, 0.0),
        };
        roc.eer = roc.equal_error();
        Some(roc)
    }

    /// (false-accept rate, false-reject rate) at `threshold`: a pair matches at or above it.
    pub fn rates(&self, threshold: f32) -> (f64, f64) {
        let fa = self.different.iter().filter(|&&d| d >= threshold).count();
        let fr = self.same.iter().filter(|&&s| s < threshold).count();
        (
            fa as f64 / self.different.len() as f64,
            fr as f64 / self.same.len() as f64,
        )
    }

    /// The candidate thresholds: every observed similarity.
    fn candidates(&self) -> Vec<f32> {
        let mut t: Vec<f32> = self.same.iter().chain(&self.different).copied().collect();
        t.sort_by(f32::total_cmp);
        t.dedup();
        t
    }

    fn equal_error(&self) -> (f64, f32) {
        let mut best = (f64::INFINITY, 1.0, 0.0f32);
        for t in self.candidates() {
            let (fa, fr) = self.rates(t);
            if (fa - fr).abs() < best.0 {
                best = ((fa - fr).abs(), (fa + fr) / 2.0, t);
            }
        }
        (best.1, best.2)
    }

    /// The lowest threshold whose false-accept rate is at most `far`, and the true-accept rate
    /// there. The threshold sits midway between the observed similarity that first qualifies
    /// and the one below it, so that it does not rest on a single observed pair.
    pub fn threshold_at_far(&self, far: f64) -> (f32, f64) {
        let c = self.candidates();
        for (i, &t) in c.iter().enumerate() {
            let (fa, fr) = self.rates(t);
            if fa <= far {
                let mid = if i == 0 { t } else { (c[i - 1] + t) / 2.0 };
                return (mid, 1.0 - fr);
            }
        }
        let top = self.candidates().last().copied().unwrap_or(1.0) + 1e-3;
        (top, 0.0)
    }
}
