//! The `moziplus` binary: parses the command line and hands over to
//! [`moziplus::cli::run`], which picks the exit code.

use clap::Parser;

fn main() {
    let cli = moziplus::cli::Cli::parse();
    std::process::exit(moziplus::cli::run(cli));
}
