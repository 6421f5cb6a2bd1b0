use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["jobs.proto", "billing.proto", "admin.proto"]
        .map(|f| proto_root.join("kinema/v1").join(f));
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("kinema_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        // Ordered maps encode deterministically, so a request can be fingerprinted.
        .btree_map(".")
        .compile_protos(&files, std::slice::from_ref(&proto_root))?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    // Worktrees that share one target directory (cargo hashes path packages by their
    // workspace-relative path) set this to tell their generated code apart.
    println!("cargo:rerun-if-env-changed=KINEMA_BUILD_TREE");
    Ok(())
}
