//! The cluster identity file `<dir>/CLUSTER`: which cluster this data dir belongs to, which
//! node it is, and the member list it was bootstrapped with.
//!
//! Owns the file's format and its atomic replacement; never decides which identity wins (the
//! server's `identity` module does). Written once when a node first starts on an empty data
//! dir, so the cluster's identity stops depending on the command line afterwards.
//!
//! ```text
//! raftchat-cluster 1
//! cluster <id, 16 hex digits>
//! node <id>
//! member <id> <host:port>          one line per member, ids ascending
//! crc32c <8 hex digits>            of every byte before this line
//! ```
//!
//! Text, so an operator can read it; the checksum catches a torn or edited file, which is
//! refused with a one-line error rather than silently replaced.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::segment::sync_dir;
use super::StorageError;

/// The file's name inside the data dir.
pub const IDENTITY_FILE: &str = "CLUSTER";
const HEADER: &str = "raftchat-cluster 1";
/// The file is small; anything larger is not ours.
const IDENTITY_BYTES_MAX: u64 = 1 << 20;

/// Who a data dir belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
    /// `(id, address)`, ids ascending and distinct.
    pub members: Vec<(u64, SocketAddr)>,
}

impl ClusterIdentity {
    fn encode(&self) -> String {
        let mut text = format!(
            "{HEADER}\ncluster {:016x}\nnode {}\n",
            self.cluster_id, self.node_id
        );
        for (id, addr) in &self.members {
            text.push_str(&format!("member {id} {addr}\n"));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("crc32c {crc:08x}\n"));
        text
    }

    /// Parses the file's text; the error says what is wrong (the caller names the file).
    fn decode(text: &str) -> Result<ClusterIdentity, String> {
        let body_end = text
            .rfind("crc32c ")
            .ok_or("no crc32c line (torn or not an identity file)")?;
        let (body, crc_line) = text.split_at(body_end);
        let want = u32::from_str_radix(crc_line["crc32c ".len()..].trim_end(), 16)
            .map_err(|_| "unreadable crc32c line")?;
        if crc32c::crc32c(body.as_bytes()) != want {
            return Err("checksum mismatch (torn or edited)".into());
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("first line is not '{HEADER}'"));
        }
        let cluster_id = field(lines.next(), "cluster")
            .and_then(|v| u64::from_str_radix(v, 16).map_err(|_| "bad cluster id".into()))?;
        let node_id = field(lines.next(), "node")
            .and_then(|v| v.parse::<u64>().map_err(|_| "bad node id".into()))?;
        let mut members: Vec<(u64, SocketAddr)> = Vec::new();
        for line in lines {
            let rest = field(Some(line), "member")?;
            let (id, addr) = rest
                .split_once(' ')
                .ok_or("member line needs id and address")?;
            let id: u64 = id.parse().map_err(|_| format!("bad member id '{id}'"))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("bad member address '{addr}'"))?;
            if members.last().is_some_and(|(last, _)| *last >= id) {
                return Err(format!("member ids not ascending at {id}"));
            }
            members.push((id, addr));
        }
        if !members.iter().any(|(id, _)| *id == node_id) {
            return Err(format!("node {node_id} is not among the members"));
        }
        Ok(ClusterIdentity {
            cluster_id,
            node_id,
            members,
        })
    }
}

/// `key value` on `line`: the value.
fn field<'a>(line: Option<&'a str>, key: &str) -> Result<&'a str, String> {
    line.and_then(|l| l.strip_prefix(key))
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(|| format!("expected a '{key}' line"))
}

/// The path of the identity file in `dir`.
pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join(IDENTITY_FILE)
}

/// The identity stored in `dir`, or `None` when the dir has none yet.
pub fn load_identity(dir: &Path) -> Result<Option<ClusterIdentity>, StorageError> {
    let path = identity_path(dir);
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
    };
    if meta.len() > IDENTITY_BYTES_MAX {
        return Err(StorageError::corrupt(
            &path,
            0,
            "larger than any identity file",
        ));
    }
    let bytes =
        fs::read(&path).map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
    let text =
        String::from_utf8(bytes).map_err(|_| StorageError::corrupt(&path, 0, "not UTF-8 text"))?;
    ClusterIdentity::decode(&text)
        .map(Some)
        .map_err(|why| StorageError::corrupt(&path, 0, why))
}

/// Writes `identity` to `dir` atomically (a temporary file, fsync, rename, fsync of the dir),
/// creating `dir` if needed. `fsync` false skips the syncs (`--fsync never`).
pub fn store_identity(
    dir: &Path,
    identity: &ClusterIdentity,
    fsync: bool,
) -> Result<(), StorageError> {
    fs::create_dir_all(dir)
        .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
    let path = identity_path(dir);
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(identity.encode().as_bytes())?;
        if fsync {
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| StorageError::io(format!("writing {}", path.display()), e))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterIdentity {
        ClusterIdentity {
            cluster_id: 0xfeed_0000_beef,
            node_id: 1,
            members: vec![
                (0, "127.0.0.1:7000".parse().unwrap()),
                (1, "10.0.0.2:7001".parse().unwrap()),
                (4, "[::1]:7004".parse().unwrap()),
            ],
        }
    }

    #[test]
    fn an_identity_survives_the_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_identity(dir.path()).unwrap(), None);
        store_identity(&dir.path().join("new"), &sample(), true).unwrap();
        assert_eq!(
            load_identity(&dir.path().join("new")).unwrap(),
            Some(sample())
        );
    }

    #[test]
    fn a_damaged_identity_file_is_refused_with_a_one_line_error() {
        let good = sample().encode();
        let damaged = [
            good.replace("cluster 0000feed0000beef", "cluster 0000feed0000beee"),
            good[..good.len() - 4].to_string(),
            good.replace("crc32c", "crc"),
            String::new(),
            "\u{0}\u{1}crc32c zz".to_string(),
        ];
        for text in damaged {
            let dir = tempfile::tempdir().unwrap();
            fs::write(identity_path(dir.path()), &text).unwrap();
            let err = load_identity(dir.path()).expect_err(&text).to_string();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn decoding_checks_the_fields_a_checksum_cannot() {
        let mut unordered = sample();
        unordered.members.swap(0, 1);
        assert!(ClusterIdentity::decode(&unordered.encode()).is_err());
        let mut stranger = sample();
        stranger.node_id = 9;
        assert!(ClusterIdentity::decode(&stranger.encode()).is_err());
    }
}
