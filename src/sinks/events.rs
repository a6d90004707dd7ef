//! `events.jsonl`: one JSON object per frame (schema in the README).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Sink, SinkError};
use crate::detection::Detection;
use crate::frame::Frame;

#[derive(Debug, Serialize)]
pub struct EventRecord<'a> {
    pub stream: &'a str,
    pub frame: u64,
    /// Presentation timestamp in nanoseconds, null when the source had none.
    pub pts_ns: Option<u64>,
    pub width: u32,
    pub height: u32,
    pub detections: &'a [Detection],
}

impl<'a> EventRecord<'a> {
    pub fn new(frame: &'a Frame, detections: &'a [Detection]) -> Self {
        Self {
            stream: &frame.stream,
            frame: frame.number,
            pts_ns: frame.pts.map(|p| p.nseconds()),
            width: frame.width(),
            height: frame.height(),
            detections,
        }
    }
}

/// A JSON-lines file: one record a line, flushed at least every [`FLUSH_EVERY`] while records
/// come (so that someone tailing it sees them), and flushed and synced when finished.
pub struct JsonLines {
    path: PathBuf,
    out: BufWriter<File>,
    flushed: std::time::Instant,
}

/// The longest a written record waits in the buffer while records keep coming.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl JsonLines {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let file = File::create(path).map_err(|e| SinkError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            flushed: std::time::Instant::now(),
        })
    }

    /// Writes one record, already serialized.
    pub fn write_line(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(json)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.err(e))?;
        self.flush_now_and_then()
    }

    fn flush_now_and_then(&mut self) -> Result<(), SinkError> {
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flushed = std::time::Instant::now();
            self.out.flush().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Serializes and writes one record.
    pub fn write_record(&mut self, rec: &impl Serialize) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, rec).map_err(|e| self.err(e))?;
        self.out.write_all(b"\n").map_err(|e| self.err(e))?;
        self.flush_now_and_then()
    }

    pub fn finish(mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.err(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.err(e))
    }

    fn err(&self, e: impl ToString) -> SinkError {
        SinkError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// `events.jsonl`.
pub struct JsonlSink(JsonLines);

impl JsonlSink {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        JsonLines::create(path).map(Self)
    }
}

impl Sink for JsonlSink {
    fn write(
        &mut self,
        frame: &Frame,
        detections: &[Detection],
        _overlay: &super::Overlay,
    ) -> Result<(), SinkError> {
        self.0.write_record(&EventRecord::new(frame, detections))
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        self.0.finish()
    }
}
