//! A callback URL checked against the SSRF rules (docs/api.md, "Callbacks"): http or
//! https, no user info, and a host whose every address the [`TargetPolicy`] allows.
//! The URL parser (WHATWG rules) reads the short and numeric IPv4 forms as inet_aton
//! does (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` are all 127.0.0.1), so they
//! are judged as the address they name. CreateJob checks at submission, resolving a
//! name; the delivery loop checks a literal address again before each attempt, and
//! its resolver ([`super::resolver`]) checks what a name resolves to at connect time.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

use super::address::{AddressClass, TargetPolicy};

/// The longest callback URL taken.
pub const MAX_URL_CHARS: usize = 2048;
/// How long a submission waits for the host's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a callback URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a URL: {0}")]
    NotAUrl(String),
    #[error("at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("the scheme must be http or https, not {0:?}")]
    Scheme(String),
    #[error("a user name or password in the URL is not allowed")]
    UserInfo,
    #[error("the URL has no host")]
    NoHost,
    #[error("the host {host} is {} ({ip}): callbacks go to public addresses only", .class.describe())]
    Address {
        host: String,
        ip: IpAddr,
        class: AddressClass,
    },
    #[error("the host {0} does not resolve")]
    Unresolved(String),
}

/// The URL, parsed, if its form is one a callback may have (nothing resolved yet).
pub fn parse(url: &str) -> Result<Url, Refused> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(Refused::TooLong);
    }
    let parsed = Url::parse(url).map_err(|e| Refused::NotAUrl(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused::Scheme(parsed.scheme().to_string()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refused::UserInfo);
    }
    if parsed.host().is_none() {
        return Err(Refused::NoHost);
    }
    Ok(parsed)
}

/// The host's address, when the URL names one rather than a name.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

pub fn check_ip(policy: &TargetPolicy, host: &str, ip: IpAddr) -> Result<(), Refused> {
    policy.check(ip).map_err(|class| Refused::Address {
        host: host.to_string(),
        ip,
        class,
    })
}

/// What the delivery loop checks before each attempt: the form, and a literal
/// address (a name is checked by the resolver when the connection is made).
pub fn check_before_send(policy: &TargetPolicy, url: &str) -> Result<Url, Refused> {
    let parsed = parse(url)?;
    if let Some(ip) = literal_ip(&parsed) {
        check_ip(policy, parsed.host_str().unwrap_or_default(), ip)?;
    }
    Ok(parsed)
}

/// What CreateJob checks: the form, and every address the host is or resolves to.
pub async fn check_at_submission(policy: &TargetPolicy, url: &str) -> Result<Url, Refused> {
    let parsed = check_before_send(policy, url)?;
    if let Some(url::Host::Domain(name)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(80);
        let lookup = tokio::net::lookup_host((name, port));
        let addrs: Vec<IpAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            _ => return Err(Refused::Unresolved(name.to_string())),
        };
        if addrs.is_empty() {
            return Err(Refused::Unresolved(name.to_string()));
        }
        for ip in addrs {
            check_ip(policy, name, ip)?;
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> TargetPolicy {
        TargetPolicy::default()
    }

    #[test]
    fn numeric_ipv4_forms_are_read_as_inet_aton_does() {
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://017700000001/",
        ] {
            let parsed = parse(url).unwrap();
            assert_eq!(
                literal_ip(&parsed),
                Some("127.0.0.1".parse().unwrap()),
                "{url}"
            );
            assert!(
                matches!(
                    check_before_send(&strict(), url),
                    Err(Refused::Address {
                        class: AddressClass::Loopback,
                        ..
                    })
                ),
                "{url}"
            );
        }
        assert_eq!(
            literal_ip(&parse("http://0xa9.0xfe.0xa9.0xfe/").unwrap()),
            Some("169.254.169.254".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_literals_are_checked() {
        for url in [
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::]/",
            "http://[64:ff9b::a00:1]/",
        ] {
            assert!(
                matches!(
                    check_before_send(&strict(), url),
                    Err(Refused::Address { .. })
                ),
                "{url}"
            );
        }
        assert!(check_before_send(&strict(), "https://[2606:4700:4700::1111]/hook").is_ok());
    }

    #[test]
    fn forms_a_callback_may_not_have_are_refused() {
        assert!(matches!(
            parse("ftp://example.com/"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            parse("file:///etc/passwd"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            parse("gopher://example.com/"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            parse("http://user:pw@example.com/"),
            Err(Refused::UserInfo)
        ));
        assert!(matches!(
            parse("http://user@example.com/"),
            Err(Refused::UserInfo)
        ));
        assert!(matches!(parse("not a url"), Err(Refused::NotAUrl(_))));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(matches!(parse(&long), Err(Refused::TooLong)));
        assert!(parse("https://hooks.example.com:8443/k?x=1").is_ok());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_submission() {
        let refused = check_at_submission(&strict(), "http://localhost:9/").await;
        assert!(
            matches!(
                refused,
                Err(Refused::Address {
                    class: AddressClass::Loopback,
                    ..
                })
            ),
            "{refused:?}"
        );
        let allowed = TargetPolicy {
            allow_private: true,
            allow: vec![],
        };
        assert!(check_at_submission(&allowed, "http://localhost:9/")
            .await
            .is_ok());
    }
}
