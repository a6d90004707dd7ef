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

pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlSink {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let file = File::create(path).map_err(|e| SinkError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    fn io_err(&self, e: impl ToString) -> SinkError {
        SinkError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, frame: &Frame, detections: &[Detection]) -> Result<(), SinkError> {
        let rec = EventRecord::new(frame, detections);
        serde_json::to_writer(&mut self.out, &rec).map_err(|e| self.io_err(e))?;
        self.out.write_all(b"\n").map_err(|e| self.io_err(e))
    }

    fn finish(mut self: Box<Self>) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io_err(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.io_err(e))
    }
}
