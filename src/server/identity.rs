//! Which cluster this node belongs to: chosen once at bootstrap, then read from the data dir.
//!
//! As with etcd's `--initial-cluster`, the command line's member list (and `--cluster-token`)
//! only bootstraps a new cluster. The first start on an empty data dir stores the cluster id,
//! this node's id and the member list (`storage::identity`); every later start uses what is
//! stored, and logs one line when its command line disagrees, so a seed's restart command keeps
//! working after addresses change. A data dir of another node is refused; a data dir of another
//! cluster makes this node a member of that cluster, which this cluster's peers then refuse at
//! the handshake.
//!
//! A node that joined a running cluster (`server <id> --join`, `server::join`) stores the
//! cluster's bootstrap list plus itself (its own address), and a `JOINED` marker beside the
//! identity says that its own line is not part of the bootstrap list. Its later starts need
//! only the data dir.
//!
//! Owns the decision only; never opens the log or a socket.

use std::net::SocketAddr;

use super::config::ServerConfig;
use super::error::ServerError;
use crate::storage::{self, ClusterIdentity, FsyncPolicy, StorageError};

/// The marker file of a node that joined a running cluster (see the module docs).
pub const JOINED_FILE: &str = "JOINED";

/// A bootstrap's identity, to store once the data dir has opened with it
/// ([`Bootstrap::store`]): a data dir whose log belongs to another cluster (written before
/// identities were stored) is refused by the log first, and no wrong identity is left behind.
#[must_use]
#[derive(Debug)]
pub struct Bootstrap {
    identity: ClusterIdentity,
    /// Joined a running cluster: the identity's own line is not in the bootstrap list.
    joined: bool,
}

impl Bootstrap {
    /// A joining node's identity: the cluster's bootstrap list and this node at `own`.
    pub fn joined(cfg: &ServerConfig, own: SocketAddr) -> Bootstrap {
        let mut members: Vec<(u64, SocketAddr)> = cfg
            .members
            .iter()
            .enumerate()
            .map(|(id, addr)| (id as u64, *addr))
            .collect();
        members.push((cfg.id, own));
        members.sort_by_key(|(id, _)| *id);
        let identity = ClusterIdentity {
            cluster_id: cfg.cluster_id,
            node_id: cfg.id,
            members,
        };
        Bootstrap {
            identity,
            joined: true,
        }
    }

    pub fn store(self, cfg: &ServerConfig) -> Result<(), ServerError> {
        let fsync = cfg.fsync == FsyncPolicy::Always;
        if self.joined {
            // The marker first: an identity without it would read as a bootstrap member.
            write_marker(&cfg.data_dir, fsync)?;
        }
        storage::store_identity(&cfg.data_dir, &self.identity, fsync)?;
        log::info!(
            "node {}: bootstrapped cluster {:#018x} with {} members in {}",
            cfg.id,
            cfg.cluster_id,
            cfg.members.len(),
            storage::identity_path(&cfg.data_dir).display()
        );
        Ok(())
    }
}

/// Replaces `cfg`'s cluster id and member list by the ones stored in its data dir, or, when the
/// dir has none yet, returns the command line's as a [`Bootstrap`] to store. The listen address
/// follows the stored member address unless `--bind` named one.
pub fn adopt(cfg: &mut ServerConfig) -> Result<Option<Bootstrap>, ServerError> {
    let from_command_line = ClusterIdentity {
        cluster_id: cfg.cluster_id,
        node_id: cfg.id,
        members: cfg
            .members
            .iter()
            .enumerate()
            .map(|(id, addr)| (id as u64, *addr))
            .collect(),
    };
    let Some(stored) = storage::load_identity(&cfg.data_dir)? else {
        if let Some(at) = cfg.join {
            return super::join::join(cfg, at).map(Some);
        }
        if cfg.members.is_empty() {
            return Err(ServerError::Config(format!(
                "node {}: {} holds no cluster identity: give <count> <port> to bootstrap a new \
                 cluster, or --join <host:port> to join a running one",
                cfg.id,
                cfg.data_dir.display()
            )));
        }
        return Ok(Some(Bootstrap {
            identity: from_command_line,
            joined: false,
        }));
    };
    if stored.node_id != cfg.id {
        return Err(ServerError::Storage(StorageError::WrongIdentity {
            expected: (cfg.cluster_id, cfg.id),
            found: (stored.cluster_id, stored.node_id),
        }));
    }
    if let Some(at) = cfg.join {
        log::info!(
            "node {}: the data dir already holds this node's identity; --join {at} is ignored",
            cfg.id
        );
    }
    let joined = cfg.data_dir.join(JOINED_FILE).exists();
    let own = stored
        .members
        .iter()
        .find(|(id, _)| *id == cfg.id)
        .map(|(_, a)| *a);
    let mut bootstrap = stored.clone();
    if joined {
        bootstrap.members.retain(|(id, _)| *id != cfg.id);
    }
    let members = dense_members(&bootstrap).ok_or_else(|| {
        StorageError::corrupt(
            storage::identity_path(&cfg.data_dir),
            0,
            "bootstrap member ids are not 0..n, which this version cannot run",
        )
    })?;
    if cfg.members.is_empty() {
        log::info!(
            "node {}: cluster {:#018x} from {}{}",
            cfg.id,
            stored.cluster_id,
            storage::identity_path(&cfg.data_dir).display(),
            if joined { " (joined)" } else { "" }
        );
    } else if stored != from_command_line {
        log::warn!(
            "node {}: the data dir's identity wins over the command line: cluster {:#018x} \
             members {} (command line: cluster {:#018x} members {})",
            cfg.id,
            stored.cluster_id,
            list(&members),
            cfg.cluster_id,
            list(&cfg.members)
        );
    }
    if let (false, Some(own)) = (cfg.bind_explicit, own) {
        cfg.listen = own;
    }
    cfg.cluster_id = stored.cluster_id;
    cfg.members = members;
    Ok(None)
}

/// Writes the `JOINED` marker (atomically: a temporary file, fsync, rename, fsync of the dir).
fn write_marker(dir: &std::path::Path, fsync: bool) -> Result<(), ServerError> {
    use std::io::Write;
    let io = |e: std::io::Error| ServerError::Io {
        context: format!("writing {}", dir.join(JOINED_FILE).display()),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{JOINED_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(b"this node joined a running cluster (see CLUSTER)\n")
        .map_err(io)?;
    if fsync {
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, dir.join(JOINED_FILE)).map_err(io)?;
    if fsync {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// The member addresses in id order, if the ids are exactly `0..n` (what this version runs).
fn dense_members(identity: &ClusterIdentity) -> Option<Vec<SocketAddr>> {
    let dense = identity
        .members
        .iter()
        .enumerate()
        .all(|(k, (id, _))| *id == k as u64);
    dense.then(|| identity.members.iter().map(|(_, a)| *a).collect())
}

fn list(members: &[SocketAddr]) -> String {
    members
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::{parse_args, Command};

    fn cfg(line: &str, dir: &std::path::Path) -> ServerConfig {
        let mut args: Vec<String> = line.split_whitespace().map(String::from).collect();
        args.extend(["--data-dir".into(), dir.display().to_string()]);
        args.extend(["--fsync".into(), "never".into()]);
        match parse_args(&args) {
            Ok(Command::Run(cfg)) => *cfg,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn the_first_start_stores_the_identity_and_later_starts_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = cfg("1 3 20001", dir.path());
        let bootstrap = adopt(&mut first).unwrap().expect("an empty dir bootstraps");
        bootstrap.store(&first).unwrap();
        let bootstrap = (first.cluster_id, first.members.clone(), first.listen);
        let mut moved = cfg("1 3 30001 --cluster-token other", dir.path());
        assert!(adopt(&mut moved).unwrap().is_none());
        assert_eq!((moved.cluster_id, moved.members, moved.listen), bootstrap);
        let mut bound = cfg("1 3 30001 --bind 0.0.0.0", dir.path());
        assert!(adopt(&mut bound).unwrap().is_none());
        assert_eq!(bound.listen.to_string(), "0.0.0.0:30001");
        assert_eq!(bound.cluster_id, bootstrap.0);
    }

    #[test]
    fn a_joined_node_restarts_from_its_data_dir_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut joining = cfg("3 --join 127.0.0.1:20000", dir.path());
        joining.cluster_id = 0xabc;
        joining.members = cfg("0 3 20000", dir.path()).members;
        let own: SocketAddr = "127.0.0.1:20003".parse().unwrap();
        Bootstrap::joined(&joining, own).store(&joining).unwrap();
        let mut restart = cfg("3", dir.path());
        assert!(adopt(&mut restart).unwrap().is_none());
        assert_eq!(restart.cluster_id, 0xabc);
        assert_eq!(
            restart.members, joining.members,
            "the bootstrap list, without node 3"
        );
        assert_eq!(restart.listen, own);
        let empty = tempfile::tempdir().unwrap();
        let err = adopt(&mut cfg("3", empty.path())).unwrap_err().to_string();
        assert!(err.contains("--join"), "{err}");
    }

    #[test]
    fn another_nodes_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zero = cfg("0 3 20000", dir.path());
        adopt(&mut zero.clone())
            .unwrap()
            .unwrap()
            .store(&zero)
            .unwrap();
        let err = adopt(&mut cfg("2 3 20002", dir.path())).unwrap_err();
        assert!(err.to_string().contains("node 0"), "{err}");
    }
}
