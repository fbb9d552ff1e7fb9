//! Compiles every .proto under `ai/` and `google/` with protox (no protoc needed):
//! prost messages with `ReflectMessage`, tonic clients, and the encoded descriptor set
//! that keeps custom options (buf.validate rules, kind metadata) for reflection and validation.

use std::error::Error;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_reflect::DescriptorPool;

/// Packages that other crates already provide as Rust types.
const NOT_GENERATED: &[&str] = &["buf/"];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut protos = Vec::new();
    for top in ["ai", "google"] {
        collect_protos(&root, &root.join(top), &mut protos)?;
        println!("cargo:rerun-if-changed={top}");
    }
    println!("cargo:rerun-if-changed=buf");
    protos.sort();

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&protos)?;
    // encode_file_descriptor_set keeps custom options; file_descriptor_set() would drop them.
    let encoded = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("stigmer_descriptor.bin"), &encoded)?;

    let pool = DescriptorPool::decode(encoded.as_slice())?;
    let mut config = prost_build::Config::new();
    for message in pool.all_messages() {
        if message.package_name().starts_with("buf.") || message.package_name() == "google.protobuf"
        {
            continue;
        }
        let name = message.full_name();
        config
            .type_attribute(name, "#[derive(::prost_reflect::ReflectMessage)]")
            .type_attribute(
                name,
                format!(r#"#[prost_reflect(message_name = "{name}")]"#),
            )
            .type_attribute(
                name,
                r#"#[prost_reflect(descriptor_pool = "crate::DESCRIPTOR_POOL")]"#,
            );
    }

    let mut fds = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    fds.file.retain(|file| {
        !NOT_GENERATED
            .iter()
            .any(|prefix| file.name().starts_with(prefix))
    });
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .include_file("_includes.rs")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}
