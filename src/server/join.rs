//! `server <id> --join <host:port>`: an empty node becomes a member of a running cluster.
//!
//! Before the node opens anything, it asks the member at `--join` for the configuration
//! (`Members` over the binary client protocol: the cluster id, the bootstrap list as that
//! member reaches it, with the member itself at the `--join` address, and the members now)
//! until this node's id is among the members, i.e. until an operator ran
//! `add <id> <host:port>` on the cluster (either order works: add first, or start first). It
//! then starts as that member: its identity (the cluster id and the bootstrap list, plus its
//! own address) is stored once the data dir has opened (`identity::Bootstrap::joined`), its
//! core starts from the bootstrap configuration, and the leader brings it up to date (the log
//! from index 1, whose configuration entries it replays, or a snapshot carrying the members).
//! A later start needs only the data dir.
//!
//! Owns the wait for being added; never decides membership (the leader's core does).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::ServerConfig;
use super::error::ServerError;
use super::identity::Bootstrap;
use crate::client::{ClientTls, Connection, CONNECT_TIMEOUT};
use crate::proto::MemberList;

/// Pause between two questions to the member.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// How often the wait is logged again.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Waits until this node is a member of the cluster at `cfg.join`, then fills `cfg` with the
/// cluster's id and bootstrap list (and the listen address, unless `--bind`) and returns the
/// identity to store. Waits as long as it takes (an operator may add the node later); stopped
/// by a signal like any process.
pub fn join(cfg: &mut ServerConfig, at: SocketAddr) -> Result<Bootstrap, ServerError> {
    let tls = match &cfg.tls {
        Some(t) => Some(ClientTls::trusting(&t.files.ca).map_err(|e| {
            ServerError::Config(format!("--join over TLS: {}: {e}", t.files.ca.display()))
        })?),
        None => None,
    };
    let mut reminded: Option<Instant> = None;
    loop {
        match ask(at, tls.as_ref()) {
            Ok(list) => {
                if let Some(own) = own_address(&list, cfg.id) {
                    return adopt_list(cfg, &list, own, at);
                }
                if reminded.is_none_or(|r| r.elapsed() >= REMIND_EVERY) {
                    let addr = if cfg.bind_explicit {
                        cfg.listen.to_string()
                    } else {
                        "<host:port>".to_string()
                    };
                    log::info!(
                        "node {}: cluster {:#018x} at {at} does not list this node yet; waiting \
                         for an operator to run `add {} {addr}` on a member",
                        cfg.id,
                        list.cluster_id,
                        cfg.id
                    );
                    reminded = Some(Instant::now());
                }
            }
            Err(e) => {
                if reminded.is_none_or(|r| r.elapsed() >= REMIND_EVERY) {
                    log::warn!("node {}: cannot ask {at} to join: {e}", cfg.id);
                    reminded = Some(Instant::now());
                }
            }
        }
        std::thread::sleep(ASK_EVERY);
    }
}

fn ask(at: SocketAddr, tls: Option<&ClientTls>) -> std::io::Result<MemberList> {
    Connection::open(at, CONNECT_TIMEOUT, tls)?.members()
}

/// This node's address in the list, once it is a member.
fn own_address(list: &MemberList, id: u64) -> Option<SocketAddr> {
    let member = list.members.iter().find(|m| m.id == id)?;
    member.addr.parse().ok()
}

fn adopt_list(
    cfg: &mut ServerConfig,
    list: &MemberList,
    own: SocketAddr,
    at: SocketAddr,
) -> Result<Bootstrap, ServerError> {
    let mut bootstrap = Vec::with_capacity(list.bootstrap.len());
    for (k, (id, addr)) in list.bootstrap.iter().enumerate() {
        // The member asked is reached where it was asked; the others where it reaches them
        // (its own view of itself may be an address only it uses, behind NAT or a proxy).
        let addr: Option<SocketAddr> = if *id == list.node_id {
            Some(at)
        } else {
            addr.parse().ok()
        };
        match addr {
            Some(addr) if *id == k as u64 => bootstrap.push(addr),
            _ => {
                return Err(ServerError::Config(format!(
                    "node {}: {at} answered a bootstrap list this version cannot run",
                    cfg.id
                )))
            }
        }
    }
    if bootstrap.is_empty() || list.cluster_id == 0 {
        return Err(ServerError::Config(format!(
            "node {}: {at} answered no cluster to join",
            cfg.id
        )));
    }
    cfg.cluster_id = list.cluster_id;
    cfg.members = bootstrap;
    if !cfg.bind_explicit {
        cfg.listen = own;
    }
    log::info!(
        "node {}: joining cluster {:#018x} as {own} (asked {at})",
        cfg.id,
        cfg.cluster_id
    );
    Ok(Bootstrap::joined(cfg, own))
}
