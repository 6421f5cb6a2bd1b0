//! The delivery client's DNS resolver: a name is resolved when the connection is
//! made and only the addresses the [`TargetPolicy`] allows are handed to the
//! connector, so a name that pointed at a public address at submission and now
//! points at a private one (a DNS change, rebinding) is refused, not reached.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::TargetPolicy;
use super::target::Refused;

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Where names are looked up: the system's resolver, or a test's.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, name: String) -> LookupFuture;
}

/// The system's resolver (getaddrinfo, via tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, name: String) -> LookupFuture {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

#[derive(Clone)]
pub struct CheckedResolver {
    policy: Arc<TargetPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl CheckedResolver {
    pub fn new(policy: Arc<TargetPolicy>, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }

    /// The allowed addresses `name` resolves to now; refused if none is allowed.
    pub async fn allowed_addresses(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let found = self
            .lookup
            .lookup(name.to_string())
            .await
            .map_err(|e| ResolveError::Lookup(name.to_string(), e.to_string()))?;
        let mut refusal = None;
        let allowed: Vec<IpAddr> = found
            .into_iter()
            .filter(
                |&ip| match super::target::check_ip(&self.policy, name, ip) {
                    Ok(()) => true,
                    Err(r) => {
                        refusal.get_or_insert(r);
                        false
                    }
                },
            )
            .collect();
        match (allowed.is_empty(), refusal) {
            (false, _) => Ok(allowed),
            (true, Some(r)) => Err(ResolveError::Refused(r)),
            (true, None) => Err(ResolveError::Lookup(name.to_string(), "no address".into())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("refused at connect time: {0}")]
    Refused(Refused),
    #[error("resolving {0}: {1}")]
    Lookup(String, String),
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.allowed_addresses(name.as_str()).await?;
            // The connector sets the URL's port on each address.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A name whose answer the test changes, as a DNS change or rebinding would.
    struct Changing(Mutex<Vec<IpAddr>>);

    impl Lookup for Arc<Changing> {
        fn lookup(&self, _name: String) -> LookupFuture {
            let answer = self.0.lock().map(|a| a.clone()).unwrap_or_default();
            Box::pin(async move { Ok(answer) })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_name_changed_to_a_private_address_is_refused_at_connect_time() {
        let dns = Arc::new(Changing(Mutex::new(vec![ip("93.184.215.14")])));
        let resolver =
            CheckedResolver::new(Arc::new(TargetPolicy::default()), Arc::new(dns.clone()));
        // Resolving contacts nothing: only the lookup's answer is judged.
        assert_eq!(
            resolver.allowed_addresses("hooks.example").await.unwrap(),
            [ip("93.184.215.14")]
        );
        for changed in [
            "127.0.0.1",
            "10.0.0.5",
            "169.254.169.254",
            "::ffff:127.0.0.1",
            "::1",
        ] {
            *dns.0.lock().unwrap() = vec![ip(changed)];
            assert!(
                matches!(
                    resolver.allowed_addresses("hooks.example").await,
                    Err(ResolveError::Refused(_))
                ),
                "{changed}"
            );
        }
        // A mixed answer keeps only the allowed addresses.
        *dns.0.lock().unwrap() = vec![ip("127.0.0.1"), ip("93.184.215.14")];
        assert_eq!(
            resolver.allowed_addresses("hooks.example").await.unwrap(),
            [ip("93.184.215.14")]
        );
    }

    #[tokio::test]
    async fn the_client_never_connects_to_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dns = Arc::new(Changing(Mutex::new(vec![ip("127.0.0.1")])));
        let resolver = CheckedResolver::new(Arc::new(TargetPolicy::default()), Arc::new(dns));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let sent = client
            .post(format!("http://hooks.example:{port}/"))
            .body("{}")
            .send()
            .await;
        let err = sent.expect_err("a refused address must not be reached");
        assert!(
            super::super::delivery::error_chain(&err).contains("refused at connect time"),
            "{err:?}"
        );
        // Nothing connected to the listener.
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(
            accepted.is_err(),
            "a connection reached the refused address"
        );
    }
}
