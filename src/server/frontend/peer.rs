//! The peer front-end: inbound links from other members. It checks the handshake, decodes
//! frames (borrowed from the read buffer) and hands each to the replica, or to the request
//! table for forwarded proposals and their refusals. Snapshot chunks and history requests are
//! answered on the link to the sender (`SnapshotAck`, `HistoryPage` or `HistoryRefused`).

use crate::raft::NodeId;
use crate::server::services::{Failure, Services};
use crate::server::transport::{ConnRef, Proto};
use crate::wire::{self, Handshake, PeerFrame};

/// A peer connection may buffer this much undecoded input (a few maximal frames).
pub const PEER_INPUT_BYTES_MAX: usize = 2 * wire::FRAME_BYTES_MAX + 4096;

/// Accepts `hello` on `conn` if it names another member of this cluster; closes it otherwise.
pub fn accept_handshake(svc: &mut Services, conn: ConnRef, hello: Handshake) -> bool {
    let refuse = if hello.cluster_id != svc.cfg.cluster_id {
        Some(format!(
            "cluster id {:#x} is not ours ({:#x})",
            hello.cluster_id, svc.cfg.cluster_id
        ))
    } else if let Some(why) = svc.peer_refusal(hello.node_id) {
        Some(why)
    } else {
        svc.transport.check_peer(conn, hello.node_id).err()
    };
    if let Some(why) = refuse {
        log::warn!("node {}: refused a peer connection: {why}", svc.cfg.id);
        // Tell the refused node why (it logs it), then close once that is written.
        let reason = format!("node {} refused this node: {why}", svc.cfg.id);
        match svc.transport.output(conn) {
            Some(out) => {
                wire::encode_refusal(&reason, out);
                if let Some(c) = svc.transport.get_mut(conn) {
                    c.closing = true;
                }
            }
            None => svc.transport.close(conn.key),
        }
        return false;
    }
    log::info!(
        "node {}: inbound link from node {} is up",
        svc.cfg.id,
        hello.node_id
    );
    if let Some(c) = svc.transport.get_mut(conn) {
        c.proto = Proto::Peer {
            node: hello.node_id,
        };
    }
    true
}

/// Decodes and handles every complete frame from peer `node`. Returns the client writes that
/// the leader refused (forwarded proposals), for the node to answer.
pub fn handle_input(svc: &mut Services, conn: ConnRef, node: NodeId) -> Vec<(u64, Failure)> {
    let mut refused = Vec::new();
    let Some(c) = svc.transport.get_mut(conn) else {
        return refused;
    };
    // Frames borrow the input buffer; take it out so `svc` stays usable while they live.
    let mut buffers = std::mem::take(&mut c.buffers);
    let mut used_total = 0;
    let mut failed = None;
    loop {
        match wire::decode_peer_frame(&buffers.input()[used_total..]) {
            Ok(None) => break,
            Ok(Some((frame, used))) => {
                used_total += used;
                on_frame(svc, node, frame, &mut refused);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    buffers.consume(used_total);
    if let Some(c) = svc.transport.get_mut(conn) {
        c.buffers = buffers;
    }
    if let Some(e) = failed {
        log::warn!("node {}: closing link from node {node}: {e}", svc.cfg.id);
        svc.transport.close(conn.key);
    }
    refused
}

fn on_frame(
    svc: &mut Services,
    node: NodeId,
    frame: PeerFrame<'_>,
    refused: &mut Vec<(u64, Failure)>,
) {
    match frame {
        PeerFrame::Raft(msg) => {
            if msg.from != node || msg.to != svc.cfg.id {
                log::warn!(
                    "node {}: dropped a message from node {} claiming to be {}",
                    svc.cfg.id,
                    node,
                    msg.from
                );
                return;
            }
            svc.replica.step(msg);
        }
        PeerFrame::Propose { origin_req, data } => {
            svc.on_forwarded_proposal(node, origin_req, data)
        }
        PeerFrame::ProposeRejected {
            origin_req,
            leader_hint,
        } => refused.push((origin_req, Services::forward_refused(leader_hint))),
        PeerFrame::SnapshotChunk {
            term,
            snapshot,
            total_len,
            offset,
            data,
        } => {
            let received = svc
                .replica
                .on_snapshot_chunk(node, term, snapshot, total_len, offset, data);
            svc.transport.send_to(node, |out| {
                wire::encode_snapshot_ack(snapshot, received, out)
            });
        }
        PeerFrame::SnapshotAck { snapshot, received } => {
            svc.replica.on_snapshot_ack(node, snapshot, received);
        }
        PeerFrame::HistoryRequest {
            snapshot,
            from_position,
            through,
        } => {
            let replica = &mut svc.replica;
            svc.transport.send_to(node, |out| {
                replica.on_history_request(node, snapshot, from_position, through, out)
            });
        }
        PeerFrame::HistoryPage {
            snapshot,
            first_position,
            count,
            messages,
        } => svc
            .replica
            .on_history_page(node, snapshot, first_position, count, messages),
        PeerFrame::HistoryRefused {
            snapshot,
            from_position,
            reason,
        } => svc
            .replica
            .on_history_refused(node, snapshot, from_position, reason),
    }
}
