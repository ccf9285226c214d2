//! The `ironmesh` binary; everything lives in the library target.

fn main() -> std::process::ExitCode {
    ironmesh_cli::run()
}
