use std::path::PathBuf;

use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
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
