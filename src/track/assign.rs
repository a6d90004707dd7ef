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
pub fn assign(scores: &[Vec<f32>], gate: f32) -> Vec<(usize, usize)> {
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
