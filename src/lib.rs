//! edgesight: real-time video analytics on edge devices.
//!
//! Data flows one way, one module per step:
//! [`ingest`] → [`preprocess`] → [`engine`] → [`models`] (decode) → [`sinks`], wired by
//! [`pipeline`].

pub mod bench;
pub mod config;
pub mod cvmat;
pub mod detection;
pub mod devices;
pub mod engine;
pub mod faces;
pub mod frame;
pub mod ingest;
pub mod metrics;
pub mod models;
pub mod mqtt;
pub mod onnx;
pub mod optimize;
pub mod pipeline;
pub mod preprocess;
pub mod rtsp;
pub mod sched;
pub mod service;
pub mod sinks;
pub mod source;
pub mod stats;
pub mod tensor;
pub mod track;
