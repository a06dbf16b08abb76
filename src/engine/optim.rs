//! Optimisers: SGD (momentum, Nesterov), Adam, AdamW, weight decay.
