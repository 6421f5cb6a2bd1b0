//! `s3://bucket[/prefix]` and the environment that configures the S3 client.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::ClientConfigKey;

use crate::ArtifactError;

/// Overrides `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL` (an S3-compatible server
/// for Kinema only, when the AWS variables serve something else).
pub const ENDPOINT_VAR: &str = "KINEMA_S3_ENDPOINT";
/// The AWS SDKs' S3-only endpoint variable, which object_store does not read itself.
const AWS_S3_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_S3";

/// A bucket and the key prefix artifacts go under, from `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    pub fn parse(spec: &str) -> Result<S3Url, ArtifactError> {
        let invalid = |reason: &str| ArtifactError::InvalidUrl {
            spec: redact(spec),
            reason: reason.to_string(),
        };
        let rest = spec
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("expected s3://bucket[/prefix]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err(invalid(
                "credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        let bucket_ok = !bucket.is_empty()
            && bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !bucket_ok {
            return Err(invalid(
                "the bucket name must be letters, digits, '.', '-' or '_'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !prefix.split('/').all(plain_segment) {
            return Err(invalid(
                "the prefix must be plain names separated by '/' (no empty, '.' or '..' parts)",
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// A key segment that stays where it is put: not empty, not `.` or `..`, no
/// backslash or control character.
pub(crate) fn plain_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.chars().any(|c| c == '\\' || c.is_control())
}

/// The client's settings: every `AWS_*` variable object_store's S3 client knows
/// (credentials, region, endpoint, `AWS_ALLOW_HTTP`, path or virtual-hosted style,
/// web identity and container credentials, timeouts, proxy, …), then
/// `AWS_ENDPOINT_URL_S3`, then [`ENDPOINT_VAR`]; the bucket comes from the URL.
pub(crate) fn builder_from_vars(
    url: &S3Url,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<AmazonS3Builder, ArtifactError> {
    let mut builder = AmazonS3Builder::new();
    let (mut s3_endpoint, mut kinema_endpoint) = (None, None);
    for (key, value) in vars {
        match key.as_str() {
            ENDPOINT_VAR => kinema_endpoint = Some(value),
            AWS_S3_ENDPOINT_VAR => s3_endpoint = Some(value),
            k if k.starts_with("AWS_") => {
                if let Ok(config_key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(config_key, value);
                }
            }
            _ => {}
        }
    }
    for endpoint in [s3_endpoint, kinema_endpoint].into_iter().flatten() {
        if !endpoint.is_empty() {
            builder = builder.with_endpoint(endpoint);
        }
    }
    let builder = builder.with_bucket_name(&url.bucket);
    if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| {
                // What object_store itself takes for true.
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "1" | "true" | "on" | "yes" | "y"
                )
            });
        // object_store refuses plain http on every request; say so at start instead.
        if endpoint.starts_with("http://") && !allow_http {
            return Err(ArtifactError::InvalidUrl {
                spec: redact(&endpoint),
                reason: "a plain-http endpoint needs AWS_ALLOW_HTTP=true".to_string(),
            });
        }
    }
    Ok(builder)
}

/// Where the client sends requests, for logs: the endpoint (without any user
/// information) or AWS's region.
pub(crate) fn describe_target(builder: &AmazonS3Builder) -> String {
    match builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        Some(endpoint) => redact(&endpoint),
        None => {
            let region = builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".to_string());
            format!("AWS region {region}")
        }
    }
}

/// A URL without the `user:password@` part it might carry.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("…@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_bucket_and_prefix() {
        let url = S3Url::parse("s3://videos/kinema/prod/").unwrap();
        assert_eq!(
            url,
            S3Url {
                bucket: "videos".into(),
                prefix: "kinema/prod".into()
            }
        );
        assert_eq!(S3Url::parse("s3://videos").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://videos/").unwrap().prefix, "");
    }

    #[test]
    fn refuses_bad_urls_without_echoing_credentials() {
        for bad in [
            "s3://",
            "s3:///prefix",
            "http://videos",
            "s3://vid eos",
            "s3://videos/a//b",
            "s3://videos/a/../b",
        ] {
            assert!(
                matches!(S3Url::parse(bad), Err(ArtifactError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let err = S3Url::parse("s3://AKIA:hunter2@videos/p").unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("AKIA"),
            "{text}"
        );
    }

    #[test]
    fn the_kinema_endpoint_wins_and_http_must_be_allowed() {
        let url = S3Url::parse("s3://videos").unwrap();
        let builder = builder_from_vars(
            &url,
            vars(&[
                ("AWS_ENDPOINT_URL", "https://aws.example"),
                ("KINEMA_S3_ENDPOINT", "http://minio:9000"),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_BUCKET", "other"),
            ]),
        )
        .unwrap();
        assert_eq!(describe_target(&builder), "http://minio:9000");
        assert_eq!(
            builder
                .get_config_value(&AmazonS3ConfigKey::Bucket)
                .as_deref(),
            Some("videos")
        );
        let refused = builder_from_vars(&url, vars(&[("AWS_ENDPOINT_URL", "http://minio:9000")]));
        assert!(matches!(refused, Err(ArtifactError::InvalidUrl { .. })));
    }

    #[test]
    fn aws_region_wins_over_the_default_region() {
        let url = S3Url::parse("s3://videos").unwrap();
        for order in [
            [
                ("AWS_DEFAULT_REGION", "us-west-2"),
                ("AWS_REGION", "eu-west-1"),
            ],
            [
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "us-west-2"),
            ],
        ] {
            let builder = builder_from_vars(&url, vars(&order)).unwrap();
            assert_eq!(describe_target(&builder), "AWS region eu-west-1");
        }
    }

    #[test]
    fn redacts_user_information() {
        assert_eq!(redact("http://u:p@host:9000/x"), "http://…@host:9000/x");
        assert_eq!(redact("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact("s3://bucket"), "s3://bucket");
    }
}
