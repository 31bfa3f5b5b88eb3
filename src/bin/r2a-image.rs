//! `r2a-image`: the image builder's command line (a shim over `r2a::cli`).

fn main() -> std::process::ExitCode {
    r2a::cli::main()
}
