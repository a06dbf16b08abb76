//! Losses with fused, numerically stable gradients.
