//! Few-shot classifier heads over L2-normalised features.

pub mod calibration;
pub mod logistic;
pub mod prototype;
pub mod transductive;
