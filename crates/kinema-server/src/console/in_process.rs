//! The console's way into the gRPC services: the same service objects and the same
//! request limits as the gRPC port, called in-process through tonic's client over the
//! routes (no socket), so authentication, roles and every rule run exactly as for a
//! gRPC client.

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::codec::Streaming;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::rpc_limits::RpcLimitsService;
use crate::rpc_trace::RpcTraceService;

/// The routes behind the gRPC port's own layers: traced and counted, then limited.
pub type LayeredRoutes = RpcTraceService<RpcLimitsService<Routes>>;

/// A gRPC client bound to this server's own services.
#[derive(Clone)]
pub struct InProcess {
    routes: LayeredRoutes,
}

impl InProcess {
    pub fn new(routes: LayeredRoutes) -> Self {
        Self { routes }
    }

    async fn ready(&self) -> Result<Grpc<LayeredRoutes>, Status> {
        // The services bound what they send (request limits); the console takes it all.
        let mut grpc = Grpc::new(self.routes.clone()).max_decoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("the services are not ready: {e}")))?;
        Ok(grpc)
    }

    /// A unary call of `path` (`/kinema.v1.JobService/GetJob`).
    pub async fn unary<Req, Res>(
        &self,
        path: &str,
        request: Request<Req>,
    ) -> Result<Response<Res>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Res: prost::Message + Default + Send + Sync + 'static,
    {
        let path = method_path(path)?;
        let mut grpc = self.ready().await?;
        grpc.unary(request, path, ProstCodec::<Req, Res>::default())
            .await
    }

    /// A server-streaming call of `path`.
    pub async fn server_streaming<Req, Res>(
        &self,
        path: &str,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Res>>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Res: prost::Message + Default + Send + Sync + 'static,
    {
        let path = method_path(path)?;
        let mut grpc = self.ready().await?;
        grpc.server_streaming(request, path, ProstCodec::<Req, Res>::default())
            .await
    }
}

fn method_path(path: &str) -> Result<PathAndQuery, Status> {
    PathAndQuery::try_from(path).map_err(|e| Status::internal(format!("method path {path:?}: {e}")))
}
