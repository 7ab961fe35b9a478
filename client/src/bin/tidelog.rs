//! The `tidelog` command-line client: topic administration, console produce and consume, and
//! throughput benchmarks. The commands live in `src/cli/`; this file only starts the runtime
//! and turns an error into one line on stderr and a non-zero exit.

#[path = "../cli/mod.rs"]
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<cli::ExitWith>() {
            Some(exit) => {
                eprintln!("{}", exit.line);
                ExitCode::from(exit.code)
            }
            None => {
                // `{:#}` prints the whole cause chain on one line: "context: cause: root cause".
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}
