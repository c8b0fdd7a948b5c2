//! Snapshot files: writing one from the local state machine, receiving one from a leader in
//! chunks, finding the newest intact one, and deleting old ones.
//!
//! This file owns the snapshot directory and the framing of a snapshot (header, checksums,
//! atomic rename). The body is opaque here: the chat module encodes and decodes it. See the
//! module docs of `storage` for the format. Nothing read from disk or from a peer can make it
//! panic: every mismatch is `StorageError::Corrupt` naming the file.

use super::segment::sync_dir;
use super::{FsyncPolicy, StorageError};
use crate::raft::{Index, SnapshotMeta};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RCHATSNP";
/// The snapshot file format version this code writes and reads.
pub const SNAPSHOT_FILE_VERSION: u32 = 1;
/// magic 8 | version 4 | cluster_id 8 | index 8 | term 8 | body_len 8 | body_crc 4 | header_crc 4
pub const SNAPSHOT_HEADER_LEN: usize = 52;
const BUF_BYTES: usize = 256 << 10;

/// The decoded header of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    cluster_id: u64,
    meta: SnapshotMeta,
    body_len: u64,
    body_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut out = [0u8; SNAPSHOT_HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&SNAPSHOT_FILE_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[20..28].copy_from_slice(&self.meta.index.to_le_bytes());
        out[28..36].copy_from_slice(&self.meta.term.to_le_bytes());
        out[36..44].copy_from_slice(&self.body_len.to_le_bytes());
        out[44..48].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32c::crc32c(&out[..48]);
        out[48..52].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks magic, version and the header checksum.
    fn decode(buf: &[u8; SNAPSHOT_HEADER_LEN]) -> Result<Header, String> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if &buf[0..8] != MAGIC {
            return Err("not a snapshot file (bad magic)".to_string());
        }
        let crc = crc32c::crc32c(&buf[..48]);
        if crc != u32_at(48) {
            return Err("header checksum mismatch".to_string());
        }
        let version = u32_at(8);
        if version != SNAPSHOT_FILE_VERSION {
            return Err(format!("unknown snapshot file version {version}"));
        }
        Ok(Header {
            cluster_id: u64_at(12),
            meta: SnapshotMeta {
                index: u64_at(20),
                term: u64_at(28),
            },
            body_len: u64_at(36),
            body_crc: u32_at(44),
        })
    }
}

/// `snap-<index:020>-<term:020>.snap`
fn file_name(meta: SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}.snap", meta.index, meta.term)
}

fn parse_file_name(name: &str) -> Option<SnapshotMeta> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    let number = |s: &str| {
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some(SnapshotMeta {
        index: number(index)?,
        term: number(term)?,
    })
}

/// The directory of snapshot files of one node (of cluster `cluster_id`).
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    cluster_id: u64,
    fsync: FsyncPolicy,
}

/// A complete snapshot file, as `latest`, `SnapshotWriter::finish` or
/// `SnapshotReceiver::finish` found or made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    /// Length of the whole file, header included: what a leader sends.
    pub len: u64,
}

impl SnapshotStore {
    /// Opens (creating) the directory and deletes temporary files a crash left behind.
    pub fn open(
        dir: impl Into<PathBuf>,
        cluster_id: u64,
        fsync: FsyncPolicy,
    ) -> Result<SnapshotStore, StorageError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
        let store = SnapshotStore {
            dir,
            cluster_id,
            fsync,
        };
        let mut removed = false;
        for path in store.list_paths()? {
            if path.extension().is_some_and(|ext| ext == "tmp") {
                fs::remove_file(&path)
                    .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
                removed = true;
            }
        }
        if removed && store.fsync == FsyncPolicy::Always {
            sync_dir(&store.dir)?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest complete snapshot (highest index, then term), with its header and body
    /// checksums verified (this reads the whole file). A damaged newest file is `Corrupt`: an
    /// older one is never used silently in its place.
    pub fn latest(&self) -> Result<Option<SnapshotFile>, StorageError> {
        let Some((meta, path)) = self.complete()?.into_iter().next_back() else {
            return Ok(None);
        };
        let file = File::open(&path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        let len = verify(&file, &path, self.cluster_id, meta)?;
        Ok(Some(SnapshotFile { meta, path, len }))
    }

    /// Starts writing the snapshot `meta` of the local state machine: write the body into the
    /// returned writer, then `finish` it.
    pub fn create(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, StorageError> {
        let (file, tmp) = self.create_tmp(meta, "create")?;
        let mut writer = SnapshotWriter {
            store_dir: self.dir.clone(),
            cluster_id: self.cluster_id,
            fsync: self.fsync,
            meta,
            out: Some(BufWriter::with_capacity(BUF_BYTES, file)),
            tmp: Some(tmp),
            body_len: 0,
            body_crc: 0,
            synced_len: 0,
        };
        let placeholder = [0u8; SNAPSHOT_HEADER_LEN];
        if let Some(out) = writer.out.as_mut() {
            out.write_all(&placeholder)
                .map_err(|e| StorageError::io("writing a snapshot header placeholder", e))?;
        }
        Ok(writer)
    }

    /// Starts receiving the snapshot file `meta` of `total_len` bytes (header included) from a
    /// leader, chunk by chunk.
    pub fn receive(
        &self,
        meta: SnapshotMeta,
        total_len: u64,
    ) -> Result<SnapshotReceiver, StorageError> {
        if total_len < SNAPSHOT_HEADER_LEN as u64 {
            return Err(StorageError::invalid_input(format!(
                "a snapshot file of {total_len} bytes is shorter than its header"
            )));
        }
        let (file, tmp) = self.create_tmp(meta, "receive")?;
        Ok(SnapshotReceiver {
            store_dir: self.dir.clone(),
            cluster_id: self.cluster_id,
            fsync: self.fsync,
            meta,
            total_len,
            received: 0,
            file,
            tmp: Some(tmp),
        })
    }

    /// Deletes every complete snapshot with an index below `index`.
    pub fn remove_older_than(&self, index: Index) -> Result<(), StorageError> {
        let mut removed = false;
        for (meta, path) in self.complete()? {
            if meta.index < index {
                fs::remove_file(&path)
                    .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
                removed = true;
            }
        }
        if removed && self.fsync == FsyncPolicy::Always {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn list_paths(&self) -> Result<Vec<PathBuf>, StorageError> {
        let context = || format!("listing {}", self.dir.display());
        let mut paths = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| StorageError::io(context(), e))? {
            paths.push(entry.map_err(|e| StorageError::io(context(), e))?.path());
        }
        Ok(paths)
    }

    /// Complete snapshot files by ascending (index, term).
    fn complete(&self) -> Result<Vec<(SnapshotMeta, PathBuf)>, StorageError> {
        let mut found: Vec<(SnapshotMeta, PathBuf)> = self
            .list_paths()?
            .into_iter()
            .filter_map(|path| {
                let meta = parse_file_name(path.file_name()?.to_str()?)?;
                Some((meta, path))
            })
            .collect();
        found.sort_by_key(|(meta, _)| (meta.index, meta.term));
        Ok(found)
    }

    fn create_tmp(&self, meta: SnapshotMeta, why: &str) -> Result<(File, PathBuf), StorageError> {
        let tmp = self.dir.join(format!("{}.{why}.tmp", file_name(meta)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StorageError::io(format!("creating {}", tmp.display()), e))?;
        Ok((file, tmp))
    }
}

impl SnapshotFile {
    /// A buffered reader over the body (after the header). It checks the header again and the
    /// body checksum as it goes: reading to the end of a body that changed on disk since it was
    /// verified fails with `InvalidData` instead of ending quietly.
    pub fn body(&self) -> Result<impl Read, StorageError> {
        let mut file = self.open_raw()?;
        let mut buf = [0u8; SNAPSHOT_HEADER_LEN];
        file.read_exact(&mut buf)
            .map_err(|e| StorageError::io(format!("reading {}", self.path.display()), e))?;
        let header =
            Header::decode(&buf).map_err(|reason| StorageError::corrupt(&self.path, 0, reason))?;
        if header.meta != self.meta {
            return Err(StorageError::corrupt(
                &self.path,
                0,
                format!("header says {:?}, expected {:?}", header.meta, self.meta),
            ));
        }
        file.seek(SeekFrom::Start(SNAPSHOT_HEADER_LEN as u64))
            .map_err(|e| StorageError::io(format!("seeking {}", self.path.display()), e))?;
        Ok(CheckedBody {
            inner: BufReader::with_capacity(BUF_BYTES, file).take(header.body_len),
            remaining: header.body_len,
            crc: 0,
            expected_crc: header.body_crc,
        })
    }

    /// The whole file, header included, for sending it in chunks with `read_at`. An open
    /// descriptor keeps working after the file is deleted by `remove_older_than`.
    pub fn open_raw(&self) -> Result<File, StorageError> {
        File::open(&self.path)
            .map_err(|e| StorageError::io(format!("opening {}", self.path.display()), e))
    }
}

/// The body reader of `SnapshotFile::body`: checks length and checksum at the end.
struct CheckedBody<R> {
    inner: R,
    remaining: u64,
    crc: u32,
    expected_crc: u32,
}

impl<R: Read> Read for CheckedBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.remaining != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "snapshot body shorter than its header says",
                ));
            }
            if self.crc != self.expected_crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "snapshot body checksum mismatch",
                ));
            }
            return Ok(0);
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Reads and checks a whole snapshot file: header (magic, version, checksum, cluster, the
/// expected meta), length and body checksum. Returns the file length.
fn verify(
    file: &File,
    path: &Path,
    cluster_id: u64,
    meta: SnapshotMeta,
) -> Result<u64, StorageError> {
    let corrupt = |offset: u64, reason: String| StorageError::corrupt(path, offset, reason);
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(format!("stat {}", path.display()), e))?
        .len();
    if len < SNAPSHOT_HEADER_LEN as u64 {
        return Err(corrupt(0, format!("{len} bytes: shorter than a header")));
    }
    let mut buf = [0u8; SNAPSHOT_HEADER_LEN];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
    let header = Header::decode(&buf).map_err(|reason| corrupt(0, reason))?;
    if header.cluster_id != cluster_id {
        return Err(corrupt(
            0,
            format!(
                "snapshot of cluster {}, not cluster {cluster_id}",
                header.cluster_id
            ),
        ));
    }
    if header.meta != meta {
        return Err(corrupt(
            0,
            format!(
                "header says index {} term {}, expected index {} term {}",
                header.meta.index, header.meta.term, meta.index, meta.term
            ),
        ));
    }
    let body_len = len - SNAPSHOT_HEADER_LEN as u64;
    if header.body_len != body_len {
        return Err(corrupt(
            SNAPSHOT_HEADER_LEN as u64,
            format!(
                "header says {} body bytes, the file holds {body_len}",
                header.body_len
            ),
        ));
    }
    let mut crc = 0;
    let mut offset = SNAPSHOT_HEADER_LEN as u64;
    let mut chunk = vec![0u8; BUF_BYTES];
    while offset < len {
        let want = chunk.len().min((len - offset) as usize);
        let n = file
            .read_at(&mut chunk[..want], offset)
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            return Err(corrupt(offset, "file shrank while being read".to_string()));
        }
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        offset += n as u64;
    }
    if crc != header.body_crc {
        return Err(corrupt(
            SNAPSHOT_HEADER_LEN as u64,
            "body checksum mismatch".to_string(),
        ));
    }
    Ok(len)
}

/// fsyncs `file` (per policy), renames `tmp` to its final name and fsyncs the directory.
fn install(
    file: &File,
    tmp: &Path,
    dir: &Path,
    meta: SnapshotMeta,
    fsync: FsyncPolicy,
) -> Result<PathBuf, StorageError> {
    let path = dir.join(file_name(meta));
    place(file, tmp, &path, fsync)?;
    if fsync == FsyncPolicy::Always {
        sync_dir(dir)?;
    }
    Ok(path)
}

/// Makes the complete temp file durable (per policy) and renames it to `path`.
fn place(file: &File, tmp: &Path, path: &Path, fsync: FsyncPolicy) -> Result<(), StorageError> {
    if fsync == FsyncPolicy::Always {
        file.sync_all()
            .map_err(|e| StorageError::io(format!("fsync {}", tmp.display()), e))?;
    }
    fs::rename(tmp, path).map_err(|e| {
        StorageError::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })
}

/// A snapshot being written from the local state machine. Buffered; the body's length and
/// checksum are computed while it streams. Dropped without `finish`, it deletes its temp file.
#[derive(Debug)]
pub struct SnapshotWriter {
    store_dir: PathBuf,
    cluster_id: u64,
    fsync: FsyncPolicy,
    meta: SnapshotMeta,
    /// `None` only after `finish` took it.
    out: Option<BufWriter<File>>,
    /// The temp file, until it is renamed into place.
    tmp: Option<PathBuf>,
    body_len: u64,
    body_crc: u32,
    /// `body_len` at the last intermediate sync.
    synced_len: u64,
}

/// With `FsyncPolicy::Always` a writer syncs what it wrote every this many bytes, so the page
/// cache never holds a whole large snapshot to write back at once: one burst of hundreds of
/// megabytes at `finish` would stall every `fdatasync` of the write-ahead log behind it.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        let n = out.write(buf)?;
        self.body_crc = crc32c::crc32c_append(self.body_crc, &buf[..n]);
        self.body_len += n as u64;
        if self.fsync == FsyncPolicy::Always && self.body_len - self.synced_len >= SYNC_EVERY_BYTES
        {
            out.flush()?;
            out.get_ref().sync_data()?;
            self.synced_len = self.body_len;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl SnapshotWriter {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Writes the header, fsyncs (per policy), renames the file into place and fsyncs the
    /// directory: after Ok, `latest` finds it even after a crash.
    pub fn finish(mut self) -> Result<SnapshotFile, StorageError> {
        let tmp = self.tmp.clone().unwrap_or_default();
        let out = self
            .out
            .take()
            .ok_or_else(|| StorageError::invalid_input("snapshot writer already finished"))?;
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io(format!("writing {}", tmp.display()), e.into_error()))?;
        let header = Header {
            cluster_id: self.cluster_id,
            meta: self.meta,
            body_len: self.body_len,
            body_crc: self.body_crc,
        };
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| StorageError::io(format!("writing header of {}", tmp.display()), e))?;
        let path = install(&file, &tmp, &self.store_dir, self.meta, self.fsync)?;
        self.tmp = None;
        Ok(SnapshotFile {
            meta: self.meta,
            path,
            len: SNAPSHOT_HEADER_LEN as u64 + self.body_len,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// A snapshot file arriving from a leader in order, chunk by chunk (the whole file, header
/// included). Dropped without a successful `finish`, it deletes its temp file.
#[derive(Debug)]
pub struct SnapshotReceiver {
    store_dir: PathBuf,
    cluster_id: u64,
    fsync: FsyncPolicy,
    meta: SnapshotMeta,
    total_len: u64,
    received: u64,
    file: File,
    tmp: Option<PathBuf>,
}

impl SnapshotReceiver {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Bytes received so far: the offset the next chunk must start at.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Stores `data` at `offset`, which must be `received()`; the file may not grow beyond
    /// `total_len()`. Either mistake is `Io` with `InvalidInput` and the receiver stays usable.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if offset != self.received {
            return Err(StorageError::invalid_input(format!(
                "snapshot chunk at offset {offset}, expected {}",
                self.received
            )));
        }
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|end| end > self.total_len) {
            return Err(StorageError::invalid_input(format!(
                "snapshot chunk of {} bytes at offset {offset} beyond the file's {} bytes",
                data.len(),
                self.total_len
            )));
        }
        let tmp = self.tmp.as_deref().unwrap_or(Path::new(""));
        self.file
            .write_all_at(data, offset)
            .map_err(|e| StorageError::io(format!("writing {}", tmp.display()), e))?;
        self.received += data.len() as u64;
        Ok(())
    }

    /// Checks the complete file (magic, version, cluster, checksums, and that its header names
    /// `meta()`), fsyncs it (per policy) and renames it into place. Damaged data is `Corrupt`,
    /// and the temp file is gone.
    pub fn finish(self) -> Result<SnapshotFile, StorageError> {
        self.finish_into(false).map(|(file, _)| file)
    }

    /// As [`SnapshotReceiver::finish`], but the verified, durable file is renamed to
    /// `<its name>.fetching.tmp` instead of its name: [`SnapshotStore::open`] deletes it after a
    /// crash, so it stands in for nothing until the caller gives it its name (the second
    /// value) with a rename, once whatever it depends on is durable too (a version-5 body
    /// needs the message store to hold its history). Naming it only then leaves no moment at
    /// which a crash could leave a named snapshot its node cannot restore.
    pub fn finish_parked(self) -> Result<(SnapshotFile, PathBuf), StorageError> {
        self.finish_into(true)
    }

    /// `finish` (`parked` false) or `finish_parked`: the file, and the name it has or is to get.
    fn finish_into(mut self, parked: bool) -> Result<(SnapshotFile, PathBuf), StorageError> {
        if self.received != self.total_len {
            return Err(StorageError::invalid_input(format!(
                "snapshot incomplete: {} of {} bytes received",
                self.received, self.total_len
            )));
        }
        let tmp = self.tmp.clone().unwrap_or_default();
        // Drop removes the temp file if either step fails.
        let len = verify(&self.file, &tmp, self.cluster_id, self.meta)?;
        let (path, named) = if parked {
            let named = self.store_dir.join(file_name(self.meta));
            let path = named.with_extension("fetching.tmp");
            place(&self.file, &tmp, &path, self.fsync)?;
            (path, named)
        } else {
            let path = install(&self.file, &tmp, &self.store_dir, self.meta, self.fsync)?;
            (path.clone(), path)
        };
        self.tmp = None;
        let file = SnapshotFile {
            meta: self.meta,
            path,
            len,
        };
        Ok((file, named))
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u64 = 7;

    fn meta(index: Index, term: u64) -> SnapshotMeta {
        SnapshotMeta { index, term }
    }

    fn store(dir: &Path) -> SnapshotStore {
        SnapshotStore::open(dir, CLUSTER, FsyncPolicy::Always).unwrap()
    }

    fn write(store: &SnapshotStore, m: SnapshotMeta, body: &[u8]) -> SnapshotFile {
        let mut w = store.create(m).unwrap();
        // In uneven pieces, as an encoder would.
        for piece in body.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn body_of(file: &SnapshotFile) -> Vec<u8> {
        let mut out = Vec::new();
        file.body().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn body(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn is_corrupt(r: Result<Option<SnapshotFile>, StorageError>) -> bool {
        matches!(r, Err(StorageError::Corrupt { .. }))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn names_round_trip() {
        let m = meta(12, 3);
        assert_eq!(parse_file_name(&file_name(m)), Some(m));
        assert_eq!(
            parse_file_name(&format!("{}.create.tmp", file_name(m))),
            None
        );
        assert_eq!(parse_file_name("snap-1-2.snap"), None);
        assert_eq!(
            parse_file_name("wal-00000000000000000001-00000000000000000001.log"),
            None
        );
    }

    #[test]
    fn written_snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        assert_eq!(store.latest().unwrap(), None);
        let data = body(1 << 20, 5);
        let file = write(&store, meta(100, 2), &data);
        assert_eq!(file.len, SNAPSHOT_HEADER_LEN as u64 + data.len() as u64);
        assert_eq!(store.latest().unwrap(), Some(file.clone()));
        assert_eq!(body_of(&file), data);
        // Reopening finds it again.
        let store = SnapshotStore::open(dir.path(), CLUSTER, FsyncPolicy::Never).unwrap();
        assert_eq!(store.latest().unwrap(), Some(file.clone()));
        // An empty body is fine too.
        let empty = write(&store, meta(101, 2), &[]);
        assert_eq!(body_of(&empty), Vec::<u8>::new());
        assert_eq!(store.latest().unwrap(), Some(empty));
    }

    #[test]
    fn latest_is_the_highest_index_and_a_damaged_one_is_never_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        write(&store, meta(50, 1), &body(10, 1));
        let newest = write(&store, meta(200, 3), &body(5000, 2));
        write(&store, meta(120, 5), &body(10, 3));
        assert_eq!(store.latest().unwrap().unwrap().meta, meta(200, 3));

        // A flipped body byte, a flipped header byte, a truncation, an extension: all corrupt.
        let original = fs::read(&newest.path).unwrap();
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let damage: Vec<Damage> = vec![
            Box::new(|b| b[SNAPSHOT_HEADER_LEN + 100] ^= 1),
            Box::new(|b| b[21] ^= 0x40),
            Box::new(|b| b[45] ^= 1),
            Box::new(|b| b.truncate(b.len() - 1)),
            Box::new(|b| b.truncate(10)),
            Box::new(|b| b.clear()),
            Box::new(|b| b.push(0)),
        ];
        for (k, damage) in damage.iter().enumerate() {
            let mut bytes = original.clone();
            damage(&mut bytes);
            fs::write(&newest.path, &bytes).unwrap();
            assert!(is_corrupt(store.latest()), "damage {k}");
        }
        // A file renamed to claim another place in the log is corrupt as well.
        fs::write(&newest.path, &original).unwrap();
        fs::rename(&newest.path, dir.path().join(file_name(meta(300, 3)))).unwrap();
        assert!(is_corrupt(store.latest()));
        fs::rename(dir.path().join(file_name(meta(300, 3))), &newest.path).unwrap();
        assert_eq!(store.latest().unwrap(), Some(newest.clone()));
        // Another cluster's store refuses it.
        let other = SnapshotStore::open(dir.path(), CLUSTER + 1, FsyncPolicy::Never).unwrap();
        assert!(is_corrupt(other.latest()));
    }

    #[test]
    fn body_reader_notices_a_change_after_verification() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let file = write(&store, meta(9, 1), &body(3000, 4));
        let mut bytes = fs::read(&file.path).unwrap();
        bytes[SNAPSHOT_HEADER_LEN + 7] ^= 1;
        fs::write(&file.path, &bytes).unwrap();
        let mut out = Vec::new();
        let err = file.body().unwrap().read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        bytes.truncate(bytes.len() - 5);
        fs::write(&file.path, &bytes).unwrap();
        let err = file.body().unwrap().read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn remove_older_than_keeps_the_rest_and_open_files_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let old = write(&store, meta(10, 1), &body(100, 1));
        write(&store, meta(20, 1), &body(100, 2));
        let keep = write(&store, meta(30, 2), &body(100, 3));
        let raw = old.open_raw().unwrap();
        store.remove_older_than(30).unwrap();
        assert_eq!(names(dir.path()), vec![file_name(keep.meta)]);
        let mut buf = vec![0u8; 100];
        raw.read_exact_at(&mut buf, SNAPSHOT_HEADER_LEN as u64)
            .unwrap();
        assert_eq!(buf, body(100, 1));
        store.remove_older_than(30).unwrap();
        assert_eq!(store.latest().unwrap(), Some(keep));
    }

    #[test]
    fn temp_files_are_removed_on_open_and_by_unfinished_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut w = store.create(meta(5, 1)).unwrap();
        w.write_all(b"half a snapshot").unwrap();
        w.flush().unwrap();
        assert_eq!(names(dir.path()).len(), 1);
        // A crash now leaves the temp file; reopening removes it, and latest never sees it.
        std::mem::forget(w);
        fs::write(dir.path().join("junk.tmp"), b"x").unwrap();
        assert_eq!(store.latest().unwrap(), None);
        let store = SnapshotStore::open(dir.path(), CLUSTER, FsyncPolicy::Always).unwrap();
        assert!(names(dir.path()).is_empty());
        // A writer or receiver dropped unfinished removes its own.
        let w = store.create(meta(6, 1)).unwrap();
        drop(w);
        let r = store.receive(meta(6, 1), 100).unwrap();
        drop(r);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_received_file_is_checked_and_installed() {
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let leader = store(src_dir.path());
        let follower = store(dst_dir.path());
        let data = body(100_000, 9);
        let sent = write(&leader, meta(77, 4), &data);
        let raw = sent.open_raw().unwrap();

        let mut r = follower.receive(sent.meta, sent.len).unwrap();
        assert_eq!(
            (r.meta(), r.total_len(), r.received()),
            (sent.meta, sent.len, 0)
        );
        let mut offset = 0;
        let mut chunk = vec![0u8; 7_000];
        while offset < sent.len {
            let n = chunk.len().min((sent.len - offset) as usize);
            raw.read_exact_at(&mut chunk[..n], offset).unwrap();
            // Out of order and duplicate chunks are refused; the receiver stays usable.
            if offset > 0 {
                assert!(r.write_chunk(offset - 1, &chunk[..n]).is_err());
                assert!(r.write_chunk(offset + 1, &chunk[..n]).is_err());
            }
            r.write_chunk(offset, &chunk[..n]).unwrap();
            offset += n as u64;
            assert_eq!(r.received(), offset);
        }
        // Nothing beyond the announced length.
        assert!(r.write_chunk(offset, b"x").is_err());
        let got = r.finish().unwrap();
        assert_eq!(got.meta, sent.meta);
        assert_eq!(got.len, sent.len);
        assert_eq!(follower.latest().unwrap(), Some(got.clone()));
        assert_eq!(body_of(&got), data);
        assert_eq!(names(dst_dir.path()), vec![file_name(sent.meta)]);
    }

    #[test]
    fn a_file_received_parked_is_named_only_by_its_caller_and_a_crash_forgets_it() {
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let leader = store(src_dir.path());
        let follower = store(dst_dir.path());
        let data = body(20_000, 3);
        let sent = write(&leader, meta(40, 2), &data);
        let bytes = fs::read(&sent.path).unwrap();
        let receive = || {
            let mut r = follower.receive(sent.meta, sent.len).unwrap();
            r.write_chunk(0, &bytes).unwrap();
            r.finish_parked().unwrap()
        };
        let (got, named) = receive();
        assert_eq!(named, dst_dir.path().join(file_name(sent.meta)));
        assert_ne!(got.path, named);
        assert_eq!(
            body_of(&got),
            data,
            "verified and readable where it is parked"
        );
        // Not a snapshot of this node yet: a crash now, and the reopened store forgets it.
        assert_eq!(follower.latest().unwrap(), None);
        let reopened = store(dst_dir.path());
        assert_eq!(reopened.latest().unwrap(), None);
        assert!(names(dst_dir.path()).is_empty());
        // Received again and named by the caller: now it is the latest.
        let (got, named) = receive();
        fs::rename(&got.path, &named).unwrap();
        let latest = store(dst_dir.path()).latest().unwrap().unwrap();
        assert_eq!((latest.meta, latest.len), (sent.meta, sent.len));
    }

    #[test]
    fn a_damaged_or_mislabelled_received_file_is_refused_and_removed() {
        let src_dir = tempfile::tempdir().unwrap();
        let dst_dir = tempfile::tempdir().unwrap();
        let leader = store(src_dir.path());
        let follower = store(dst_dir.path());
        let sent = write(&leader, meta(77, 4), &body(5_000, 1));
        let bytes = fs::read(&sent.path).unwrap();
        let receive = |m: SnapshotMeta, bytes: &[u8]| {
            let mut r = follower.receive(m, bytes.len() as u64)?;
            for (k, chunk) in bytes.chunks(1024).enumerate() {
                r.write_chunk(k as u64 * 1024, chunk)?;
            }
            r.finish()
        };
        for at in [0, 9, 20, 30, 40, 50, SNAPSHOT_HEADER_LEN, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let result = receive(sent.meta, &damaged);
            assert!(
                matches!(result, Err(StorageError::Corrupt { .. })),
                "{at}: {result:?}"
            );
        }
        // Another place in the log than announced, or another cluster.
        assert!(matches!(
            receive(meta(78, 4), &bytes),
            Err(StorageError::Corrupt { .. })
        ));
        let foreign =
            SnapshotStore::open(src_dir.path().join("x"), 99, FsyncPolicy::Never).unwrap();
        let foreign_file = write(&foreign, sent.meta, &body(10, 1));
        let foreign_bytes = fs::read(&foreign_file.path).unwrap();
        assert!(matches!(
            receive(sent.meta, &foreign_bytes),
            Err(StorageError::Corrupt { .. })
        ));
        // Incomplete.
        let mut r = follower.receive(sent.meta, bytes.len() as u64).unwrap();
        r.write_chunk(0, &bytes[..100]).unwrap();
        assert!(r.finish().is_err());
        // Shorter than a header.
        assert!(follower.receive(sent.meta, 10).is_err());
        assert!(
            names(dst_dir.path()).is_empty(),
            "{:?}",
            names(dst_dir.path())
        );
        assert_eq!(follower.latest().unwrap(), None);
    }
}
