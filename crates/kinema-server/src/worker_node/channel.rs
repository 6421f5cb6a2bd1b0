//! The connection to the control plane, every call carrying the worker key.

use kinema_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Request, Status};

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct BearerKey(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for BearerKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The largest control-plane answer a node decodes (a lease with its batch's input
/// images).
const MAX_LEASE_BYTES: usize = 256 << 20;

pub type WorkerClient = WorkerServiceClient<InterceptedService<Channel, BearerKey>>;

/// Opens the channel (lazily: a control plane that is not up yet is retried by the
/// calls, not refused here).
pub fn connect(server: &str, key: &str, ca_pem: Option<&[u8]>) -> Result<WorkerClient, String> {
    let mut endpoint = Channel::from_shared(server.to_string())
        .map_err(|e| format!("server URL {server:?}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_keepalive(Some(std::time::Duration::from_secs(30)));
    if server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS for {server}: {e}"))?;
    }
    let header: MetadataValue<_> = format!("Bearer {key}")
        .parse()
        .map_err(|_| "the worker key holds characters a header cannot".to_string())?;
    // A leased job carries its input images (PNGs at the video's size): more than
    // tonic's default 4 MiB a message may take.
    Ok(
        WorkerServiceClient::with_interceptor(endpoint.connect_lazy(), BearerKey(header))
            .max_decoding_message_size(MAX_LEASE_BYTES),
    )
}
