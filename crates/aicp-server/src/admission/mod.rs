//! Admission: what every call must bring before its handler runs, decided in one place for
//! both protocols. The [table](table) lists every HTTP route and gRPC method with its class;
//! one layer per protocol ([`http`], [`grpc`]) reads it, and refuses whatever it does not list.

mod grpc;
mod http;
pub(crate) mod table;

pub use grpc::GrpcAdmission;
pub use http::Admission;
