//! Element-wise selection (ONNX `Where` on run-time values): y = a where cond ≠ 0, else b,
//! with numpy broadcasting of all three. The gradient flows to the chosen side only; the
//! condition gets none (it is a comparison's 0/1 output). A masked side may hold −∞ (attention
//! masks): the selection reads it only where it is chosen, unlike `c·a + (1 − c)·b`.

use crate::engine::error::OpError;
use crate::engine::ops::elementwise::{broadcast_shape, reduce_to_shape};
use crate::engine::ops::shape::broadcast_sources;
use crate::engine::tensor::Tensor;

/// The broadcast shape of condition, a and b.
pub fn output_shape(c: &[usize], a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    broadcast_shape(&broadcast_shape(c, a)?, b)
}

/// y = a where c ≠ 0 else b, at the broadcast shape.
pub fn forward(c: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let out = output_shape(c.shape(), a.shape(), b.shape())?;
    let (ci, ai, bi) = (
        broadcast_sources(c.shape(), &out),
        broadcast_sources(a.shape(), &out),
        broadcast_sources(b.shape(), &out),
    );
    let data = ci
        .iter()
        .zip(&ai)
        .zip(&bi)
        .map(|((&k, &i), &j)| {
            if c.data()[k] != 0.0 {
                a.data()[i]
            } else {
                b.data()[j]
            }
        })
        .collect();
    Tensor::new(out, data)
}

/// `[d_cond, d_a, d_b]`: zeros for the condition, d_y where each side was chosen, summed back
/// to its shape.
pub fn backward(
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let out = output_shape(c.shape(), a.shape(), b.shape())?;
    if d_y.shape() != out.as_slice() {
        crate::op_bail!(
            "Where gradient has shape {:?}, expected {out:?}",
            d_y.shape()
        );
    }
    let chosen: Vec<bool> = broadcast_sources(c.shape(), &out)
        .into_iter()
        .map(|k| c.data()[k] != 0.0)
        .collect();
    let side = |take: bool, shape: &[usize]| -> Result<Tensor, OpError> {
        let full: Vec<f32> = d_y
            .data()
            .iter()
            .zip(&chosen)
            .map(|(&g, &ch)| if ch == take { g } else { 0.0 })
            .collect();
        reduce_to_shape(&Tensor::new(out.clone(), full)?, shape)
    };
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    Ok(vec![
        // the condition is a comparison's 0/1 output: zero gradient
        need(0).then(|| Tensor::zeros(c.shape())),
        if need(1) {
            Some(side(true, a.shape())?)
        } else {
            None
        },
        if need(2) {
            Some(side(false, b.shape())?)
        } else {
            None
        },
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    /// Broadcast condition, a row of a and a scalar b, against the definition; −∞ on the
    /// unchosen side never reaches the output.
    #[test]
    fn selects_with_broadcasting() {
        let c = Tensor::new(vec![2, 1], vec![1.0, 0.0]).unwrap();
        let a = Tensor::new(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let b = Tensor::new(vec![], vec![f32::NEG_INFINITY]).unwrap();
        let y = forward(&c, &a, &b).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(&y.data()[..3], &[1.0, 2.0, 3.0]);
        assert!(y.data()[3..].iter().all(|v| *v == f32::NEG_INFINITY));
        let y = forward(&c, &b, &a).unwrap();
        assert_eq!(&y.data()[3..], &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let c = test_tensor(&[2, 1, 4], 1).map(|v| f32::from(v > 0.0));
        let a = test_tensor(&[2, 3, 4], 2);
        let b = test_tensor(&[3, 1], 3);
        assert_op_gradients(
            &Op::Where,
            &[c, a, b],
            &[false, true, true],
            Mode::Eval,
            1e-2,
        );
    }
}
