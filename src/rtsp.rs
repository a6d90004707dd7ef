//! An RTSP server (gst-rtsp-server) on its own GLib main loop: `edgesight rtsp-serve` replays a
//! clip as a camera, and [`RtspOut`] serves a stream's annotated video.
//!
//! Every mount is shared: one pipeline, one encoder, however many clients watch it. Clients come
//! and go without touching the analytics pipeline: an annotated stream's frames are handed to
//! the encoder only while a client is connected, and dropped (never queued) when it lags.
//!
//! ```no_run
//! use edgesight::rtsp::RtspServer;
//! # fn main() -> Result<(), edgesight::rtsp::RtspError> {
//! let server = RtspServer::start("127.0.0.1", 8554)?;
//! server.serve_file("/cam", "file:///data/clip.mp4", None)?;
//! println!("rtsp://127.0.0.1:{}/cam", server.port());
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use crate::detection::Detection;
use crate::frame::Frame;
use crate::sinks::{Sink, SinkError};

#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error("RTSP server {addr}: {reason}")]
    Start { addr: String, reason: String },
    #[error("RTSP mount {mount}: {reason}")]
    Mount { mount: String, reason: String },
}

impl std::fmt::Debug for RtspServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtspServer({})", self.addr)
    }
}

/// A running RTSP server; dropping it stops the server and closes every client.
pub struct RtspServer {
    server: rtsp::RTSPServer,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    source: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
    addr: String,
}

impl RtspServer {
    /// Binds `address:port` (port 0 picks a free one). A port in use is an error naming it.
    pub fn start(address: &str, port: u16) -> Result<Self, RtspError> {
        let addr = format!("{address}:{port}");
        let fail = |reason: String| RtspError::Start {
            addr: addr.clone(),
            reason,
        };
        gst::init().map_err(|e| fail(e.to_string()))?;
        let server = rtsp::RTSPServer::new();
        server.set_address(address);
        server.set_service(&port.to_string());
        let ctx = glib::MainContext::new();
        let source = server
            .attach(Some(&ctx))
            .map_err(|_| fail("cannot listen (address in use or not local)".into()))?;
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let thread = {
            let main_loop = main_loop.clone();
            std::thread::Builder::new()
                .name("rtsp-server".into())
                .spawn(move || {
                    crate::sched::background();
                    main_loop.run()
                })
                .map_err(|e| fail(e.to_string()))?
        };
        let bound = server.bound_port();
        Ok(Self {
            server,
            main_loop,
            context: ctx,
            source: Some(source),
            thread: Some(thread),
            addr: format!("{address}:{bound}"),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.bound_port() as u16
    }

    /// `host:port` as bound.
    pub fn address(&self) -> &str {
        &self.addr
    }

    fn mount(
        &self,
        mount: &str,
        factory: &rtsp::RTSPMediaFactory,
        credentials: Option<(&str, &str)>,
    ) -> Result<(), RtspError> {
        if !mount.starts_with('/') {
            return Err(RtspError::Mount {
                mount: mount.into(),
                reason: "a mount starts with /".into(),
            });
        }
        if let Some((user, password)) = credentials {
            let auth = self.server.auth().unwrap_or_default();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, user)
                .build();
            auth.add_basic(&rtsp::RTSPAuth::make_basic(user, password), &token);
            self.server.set_auth(Some(&auth));
            factory.add_role_from_structure(
                &gst::Structure::builder(user)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        let mounts = self.server.mount_points().ok_or_else(|| RtspError::Mount {
            mount: mount.into(),
            reason: "the server has no mount points".into(),
        })?;
        mounts.add_factory(mount, factory.clone());
        Ok(())
    }

    /// Serves a clip (any URI uridecodebin plays) at `mount`, as H.264, in real time; each
    /// client starts it from the beginning. With `credentials`, clients must log in (basic
    /// authentication); others get 401.
    pub fn serve_file(
        &self,
        mount: &str,
        uri: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<(), RtspError> {
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( uridecodebin uri=\"{uri}\" ! videoconvert ! video/x-raw,format=I420 ! {ENCODER} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        ));
        self.mount(mount, &factory, credentials)
    }

    /// A mount fed with a stream's annotated frames; see [`RtspOut`].
    pub fn serve_frames(&self, mount: &str) -> Result<RtspOut, RtspError> {
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_shared(true);
        factory.set_launch(&format!(
            "( appsrc name=src is-live=true format=time do-timestamp=true ! videoconvert ! video/x-raw,format=I420 ! {ENCODER} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        ));
        let slot: Arc<Mutex<Option<gst_app::AppSrc>>> = Arc::default();
        // One appsrc per prepared media: remembered when the media is configured, forgotten
        // when it is unprepared (the last client left), so no dangling source is ever fed.
        let on_configure = slot.clone();
        factory.connect_media_configure(move |_, media| {
            let Some(src) = media
                .element()
                .downcast_ref::<gst::Bin>()
                .and_then(|b| b.by_name_recurse_up("src"))
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            else {
                return;
            };
            src.set_property("max-bytes", 4u64 << 20);
            src.set_property_from_str("leaky-type", "downstream");
            *on_configure.lock().unwrap_or_else(|e| e.into_inner()) = Some(src);
            let on_unprepared = on_configure.clone();
            media.connect_unprepared(move |_| {
                *on_unprepared.lock().unwrap_or_else(|e| e.into_inner()) = None;
            });
        });
        self.mount(mount, &factory, None)?;
        Ok(RtspOut {
            slot,
            url: format!("rtsp://{}{mount}", self.addr),
            mount: mount.to_string(),
            mounts: self.server.mount_points(),
            configured: None,
        })
    }
}

/// Low latency, one thread: the encoder must not take the cores inference needs.
const ENCODER: &str =
    "x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max=30 bitrate=2000";

impl Drop for RtspServer {
    fn drop(&mut self) {
        // Close every client first, then the listening socket, then the loop.
        self.server.client_filter(Some(&mut |_, client| {
            client.close();
            rtsp::RTSPFilterResult::Remove
        }));
        // The source lives on this server's own context, not the default one that
        // `SourceId::remove` searches.
        if let Some(s) = self
            .source
            .take()
            .and_then(|id| self.context.find_source_by_id(&id))
        {
            s.destroy();
        }
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A stream's annotated video, served over RTSP: a [`Sink`] that hands each frame, with its
/// boxes drawn, to the mount's encoder while a client watches.
pub struct RtspOut {
    slot: Arc<Mutex<Option<gst_app::AppSrc>>>,
    url: String,
    mount: String,
    mounts: Option<rtsp::RTSPMountPoints>,
    /// The appsrc that was last given caps: a new client's media has a new one.
    configured: Option<gst_app::AppSrc>,
}

impl RtspOut {
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Sink for RtspOut {
    fn write(
        &mut self,
        frame: &Frame,
        detections: &[Detection],
        overlay: &crate::sinks::Overlay,
    ) -> Result<(), SinkError> {
        let Some(src) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            self.configured = None;
            return Ok(()); // nobody watching: nothing to encode
        };
        let (data, info) =
            crate::sinks::video::annotated(frame, detections, overlay).map_err(|e| {
                SinkError::Video {
                    path: self.url.clone(),
                    reason: e.to_string(),
                }
            })?;
        if self.configured.as_ref() != Some(&src) {
            let caps = info.to_caps().map_err(|e| SinkError::Video {
                path: self.url.clone(),
                reason: e.to_string(),
            })?;
            src.set_caps(Some(&caps));
            self.configured = Some(src.clone());
        }
        // appsrc stamps each buffer with the media's running time (do-timestamp): every client's
        // media starts its own clock. A lagging or departing client loses frames, never the
        // pipeline's time.
        let _ = src.push_buffer(gst::Buffer::from_mut_slice(data));
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        if let Some(m) = &self.mounts {
            m.remove_factory(&self.mount);
        }
        if let Some(src) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = src.end_of_stream();
        }
        Ok(())
    }
}
