//! `r2a-node`: the first-boot agent inside every image (a shim over `r2a::agent`).

fn main() -> std::process::ExitCode {
    r2a::agent::main()
}
