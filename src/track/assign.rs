//! Linear assignment with a gate: the pairs of rows and columns that maximise the total score,
//! where a pair below the gate is never made. `pathfinding`'s Kuhn–Munkres assigns every row,
//! so each row and each column gets a "stay unmatched" partner of score zero.
//!
//! ```
//! use edgesight::track::assign::assign;
//! // Row 0 fits column 1 best; row 1 fits nothing above the gate.
//! let scores = vec![vec![0.3, 0.9], vec![0.05, 0.1]];
//! assert_eq!(assign(&scores, 0.2), vec![(0, 1)]);
//! ```

use pathfinding::prelude::{kuhn_munkres, Matrix};

/// Scores are fixed-point in the solver: Kuhn–Munkres needs an exact ordering.
const SCALE: f64 = 1e6;
/// Far below any sum of real scores: a forbidden pair.
const FORBIDDEN: i64 = -1_000_000_000_000;

/// Pairs `(row, column)` with `scores[row][column] >= gate`, maximising the sum of scores.
///
/// Rows and columns joined by no pair above the gate cannot affect each other's choice, so the
/// problem splits into connected groups, solved one by one: in a scene of many objects nearly
/// every group is one track and one detection, and the cubic solver only sees the few crowds.
pub fn assign(scores: &[Vec<f32>], gate: f32) -> Vec<(usize, usize)> {
    let rows = scores.len();
    let cols = scores.first().map_or(0, Vec::len);
    let mut groups = Groups::new(rows + cols);
    for (r, row) in scores.iter().enumerate() {
        for (c, &s) in row.iter().enumerate() {
            if s >= gate {
                groups.join(r, rows + c);
            }
        }
    }
    let mut members: std::collections::BTreeMap<usize, (Vec<usize>, Vec<usize>)> =
        Default::default();
    for r in 0..rows {
        members.entry(groups.root(r)).or_default().0.push(r);
    }
    for c in 0..cols {
        members.entry(groups.root(rows + c)).or_default().1.push(c);
    }
    let mut pairs = Vec::new();
    for (rs, cs) in members.into_values() {
        match (rs.as_slice(), cs.as_slice()) {
            ([], _) | (_, []) => {}
            ([r], [c]) => pairs.push((*r, *c)),
            _ => {
                let sub: Vec<Vec<f32>> = rs
                    .iter()
                    .map(|&r| cs.iter().map(|&c| scores[r][c]).collect())
                    .collect();
                pairs.extend(solve(&sub, gate).into_iter().map(|(i, j)| (rs[i], cs[j])));
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

/// Union-find over rows and columns.
struct Groups(Vec<usize>);

impl Groups {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.root(a), self.root(b));
        self.0[ra] = rb;
    }
}

/// Kuhn–Munkres on one group, each row and column with a "stay unmatched" partner.
fn solve(scores: &[Vec<f32>], gate: f32) -> Vec<(usize, usize)> {
    let rows = scores.len();
    let cols = scores.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // Square: real block, rows' "unmatched" partners, columns' "unmatched" partners, and a
    // zero block that lets unused partners pair off.
    let n = rows + cols;
    let mut m = Matrix::new(n, n, FORBIDDEN);
    for (r, row) in scores.iter().enumerate() {
        for (c, &s) in row.iter().enumerate() {
            if s >= gate {
                m[(r, c)] = (s as f64 * SCALE) as i64;
            }
        }
        m[(r, cols + r)] = 0;
    }
    for c in 0..cols {
        m[(rows + c, c)] = 0;
        for k in 0..rows {
            m[(rows + c, cols + k)] = 0;
        }
    }
    let (_, picks) = kuhn_munkres(&m);
    picks
        .iter()
        .enumerate()
        .take(rows)
        .filter(|&(r, &c)| c < cols && scores[r][c] >= gate)
        .map(|(r, &c)| (r, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimal_not_greedy() {
        // Greedy takes (0,0)=0.9 and leaves row 1 with 0.1; the optimum pairs crosswise.
        let s = vec![vec![0.9, 0.8], vec![0.85, 0.1]];
        let mut a = assign(&s, 0.2);
        a.sort();
        assert_eq!(a, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn more_rows_than_columns_and_gated_pairs() {
        let s = vec![vec![0.5], vec![0.7], vec![0.1]];
        assert_eq!(assign(&s, 0.3), vec![(1, 0)]);
        assert!(assign(&[], 0.3).is_empty());
    }
}
