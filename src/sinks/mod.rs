//! Sinks: where a frame's results go. The last stage of the pipeline; nothing flows back.

pub mod events;
pub mod tracks;
pub mod video;

use crate::detection::Detection;
use crate::frame::Frame;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("annotated video {path}: {reason}")]
    Video { path: String, reason: String },
}

pub use crate::draw::Overlay;

pub trait Sink: Send {
    /// One frame's results; `overlay` is what annotated outputs draw besides the boxes.
    fn write(
        &mut self,
        frame: &Frame,
        detections: &[Detection],
        overlay: &Overlay,
    ) -> Result<(), SinkError>;
    /// Flushes and closes; a video file is finalized here, so it plays.
    fn finish(self: Box<Self>) -> Result<(), SinkError>;
}
