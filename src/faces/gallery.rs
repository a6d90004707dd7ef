//! Face gallery: people enrolled with several face embeddings each, kept in one
//! SQLite file that an enrollment CLI and a running pipeline share.
//!
//! Why SQLite: enrollment must be durable and all-or-nothing (a half-enrolled
//! person would be matched on too few faces), and the CLI must be able to add a
//! person while the pipeline reads. WAL mode lets readers and one writer work at
//! the same time, `synchronous=FULL` makes a finished enrollment survive a power
//! cut, and the busy timeout makes the two processes wait for each other rather
//! than fail.
//!
//! Every embedding row records the embedder (model file sha256 + alignment
//! version) that produced it: embeddings from different models or alignments
//! live in different spaces, and comparing them gives scores that look valid but
//! mean nothing. So a gallery refuses to open with another embedder instead of
//! silently recognising nobody (or the wrong person).
//!
//! The pipeline polls [`Gallery::version`] (one tiny query) and rebuilds its
//! immutable [`Matcher`] when the counter changes.
//!
//! ```
//! use edgesight::faces::gallery::{l2_normalize, EmbedderId, Enrollment, Gallery, OnExisting};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let embedder = EmbedderId { sha256: "ab".repeat(32), dim: 3, alignment: 1 };
//! let mut gallery = Gallery::open(&dir.path().join("faces.db"), &embedder)?;
//!
//! let face = |v: [f32; 3]| {
//!     let mut v = v.to_vec();
//!     l2_normalize(&mut v);
//!     v
//! };
//! let one = |v, source: &str| Enrollment { embedding: face(v), quality: 0.9, source: source.into() };
//! gallery.enroll("alice", &[one([1.0, 0.1, 0.0], "alice.jpg")], OnExisting::Refuse)?;
//! gallery.enroll("bob", &[one([0.0, 1.0, 0.1], "bob.jpg")], OnExisting::Refuse)?;
//!
//! let matcher = gallery.matcher()?;
//! let who = matcher.identify(&face([0.9, 0.2, 0.0]), 0.5, 0.1);
//! assert_eq!(who.name.as_deref(), Some("alice"));
//! let nobody = matcher.identify(&face([0.0, 0.0, 1.0]), 0.5, 0.1);
//! assert_eq!(nobody.name, None);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::{Deserialize, Serialize};

/// The similarity a face needs with a person's nearest embedding to be named. Measured on the
/// verification pairs of `calibration/` (see `docs/faces.md`); `edgesight faces calibrate`
/// recomputes it from your own photos.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// How far the best person must lead the second-best: an impostor scores about as high against
/// everyone.
pub const DEFAULT_MARGIN: f32 = 0.05;

/// Gallery schema version, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;
/// `format` tag of an exported gallery file.
pub const EXPORT_FORMAT: &str = "edgesight-face-gallery";
/// Version of the export file layout this build writes and reads.
pub const EXPORT_VERSION: i64 = 1;
/// How long a write waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA_SQL: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE persons (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    quality REAL NOT NULL,
    source TEXT NOT NULL,
    created INTEGER NOT NULL,
    embedder_sha256 TEXT NOT NULL,
    alignment INTEGER NOT NULL
);
CREATE INDEX embeddings_person ON embeddings(person_id);
";

/// Identifies the embedding model (sha256 of its file) and the face alignment
/// version: two embeddings are only comparable when all three fields agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderId {
    pub sha256: String,
    pub dim: usize,
    pub alignment: u32,
}

impl fmt::Display for EmbedderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sha256 {}, dim {}, alignment {}",
            self.sha256, self.dim, self.alignment
        )
    }
}

/// Everything that can go wrong; every message names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("cannot open face gallery {path}: directory {dir} does not exist")]
    NoParentDir { path: PathBuf, dir: PathBuf },
    #[error("{path} is not an edgesight face gallery ({reason})")]
    NotAGallery { path: PathBuf, reason: String },
    #[error("{path} was written by a newer edgesight (schema {found}, this build reads up to {supported})")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path} was made with another face embedder (gallery: {gallery}; this run: {this}); re-enroll the people with this embedder, or run with the embedder the gallery was made with")]
    OtherEmbedder {
        path: PathBuf,
        gallery: String,
        this: String,
    },
    #[error("{path}: bad person name {name:?}: {reason}")]
    BadName {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error("{path}: nothing to enroll for {name:?} (no embeddings given)")]
    NoEntries { path: PathBuf, name: String },
    #[error("{path}: bad embedding {entry}: {reason}")]
    BadEmbedding {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{path}: {name:?} is already enrolled")]
    NameExists { path: PathBuf, name: String },
    #[error("{path}: nobody named {name:?} is enrolled")]
    UnknownName { path: PathBuf, name: String },
    #[error("{path} is not a valid edgesight gallery export: {reason}")]
    BadExport { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("face gallery {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Maps an SQLite error to a [`GalleryError`] naming the file. SQLite only
/// notices a non-database file when it first reads it (`SQLITE_NOTADB`), which
/// can be any statement, so the mapping is done everywhere.
fn sql_err(path: &Path, e: rusqlite::Error) -> GalleryError {
    let path = path.to_path_buf();
    if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        let reason = "not an SQLite database".to_string();
        return GalleryError::NotAGallery { path, reason };
    }
    GalleryError::Sqlite { path, source: e }
}

/// Attaches the gallery path to rusqlite results.
trait At<T> {
    fn at(self, path: &Path) -> Result<T, GalleryError>;
}

impl<T> At<T> for rusqlite::Result<T> {
    fn at(self, path: &Path) -> Result<T, GalleryError> {
        self.map_err(|e| sql_err(path, e))
    }
}

/// One face to enroll: an L2-normalised embedding plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    pub embedding: Vec<f32>,
    pub quality: f32,
    pub source: String,
}

/// What to do when enrolling (or importing) a name that is already enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExisting {
    /// Add the new embeddings to the existing person.
    Append,
    /// Fail with [`GalleryError::NameExists`], changing nothing.
    Refuse,
}

/// Result of [`Gallery::enroll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrollOutcome {
    /// The person did not exist before.
    pub person_created: bool,
    /// Embeddings stored by this call.
    pub added: usize,
    /// Embeddings the person has now.
    pub total: usize,
}

/// Result of [`Gallery::import`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub persons_created: usize,
    /// Persons already enrolled that got the file's embeddings appended.
    pub persons_appended: usize,
    pub embeddings_added: usize,
}

/// One enrolled person, as listed by [`Gallery::list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Person {
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    pub embeddings: usize,
    /// Distinct sources of the embeddings, sorted.
    pub sources: Vec<String>,
    /// Highest embedding quality (0.0 for a person without embeddings).
    pub best_quality: f32,
}

/// A face gallery file, opened for one embedder.
#[derive(Debug)]
pub struct Gallery {
    conn: Connection,
    path: PathBuf,
    embedder: EmbedderId,
}

/// An embedding about to be inserted (from an enrollment or an import).
struct NewEmbedding<'a> {
    vector: &'a [f32],
    quality: f32,
    source: &'a str,
    created: i64,
}

impl Gallery {
    /// Opens `path`, creating the file and schema if missing, and refuses files
    /// that are not galleries, come from a newer edgesight, or were made with
    /// another embedder. Nothing is written to a refused file.
    pub fn open(path: &Path, embedder: &EmbedderId) -> Result<Gallery, GalleryError> {
        check_parent(path)?;
        // No SQLITE_OPEN_URI: a file name is a file name.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).at(path)?;
        conn.busy_timeout(BUSY_TIMEOUT).at(path)?;
        let found = probe_schema(&conn, path)?;
        configure(&conn, path)?;
        let mut gallery = Gallery {
            conn,
            path: path.to_path_buf(),
            embedder: embedder.clone(),
        };
        if found == 0 {
            gallery.create_schema()?;
        }
        gallery.check_embedder()?;
        Ok(gallery)
    }

    /// The gallery file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The embedder this gallery was opened (and made) with.
    pub fn embedder(&self) -> &EmbedderId {
        &self.embedder
    }

    /// Creates the tables in an empty database. IMMEDIATE so that two processes
    /// creating the same new file cannot both do it; the re-check of
    /// `user_version` inside the lock lets the loser skip.
    fn create_schema(&mut self) -> Result<(), GalleryError> {
        let path = &self.path;
        let tx = write_tx(&mut self.conn, path)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .at(path)?;
        if found == 0 {
            tx.execute_batch(SCHEMA_SQL).at(path)?;
            let e = &self.embedder;
            let dim = e.dim.to_string();
            let alignment = e.alignment.to_string();
            let mut insert = tx
                .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
                .at(path)?;
            for (key, value) in [
                ("embedder_sha256", e.sha256.as_str()),
                ("embedder_dim", &dim),
                ("embedder_alignment", &alignment),
                ("version", "0"),
            ] {
                insert.execute(params![key, value]).at(path)?;
            }
            drop(insert);
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .at(path)?;
        }
        tx.commit().at(path)
    }

    /// Refuses a gallery whose meta or any stored embedding comes from another
    /// embedder (sha256, alignment or dimension).
    fn check_embedder(&self) -> Result<(), GalleryError> {
        let path = &self.path;
        let stored = read_meta_embedder(&self.conn, path)?;
        let this = &self.embedder;
        let other = if stored != *this {
            Some(stored)
        } else {
            first_foreign_row(&self.conn, path, this)?
        };
        match other {
            Some(gallery) => Err(GalleryError::OtherEmbedder {
                path: path.clone(),
                gallery: gallery.to_string(),
                this: this.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Enrolls `name` with `entries`, all or nothing, and bumps the version.
    /// Everything is validated before the transaction starts, so a bad entry
    /// leaves the gallery exactly as it was.
    pub fn enroll(
        &mut self,
        name: &str,
        entries: &[Enrollment],
        on_existing: OnExisting,
    ) -> Result<EnrollOutcome, GalleryError> {
        let path = &self.path;
        validate_name(path, name)?;
        if entries.is_empty() {
            let name = name.to_string();
            return Err(GalleryError::NoEntries {
                path: path.clone(),
                name,
            });
        }
        let dim = self.embedder.dim;
        for (i, e) in entries.iter().enumerate() {
            let entry = format!("#{} (source {:?})", i + 1, e.source);
            validate_vector(path, &entry, dim, &e.embedding, e.quality)?;
        }
        let now = now_unix();
        let tx = write_tx(&mut self.conn, path)?;
        let (person, person_created) = match find_person(&tx, name).at(path)? {
            Some(_) if on_existing == OnExisting::Refuse => {
                let name = name.to_string();
                return Err(GalleryError::NameExists {
                    path: path.clone(),
                    name,
                });
            }
            Some(id) => (id, false),
            None => (insert_person(&tx, name, now).at(path)?, true),
        };
        for e in entries {
            let new = NewEmbedding {
                vector: &e.embedding,
                quality: e.quality,
                source: &e.source,
                created: now,
            };
            insert_embedding(&tx, person, &new, &self.embedder).at(path)?;
        }
        let total = count_embeddings(&tx, person).at(path)?;
        bump_version(&tx).at(path)?;
        tx.commit().at(path)?;
        let added = entries.len();
        Ok(EnrollOutcome {
            person_created,
            added,
            total,
        })
    }

    /// All enrolled people, sorted by name, read from one consistent snapshot.
    pub fn list(&self) -> Result<Vec<Person>, GalleryError> {
        let path = &self.path;
        let tx = self.conn.unchecked_transaction().at(path)?;
        let mut stmt = tx
            .prepare(
                "SELECT p.id, p.name, p.created, COUNT(e.id), MAX(e.quality)
                 FROM persons p LEFT JOIN embeddings e ON e.person_id = p.id
                 GROUP BY p.id ORDER BY p.name",
            )
            .at(path)?;
        let rows = stmt
            .query_map([], |r| {
                let person = Person {
                    name: r.get(1)?,
                    created: r.get(2)?,
                    embeddings: to_usize(r.get(3)?),
                    sources: Vec::new(),
                    best_quality: r.get::<_, Option<f32>>(4)?.unwrap_or(0.0),
                };
                Ok((r.get::<_, i64>(0)?, person))
            })
            .at(path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .at(path)?;
        let mut sources = tx
            .prepare("SELECT DISTINCT source FROM embeddings WHERE person_id = ?1 ORDER BY source")
            .at(path)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, mut person) in rows {
            person.sources = sources
                .query_map([id], |r| r.get(0))
                .at(path)?
                .collect::<rusqlite::Result<_>>()
                .at(path)?;
            out.push(person);
        }
        Ok(out)
    }

    /// Removes `name` and all their embeddings; returns how many embeddings went.
    pub fn remove(&mut self, name: &str) -> Result<usize, GalleryError> {
        let path = &self.path;
        let tx = write_tx(&mut self.conn, path)?;
        let id = find_person(&tx, name)
            .at(path)?
            .ok_or_else(|| unknown(path, name))?;
        let removed = count_embeddings(&tx, id).at(path)?;
        // Embeddings go with the person (ON DELETE CASCADE, foreign_keys=ON).
        tx.execute("DELETE FROM persons WHERE id = ?1", [id])
            .at(path)?;
        bump_version(&tx).at(path)?;
        tx.commit().at(path)?;
        Ok(removed)
    }

    /// Renames `old` to `new`. Renaming a person to their own name changes
    /// nothing (and does not bump the version).
    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), GalleryError> {
        let path = &self.path;
        validate_name(path, new)?;
        let tx = write_tx(&mut self.conn, path)?;
        let id = find_person(&tx, old)
            .at(path)?
            .ok_or_else(|| unknown(path, old))?;
        if old == new {
            return Ok(());
        }
        if find_person(&tx, new).at(path)?.is_some() {
            let name = new.to_string();
            return Err(GalleryError::NameExists {
                path: path.clone(),
                name,
            });
        }
        tx.execute(
            "UPDATE persons SET name = ?1 WHERE id = ?2",
            params![new, id],
        )
        .at(path)?;
        bump_version(&tx).at(path)?;
        tx.commit().at(path)
    }

    /// The change counter, bumped by every write. One indexed read, so a
    /// pipeline can poll it every second and rebuild its [`Matcher`] when it
    /// changes; each call sees the latest commit of any process.
    pub fn version(&self) -> Result<u64, GalleryError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'version'")
            .at(path)?;
        let v: Option<i64> = stmt.query_row([], |r| r.get(0)).optional().at(path)?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// Loads every embedding into an immutable [`Matcher`], from one snapshot.
    pub fn matcher(&self) -> Result<Matcher, GalleryError> {
        let path = &self.path;
        let dim = self.embedder.dim;
        let tx = self.conn.unchecked_transaction().at(path)?;
        let mut stmt = tx
            .prepare(
                "SELECT e.id, p.name, e.vector FROM embeddings e
                 JOIN persons p ON p.id = e.person_id ORDER BY p.name, e.id",
            )
            .at(path)?;
        let mut rows = stmt.query([]).at(path)?;
        let mut m = Matcher {
            dim,
            names: Vec::new(),
            row_person: Vec::new(),
            vectors: Vec::new(),
        };
        while let Some(row) = rows.next().at(path)? {
            let (id, name, blob): (i64, String, Vec<u8>) = (
                row.get(0).at(path)?,
                row.get(1).at(path)?,
                row.get(2).at(path)?,
            );
            let vector = decode_stored(path, id, &name, &blob, dim)?;
            // Rows come sorted by name, and names are unique: a new name is a new person.
            if m.names.last() != Some(&name) {
                m.names.push(name);
            }
            m.row_person.push(m.names.len().saturating_sub(1));
            m.vectors.extend_from_slice(&vector);
        }
        Ok(m)
    }

    /// Writes the whole gallery as JSON to `path`, atomically (temp file in the
    /// same directory, fsync, rename), so a crash never leaves half a file.
    /// Returns the number of persons written.
    pub fn export(&self, path: &Path) -> Result<usize, GalleryError> {
        let file = self.snapshot()?;
        let mut json = serde_json::to_vec(&file).map_err(|e| GalleryError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        json.push(b'\n');
        write_atomic(path, &json)?;
        Ok(file.persons.len())
    }

    /// Reads the gallery into the export layout, from one snapshot.
    fn snapshot(&self) -> Result<ExportFile, GalleryError> {
        let path = &self.path;
        let tx = self.conn.unchecked_transaction().at(path)?;
        let mut stmt = tx
            .prepare(
                "SELECT e.id, p.name, p.created, e.vector, e.quality, e.source, e.created
                 FROM embeddings e JOIN persons p ON p.id = e.person_id ORDER BY p.name, e.id",
            )
            .at(path)?;
        let mut rows = stmt.query([]).at(path)?;
        let mut persons: Vec<ExportPerson> = Vec::new();
        while let Some(r) = rows.next().at(path)? {
            let (id, name, created): (i64, String, i64) =
                (r.get(0).at(path)?, r.get(1).at(path)?, r.get(2).at(path)?);
            let blob: Vec<u8> = r.get(3).at(path)?;
            let embedding = ExportEmbedding {
                vector: decode_stored(path, id, &name, &blob, self.embedder.dim)?,
                quality: r.get(4).at(path)?,
                source: r.get(5).at(path)?,
                created: r.get(6).at(path)?,
            };
            match persons.last_mut() {
                Some(p) if p.name == name => p.embeddings.push(embedding),
                _ => persons.push(ExportPerson {
                    name,
                    created,
                    embeddings: vec![embedding],
                }),
            }
        }
        Ok(ExportFile {
            format: EXPORT_FORMAT.to_string(),
            version: EXPORT_VERSION,
            embedder: self.embedder.clone(),
            persons,
        })
    }

    /// Imports an exported gallery file in one transaction, keeping the
    /// file's `created` times. The whole file is checked first; any error
    /// (including [`OnExisting::Refuse`] hitting an existing name) changes
    /// nothing.
    pub fn import(
        &mut self,
        path: &Path,
        on_existing: OnExisting,
    ) -> Result<ImportOutcome, GalleryError> {
        let file = read_export(path, &self.embedder)?;
        let gallery = &self.path;
        let tx = write_tx(&mut self.conn, gallery)?;
        let mut out = ImportOutcome::default();
        for person in &file.persons {
            import_person(&tx, gallery, person, on_existing, &self.embedder, &mut out)?;
        }
        if out.embeddings_added > 0 {
            bump_version(&tx).at(gallery)?;
        }
        tx.commit().at(gallery)?;
        Ok(out)
    }
}

/// SQLite would report a missing directory as "unable to open database file";
/// say what is actually wrong.
fn check_parent(path: &Path) -> Result<(), GalleryError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(GalleryError::NoParentDir {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

/// Reads the schema (which is where SQLite notices a non-database file) and
/// returns `user_version`, refusing newer and foreign databases before
/// anything is written to them.
fn probe_schema(conn: &Connection, path: &Path) -> Result<i64, GalleryError> {
    let not_gallery = |reason: String| GalleryError::NotAGallery {
        path: path.to_path_buf(),
        reason,
    };
    let foreign: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name NOT IN ('meta', 'persons', 'embeddings')
             ORDER BY name LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .at(path)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .at(path)?;
    if found > SCHEMA_VERSION {
        let supported = SCHEMA_VERSION;
        let path = path.to_path_buf();
        return Err(GalleryError::NewerSchema {
            path,
            found,
            supported,
        });
    }
    if found < 0 {
        return Err(not_gallery(format!("unknown schema version {found}")));
    }
    let tables = count_gallery_tables(conn, path)?;
    match (found, foreign) {
        (0, Some(table)) => Err(not_gallery(format!(
            "an SQLite database with other tables, e.g. {table:?}"
        ))),
        (0, None) if tables > 0 => Err(not_gallery("unversioned gallery tables".to_string())),
        (SCHEMA_VERSION, _) if tables != 3 => {
            Err(not_gallery("gallery tables missing".to_string()))
        }
        _ => Ok(found),
    }
}

fn count_gallery_tables(conn: &Connection, path: &Path) -> Result<i64, GalleryError> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'
         AND name IN ('meta', 'persons', 'embeddings')",
        [],
        |r| r.get(0),
    )
    .at(path)
}

/// Per-connection settings; WAL is also persisted in the file, so other
/// processes (and sqlite3 on the command line) use it too.
fn configure(conn: &Connection, path: &Path) -> Result<(), GalleryError> {
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .at(path)?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .at(path)
}

/// IMMEDIATE takes the write lock up front: a deferred transaction that later
/// upgrades to writing can fail with SQLITE_BUSY without waiting.
fn write_tx<'c>(conn: &'c mut Connection, path: &Path) -> Result<Transaction<'c>, GalleryError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .at(path)
}

fn read_meta_embedder(conn: &Connection, path: &Path) -> Result<EmbedderId, GalleryError> {
    let get = |key: &str| -> Result<String, GalleryError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, Option<String>>(0)
        })
        .optional()
        .at(path)?
        .flatten()
        .ok_or_else(|| GalleryError::NotAGallery {
            path: path.to_path_buf(),
            reason: format!("meta table lacks {key}"),
        })
    };
    let bad = |key: &str| GalleryError::NotAGallery {
        path: path.to_path_buf(),
        reason: format!("meta {key} is not a number"),
    };
    Ok(EmbedderId {
        sha256: get("embedder_sha256")?,
        dim: get("embedder_dim")?
            .parse()
            .map_err(|_| bad("embedder_dim"))?,
        alignment: get("embedder_alignment")?
            .parse()
            .map_err(|_| bad("embedder_alignment"))?,
    })
}

/// The embedder of the first stored embedding that does not match `this`.
fn first_foreign_row(
    conn: &Connection,
    path: &Path,
    this: &EmbedderId,
) -> Result<Option<EmbedderId>, GalleryError> {
    let bytes = i64::try_from(this.dim.saturating_mul(4)).unwrap_or(i64::MAX);
    conn.query_row(
        "SELECT embedder_sha256, alignment, length(vector) FROM embeddings
         WHERE embedder_sha256 <> ?1 OR alignment <> ?2 OR length(vector) <> ?3 LIMIT 1",
        params![this.sha256, this.alignment, bytes],
        |r| {
            Ok(EmbedderId {
                sha256: r.get(0)?,
                alignment: r.get(1)?,
                dim: to_usize(r.get(2)?) / 4,
            })
        },
    )
    .optional()
    .at(path)
}

/// Names are shown on screen and in events: refuse what would display
/// confusingly or be a different person by whitespace alone.
fn validate_name(path: &Path, name: &str) -> Result<(), GalleryError> {
    let reason = if name.trim().is_empty() {
        "it is empty"
    } else if name.trim() != name {
        "it has leading or trailing whitespace"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    let (path, name) = (path.to_path_buf(), name.to_string());
    Err(GalleryError::BadName { path, name, reason })
}

/// A wrong-length or non-finite vector would poison every later match.
fn validate_vector(
    path: &Path,
    entry: &str,
    dim: usize,
    vector: &[f32],
    quality: f32,
) -> Result<(), GalleryError> {
    let reason = if vector.len() != dim {
        format!(
            "has {} values, this gallery's embedder makes {dim}",
            vector.len()
        )
    } else if !vector.iter().all(|x| x.is_finite()) {
        "contains NaN or infinite values".to_string()
    } else if !quality.is_finite() {
        // SQLite would store NaN as NULL and fail the NOT NULL constraint.
        "quality is NaN or infinite".to_string()
    } else {
        return Ok(());
    };
    Err(GalleryError::BadEmbedding {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        reason,
    })
}

fn unknown(path: &Path, name: &str) -> GalleryError {
    GalleryError::UnknownName {
        path: path.to_path_buf(),
        name: name.to_string(),
    }
}

fn find_person(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT id FROM persons WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

fn insert_person(conn: &Connection, name: &str, created: i64) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO persons (name, created) VALUES (?1, ?2)",
        params![name, created],
    )?;
    Ok(conn.last_insert_rowid())
}

fn insert_embedding(
    conn: &Connection,
    person: i64,
    e: &NewEmbedding<'_>,
    embedder: &EmbedderId,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO embeddings
         (person_id, vector, quality, source, created, embedder_sha256, alignment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            person,
            encode(e.vector),
            e.quality,
            e.source,
            e.created,
            embedder.sha256,
            embedder.alignment
        ],
    )?;
    Ok(())
}

fn count_embeddings(conn: &Connection, person: i64) -> rusqlite::Result<usize> {
    conn.query_row(
        "SELECT COUNT(*) FROM embeddings WHERE person_id = ?1",
        [person],
        |r| r.get(0).map(to_usize),
    )
}

/// Upsert, so a gallery whose counter row went missing still counts.
fn bump_version(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('version', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}

fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Vectors are stored as little-endian f32 so the file reads the same on any
/// machine.
fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(blob: &[u8]) -> Option<Vec<f32>> {
    if !blob.len().is_multiple_of(4) {
        return None;
    }
    blob.chunks_exact(4)
        .map(|c| <[u8; 4]>::try_from(c).ok().map(f32::from_le_bytes))
        .collect()
}

/// Decodes a stored vector, refusing one of the wrong length (a damaged row).
fn decode_stored(
    path: &Path,
    id: i64,
    name: &str,
    blob: &[u8],
    dim: usize,
) -> Result<Vec<f32>, GalleryError> {
    decode(blob)
        .filter(|v| v.len() == dim)
        .ok_or_else(|| GalleryError::BadEmbedding {
            path: path.to_path_buf(),
            entry: format!("row {id} of {name:?}"),
            reason: format!(
                "stored vector is {} bytes, expected {}",
                blob.len(),
                dim.saturating_mul(4)
            ),
        })
}

/// Temp file next to the target (same filesystem, so rename is atomic), fsync,
/// rename, then fsync the directory so the rename itself is durable.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GalleryError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io_err = |source| GalleryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)?;
    // Best effort: some platforms cannot open or fsync a directory.
    let _ = File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportFile {
    format: String,
    version: i64,
    embedder: EmbedderId,
    persons: Vec<ExportPerson>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportPerson {
    name: String,
    created: i64,
    embeddings: Vec<ExportEmbedding>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportEmbedding {
    vector: Vec<f32>,
    quality: f32,
    source: String,
    created: i64,
}

/// Reads and fully checks an export file before anything is written.
fn read_export(path: &Path, embedder: &EmbedderId) -> Result<ExportFile, GalleryError> {
    let bad = |reason: String| GalleryError::BadExport {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|source| GalleryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    // Check the tags first: a newer or foreign file should say so, not fail
    // on some field it happens to lack.
    check_export_header(path, &value)?;
    let file: ExportFile = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if file.embedder != *embedder {
        return Err(GalleryError::OtherEmbedder {
            path: path.to_path_buf(),
            gallery: file.embedder.to_string(),
            this: embedder.to_string(),
        });
    }
    for p in &file.persons {
        validate_export_person(path, p, embedder.dim)?;
    }
    Ok(file)
}

fn check_export_header(path: &Path, value: &serde_json::Value) -> Result<(), GalleryError> {
    let bad = |reason: String| GalleryError::BadExport {
        path: path.to_path_buf(),
        reason,
    };
    let format = value.get("format").and_then(serde_json::Value::as_str);
    if format != Some(EXPORT_FORMAT) {
        return Err(bad(format!(
            "format tag is {format:?}, expected {EXPORT_FORMAT:?}"
        )));
    }
    match value.get("version").and_then(serde_json::Value::as_i64) {
        Some(found) if found > EXPORT_VERSION => Err(GalleryError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: EXPORT_VERSION,
        }),
        Some(found) if found >= 1 => Ok(()),
        _ => Err(bad("missing or invalid version".to_string())),
    }
}

fn validate_export_person(path: &Path, p: &ExportPerson, dim: usize) -> Result<(), GalleryError> {
    validate_name(path, &p.name)?;
    if p.embeddings.is_empty() {
        let name = p.name.clone();
        return Err(GalleryError::NoEntries {
            path: path.to_path_buf(),
            name,
        });
    }
    for (i, e) in p.embeddings.iter().enumerate() {
        let entry = format!("#{} of {:?} (source {:?})", i + 1, p.name, e.source);
        validate_vector(path, &entry, dim, &e.vector, e.quality)?;
    }
    Ok(())
}

fn import_person(
    tx: &Connection,
    gallery: &Path,
    p: &ExportPerson,
    on_existing: OnExisting,
    embedder: &EmbedderId,
    out: &mut ImportOutcome,
) -> Result<(), GalleryError> {
    let id = match find_person(tx, &p.name).at(gallery)? {
        Some(_) if on_existing == OnExisting::Refuse => {
            let (path, name) = (gallery.to_path_buf(), p.name.clone());
            return Err(GalleryError::NameExists { path, name });
        }
        Some(id) => {
            out.persons_appended += 1;
            id
        }
        None => {
            out.persons_created += 1;
            insert_person(tx, &p.name, p.created).at(gallery)?
        }
    };
    for e in &p.embeddings {
        let new = NewEmbedding {
            vector: &e.vector,
            quality: e.quality,
            source: &e.source,
            created: e.created,
        };
        insert_embedding(tx, id, &new, embedder).at(gallery)?;
        out.embeddings_added += 1;
    }
    Ok(())
}

/// Dot product; on L2-normalised vectors this is the cosine similarity.
/// Only the common prefix counts if the lengths differ.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Eight independent sums let the compiler vectorise (a single running
    // f32 sum cannot be reordered).
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scales `v` to unit length. A zero or non-finite vector is left as it is
/// (there is no direction to keep).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The answer of [`Matcher::identify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The recognised person; `None` means unknown.
    pub name: Option<String>,
    /// The most similar person and their score, even when not accepted.
    pub best: Option<(String, f32)>,
    /// Best score of any other person; `None` when there is no other person.
    pub second: Option<f32>,
    /// `best - second`, with a missing second person counting as 0.0 (an
    /// unrelated face scores about 0 on normalised embeddings). So with one
    /// person enrolled the margin is the best score itself. 0.0 when nobody
    /// is enrolled.
    pub margin: f32,
}

/// All embeddings of a gallery in memory, for matching every face of every
/// frame without touching the database. Immutable: rebuild it when
/// [`Gallery::version`] changes.
#[derive(Debug, Clone)]
pub struct Matcher {
    dim: usize,
    /// Person names, sorted.
    names: Vec<String>,
    /// Index into `names` for each embedding row.
    row_person: Vec<usize>,
    /// Embedding rows, `dim` values each.
    vectors: Vec<f32>,
}

impl Matcher {
    /// Number of embeddings.
    pub fn len(&self) -> usize {
        self.row_person.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_person.is_empty()
    }

    /// Names of the enrolled persons, sorted.
    pub fn persons(&self) -> &[String] {
        &self.names
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Who `q` is. Each person scores their nearest embedding (max dot
    /// product): people enrolled from several angles match on the closest
    /// one rather than a blurred average. The best person is accepted only
    /// when their score reaches `threshold` and beats every other person by
    /// at least `min_margin`; so with `min_margin > 0` a tie is unknown.
    /// A query of the wrong length, or with NaNs, is unknown.
    pub fn identify(&self, q: &[f32], threshold: f32, min_margin: f32) -> Identity {
        let scores = self.person_scores(q);
        let mut best: Option<(usize, f32)> = None;
        let mut second: Option<f32> = None;
        for (p, &s) in scores.iter().enumerate() {
            if !s.is_finite() {
                continue;
            }
            match best {
                Some((_, b)) if s <= b => second = Some(second.map_or(s, |x| x.max(s))),
                _ => {
                    if let Some((_, b)) = best {
                        second = Some(second.map_or(b, |x| x.max(b)));
                    }
                    best = Some((p, s));
                }
            }
        }
        let best = best.and_then(|(p, s)| self.names.get(p).map(|n| (n.clone(), s)));
        let margin = best
            .as_ref()
            .map_or(0.0, |(_, s)| s - second.unwrap_or(0.0));
        let name = match &best {
            Some((n, s)) if *s >= threshold && margin >= min_margin => Some(n.clone()),
            _ => None,
        };
        Identity {
            name,
            best,
            second,
            margin,
        }
    }

    /// Max similarity per person; -inf for persons with no usable score.
    fn person_scores(&self, q: &[f32]) -> Vec<f32> {
        let mut best = vec![f32::NEG_INFINITY; self.names.len()];
        if q.len() != self.dim || self.dim == 0 {
            return best;
        }
        for (v, &p) in self.vectors.chunks_exact(self.dim).zip(&self.row_person) {
            let s = similarity(q, v);
            if let Some(slot) = best.get_mut(p) {
                if s > *slot {
                    *slot = s;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    const DIM: usize = 8;

    fn embedder() -> EmbedderId {
        EmbedderId {
            sha256: "0f".repeat(32),
            dim: DIM,
            alignment: 1,
        }
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; DIM];
        v[i] = 1.0;
        v
    }

    fn norm(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        l2_normalize(&mut v);
        v
    }

    /// `a * unit(i) + b * unit(j)`, normalised.
    fn mix(i: usize, a: f32, j: usize, b: f32) -> Vec<f32> {
        let mut v = vec![0.0; DIM];
        v[i] += a;
        v[j] += b;
        norm(&v)
    }

    fn entry(v: Vec<f32>, source: &str) -> Enrollment {
        Enrollment {
            embedding: v,
            quality: 0.8,
            source: source.to_string(),
        }
    }

    fn new_gallery() -> (tempfile::TempDir, PathBuf, Gallery) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faces.db");
        let g = Gallery::open(&path, &embedder()).unwrap();
        (dir, path, g)
    }

    /// alice = unit(0), bob = unit(1).
    fn two_people() -> (tempfile::TempDir, PathBuf, Gallery) {
        let (dir, path, mut g) = new_gallery();
        g.enroll("alice", &[entry(unit(0), "a.jpg")], OnExisting::Refuse)
            .unwrap();
        g.enroll("bob", &[entry(unit(1), "b.jpg")], OnExisting::Refuse)
            .unwrap();
        (dir, path, g)
    }

    fn mentions(err: &GalleryError, path: &Path) -> bool {
        err.to_string().contains(&path.display().to_string())
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn identifies_near_query_with_positive_margin() {
        let (_d, _p, g) = two_people();
        let m = g.matcher().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.persons(), ["alice", "bob"]);
        let id = m.identify(&mix(0, 1.0, 1, 0.3), 0.5, 0.1);
        assert_eq!(id.name.as_deref(), Some("alice"));
        let (best, score) = id.best.unwrap();
        assert_eq!(best, "alice");
        assert!(id.margin > 0.5, "margin {}", id.margin);
        assert!((id.margin - (score - id.second.unwrap())).abs() < 1e-6);
    }

    #[test]
    fn orthogonal_query_is_unknown() {
        let (_d, _p, g) = two_people();
        let id = g.matcher().unwrap().identify(&unit(2), 0.5, 0.1);
        assert_eq!(id.name, None);
        assert!(id.best.unwrap().1.abs() < 1e-6);
    }

    #[test]
    fn tie_is_unknown_because_margin_is_zero() {
        let (_d, _p, g) = two_people();
        let id = g
            .matcher()
            .unwrap()
            .identify(&mix(0, 1.0, 1, 1.0), 0.5, 0.05);
        assert_eq!(id.name, None);
        let score = id.best.unwrap().1;
        assert!(score > 0.7, "tie scores above threshold: {score}");
        assert_eq!(id.margin, 0.0);
    }

    #[test]
    fn single_person_margin_is_best_score() {
        let (_d, _p, mut g) = new_gallery();
        g.enroll("alice", &[entry(unit(0), "a")], OnExisting::Refuse)
            .unwrap();
        let q = mix(0, 1.0, 1, 0.5);
        let id = g.matcher().unwrap().identify(&q, 0.5, 0.1);
        assert_eq!(id.second, None);
        assert!((id.margin - similarity(&q, &unit(0))).abs() < 1e-6);
        assert_eq!(id.name.as_deref(), Some("alice"));
    }

    #[test]
    fn matcher_takes_max_over_a_persons_embeddings() {
        let (_d, _p, mut g) = new_gallery();
        // alice enrolled from two very different angles; bob sits on her mean.
        let alice = [entry(unit(0), "front"), entry(unit(2), "side")];
        g.enroll("alice", &alice, OnExisting::Refuse).unwrap();
        g.enroll(
            "bob",
            &[entry(mix(0, 1.0, 2, 1.0), "b")],
            OnExisting::Refuse,
        )
        .unwrap();
        let q = mix(0, 0.1, 2, 1.0);
        let id = g.matcher().unwrap().identify(&q, 0.5, 0.1);
        let (name, score) = id.best.clone().unwrap();
        assert_eq!(name, "alice");
        assert!((score - similarity(&q, &unit(2))).abs() < 1e-6);
        assert_eq!(id.name.as_deref(), Some("alice"), "{id:?}");
    }

    #[test]
    fn bad_queries_and_empty_matcher_are_unknown() {
        let (_d, _p, g) = new_gallery();
        let empty = g.matcher().unwrap();
        assert!(empty.is_empty());
        let id = empty.identify(&unit(0), 0.0, 0.0);
        assert_eq!((id.name, id.best, id.margin), (None, None, 0.0));
        let (_d2, _p2, g2) = two_people();
        let m = g2.matcher().unwrap();
        assert_eq!(m.identify(&[1.0, 0.0], 0.0, 0.0).best, None);
        let mut nan = unit(0);
        nan[3] = f32::NAN;
        assert_eq!(m.identify(&nan, 0.0, 0.0).name, None);
    }

    #[test]
    fn similarity_and_normalize() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let dot: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(similarity(&a, &a), dot);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = vec![0.0; 4];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 4]);
    }

    #[test]
    fn wal_mode_is_on() {
        let (_d, path, _g) = new_gallery();
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    fn assert_not_a_gallery(path: &Path, contents: &[u8]) {
        fs::write(path, contents).unwrap();
        let err = Gallery::open(path, &embedder()).unwrap_err();
        assert!(
            matches!(&err, GalleryError::NotAGallery { path: p, .. } if p == path),
            "{err:?}"
        );
        assert!(mentions(&err, path), "{err}");
        assert_eq!(
            fs::read(path).unwrap(),
            contents,
            "refused file was modified"
        );
    }

    #[test]
    fn refuses_text_and_random_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"name,embedding\nalice,0.1 0.2\n".repeat(100);
        assert_not_a_gallery(&dir.path().join("faces.txt"), &text);
        let mut seed = 42u64;
        let random: Vec<u8> = (0..8192)
            .map(|_| (lcg(&mut seed) * 127.0) as i8 as u8)
            .collect();
        assert_not_a_gallery(&dir.path().join("random.db"), &random);
        let err = Gallery::open(&dir.path().join("random.db"), &embedder()).unwrap_err();
        assert!(err.to_string().contains("not an SQLite database"), "{err}");
    }

    #[test]
    fn refuses_foreign_sqlite_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE songs (title TEXT)")
            .unwrap();
        drop(conn);
        let err = Gallery::open(&path, &embedder()).unwrap_err();
        assert!(matches!(err, GalleryError::NotAGallery { .. }), "{err:?}");
        assert!(
            mentions(&err, &path) && err.to_string().contains("songs"),
            "{err}"
        );
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "foreign database was switched to WAL");
    }

    #[test]
    fn refuses_newer_schema() {
        let (_d, path, g) = new_gallery();
        drop(g);
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 2")
            .unwrap();
        let err = Gallery::open(&path, &embedder()).unwrap_err();
        assert!(
            matches!(
                err,
                GalleryError::NewerSchema {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            mentions(&err, &path) && err.to_string().contains("schema 2"),
            "{err}"
        );
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("faces.db");
        let err = Gallery::open(&path, &embedder()).unwrap_err();
        assert!(matches!(err, GalleryError::NoParentDir { .. }), "{err:?}");
        assert!(mentions(&err, &path), "{err}");
    }

    fn assert_other_embedder(path: &Path, e: &EmbedderId) {
        let err = Gallery::open(path, e).unwrap_err();
        assert!(matches!(err, GalleryError::OtherEmbedder { .. }), "{err:?}");
        assert!(
            mentions(&err, path) && err.to_string().contains("re-enroll"),
            "{err}"
        );
    }

    #[test]
    fn refuses_other_embedder() {
        let (_d, path, g) = new_gallery(); // empty: refused on meta alone
        drop(g);
        let sha = EmbedderId {
            sha256: "aa".repeat(32),
            ..embedder()
        };
        assert_other_embedder(&path, &sha);
        let align = EmbedderId {
            alignment: 2,
            ..embedder()
        };
        assert_other_embedder(&path, &align);
        let dim = EmbedderId {
            dim: 16,
            ..embedder()
        };
        assert_other_embedder(&path, &dim);
        assert!(Gallery::open(&path, &embedder()).is_ok());
    }

    #[test]
    fn refuses_rows_from_other_embedder() {
        let (_d, path, g) = two_people();
        drop(g);
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE embeddings SET alignment = 7 WHERE id = 1", [])
            .unwrap();
        let err = Gallery::open(&path, &embedder()).unwrap_err();
        assert!(err.to_string().contains("alignment 7"), "{err}");
    }

    fn state(g: &Gallery) -> (Vec<Person>, u64, usize) {
        (
            g.list().unwrap(),
            g.version().unwrap(),
            g.matcher().unwrap().len(),
        )
    }

    #[test]
    fn bad_entry_leaves_gallery_unchanged() {
        let (_d, path, mut g) = two_people();
        let before = state(&g);
        let mut nan = unit(2);
        nan[5] = f32::NAN;
        for third in [vec![1.0; DIM + 1], nan] {
            let entries = [
                entry(unit(0), "1"),
                entry(unit(1), "2"),
                entry(third, "third.jpg"),
            ];
            for name in ["carol", "alice"] {
                let err = g.enroll(name, &entries, OnExisting::Append).unwrap_err();
                assert!(matches!(err, GalleryError::BadEmbedding { .. }), "{err:?}");
                assert!(
                    err.to_string().contains("third.jpg") && mentions(&err, &path),
                    "{err}"
                );
                assert_eq!(state(&g), before);
            }
        }
        let mut bad_q = entry(unit(0), "q");
        bad_q.quality = f32::NAN;
        assert!(g.enroll("carol", &[bad_q], OnExisting::Append).is_err());
        assert!(g.enroll("carol", &[], OnExisting::Append).is_err());
        assert_eq!(state(&g), before);
    }

    #[test]
    fn refuse_and_append() {
        let (_d, _p, mut g) = two_people();
        let before = state(&g);
        let err = g
            .enroll("alice", &[entry(unit(2), "x")], OnExisting::Refuse)
            .unwrap_err();
        assert!(matches!(err, GalleryError::NameExists { ref name, .. } if name == "alice"));
        assert_eq!(state(&g), before);
        let two = [entry(unit(2), "x"), entry(unit(3), "y")];
        let out = g.enroll("alice", &two, OnExisting::Append).unwrap();
        assert_eq!(
            out,
            EnrollOutcome {
                person_created: false,
                added: 2,
                total: 3
            }
        );
        let alice = g.list().unwrap().remove(0);
        assert_eq!(
            (alice.embeddings, alice.sources),
            (3, vec!["a.jpg".into(), "x".into(), "y".into()])
        );
        let out = g.enroll("carol", &two, OnExisting::Refuse).unwrap();
        assert_eq!(
            out,
            EnrollOutcome {
                person_created: true,
                added: 2,
                total: 2
            }
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let (_d, _p, mut g) = new_gallery();
        for name in ["", "   ", " bob", "bob ", "bo\nb", "a\u{7f}"] {
            let err = g
                .enroll(name, &[entry(unit(0), "s")], OnExisting::Append)
                .unwrap_err();
            assert!(
                matches!(err, GalleryError::BadName { .. }),
                "{name:?}: {err:?}"
            );
        }
        assert!(g.list().unwrap().is_empty());
        assert_eq!(g.version().unwrap(), 0);
    }

    #[test]
    fn list_reports_people() {
        let (_d, _p, mut g) = new_gallery();
        let mut e = entry(unit(0), "cam2");
        e.quality = 0.95;
        g.enroll(
            "zed",
            &[e, entry(unit(1), "cam1"), entry(unit(2), "cam2")],
            OnExisting::Refuse,
        )
        .unwrap();
        g.enroll("amy", &[entry(unit(3), "x")], OnExisting::Refuse)
            .unwrap();
        let list = g.list().unwrap();
        assert_eq!(
            list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["amy", "zed"]
        );
        let zed = &list[1];
        assert_eq!((zed.embeddings, zed.best_quality), (3, 0.95));
        assert_eq!(zed.sources, ["cam1", "cam2"]);
        assert!(zed.created > 1_600_000_000);
    }

    #[test]
    fn rename_and_remove() {
        let (_d, _p, mut g) = two_people();
        g.enroll("bob", &[entry(unit(2), "b2")], OnExisting::Append)
            .unwrap();
        let v = g.version().unwrap();
        g.rename("bob", "robert").unwrap();
        assert_eq!(g.version().unwrap(), v + 1);
        let names: Vec<_> = g.list().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["alice", "robert"]);
        assert!(matches!(
            g.rename("bob", "x"),
            Err(GalleryError::UnknownName { .. })
        ));
        assert!(matches!(
            g.rename("alice", "robert"),
            Err(GalleryError::NameExists { .. })
        ));
        assert!(matches!(
            g.rename("alice", " a"),
            Err(GalleryError::BadName { .. })
        ));
        assert_eq!(g.version().unwrap(), v + 1);
        assert_eq!(g.remove("robert").unwrap(), 2);
        assert_eq!(g.version().unwrap(), v + 2);
        let m = g.matcher().unwrap();
        assert_eq!((m.len(), m.persons()), (1, &["alice".to_string()][..]));
        let err = g.remove("robert").unwrap_err();
        assert!(matches!(err, GalleryError::UnknownName { .. }), "{err:?}");
        let orphans: i64 = g
            .conn
            .query_row(
                "SELECT COUNT(*) FROM embeddings WHERE person_id NOT IN (SELECT id FROM persons)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
    }

    #[test]
    fn version_is_seen_by_another_connection() {
        let (_d, path, mut g1) = new_gallery();
        let mut g2 = Gallery::open(&path, &embedder()).unwrap();
        assert_eq!((g1.version().unwrap(), g2.version().unwrap()), (0, 0));
        g1.enroll("alice", &[entry(unit(0), "a")], OnExisting::Refuse)
            .unwrap();
        assert_eq!(g2.version().unwrap(), 1);
        assert_eq!(g2.matcher().unwrap().persons(), ["alice"]);
        g2.enroll("bob", &[entry(unit(1), "b")], OnExisting::Refuse)
            .unwrap();
        g2.rename("bob", "rob").unwrap();
        assert_eq!(g1.version().unwrap(), 3);
        g1.remove("rob").unwrap();
        assert_eq!(g2.version().unwrap(), 4);
    }

    #[test]
    fn writer_waits_for_another_writer() {
        let (_d, path, mut g) = new_gallery();
        let (locked_tx, locked_rx) = mpsc::channel();
        let p = path.clone();
        let holder = thread::spawn(move || {
            let mut conn = Connection::open(&p).unwrap();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            locked_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(300));
            tx.commit().unwrap();
        });
        locked_rx.recv().unwrap();
        g.enroll("alice", &[entry(unit(0), "a")], OnExisting::Refuse)
            .unwrap();
        holder.join().unwrap();
        assert_eq!(g.version().unwrap(), 1);
    }

    fn random_gallery() -> (tempfile::TempDir, PathBuf, Gallery) {
        let (dir, path, mut g) = new_gallery();
        let mut seed = 7u64;
        for (i, name) in ["ann", "bo", "cy"].iter().enumerate() {
            let entries: Vec<_> = (0..=i)
                .map(|k| {
                    let mut v: Vec<f32> = (0..DIM).map(|_| lcg(&mut seed)).collect();
                    l2_normalize(&mut v);
                    v[k] *= 1e-30; // extreme magnitudes must survive JSON too
                    entry(v, &format!("{name}-{k}.jpg"))
                })
                .collect();
            g.enroll(name, &entries, OnExisting::Refuse).unwrap();
        }
        (dir, path, g)
    }

    fn raw_vectors(g: &Gallery) -> Vec<(String, Vec<u8>, i64)> {
        let mut stmt = g
            .conn
            .prepare("SELECT p.name, e.vector, e.created FROM embeddings e JOIN persons p ON p.id = e.person_id ORDER BY p.name, e.id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn export_import_roundtrip() {
        let (dir, _p, g) = random_gallery();
        // Make the kept `created` distinguishable from "now".
        g.conn
            .execute_batch(
                "UPDATE persons SET created = 1000; UPDATE embeddings SET created = 2000",
            )
            .unwrap();
        let file = dir.path().join("export.json");
        fs::write(&file, "old contents").unwrap();
        assert_eq!(g.export(&file).unwrap(), 3);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(json["format"], EXPORT_FORMAT);
        assert_eq!(json["embedder"]["alignment"], 1);

        let (_d2, _p2, mut fresh) = new_gallery();
        let out = fresh.import(&file, OnExisting::Refuse).unwrap();
        assert_eq!(
            out,
            ImportOutcome {
                persons_created: 3,
                persons_appended: 0,
                embeddings_added: 6
            }
        );
        assert_eq!(fresh.list().unwrap(), g.list().unwrap());
        assert_eq!(raw_vectors(&fresh), raw_vectors(&g));
        assert_eq!(fresh.version().unwrap(), 1);
    }

    #[test]
    fn import_refuse_is_all_or_nothing_and_append_merges() {
        let (dir, _p, g) = random_gallery();
        let file = dir.path().join("export.json");
        g.export(&file).unwrap();
        let (_d2, _p2, mut other) = new_gallery();
        // "cy" sorts last in the file: ann and bo are inserted before the clash.
        other
            .enroll("cy", &[entry(unit(0), "mine")], OnExisting::Refuse)
            .unwrap();
        let before = state(&other);
        let err = other.import(&file, OnExisting::Refuse).unwrap_err();
        assert!(
            matches!(err, GalleryError::NameExists { ref name, .. } if name == "cy"),
            "{err:?}"
        );
        assert_eq!(state(&other), before);
        let out = other.import(&file, OnExisting::Append).unwrap();
        assert_eq!(
            out,
            ImportOutcome {
                persons_created: 2,
                persons_appended: 1,
                embeddings_added: 6
            }
        );
        assert_eq!(other.list().unwrap()[2].embeddings, 4);
    }

    fn import_err(g: &mut Gallery, file: &Path, contents: &str) -> GalleryError {
        fs::write(file, contents).unwrap();
        let before = state(g);
        let err = g.import(file, OnExisting::Append).unwrap_err();
        assert!(mentions(&err, file), "{err}");
        assert_eq!(state(g), before);
        err
    }

    #[test]
    fn import_refuses_bad_files() {
        let (dir, _p, mut g) = two_people();
        let file = dir.path().join("in.json");
        let err = import_err(&mut g, &file, "{ not json");
        assert!(matches!(err, GalleryError::BadExport { .. }), "{err:?}");
        let err = import_err(&mut g, &file, r#"{"format":"something-else","version":1}"#);
        assert!(err.to_string().contains("something-else"), "{err}");
        let err = import_err(
            &mut g,
            &file,
            r#"{"format":"edgesight-face-gallery","version":2}"#,
        );
        assert!(
            matches!(err, GalleryError::NewerSchema { found: 2, .. }),
            "{err:?}"
        );
        let good = |e: &EmbedderId, vector: &str| {
            format!(
                r#"{{"format":"edgesight-face-gallery","version":1,"embedder":{},
                "persons":[{{"name":"zoe","created":5,"embeddings":[{{"vector":{vector},"quality":0.5,"source":"s","created":6}}]}}]}}"#,
                serde_json::to_string(e).unwrap()
            )
        };
        let vec8 = serde_json::to_string(&unit(0)).unwrap();
        let other = EmbedderId {
            sha256: "ee".repeat(32),
            ..embedder()
        };
        let err = import_err(&mut g, &file, &good(&other, &vec8));
        assert!(matches!(err, GalleryError::OtherEmbedder { .. }), "{err:?}");
        let err = import_err(&mut g, &file, &good(&embedder(), "[1.0, 2.0]"));
        assert!(matches!(err, GalleryError::BadEmbedding { .. }), "{err:?}");
        let err = import_err(&mut g, &file, &good(&embedder(), "[1e39,0,0,0,0,0,0,0]"));
        assert!(matches!(err, GalleryError::BadEmbedding { .. }), "{err:?}");
        fs::remove_file(&file).unwrap();
        let err = g.import(&file, OnExisting::Append).unwrap_err();
        assert!(
            matches!(err, GalleryError::Io { .. }) && mentions(&err, &file),
            "{err:?}"
        );
        // The well-formed file does import, keeping its times.
        fs::write(&file, good(&embedder(), &vec8)).unwrap();
        g.import(&file, OnExisting::Refuse).unwrap();
        assert_eq!(g.list().unwrap()[2].created, 5);
    }
}
