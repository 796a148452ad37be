//! The `moziplus` binary: [`moziplus::cli::main`] parses the command line,
//! runs it and picks the exit code.

fn main() {
    std::process::exit(moziplus::cli::main());
}
