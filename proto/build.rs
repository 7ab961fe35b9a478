//! Compiles `proto/tidelog.proto` in pure Rust (protox), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tidelog.proto");
    let file_descriptors = protox::compile(["proto/tidelog.proto"], ["proto"])?;
    prost_build::Config::new()
        // Record batches and keys travel as `bytes::Bytes`: decoding a frame slices it, no copy.
        .bytes(["."])
        .compile_fds(file_descriptors)?;
    Ok(())
}
