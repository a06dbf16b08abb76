//! Classification metrics: accuracy, per-class and macro precision / recall / F1, the confusion
//! matrix, rank-based ROC AUC for two classes, and the misclassified examples.
//!
//! Conventions follow scikit-learn: `confusion[t][p]` counts examples of true class `t`
//! predicted as `p`; a ratio whose denominator is zero (a class never predicted, or absent) is 0
//! (`zero_division=0`); macro averages are plain means over all classes.

use serde::{Deserialize, Serialize};

/// One wrongly classified example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Misclassified {
    /// Index in the evaluated data set.
    pub index: usize,
    pub predicted: usize,
    pub truth: usize,
    /// The model's probability for the predicted class.
    pub score: f32,
}

/// Everything [`evaluate_predictions`] computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub n: usize,
    pub accuracy: f64,
    /// Per class, in class order.
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    pub support: Vec<usize>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// `confusion[true][predicted]`, `[k, k]`.
    pub confusion: Vec<Vec<usize>>,
    /// ROC AUC of class 1 against class 0 (two classes with both present), else `None`.
    pub auc: Option<f64>,
    pub misclassified: Vec<Misclassified>,
}

/// `num / den`, 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// The confusion matrix `[k, k]`; labels outside `0..k` are ignored.
pub fn confusion_matrix(truth: &[usize], predicted: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        if t < k && p < k {
            m[t][p] += 1;
        }
    }
    m
}

/// Fraction of equal pairs (0 for no examples).
pub fn accuracy(truth: &[usize], predicted: &[usize]) -> f64 {
    let right = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    ratio(right as f64, truth.len().min(predicted.len()) as f64)
}

/// Per-class (precision, recall, F1) from a confusion matrix.
pub fn precision_recall_f1(confusion: &[Vec<usize>]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let k = confusion.len();
    let (mut p, mut r, mut f) = (Vec::with_capacity(k), Vec::with_capacity(k), Vec::new());
    for c in 0..k {
        let tp = confusion[c][c] as f64;
        let predicted: usize = confusion.iter().map(|row| row[c]).sum();
        let actual: usize = confusion[c].iter().sum();
        let (pc, rc) = (ratio(tp, predicted as f64), ratio(tp, actual as f64));
        p.push(pc);
        r.push(rc);
        f.push(ratio(2.0 * pc * rc, pc + rc));
    }
    (p, r, f)
}

fn mean(v: &[f64]) -> f64 {
    ratio(v.iter().sum(), v.len() as f64)
}

/// ROC AUC of `scores` (higher = more positive) for binary `truth` (1 = positive): the
/// Mann-Whitney statistic from average ranks, so tied scores count one half. `None` when one
/// class is absent (AUC is undefined) or a score is NaN.
pub fn roc_auc(truth: &[bool], scores: &[f32]) -> Option<f64> {
    let n = truth.len().min(scores.len());
    if scores[..n].iter().any(|s| s.is_nan()) {
        return None;
    }
    let n_pos = truth[..n].iter().filter(|&&t| t).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average 1-based rank over each run of equal scores.
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += avg_rank * order[i..=j].iter().filter(|&&o| truth[o]).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn))
}

/// All metrics for `k` classes. `probs` holds one row of `k` class probabilities per example
/// (`[n, k]` flat); the prediction is the arg-max, `indices` name the examples.
pub fn evaluate_predictions(
    truth: &[usize],
    probs: &[f32],
    k: usize,
    indices: &[usize],
) -> ClassMetrics {
    let n = truth.len();
    let mut predicted = Vec::with_capacity(n);
    let mut misclassified = Vec::new();
    for (row, (&t, &index)) in probs.chunks_exact(k.max(1)).zip(truth.iter().zip(indices)) {
        let (p, &score) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        predicted.push(p);
        if p != t {
            misclassified.push(Misclassified {
                index,
                predicted: p,
                truth: t,
                score,
            });
        }
    }
    let confusion = confusion_matrix(truth, &predicted, k);
    let (precision, recall, f1) = precision_recall_f1(&confusion);
    let support = confusion.iter().map(|row| row.iter().sum()).collect();
    let auc = if k == 2 {
        let positive: Vec<bool> = truth.iter().map(|&t| t == 1).collect();
        let scores: Vec<f32> = probs.chunks_exact(2).map(|r| r[1]).collect();
        roc_auc(&positive, &scores)
    } else {
        None
    };
    ClassMetrics {
        n,
        accuracy: accuracy(truth, &predicted),
        macro_precision: mean(&precision),
        macro_recall: mean(&recall),
        macro_f1: mean(&f1),
        precision,
        recall,
        f1,
        support,
        confusion,
        auc,
        misclassified,
    }
}

impl ClassMetrics {
    /// The headline (precision, recall, F1): of the positive class (1) for two classes, macro
    /// averages otherwise.
    pub fn headline(&self) -> (f64, f64, f64) {
        if self.precision.len() == 2 {
            (self.precision[1], self.recall[1], self.f1[1])
        } else {
            (self.macro_precision, self.macro_recall, self.macro_f1)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Reference values from scikit-learn 1.x:
    /// ```python
    /// from sklearn.metrics import *
    /// yt=[0,1,1,0,1,2,2,0,1,2,2,3]; yp=[0,1,0,0,1,2,1,2,1,2,1,0]
    /// confusion_matrix(yt,yp)  # [[2,0,1,0],[1,3,0,0],[0,2,2,0],[1,0,0,0]]
    /// precision_recall_fscore_support(yt,yp,zero_division=0)
    /// # P [0.5, 0.6, 0.6667, 0], R [0.6667, 0.75, 0.5, 0], F1 [0.5714, 0.6667, 0.5714, 0]
    /// f1_score(yt,yp,average='macro',zero_division=0)  # 0.4523809523809524
    /// accuracy_score(yt,yp)  # 0.5833333333333334
    /// ```
    #[test]
    fn multiclass_matches_sklearn() {
        let yt = [0, 1, 1, 0, 1, 2, 2, 0, 1, 2, 2, 3];
        let yp = [0, 1, 0, 0, 1, 2, 1, 2, 1, 2, 1, 0];
        // one-hot "probabilities" with a score of 0.7 for the predicted class
        let mut probs = vec![0.1f32; yt.len() * 4];
        for (i, &p) in yp.iter().enumerate() {
            probs[i * 4 + p] = 0.7;
        }
        let idx: Vec<usize> = (100..112).collect();
        let m = evaluate_predictions(&yt, &probs, 4, &idx);
        assert_eq!(
            m.confusion,
            vec![
                vec![2, 0, 1, 0],
                vec![1, 3, 0, 0],
                vec![0, 2, 2, 0],
                vec![1, 0, 0, 0]
            ]
        );
        assert!(close(m.accuracy, 7.0 / 12.0));
        let want_p = [0.5, 0.6, 2.0 / 3.0, 0.0];
        let want_r = [2.0 / 3.0, 0.75, 0.5, 0.0];
        let want_f = [4.0 / 7.0, 2.0 / 3.0, 4.0 / 7.0, 0.0];
        for c in 0..4 {
            assert!(close(m.precision[c], want_p[c]), "P{c} {}", m.precision[c]);
            assert!(close(m.recall[c], want_r[c]), "R{c} {}", m.recall[c]);
            assert!(close(m.f1[c], want_f[c]), "F{c} {}", m.f1[c]);
        }
        assert!(close(m.macro_f1, 0.4523809523809524));
        assert_eq!(m.support, vec![3, 4, 4, 1]);
        assert_eq!(m.auc, None);
        assert_eq!(m.misclassified.len(), 5);
        assert_eq!(
            m.misclassified[0],
            Misclassified {
                index: 102,
                predicted: 0,
                truth: 1,
                score: 0.7
            }
        );
        assert_eq!(m.headline().2, m.macro_f1);
    }

    /// `roc_auc_score([0,0,1,1,0,1,1,0], [0.1,0.4,0.35,0.8,0.4,0.9,0.4,0.2])` = 0.8125: of the
    /// 16 positive/negative pairs 12 are ordered right and 2 are ties (counted one half).
    #[test]
    fn auc_handles_ties_like_sklearn() {
        let y = [false, false, true, true, false, true, true, false];
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.4, 0.2];
        assert!(close(roc_auc(&y, &s).unwrap(), 0.8125));
        // perfect, reversed, all tied
        assert!(close(roc_auc(&[false, true], &[0.2, 0.9]).unwrap(), 1.0));
        assert!(close(roc_auc(&[false, true], &[0.9, 0.2]).unwrap(), 0.0));
        assert!(close(
            roc_auc(&[false, true, true], &[0.5; 3]).unwrap(),
            0.5
        ));
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(roc_auc(&[true, false], &[f32::NAN, 0.2]), None);
    }

    /// `precision_recall_fscore_support([1,0,1,1,0,0],[1,0,0,1,1,0])`: 2/3 everywhere;
    /// AUC with probabilities [.9,.2,.4,.8,.6,.1] = 8/9.
    #[test]
    fn binary_headline_is_the_positive_class() {
        let yt = [1, 0, 1, 1, 0, 0];
        let p1 = [0.9f32, 0.2, 0.4, 0.8, 0.6, 0.1];
        let probs: Vec<f32> = p1.iter().flat_map(|&p| [1.0 - p, p]).collect();
        let m = evaluate_predictions(&yt, &probs, 2, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(m.confusion, vec![vec![2, 1], vec![1, 2]]);
        let (p, r, f) = m.headline();
        assert!(close(p, 2.0 / 3.0) && close(r, 2.0 / 3.0) && close(f, 2.0 / 3.0));
        // positives score .9 .4 .8, negatives .2 .6 .1: 8 of 9 pairs ordered right
        assert!(close(m.auc.unwrap(), 8.0 / 9.0));
        assert_eq!(m.misclassified.len(), 2);
    }

    #[test]
    fn empty_input_gives_zeros_not_nan() {
        let m = evaluate_predictions(&[], &[], 2, &[]);
        assert_eq!(m.accuracy, 0.0);
        assert_eq!(m.macro_f1, 0.0);
        assert_eq!(m.auc, None);
    }
}
