//! Compiles `proto/mesh.proto` without a system protoc (protox parses it in Rust).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/mesh.proto");
    let descriptors = protox::compile(["proto/mesh.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
