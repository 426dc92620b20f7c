//! The training companion: cross-entropy pretraining, MGECL meta-training and few-shot
//! evaluation, producing model files the SDK loads unchanged.
//!
//! One place per concept: [`data`] (image folders, splits, episodes), [`augment`],
//! [`layers`] (differentiable blocks), [`loss`], [`optim`], [`net`] (trainable encoders),
//! [`pretrain`], [`metatrain`], [`evaluate`]; what the stages share is in [`checkpoint`]
//! (checkpoint files), [`run`] (settings, validation, progress, a run's files) and [`loader`]
//! (the background batch loader), re-exported here.

pub mod augment;
pub mod calibrate;
pub mod checkpoint;
mod cpu_net;
mod cpu_ops;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod layers;
pub mod loader;
pub mod loss;
pub mod memory;
pub mod metatrain;
pub mod net;
pub mod optim;
pub mod pretrain;
pub mod quantize;
pub mod rng;
pub mod run;
pub mod trainer;

pub use checkpoint::{
    checkpoint_bytes, checkpoint_metadata, model_metadata, momentum_from_checkpoint, portable,
};
pub use error::{Error, Result};
pub use loader::{pipelined, Batch};
pub use mgecl::InputSpec;
pub use run::{
    append_log, calibrate_best, check_validation, save_progress, validate, Progress, RunConfig,
    RunFiles, Silent, Snapshot, ValidationConfig,
};
