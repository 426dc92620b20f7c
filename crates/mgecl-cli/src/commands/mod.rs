//! One module per subcommand: its flags (`Args`) and what it does (`run`).

pub mod calibrate;
pub mod classify;
pub mod convert;
pub mod embed;
pub mod evaluate;
pub mod info;
pub mod label;
pub mod metatrain;
pub mod pretrain;
pub mod quantize;
pub mod report;
