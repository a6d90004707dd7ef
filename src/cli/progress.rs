//! The progress bar every long CLI job shows: frames done of the total, when it is known.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for frames; the caller sets its length once the source knows it.
pub fn progress_bar() -> ProgressBar {
    let pb = ProgressBar::no_length();
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {msg}",
        )
        .expect("static template"),
    );
    pb
}
