use anyhow::{anyhow, Context};
use kinema_proto::v1::admin_service_client::AdminServiceClient;
use kinema_proto::v1::billing_service_client::BillingServiceClient;
use kinema_proto::v1::job_service_client::JobServiceClient;
use kinema_proto::v1::organisation_service_client::OrganisationServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::cli::Connection;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// Clients of the services over one connection.
#[derive(Clone)]
pub struct Clients {
    pub jobs: JobServiceClient<Authed>,
    pub billing: BillingServiceClient<Authed>,
    pub admin: AdminServiceClient<Authed>,
    pub orgs: OrganisationServiceClient<Authed>,
    /// The account requests act for (ignored by account keys).
    pub account: String,
}

impl Clients {
    pub async fn connect(url: &str, api_key: &str, account: &str) -> anyhow::Result<Clients> {
        Clients::connect_tls(url, api_key, account, None).await
    }

    /// As [`Clients::connect`]; an `https://` URL also trusts `ca_pem`'s certificates.
    pub async fn connect_tls(
        url: &str,
        api_key: &str,
        account: &str,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<Clients> {
        let channel = endpoint(url, ca_pem)?
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let bearer = Bearer(
            format!("Bearer {}", api_key.trim())
                .parse()
                .map_err(|_| anyhow!("the API key has characters a header cannot carry"))?,
        );
        Ok(Clients {
            jobs: JobServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            billing: BillingServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            admin: AdminServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            orgs: OrganisationServiceClient::with_interceptor(channel, bearer),
            account: account.to_string(),
        })
    }

    /// Connects as `--server` with `--api-key` / `--api-key-file`.
    pub async fn from_flags(conn: &Connection) -> anyhow::Result<Clients> {
        let url = conn
            .server
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:50051".to_string());
        let key = api_key(conn)?;
        let ca = match &conn.tls_ca {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
            }
            None => None,
        };
        Clients::connect_tls(&url, &key, &conn.account, ca.as_deref()).await
    }
}

/// The server's endpoint: TLS for `https://` (the public roots, plus `ca_pem`).
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> anyhow::Result<Endpoint> {
    let endpoint =
        Endpoint::from_shared(url.to_string()).with_context(|| format!("server URL {url:?}"))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
    if let Some(pem) = ca_pem {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    endpoint
        .tls_config(tls)
        .with_context(|| format!("TLS for {url}"))
}

pub fn api_key(conn: &Connection) -> anyhow::Result<String> {
    if let Some(key) = &conn.api_key {
        return Ok(key.clone());
    }
    if let Some(path) = &conn.api_key_file {
        let key =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(key.trim().to_string());
    }
    Err(anyhow!(
        "no API key: pass --api-key, --api-key-file, or set KINEMA_API_KEY"
    ))
}
