//! `tracks.jsonl`: one record per track event (`new`, `update`, `end`), with its stream.

use serde::Serialize;

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

/// `tracks.jsonl`.
pub type TracksFile = super::events::JsonLines;

/// A track was named (or renamed) by face recognition.
#[derive(Serialize)]
pub struct IdentifiedRecord<'a> {
    pub stream: &'a str,
    pub event: &'static str,
    pub frame: u64,
    #[serde(flatten)]
    pub identified: &'a crate::faces::recognise::Identified,
}
