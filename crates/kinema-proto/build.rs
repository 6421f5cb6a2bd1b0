use std::path::PathBuf;

use prost::Message;
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script reused from another checkout must still read
    // this checkout's protos.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "jobs.proto",
        "billing.proto",
        "admin.proto",
        "worker.proto",
        "organisations.proto",
    ]
    .map(|f| proto_root.join("kinema/v1").join(f));
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("kinema_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        // Ordered maps encode deterministically, so a request can be fingerprinted.
        .btree_map(".")
        .compile_protos(&files, std::slice::from_ref(&proto_root))?;
    write_request_ids(&descriptor)?;
    json_types(&files, &proto_root, &descriptor)?;
    // The contract's fingerprint: clients and servers built from the same protos agree.
    let mut hash = Sha256::new();
    for f in &files {
        hash.update(std::fs::read(f)?);
        println!("cargo:rerun-if-changed={}", f.display());
    }
    println!(
        "cargo:rustc-env=KINEMA_CONTRACT_SHA256={}",
        hex::encode(hash.finalize())
    );
    println!("cargo:rerun-if-changed={}", proto_root.display());
    // Worktrees that share one target directory (cargo hashes path packages by their
    // workspace-relative path) set this to tell their generated code apart.
    println!("cargo:rerun-if-env-changed=KINEMA_BUILD_TREE");
    Ok(())
}

/// Writes `request_ids.rs`: `RequestIds` for every message of `kinema.v1`, answering
/// its `account_id` and `job_id` fields where it has them (the server's RPC spans name
/// the account and job a call is about without a list to keep up by hand).
fn write_request_ids(descriptor: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let set = prost_types::FileDescriptorSet::decode(std::fs::read(descriptor)?.as_slice())?;
    let mut out = String::new();
    for file in set.file.iter().filter(|f| f.package() == "kinema.v1") {
        for message in &file.message_type {
            let has = |name: &str| {
                message.field.iter().any(|f| {
                    f.name() == name
                        && f.r#type() == prost_types::field_descriptor_proto::Type::String
                        && f.label() != prost_types::field_descriptor_proto::Label::Repeated
                })
            };
            out.push_str(&format!(
                "impl crate::RequestIds for {} {{\n",
                message.name()
            ));
            for field in ["account_id", "job_id"] {
                if has(field) {
                    out.push_str(&format!(
                        "    fn {field}(&self) -> &str {{\n        &self.{field}\n    }}\n"
                    ));
                }
            }
            out.push_str("}\n");
        }
    }
    std::fs::write(
        PathBuf::from(std::env::var("OUT_DIR")?).join("request_ids.rs"),
        out,
    )?;
    Ok(())
}

/// A second copy of the messages with proto3 JSON (serde) impls, for the web console's
/// JSON API: the same wire format as `v1`, with pbjson's well-known types in place of
/// prost's (which have no serde impls), so `v1` itself stays as it is.
fn json_types(
    files: &[PathBuf],
    proto_root: &std::path::Path,
    descriptor: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("json");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(&out)
        .btree_map(".")
        // Well-known types come from pbjson_types, not from prost_types.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(files, std::slice::from_ref(&proto_root.to_path_buf()))?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(descriptor)?)?
        .out_dir(&out)
        .btree_map(["."])
        .build(&[".kinema"])?;
    Ok(())
}
