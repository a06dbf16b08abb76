//! The data layer's name for the engine's SplitMix64 ([`crate::engine::rng`]).

pub use crate::engine::rng::{SplitMix64, mix64};
