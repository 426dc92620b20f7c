//! Few-shot classifier heads over L2-normalised features.

pub mod logistic;
pub mod prototype;
