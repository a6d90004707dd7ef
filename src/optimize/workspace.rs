//! Where an artifact is written: a scratch folder next to `--out`, renamed into place only once
//! everything succeeded, so that a failure leaves no half-written artifact and a rerun
//! replaces the old one whole.
//!
//! ```no_run
//! use edgesight::optimize::workspace::Workspace;
//! let ws = Workspace::open("out/art".as_ref())?;
//! std::fs::write(ws.path().join("model.onnx"), b"...").unwrap();
//! ws.commit()?; // out/art now holds model.onnx
//! # Ok::<(), edgesight::optimize::OptimizeError>(())
//! ```

use std::path::{Path, PathBuf};

use super::spec::OptimizeError;

/// The scratch folder of one artifact, and where it goes once done.
pub struct Workspace {
    scratch: tempfile::TempDir,
    out: PathBuf,
}

impl Workspace {
    /// Creates `out`'s parent when needed, and a hidden scratch folder in it (the same file
    /// system, so that the final rename is atomic).
    pub fn open(out: &Path) -> Result<Self, OptimizeError> {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |e: std::io::Error| OptimizeError::Io {
            path: parent.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(parent).map_err(io)?;
        let scratch = tempfile::Builder::new()
            .prefix(".optimize-")
            .tempdir_in(parent)
            .map_err(io)?;
        Ok(Workspace {
            scratch,
            out: out.to_path_buf(),
        })
    }

    /// The folder the artifact is written in.
    pub fn path(&self) -> &Path {
        self.scratch.path()
    }

    /// Swaps the finished folder in, replacing what `out` held.
    pub fn commit(self) -> Result<PathBuf, OptimizeError> {
        let io = |e: std::io::Error| OptimizeError::Io {
            path: self.out.clone(),
            reason: e.to_string(),
        };
        if self.out.exists() {
            std::fs::remove_dir_all(&self.out).map_err(io)?;
        }
        let done = self.scratch.keep();
        std::fs::rename(&done, &self.out).map_err(io)?;
        Ok(self.out)
    }
}

/// A temporary folder for files that must not land in the artifact.
pub fn temp_dir() -> Result<tempfile::TempDir, OptimizeError> {
    tempfile::tempdir().map_err(|e| OptimizeError::Io {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })
}
