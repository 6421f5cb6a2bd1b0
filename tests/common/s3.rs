//! The S3-compatible server the object-storage tests run against (s3s-fs).

use kinema_artifacts::test_server::S3Server;

/// The servers' environment for `s3`: the `AWS_*` variables a deployment would set
/// (leaked: the servers' options want 'static values; one per test is fine).
pub fn s3_env(s3: &S3Server) -> &'static [(&'static str, &'static str)] {
    let vars: Vec<(&'static str, &'static str)> = s3
        .vars()
        .into_iter()
        .map(|(k, v)| {
            (
                &*Box::leak(k.into_boxed_str()),
                &*Box::leak(v.into_boxed_str()),
            )
        })
        .collect();
    Box::leak(vars.into_boxed_slice())
}
