//! Thread priorities: inference first.
//!
//! On a small CPU the pipeline is bound by inference, and ONNX Runtime's operators are split
//! across all cores: when any core is taken mid-operator, the whole operator waits for it.
//! Decoding, encoding, preprocessing and the sinks need far less CPU than they get by default,
//! so they run at a lower priority (nice +10) and fill the gaps inference leaves instead of
//! preempting it. Only lowering is done: raising a thread above its parent needs a privilege
//! (`CAP_SYS_NICE`) that an edge box's service user should not have.
//!
//! Threads inherit their creator's priority, so the inference stage and ONNX Runtime's worker
//! pool (created with the session) stay at the process's own.
//!
//! ```no_run
//! std::thread::spawn(|| {
//!     edgesight::sched::background();
//!     // ... work that must not slow inference down
//! });
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;

/// Nice value of background threads: at +10 a busy thread gets about a tenth of a core that an
/// inference thread also wants, which is still several times what decoding a frame needs.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread (only it: on Linux the nice value is per thread) to
/// [`BACKGROUND_NICE`], unless it already is lower. Elsewhere, does nothing.
pub fn background() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; failure only leaves the priority.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current < BACKGROUND_NICE {
            libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
        }
    }
}

/// The calling thread's nice value (0 where unknown).
pub fn current_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: as above.
    unsafe {
        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Runs every streaming thread of `pipeline` (decoders, encoders, queues) in the background.
///
/// GStreamer announces each new streaming thread with a stream-status message posted from that
/// thread; a sync handler runs right there, before the thread does any work.
pub fn background_streaming_threads(pipeline: &gst::Pipeline) {
    let Some(bus) = pipeline.bus() else { return };
    bus.set_sync_handler(|_, msg| {
        if let gst::MessageView::StreamStatus(s) = msg.view() {
            if s.get().0 == gst::StreamStatusType::Enter {
                background();
            }
        }
        gst::BusSyncReply::Pass
    });
}
