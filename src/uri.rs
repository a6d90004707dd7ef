//! Input URIs: a CLI argument made into one, a short name for logs and outputs, and
//! credentials hidden before either sees them.
//!
//! ```
//! use edgesight::uri::redact;
//! assert_eq!(redact("rtsp://admin:secret@cam/live"), "rtsp://***@cam/live");
//! ```

use std::path::Path;

use gstreamer as gst;

/// Why an argument is no URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    /// Not `scheme://...` and no such file.
    NotFound,
    /// A file whose path GStreamer cannot make a URI of.
    Invalid(String),
}

/// `scheme://...` passes through; anything else must be an existing file, which becomes its
/// absolute `file://` URI.
pub fn resolve(input: &str) -> Result<String, UriError> {
    if input.contains("://") {
        return Ok(input.to_string());
    }
    let path = Path::new(input);
    if !path.is_file() {
        return Err(UriError::NotFound);
    }
    let abs = path.canonicalize().map_err(|_| UriError::NotFound)?;
    gst::glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| UriError::Invalid(e.to_string()))
}

/// Hides credentials in a URI before it reaches a log or an output file:
/// `rtsp://user:pass@cam/stream` becomes `rtsp://***@cam/stream`.
pub fn redact(uri: &str) -> String {
    if let Some(scheme_end) = uri.find("://") {
        let rest = &uri[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}://***@{}", &uri[..scheme_end], &rest[at + 1..]);
        }
    }
    uri.to_string()
}

/// A short stream name for events and logs: the file name for files, the redacted URI otherwise.
pub fn stream_name(uri: &str) -> String {
    if let Ok((path, _)) = gst::glib::filename_from_uri(uri) {
        if let Some(name) = path.file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    redact(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("rtsp://admin:secret@10.0.0.5:554/live"),
            "rtsp://***@10.0.0.5:554/live"
        );
        assert_eq!(redact("rtsp://cam/live"), "rtsp://cam/live");
        assert_eq!(redact("file:///tmp/a@b.mp4"), "file:///tmp/a@b.mp4");
    }
}
