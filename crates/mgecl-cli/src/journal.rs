//! `mgecl label --resume`: the progress file beside `--out` that lets an interrupted run go on
//! where it stopped.
//!
//! An append-only journal rather than a file rewritten every N images: rewriting grows with
//! the run (quadratic I/O over tens of thousands of images), appending does not. It starts
//! with a header line naming the job (the task's fingerprint, the chunk size, the feature
//! width and every image path in order); then one record per chunk of [`CHUNK`] images, each
//! with a checksum and synced to disk before the next chunk is embedded. A record cut short
//! by a kill or a power loss fails its checksum and is dropped on resume (the file is cut back
//! to the last whole record), so the journal always holds whole chunks. Chunks are aligned to
//! the start of the image list, so a resumed run embeds the same batches as an uninterrupted
//! one and writes the same bits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mgecl::Error;

/// Images embedded together, and per journal record.
pub const CHUNK: usize = 16;

const MAGIC: &[u8; 8] = b"MGECLLP1";
const RECORD: &[u8; 4] = b"CHNK";

/// One image's outcome: its feature row or why it has none.
pub type Outcome = Result<Vec<f32>, String>;

/// The progress file of the CSV `out`: `out` with `.progress` appended.
pub fn path_for(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

/// What identifies a job: a resumed run must have the same.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobId {
    pub task: String,
    pub chunk: usize,
    pub dim: usize,
    pub paths: Vec<String>,
}

/// An open journal, positioned after its last whole record.
pub struct Journal {
    file: File,
    path: PathBuf,
    dim: usize,
}

fn checksum(bytes: &[u8]) -> u64 {
    mgecl::internals::fnv1a(mgecl::internals::FNV_OFFSET, bytes)
}

fn corrupt(path: &Path, what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{}: not a progress file of this job ({what}); remove it, or run without --resume",
        path.display()
    ))
}

impl Journal {
    /// Starts a new journal for `job` at `path` (replacing any file there). The header is
    /// written atomically (a kill leaves the old file or the new header, never a torn one).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be written.
    pub fn create(path: &Path, job: &JobId) -> Result<Self, Error> {
        let io = |e| Error::io(path, e);
        let header = serde_json::to_vec(job)
            .map_err(|e| Error::backend_caused_by("cannot serialise the job", e))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&checksum(&header).to_le_bytes());
        mgecl::internals::write_file(path, &bytes)?;
        let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            dim: job.dim,
        })
    }

    /// Opens the journal at `path` for `job` and reads its whole records back (the outcomes
    /// of the first `k * CHUNK` images, or of all of them), cutting off a torn last record.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::InvalidArgument`] when the file is not a journal of `job`.
    pub fn resume(path: &Path, job: &JobId) -> Result<(Self, Vec<Outcome>), Error> {
        let io = |e| Error::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut reader = Reader {
            bytes: &bytes,
            at: 0,
        };
        if reader.take(8) != Some(&MAGIC[..]) {
            return Err(corrupt(path, "no header"));
        }
        let header = reader
            .u64()
            .and_then(|n| reader.take(n as usize))
            .ok_or_else(|| corrupt(path, "cut header"))?;
        if reader.u64() != Some(checksum(header)) {
            return Err(corrupt(path, "damaged header"));
        }
        let written: JobId =
            serde_json::from_slice(header).map_err(|_| corrupt(path, "unreadable header"))?;
        if &written != job {
            return Err(Error::InvalidArgument(format!(
                "{} was written by another job (other images, support examples, model or \
                 options); remove it, or run without --resume to start over",
                path.display()
            )));
        }
        let mut outcomes = Vec::new();
        let mut whole = reader.at;
        while let Some(chunk) = reader.record(outcomes.len(), job.dim) {
            outcomes.extend(chunk);
            whole = reader.at;
        }
        outcomes.truncate(job.paths.len());
        file.set_len(whole as u64).map_err(io)?;
        file.seek(SeekFrom::Start(whole as u64)).map_err(io)?;
        Ok((
            Journal {
                file,
                path: path.to_path_buf(),
                dim: job.dim,
            },
            outcomes,
        ))
    }

    /// Appends the outcomes of the chunk of images starting at `start` and syncs them to disk.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn append(&mut self, start: usize, outcomes: &[Outcome]) -> Result<(), Error> {
        let mut body = Vec::new();
        body.extend_from_slice(&(start as u64).to_le_bytes());
        body.extend_from_slice(&(outcomes.len() as u32).to_le_bytes());
        for outcome in outcomes {
            match outcome {
                Ok(features) => {
                    debug_assert_eq!(features.len(), self.dim);
                    body.push(0);
                    for v in features {
                        body.extend_from_slice(&v.to_le_bytes());
                    }
                }
                Err(message) => {
                    body.push(1);
                    body.extend_from_slice(&(message.len() as u32).to_le_bytes());
                    body.extend_from_slice(message.as_bytes());
                }
            }
        }
        let mut record = RECORD.to_vec();
        record.extend_from_slice(&(body.len() as u64).to_le_bytes());
        record.extend_from_slice(&body);
        record.extend_from_slice(&checksum(&body).to_le_bytes());
        let io = |e| Error::io(&self.path, e);
        self.file.write_all(&record).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Removes the journal (the job is done).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove(self) -> Result<(), Error> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|e| Error::io(&self.path, e))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// The next whole, intact record, if it starts at image `start`.
    fn record(&mut self, start: usize, dim: usize) -> Option<Vec<Outcome>> {
        if self.take(4)? != RECORD {
            return None;
        }
        let len = self.u64()? as usize;
        let body = self.take(len)?;
        if self.u64()? != checksum(body) {
            return None;
        }
        let mut body = Reader { bytes: body, at: 0 };
        if body.u64()? != start as u64 {
            return None;
        }
        let count = body.u32()? as usize;
        let mut outcomes = Vec::with_capacity(count.min(CHUNK));
        for _ in 0..count {
            match body.take(1)?[0] {
                0 => {
                    let raw = body.take(dim.checked_mul(4)?)?;
                    let features = raw
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    outcomes.push(Ok(features));
                }
                1 => {
                    let n = body.u32()? as usize;
                    let text = String::from_utf8(body.take(n)?.to_vec()).ok()?;
                    outcomes.push(Err(text));
                }
                _ => return None,
            }
        }
        (body.at == body.bytes.len()).then_some(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: usize) -> JobId {
        JobId {
            task: "abc".into(),
            chunk: CHUNK,
            dim: 2,
            paths: (0..n).map(|i| format!("{i}.png")).collect(),
        }
    }

    #[test]
    fn a_torn_record_is_dropped_and_the_rest_read_back() {
        let dir = std::env::temp_dir().join(format!("mgecl-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.csv.progress");
        let first: Vec<Outcome> = vec![Ok(vec![1.0, -2.5]), Err("x.jpg: cut".into())];
        let mut journal = Journal::create(&path, &job(4)).unwrap();
        journal.append(0, &first).unwrap();
        journal.append(2, &[Ok(vec![3.0, 4.0])]).unwrap();
        drop(journal);
        // Cut the last record short, as a kill in the middle of a write would.
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let (mut journal, outcomes) = Journal::resume(&path, &job(4)).unwrap();
        assert_eq!(outcomes, first);
        journal.append(2, &[Ok(vec![5.0, 6.0])]).unwrap();
        drop(journal);
        let (_, outcomes) = Journal::resume(&path, &job(4)).unwrap();
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[2], Ok(vec![5.0, 6.0]));
        assert!(Journal::resume(&path, &job(5)).is_err(), "another job");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
