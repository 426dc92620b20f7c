//! `mgecl`: the command-line front end of the SDK. One subcommand per job, each in its own
//! module of [`commands`]: its flags and what it does.

#[macro_use]
mod terminal;
mod commands;
mod journal;
mod label_job;
mod options;
mod plot;
mod report;
mod support;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    calibrate, classify, convert, embed, evaluate, info, label, metatrain, pretrain, quantize,
    report as report_cmd,
};

#[derive(Parser)]
#[command(
    name = "mgecl",
    version,
    about = "Few-shot image recognition with MGECL encoders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Info(info::InfoArgs),
    Embed(embed::EmbedArgs),
    Classify(classify::ClassifyArgs),
    Calibrate(calibrate::CalibrateArgs),
    Quantize(quantize::QuantizeArgs),
    Label(Box<label::LabelArgs>),
    Report(report_cmd::ReportArgs),
    Convert(convert::ConvertArgs),
    Pretrain(Box<pretrain::PretrainArgs>),
    Metatrain(Box<metatrain::MetatrainArgs>),
    Evaluate(Box<evaluate::EvaluateArgs>),
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Info(a) => info::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Label(a) => label::run(*a),
        Command::Report(a) => report_cmd::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Pretrain(a) => pretrain::run(*a),
        Command::Metatrain(a) => metatrain::run(*a),
        Command::Evaluate(a) => evaluate::run(*a),
    }
}

fn main() -> ExitCode {
    let Err(e) = run(Cli::parse().command) else {
        return ExitCode::SUCCESS;
    };
    // The reader went away (`mgecl info --json | head -c 10`): nothing left to say.
    if let Some(mgecl::Error::Io { source, .. }) = e.downcast_ref::<mgecl::Error>() {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
