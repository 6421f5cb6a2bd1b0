//! End to end: standard health checking and reflection, and a graceful SIGTERM
//! shutdown that keeps the data for the next start (docs/api.md, "Keys and roles").

mod common;

use common::*;
use kinema_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_graceful_restart() {
    let dir = TestDir::new();
    let mut server = Server::start(&dir, Opts::default()).await;
    let channel = server.channel().await;

    // grpc.health.v1: the server as a whole and each service.
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "kinema.v1.JobService",
        "kinema.v1.BillingService",
        "kinema.v1.AdminService",
    ] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("Health/Check {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(
            resp.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    // grpc.reflection.v1: the kinema services are listed.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let response = bounded("reflection response", responses.next())
        .await
        .expect("one response")
        .expect("ok response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "unexpected reflection response: {:?}",
            response.message_response
        );
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "kinema.v1.JobService",
        "kinema.v1.BillingService",
        "kinema.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&expected),
            "reflection lists {expected}: {names:?}"
        );
    }

    // The model catalogue is served with its limits and prices.
    let admin = server.admin().await;
    let models = admin
        .jobs()
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("ListModels")
        .into_inner()
        .models;
    let testsrc = models.iter().find(|m| m.id == "testsrc").expect("testsrc");
    let limits = testsrc.limits.expect("limits");
    assert_eq!(
        (
            limits.size_multiple,
            limits.max_frames,
            limits.max_steps,
            limits.max_fps
        ),
        (16, 241, 200, 60)
    );
    assert!(
        testsrc
            .prices
            .iter()
            .any(|p| p.max_side == 854 && p.credits_per_second == 2),
        "{:?}",
        testsrc.prices
    );

    // Some state, then a graceful stop.
    let account = admin.create_account("persistent").await;
    admin.grant(&account, 25).await;
    let key = admin.create_key(KeyRole::Account, &account).await;
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    assert!(!server.is_running());

    // A new start on the same data dir has it all, with the same admin key.
    let first_admin_key = server.admin_key.clone();
    let server = Server::start(&dir, Opts::default()).await;
    assert_eq!(server.admin_key, first_admin_key);
    let owner = server.client(Some(&key)).await;
    let balance = owner.balance("").await;
    assert_eq!(
        (balance.account_id.as_str(), balance.total),
        (account.as_str(), 25)
    );
    let mut health = HealthClient::new(server.channel().await);
    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(resp.status, ServingStatus::Serving as i32);
}
