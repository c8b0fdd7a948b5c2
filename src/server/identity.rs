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
//! Owns the decision only; never opens the log or a socket.

use std::net::SocketAddr;

use super::config::ServerConfig;
use super::error::ServerError;
use crate::storage::{self, ClusterIdentity, FsyncPolicy, StorageError};

/// A bootstrap's identity, to store once the data dir has opened with it
/// ([`Bootstrap::store`]): a data dir whose log belongs to another cluster (written before
/// identities were stored) is refused by the log first, and no wrong identity is left behind.
#[must_use]
#[derive(Debug)]
pub struct Bootstrap(ClusterIdentity);

impl Bootstrap {
    pub fn store(self, cfg: &ServerConfig) -> Result<(), ServerError> {
        storage::store_identity(&cfg.data_dir, &self.0, cfg.fsync == FsyncPolicy::Always)?;
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
        return Ok(Some(Bootstrap(from_command_line)));
    };
    if stored.node_id != cfg.id {
        return Err(ServerError::Storage(StorageError::WrongIdentity {
            expected: (cfg.cluster_id, cfg.id),
            found: (stored.cluster_id, stored.node_id),
        }));
    }
    let members = dense_members(&stored).ok_or_else(|| {
        StorageError::corrupt(
            storage::identity_path(&cfg.data_dir),
            0,
            "member ids are not 0..n, which this version cannot run",
        )
    })?;
    if stored != from_command_line {
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
    if !cfg.bind_explicit {
        cfg.listen = members[cfg.id as usize];
    }
    cfg.cluster_id = stored.cluster_id;
    cfg.members = members;
    Ok(None)
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
            Ok(Command::Run(cfg)) => cfg,
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
