//! A node's whole TLS state in one value: the configurations for accepting peers, accepting
//! clients and dialling peers, built from `--cert --key --ca`, `--client-tls` and
//! `--client-cert-auth`, and rebuilt on SIGHUP (keeping the old ones if the new files are bad,
//! so a botched renewal never takes a running node down). Sessions already open keep the
//! configuration they started with; only new connections see a reload. Never opens sockets.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use super::config::{
    node_server_config, peer_client_config, CertRole, ClientCertPolicy, TlsFileError, TlsFiles,
};
use super::identity::{node_id_of, NODE_CN_PREFIX};
use crate::raft::NodeId;

/// `--client-tls`: whether clients may, or must, speak TLS on the client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// Plain connections only (a ClientHello is treated as garbage).
    Off,
    /// TLS when the first byte is a ClientHello, plain otherwise.
    Optional,
    /// TLS only: plain connections are refused with a clear line.
    Required,
}

impl FromStr for ClientTlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(ClientTlsMode::Off),
            "optional" => Ok(ClientTlsMode::Optional),
            "required" => Ok(ClientTlsMode::Required),
            other => Err(format!(
                "--client-tls {other:?}: expected off, optional or required"
            )),
        }
    }
}

impl fmt::Display for ClientTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ClientTlsMode::Off => "off",
            ClientTlsMode::Optional => "optional",
            ClientTlsMode::Required => "required",
        };
        f.write_str(name)
    }
}

/// The TLS options of one node, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTlsOptions {
    pub files: TlsFiles,
    pub own_id: NodeId,
    pub client_tls: ClientTlsMode,
    /// `--client-cert-auth`: clients must present a certificate from the CA.
    pub client_cert_auth: bool,
}

/// The configurations a node's transport hands to new sessions.
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub options: NodeTlsOptions,
    /// Accepting peers: a certificate from the CA is required (then check its id).
    pub peer_server: Arc<ServerConfig>,
    /// Every accepted TLS connection (peers and clients share the port): asks for a client
    /// certificate, required with `--client-cert-auth`; peers must then present theirs.
    pub client_server: Arc<ServerConfig>,
    /// Dialling peers: name the peer with `config::peer_server_name(id)`.
    pub peer_client: Arc<ClientConfig>,
}

impl NodeTls {
    /// Loads and checks the files (including that the certificate's CN is `node-<own_id>`)
    /// and builds every configuration.
    pub fn load(options: NodeTlsOptions) -> Result<Self, TlsFileError> {
        let material = options.files.load(CertRole::Node)?;
        let found = node_id_of(&material.certs[0]).map_err(|e| TlsFileError::WrongIdentity {
            path: options.files.cert.clone(),
            detail: e.to_string(),
        })?;
        if found != options.own_id {
            return Err(TlsFileError::WrongIdentity {
                path: options.files.cert.clone(),
                detail: format!(
                    "certificate is for {NODE_CN_PREFIX}{found}, this node is {NODE_CN_PREFIX}{}",
                    options.own_id
                ),
            });
        }
        // One listener serves peers and clients, so a certificate is always asked for
        // (verified against the CA when presented); peers are then held to theirs by id.
        let client_policy = if options.client_cert_auth {
            ClientCertPolicy::Required
        } else {
            ClientCertPolicy::Optional
        };
        Ok(NodeTls {
            peer_server: node_server_config(&material, ClientCertPolicy::Required)?,
            client_server: node_server_config(&material, client_policy)?,
            peer_client: peer_client_config(&material)?,
            options,
        })
    }

    /// Reloads the same files (SIGHUP). On error `self` is unchanged and keeps serving.
    pub fn reload(&mut self) -> Result<(), TlsFileError> {
        *self = NodeTls::load(self.options.clone())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::gen::TestCerts;

    fn options(files: TlsFiles, own_id: NodeId) -> NodeTlsOptions {
        NodeTlsOptions {
            files,
            own_id,
            client_tls: ClientTlsMode::Optional,
            client_cert_auth: false,
        }
    }

    #[test]
    fn client_tls_mode_parses_three_words() {
        for mode in [
            ClientTlsMode::Off,
            ClientTlsMode::Optional,
            ClientTlsMode::Required,
        ] {
            assert_eq!(mode.to_string().parse::<ClientTlsMode>(), Ok(mode));
        }
        let err = "on".parse::<ClientTlsMode>().unwrap_err();
        assert!(err.contains("expected off, optional or required"), "{err}");
    }

    #[test]
    fn own_certificate_must_name_this_node() {
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::new(dir.path()).unwrap();
        let files = certs.node(2).unwrap();
        NodeTls::load(options(files.clone(), 2)).unwrap();
        let err = NodeTls::load(options(files.clone(), 1)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("node-2.pem"), "{text}");
        assert!(text.contains("for node-2, this node is node-1"), "{text}");
        let client = certs.client("alice").unwrap();
        assert!(NodeTls::load(options(client, 1)).is_err());
    }

    #[test]
    fn reload_picks_up_new_files_and_keeps_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::new(dir.path()).unwrap();
        let files = certs.node(1).unwrap();
        let mut tls = NodeTls::load(options(files.clone(), 1)).unwrap();
        let before = Arc::clone(&tls.peer_server);
        // Renewed: a new certificate and key in the same files.
        certs.node(1).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.peer_server));
        // Botched: the key file now holds garbage; the loaded configs stay.
        std::fs::write(&files.key, b"oops").unwrap();
        let kept = Arc::clone(&tls.peer_server);
        let err = tls.reload().unwrap_err();
        assert!(matches!(err, TlsFileError::NotPem { .. }), "{err}");
        assert!(Arc::ptr_eq(&kept, &tls.peer_server));
    }
}
