//! The Kinema gRPC contract (`kinema.v1`), generated from `proto/kinema/v1/`.

pub mod v1 {
    tonic::include_proto!("kinema.v1");
    include!(concat!(env!("OUT_DIR"), "/request_ids.rs"));
}

/// The account and job a request names, empty where it names none (generated for
/// every message of the contract from its `account_id` and `job_id` fields).
pub trait RequestIds {
    fn account_id(&self) -> &str {
        ""
    }
    fn job_id(&self) -> &str {
        ""
    }
}

/// The same messages with proto3 JSON encodings (lowerCamelCase names, enums by name,
/// 64-bit integers as strings), for the web console's JSON API. They encode to the same
/// protobuf bytes as their `v1` twins.
pub mod json {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/json/kinema.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/json/kinema.v1.serde.rs"));
    }
}

/// Encoded `FileDescriptorSet` of the contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kinema_descriptor");

/// SHA-256 of the `.proto` files this crate was generated from (hex): clients and
/// servers built from the same contract agree on it.
pub const CONTRACT_SHA256: &str = env!("KINEMA_CONTRACT_SHA256");

/// A client stream names its account and job in its messages, not up front.
impl<T> RequestIds for tonic::Streaming<T> {}
