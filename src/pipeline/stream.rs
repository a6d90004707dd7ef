//! One stream's own threads: its supervisor (ingest), its preprocessing and its sinks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};

use super::batch::{Prepared, Route, Routes, Work};
use super::job::{FacesSummary, OutputPaths, Progress, Summary};
use super::recognise::Recognition;
use super::shared::{Decoded, Detected, PipelineError, StreamKey, StreamShared};
use super::status::{Observer, StatusBoard, StreamState};
use super::stream_spec::StreamSpec;
use super::supervisor::{Ingest, Outlet};
use crate::draw::{Region, Trail};
use crate::ingest::IngestError;
use crate::models::Detector;
use crate::preprocess::Preprocessor;
use crate::sinks::tracks::{CountRecord, IdentifiedRecord, TrackRecord, TracksFile};
use crate::sinks::Overlay;
use crate::sinks::{events::EventRecord, events::JsonlSink, video::AnnotatedVideo, Sink};
use crate::stats::{rss_mib, Latency};
use crate::track::trails::Trails;
use crate::track::zones::{CountEvent, Counter, Seen};
use crate::track::{TrackEvent, Tracker};

/// What the summary names besides the counts.
struct Meta {
    source: String,
    model: String,
    model_file: PathBuf,
    provider: String,
    outputs: OutputPaths,
}

pub(crate) struct RunningStream {
    pub name: String,
    pub model_key: String,
    shared: Arc<StreamShared>,
    board: Arc<StatusBoard>,
    ingest: JoinHandle<Result<(), PipelineError>>,
    preprocess: JoinHandle<Result<(), PipelineError>>,
    sinks: JoinHandle<Result<SinkTally, PipelineError>>,
    meta: Meta,
    started: Instant,
}

/// How a stream ended: its summary (also written to its `summary.json`), or why it could not
/// give one.
pub struct StreamOutcome {
    pub name: String,
    pub result: Result<Summary, PipelineError>,
}

pub(crate) struct StreamWiring {
    pub key: StreamKey,
    pub model_key: String,
    pub provider: String,
    pub detector: Arc<dyn Detector>,
    pub stage: Sender<Work>,
    pub routes: Arc<Routes>,
    pub board: Arc<StatusBoard>,
    pub depth: usize,
    pub progress: Option<Sender<Progress>>,
}

impl RunningStream {
    pub fn start(spec: StreamSpec, w: StreamWiring) -> Result<Self, PipelineError> {
        let live = spec.source.is_live();
        let shared = Arc::new(StreamShared {
            key: w.key,
            name: spec.name.clone().into(),
            live,
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            expected: Mutex::new(None),
            error: Mutex::new(None),
        });
        let (sinks, outputs) = open_sinks(&spec)?;
        let outputs_tracks = outputs.tracks.clone();
        let meta = Meta {
            source: spec.source.display().to_string(),
            model: spec.model.name.clone(),
            model_file: spec.model.file.clone(),
            provider: w.provider.clone(),
            outputs,
        };
        // A live stream holds one frame between stages; the newest replaces it.
        let (q_tx, q_rx) = bounded::<Decoded>(if live { 1 } else { w.depth.max(1) });
        let (s_tx, s_rx) = bounded::<Detected>(w.depth.max(1));
        w.routes.add(
            w.key,
            Route {
                tx: s_tx,
                shared: shared.clone(),
            },
        );
        let outlet = if live {
            Outlet::Latest {
                tx: q_tx,
                rx: q_rx.clone(),
            }
        } else {
            Outlet::Blocking(q_tx)
        };
        let ingest = Ingest {
            source: spec.source.clone(),
            shared: shared.clone(),
            board: w.board.clone(),
            outlet,
            max_frames: spec.max_frames,
            live: spec.live.clone(),
        };
        let started = Instant::now();
        let ingest = spawn("ingest", move || ingest.run());
        let pre = PreprocessCtx {
            name: shared.name.clone(),
            key: w.key,
            // A live stream's preprocessing swaps a frame that waits for inference for a newer one.
            refresh: live.then(|| w.board.clone()),
        };
        let (detector, stage) = (w.detector.clone(), w.stage);
        let preprocess = spawn("preprocess", move || {
            preprocess_stage(detector.as_ref(), pre, q_rx, stage)
        });
        let tracking = match &outputs_tracks {
            Some(p) => Some(Tracking {
                tracker: Tracker::new(spec.tracker.clone()),
                file: TracksFile::create(p)?,
                live,
                started,
                counter: Some(
                    Counter::new(spec.zones.clone(), spec.lines.clone()).map_err(|reason| {
                        PipelineError::Stream {
                            stream: spec.name.clone(),
                            reason,
                        }
                    })?,
                ),
                resolved: false,
                last: (0.0, 0),
                trails: Trails::new(TRAIL_POINTS),
                recognition: match &spec.faces {
                    Some(f) => Some(Recognition::open(f, &spec.name)?),
                    None => None,
                },
            }),
            None => None,
        };
        let sink_ctx = SinkCtx {
            shared: shared.clone(),
            observers: w.board.observers().to_vec(),
            progress: w.progress,
            started,
            tracking,
        };
        let sinks = spawn("sinks", move || sink_stage(sinks, s_rx, sink_ctx));
        Ok(Self {
            name: spec.name,
            model_key: w.model_key,
            shared,
            board: w.board,
            ingest,
            preprocess,
            sinks,
            meta,
            started,
        })
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// All its threads are done: joining will not wait.
    pub fn is_done(&self) -> bool {
        self.sinks.is_finished() && self.ingest.is_finished() && self.preprocess.is_finished()
    }

    pub fn join(self) -> StreamOutcome {
        let RunningStream {
            name,
            shared,
            board,
            ingest,
            preprocess,
            sinks,
            meta,
            started,
            ..
        } = self;
        let ingest = join(ingest);
        let preprocess = join(preprocess);
        let sinks = join(sinks);
        let shared_error = shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let result = (|| {
            preprocess?;
            if let Some(e) = shared_error {
                return Err(e);
            }
            let tally = sinks?;
            let stream_error = match ingest {
                Ok(()) => None,
                // The frames before the damage went through; report it, keep the results.
                Err(PipelineError::Ingest(e @ IngestError::Stream { .. })) if tally.frames > 0 => {
                    tracing::warn!(stream = %name, error = %e, "stream ended early");
                    Some(e.to_string())
                }
                Err(e) => return Err(e),
            };
            Ok(summary(&meta, &shared, started, tally, stream_error))
        })();
        let final_state = match (&result, board.get(&name)) {
            (Err(_), _) => StreamState::Failed,
            (Ok(_), Some(s)) if s.state == StreamState::Failed => StreamState::Failed,
            _ if shared.stop.load(Ordering::SeqCst) => StreamState::Stopped,
            _ => StreamState::Finished,
        };
        let reason = result.as_ref().err().map(|e| e.to_string());
        board.set_state(&name, final_state, reason);
        let status = board.get(&name);
        let result = result.and_then(|mut s| {
            s.state = final_state;
            s.reason = status.as_ref().and_then(|st| st.reason.clone());
            s.reconnects = status.as_ref().map(|st| st.reconnects).unwrap_or(0);
            s.dropped_frames += status.as_ref().map(|st| st.dropped).unwrap_or(0);
            s.write(&s.outputs.summary)?;
            Ok(s)
        });
        StreamOutcome { name, result }
    }
}

fn summary(
    m: &Meta,
    shared: &StreamShared,
    started: Instant,
    tally: SinkTally,
    stream_error: Option<String>,
) -> Summary {
    let wall = started.elapsed().as_secs_f64();
    Summary {
        source: m.source.clone(),
        stream: shared.name.to_string(),
        model: m.model.clone(),
        model_file: m.model_file.clone(),
        provider: m.provider.clone(),
        frames: tally.frames,
        expected_frames: *shared.expected.lock().unwrap_or_else(|e| e.into_inner()),
        wall_s: wall,
        fps: if wall > 0.0 {
            tally.frames as f64 / wall
        } else {
            0.0
        },
        detections: tally.total_dets,
        detections_by_label: tally.by_label,
        latency: tally
            .lat
            .iter()
            .map(|(k, v)| (k.to_string(), v.percentiles()))
            .collect(),
        peak_rss_mib: rss_mib().1,
        interrupted: shared.stop.load(Ordering::SeqCst),
        stream_error,
        dropped_frames: shared.dropped.load(Ordering::Relaxed),
        state: StreamState::Finished,
        reason: None,
        reconnects: 0,
        batched_frames: tally.batched,
        tracks_by_label: tally.tracks.clone(),
        counts: tally.counts.clone(),
        faces: tally.faces.clone(),
        end_to_end_p99_ms: tally
            .lat
            .get("end_to_end")
            .map(|l| l.quantile_ms(0.99))
            .unwrap_or(0.0),
        outputs: m.outputs.clone(),
    }
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("the OS can start a thread")
}

fn join<T>(h: JoinHandle<Result<T, PipelineError>>) -> Result<T, PipelineError> {
    h.join().unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(PipelineError::Panic(msg))
    })
}

/// Creates the output folder and the stream's sinks, so that an unwritable folder fails before
/// anything starts.
fn open_sinks(spec: &StreamSpec) -> Result<(Vec<Box<dyn Sink>>, OutputPaths), PipelineError> {
    std::fs::create_dir_all(&spec.out_dir).map_err(|e| PipelineError::OutDir {
        path: spec.out_dir.clone(),
        reason: e.to_string(),
    })?;
    let live = spec.source.is_live();
    let outputs = OutputPaths {
        events: spec.write_events.then(|| spec.out_dir.join("events.jsonl")),
        video: spec.write_video.then(|| {
            spec.out_dir.join(if live {
                AnnotatedVideo::segment_name(0)
            } else {
                "annotated.mp4".into()
            })
        }),
        tracks: spec
            .tracker
            .enabled
            .then(|| spec.out_dir.join("tracks.jsonl")),
        summary: spec.out_dir.join("summary.json"),
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(p) = &outputs.events {
        sinks.push(Box::new(JsonlSink::create(p)?));
    }
    if let Some(server) = &spec.rtsp {
        let out = server
            .serve_frames(&format!("/{}", spec.name))
            .map_err(|e| PipelineError::Stream {
                stream: spec.name.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(stream = %spec.name, url = out.url(), "annotated video served");
        sinks.push(Box::new(out));
    }
    if spec.write_video {
        sinks.push(Box::new(if live {
            AnnotatedVideo::segmented(&spec.out_dir, spec.segment)?
        } else {
            AnnotatedVideo::create(outputs.video.as_ref().expect("set above"), None)?
        }));
    }
    Ok((sinks, outputs))
}

struct PreprocessCtx {
    name: Arc<str>,
    key: StreamKey,
    refresh: Option<Arc<StatusBoard>>,
}

fn preprocess_stage(
    detector: &dyn Detector,
    ctx: PreprocessCtx,
    rx: Receiver<Decoded>,
    tx: Sender<Work>,
) -> Result<(), PipelineError> {
    crate::sched::background();
    let mut pre = Preprocessor::new(detector.preprocess().clone());
    let mut prepare = |mut d: Decoded| {
        let t = Instant::now();
        let (tensor, transform) =
            pre.run(d.frame.pixels())
                .map_err(|err| PipelineError::Preprocess {
                    stream: ctx.name.to_string(),
                    err,
                })?;
        d.times.preprocess = t.elapsed();
        Ok::<_, PipelineError>(Work::Frame(Prepared {
            d,
            tensor,
            transform,
        }))
    };
    let mut result = Ok(());
    'frames: for d in rx.iter() {
        let mut work = match prepare(d) {
            Ok(w) => w,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        loop {
            match tx.send_timeout(work, Duration::from_millis(5)) {
                Ok(()) => break,
                Err(SendTimeoutError::Disconnected(_)) => break 'frames,
                Err(SendTimeoutError::Timeout(w)) => work = w,
            }
            // Inference is busy: a live stream's newer frame replaces this one.
            let Some(board) = &ctx.refresh else { continue };
            let Ok(newer) = rx.try_recv() else { continue };
            board.dropped(&ctx.name, "latest_wins", 1);
            work = match prepare(newer) {
                Ok(w) => w,
                Err(e) => {
                    result = Err(e);
                    break 'frames;
                }
            };
        }
    }
    // After the last frame, so that the sinks finish only once every frame has passed.
    let _ = tx.send(Work::End(ctx.key));
    result
}

/// What the sinks saw: per-stage latencies and detection counts.
#[derive(Default)]
struct SinkTally {
    lat: BTreeMap<&'static str, Latency>,
    by_label: BTreeMap<String, u64>,
    frames: u64,
    total_dets: u64,
    batched: u64,
    tracks: BTreeMap<String, u64>,
    counts: Option<serde_json::Value>,
    faces: Option<FacesSummary>,
}

struct SinkCtx {
    shared: Arc<StreamShared>,
    observers: Vec<Arc<dyn Observer>>,
    progress: Option<Sender<Progress>>,
    started: Instant,
    tracking: Option<Tracking>,
}

/// The track stage of one stream: its tracker and its `tracks.jsonl`.
struct Tracking {
    tracker: Tracker,
    file: TracksFile,
    /// A live stream's clock is the wall clock (its timestamps restart on reconnect); a file's
    /// is its own timestamps, so that its tracks do not depend on how fast it was analysed.
    live: bool,
    started: Instant,
    /// Zones and lines, once their coordinates are resolved against the first frame's size.
    counter: Option<Counter>,
    resolved: bool,
    /// Time and number of the latest frame, for zone exits of tracks that end.
    last: (f64, u64),
    trails: Trails,
    /// Face recognition of the tracks, when `[faces]` is set.
    recognition: Option<Recognition>,
}

/// Points in a track's trail on the annotated video: a couple of seconds at 10 to 15 fps.
const TRAIL_POINTS: usize = 30;

impl Tracking {
    fn apply(
        &mut self,
        det: &mut Detected,
        ctx: &SinkCtx,
        tally: &mut SinkTally,
    ) -> Result<(), PipelineError> {
        let f = &det.d.frame;
        let t = match (self.live, f.pts) {
            (false, Some(pts)) => pts.nseconds() as f64 / 1e9,
            (false, None) => f.number as f64 / f.fps().unwrap_or(25.0),
            (true, _) => det.d.born.duration_since(self.started).as_secs_f64(),
        };
        self.tracker.update(t, f.number, &mut det.detections);
        self.trails.observe(f.number, &det.detections);
        let named = match self.recognition.as_mut() {
            Some(r) => r.apply(t, &det.d.frame, &mut det.detections),
            None => Vec::new(),
        };
        self.count(t, det, &ctx.shared.name)?;
        // A track's `new` comes before its `identified`.
        self.flush(&ctx.shared.name, &ctx.observers, tally)?;
        let stream = &ctx.shared.name;
        for identified in &named {
            let summary = tally.faces.get_or_insert_with(Default::default);
            *summary
                .identified
                .entry(identified.name.clone())
                .or_default() += 1;
            let rec = IdentifiedRecord {
                stream,
                event: "identified",
                frame: det.d.frame.number,
                identified,
            };
            let json = serde_json::to_vec(&rec).unwrap_or_default();
            self.write(stream, &json, &ctx.observers)?;
        }
        Ok(())
    }

    /// Feeds the tracked objects' bottom centres to the zones and lines.
    fn count(&mut self, t: f64, det: &Detected, stream: &str) -> Result<(), PipelineError> {
        let Some(counter) = self.counter.as_mut() else {
            return Ok(());
        };
        let f = &det.d.frame;
        if !self.resolved {
            counter
                .resolve(f.width(), f.height())
                .map_err(|reason| PipelineError::Stream {
                    stream: stream.to_string(),
                    reason,
                })?;
            self.resolved = true;
        }
        let seen: Vec<Seen> = det
            .detections
            .iter()
            .filter_map(|d| {
                let b = &d.bbox;
                d.track_id
                    .map(|id| (id, d.label.clone(), [(b.x1 + b.x2) / 2.0, b.y2]))
            })
            .collect();
        counter.observe(t, f.number, &seen);
        self.last = (t, f.number);
        Ok(())
    }

    fn flush(
        &mut self,
        stream: &str,
        observers: &[Arc<dyn Observer>],
        tally: &mut SinkTally,
    ) -> Result<(), PipelineError> {
        let (t, frame) = self.last;
        for ev in self.tracker.drain_events() {
            match &ev {
                TrackEvent::New { label, .. } => {
                    *tally.tracks.entry(label.clone()).or_default() += 1
                }
                TrackEvent::End { track_id, .. } => {
                    if let Some(c) = self.counter.as_mut() {
                        c.ended(t, frame, *track_id);
                    }
                    if let Some(r) = self.recognition.as_mut() {
                        r.ended(*track_id);
                    }
                }
                TrackEvent::Update { .. } => {}
            }
            let json = serde_json::to_vec(&TrackRecord { stream, event: &ev }).unwrap_or_default();
            self.write(stream, &json, observers)?;
        }
        let Some(counter) = self.counter.as_mut() else {
            return Ok(());
        };
        let events = counter.drain_events();
        let occupancy = counter.occupancy();
        for ev in events {
            if let CountEvent::LineCross {
                line,
                label,
                direction,
                ..
            } = &ev
            {
                for o in observers {
                    o.line_crossing(stream, line, label, direction);
                }
            }
            let json = serde_json::to_vec(&CountRecord { stream, event: &ev }).unwrap_or_default();
            self.write(stream, &json, observers)?;
        }
        for (zone, by_label) in occupancy {
            for (label, n) in by_label {
                for o in observers {
                    o.zone_objects(stream, &zone, &label, n);
                }
            }
        }
        Ok(())
    }

    /// What the annotated outputs draw for the latest frame: trails, zones and lines.
    fn overlay(&self) -> Overlay {
        let trails = self
            .trails
            .current()
            .into_iter()
            .map(|(class_id, points)| Trail { class_id, points })
            .collect();
        let regions = self
            .counter
            .iter()
            .filter(|_| self.resolved)
            .flat_map(Counter::marks)
            .map(|(points, closed, caption)| Region {
                points,
                closed,
                caption,
            })
            .collect();
        Overlay { trails, regions }
    }

    fn write(
        &mut self,
        stream: &str,
        json: &[u8],
        observers: &[Arc<dyn Observer>],
    ) -> Result<(), PipelineError> {
        self.file.write_line(json)?;
        for o in observers {
            o.track_event(stream, json);
        }
        Ok(())
    }

    /// Ends every open track (the stream ended) and closes the file.
    fn finish(
        mut self,
        stream: &str,
        observers: &[Arc<dyn Observer>],
        tally: &mut SinkTally,
    ) -> Result<(), PipelineError> {
        self.tracker.finish();
        self.flush(stream, observers, tally)?;
        if let Some(r) = &self.recognition {
            let f = tally.faces.get_or_insert_with(Default::default);
            (f.faces_seen, f.embedded) = r.counts();
        }
        tally.counts = self
            .counter
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(Counter::totals);
        Ok(self.file.finish()?)
    }
}

fn sink_stage(
    mut sinks: Vec<Box<dyn Sink>>,
    rx: Receiver<Detected>,
    mut ctx: SinkCtx,
) -> Result<SinkTally, PipelineError> {
    crate::sched::background();
    let mut tally = SinkTally::default();
    let mut result: Result<(), PipelineError> = Ok(());
    let expected = || {
        *ctx.shared
            .expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    };
    let mut tracking = ctx.tracking.take();
    for mut det in rx.iter() {
        let t = Instant::now();
        if let Some(tr) = tracking.as_mut() {
            if let Err(e) = tr.apply(&mut det, &ctx, &mut tally) {
                result = Err(e);
            }
        }
        let overlay = tracking.as_ref().map(Tracking::overlay).unwrap_or_default();
        for sink in sinks.iter_mut() {
            if let Err(e) = sink.write(&det.d.frame, &det.detections, &overlay) {
                result = Err(e.into());
            }
        }
        if result.is_err() {
            ctx.shared.stop.store(true, Ordering::SeqCst);
            break;
        }
        tally.record(&det, t.elapsed());
        observe(&ctx, &det);
        if let Some(p) = &ctx.progress {
            let _ = p.send(Progress {
                frames: tally.frames,
                total: expected(),
                elapsed: ctx.started.elapsed(),
            });
        }
    }
    drop(rx);
    if let Some(tr) = tracking {
        let r = tr.finish(&ctx.shared.name, &ctx.observers, &mut tally);
        if result.is_ok() {
            result = r;
        }
    }
    // Finalize every sink even if one failed, so each file is as complete as it can be.
    for sink in sinks {
        let r = sink.finish();
        if result.is_ok() {
            result = r.map_err(Into::into);
        }
    }
    result.map(|()| tally)
}

impl SinkTally {
    fn record(&mut self, det: &Detected, sink: Duration) {
        let times = det.d.times;
        for (name, d) in [
            ("decode", times.decode),
            ("preprocess", times.preprocess),
            ("infer", times.infer),
            ("postprocess", times.postprocess),
            ("sink", sink),
            ("end_to_end", det.d.born.elapsed()),
        ] {
            self.lat.entry(name).or_default().record(d);
        }
        for d in &det.detections {
            *self.by_label.entry(d.label.clone()).or_default() += 1;
        }
        self.total_dets += det.detections.len() as u64;
        self.frames += 1;
        self.batched += u64::from(det.d.batch > 1);
    }
}

/// Tells the observers (metrics, MQTT) about a frame that reached the sinks.
fn observe(ctx: &SinkCtx, det: &Detected) {
    if ctx.observers.is_empty() {
        return;
    }
    // Serialized once, and only when someone (MQTT) takes the record.
    let json = ctx
        .observers
        .iter()
        .any(|o| o.wants_events())
        .then(|| serde_json::to_vec(&EventRecord::new(&det.d.frame, &det.detections)))
        .and_then(Result::ok);
    let age = det.d.born.elapsed();
    let t = det.d.times;
    for o in &ctx.observers {
        o.frame(&ctx.shared.name, "sink");
        o.capture_to_event(&ctx.shared.name, age);
        for (stage, d) in [
            ("preprocess", t.preprocess),
            ("infer", t.infer),
            ("postprocess", t.postprocess),
        ] {
            o.latency(stage, d);
        }
        if let Some(json) = &json {
            o.event(&ctx.shared.name, json);
        }
    }
}
