//! The node id a peer certificate carries: subject CN `node-<id>` (as `openssl`, `cfssl` or the
//! `certs` tool write it). Parses certificates with x509-parser; never verifies signatures
//! (the rustls verifiers in [`super::config`] do that) and never does IO.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::raft::NodeId;

/// The prefix of a node certificate's subject common name; the id follows in decimal.
pub const NODE_CN_PREFIX: &str = "node-";

/// Why a certificate does not name the node expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The peer presented no certificate at all.
    NoCertificate,
    /// The bytes are not an X.509 certificate.
    NotX509(String),
    /// The subject has no common name.
    NoCommonName,
    /// The common name is not `node-<id>`.
    NotANode(String),
    /// The certificate names another node than the one expected.
    WrongNode { expected: NodeId, found: NodeId },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NoCertificate => write!(f, "no certificate presented"),
            IdentityError::NotX509(e) => write!(f, "certificate does not parse: {e}"),
            IdentityError::NoCommonName => write!(f, "certificate subject has no common name"),
            IdentityError::NotANode(cn) => {
                write!(f, "certificate CN {cn:?} is not {NODE_CN_PREFIX}<id>")
            }
            IdentityError::WrongNode { expected, found } => write!(
                f,
                "certificate is for {NODE_CN_PREFIX}{found}, expected {NODE_CN_PREFIX}{expected}"
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

/// The subject common name of a DER certificate (the first one if there are several).
pub fn common_name(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::NotX509(e.to_string()))?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or(IdentityError::NoCommonName)?;
    cn.as_str()
        .map(str::to_owned)
        .map_err(|e| IdentityError::NotX509(format!("common name is not a string: {e}")))
}

/// Parses `node-<id>` (decimal, no sign, no leading `+`); `None` for anything else.
pub fn parse_node_cn(cn: &str) -> Option<NodeId> {
    let digits = cn.strip_prefix(NODE_CN_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The node id in a certificate's subject CN `node-<id>`.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, IdentityError> {
    let cn = common_name(cert)?;
    parse_node_cn(&cn).ok_or(IdentityError::NotANode(cn))
}

/// Checks that the end-entity certificate of a finished handshake names node `claimed` (the id
/// the peer gave in its Raft handshake). `certs` is what `peer_certificates()` returned.
pub fn check_peer_id(
    certs: Option<&[CertificateDer<'_>]>,
    claimed: NodeId,
) -> Result<(), IdentityError> {
    let end_entity = certs
        .and_then(|c| c.first())
        .ok_or(IdentityError::NoCertificate)?;
    let found = node_id_of(end_entity)?;
    if found != claimed {
        return Err(IdentityError::WrongNode {
            expected: claimed,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_node_dash_decimal() {
        assert_eq!(parse_node_cn("node-1"), Some(1));
        assert_eq!(parse_node_cn("node-18446744073709551615"), Some(u64::MAX));
        for bad in [
            "node-", "node-+1", "node--1", "node-1a", "Node-1", "client-1", "node 1",
        ] {
            assert_eq!(parse_node_cn(bad), None, "{bad}");
        }
        assert_eq!(parse_node_cn("node-18446744073709551616"), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01]);
        assert!(matches!(node_id_of(&der), Err(IdentityError::NotX509(_))));
        assert_eq!(check_peer_id(None, 1), Err(IdentityError::NoCertificate));
        assert_eq!(
            check_peer_id(Some(&[]), 1),
            Err(IdentityError::NoCertificate)
        );
    }
}
