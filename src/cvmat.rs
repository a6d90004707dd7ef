//! OpenCV `Mat` headers over pixels that Rust owns, without copying them: the bridge that lets
//! preprocessing resize and the sinks draw with OpenCV on GStreamer's and our own buffers.

use opencv::core::{Mat, CV_8UC1, CV_8UC3};

fn mat_type(channels: usize) -> i32 {
    match channels {
        1 => CV_8UC1,
        3 => CV_8UC3,
        n => panic!("{n}-channel 8-bit images are not used here"),
    }
}

fn check(len: usize, (rows, cols, channels, step): (usize, usize, usize, usize)) {
    assert!(
        rows > 0
            && cols > 0
            && step >= cols * channels
            && len >= (rows - 1) * step + cols * channels,
        "{len} bytes cannot hold {rows}x{cols}x{channels} at a step of {step}"
    );
}

/// # Safety
/// `ptr` must point to `len` bytes that outlive the Mat.
unsafe fn header(
    ptr: *mut u8,
    len: usize,
    (rows, cols, channels, step): (usize, usize, usize, usize),
) -> opencv::Result<Mat> {
    check(len, (rows, cols, channels, step));
    Mat::new_rows_cols_with_data_unsafe(
        rows as i32,
        cols as i32,
        mat_type(channels),
        ptr.cast(),
        step,
    )
}

/// A read-only view of `rows` rows of `cols` 8-bit pixels with `channels` channels, `step`
/// bytes apart.
///
/// # Safety
/// The Mat must not outlive `data`, and must only be read (pass it as an input array).
pub unsafe fn mat_over(
    data: &[u8],
    rows: usize,
    cols: usize,
    channels: usize,
    step: usize,
) -> opencv::Result<Mat> {
    header(
        data.as_ptr().cast_mut(),
        data.len(),
        (rows, cols, channels, step),
    )
}

/// A writable view, as [`mat_over`].
///
/// # Safety
/// The Mat must not outlive `data`. OpenCV functions that reallocate their output (a size or
/// type other than the Mat's) leave `data` untouched: callers check that the data pointer did
/// not move.
pub unsafe fn mat_over_mut(
    data: &mut [u8],
    rows: usize,
    cols: usize,
    channels: usize,
    step: usize,
) -> opencv::Result<Mat> {
    header(data.as_mut_ptr(), data.len(), (rows, cols, channels, step))
}
