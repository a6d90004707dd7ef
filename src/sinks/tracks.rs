//! `tracks.jsonl`: one record per track event (`new`, `update`, `end`), with its stream.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SinkError;
use crate::track::TrackEvent;

#[derive(Serialize)]
pub struct TrackRecord<'a> {
    pub stream: &'a str,
    #[serde(flatten)]
    pub event: &'a TrackEvent,
}

#[derive(Serialize)]
pub struct CountRecord<'a> {
    pub stream: &'a str,
    #[serde(flatten)]
    pub event: &'a crate::track::zones::CountEvent,
}

pub struct TracksFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl TracksFile {
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

    /// Writes one record, already serialized.
    pub fn write(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(json)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.err(e))
    }

    pub fn finish(mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.err(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.err(e))
    }

    fn err(&self, e: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}
