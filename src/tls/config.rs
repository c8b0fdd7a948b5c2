//! Certificate files (`--cert --key --ca`) loaded with one precise error per problem, and the
//! rustls configurations built from them: the node's server side (clients: no, optional or
//! required certificates; peers: required), the node's dialling side (presents its certificate,
//! checks the peer's chain against the CA and its CN against the node it meant to reach,
//! whatever the peer's address), and the client library's side (CA only, standard hostname
//! checks). Reads files only when asked to load; never opens sockets.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use super::identity::{node_id_of, parse_node_cn, IdentityError, NODE_CN_PREFIX};
use super::provider;
use crate::raft::NodeId;

/// One problem with one certificate file; `Display` is a single line naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFileError {
    Missing {
        path: PathBuf,
    },
    Unreadable {
        path: PathBuf,
        error: String,
    },
    /// No PEM block of the kind wanted ("certificate" or "private key"), or broken PEM.
    NotPem {
        path: PathBuf,
        wanted: &'static str,
        detail: String,
    },
    /// A PEM certificate whose contents are not a usable X.509 certificate.
    BadCertificate {
        path: PathBuf,
        detail: String,
    },
    Expired {
        path: PathBuf,
        not_after: String,
    },
    NotYetValid {
        path: PathBuf,
        not_before: String,
    },
    /// A PEM private key rustls cannot use.
    BadKey {
        path: PathBuf,
        detail: String,
    },
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
    },
    NotSignedByCa {
        cert: PathBuf,
        ca: PathBuf,
        detail: String,
    },
    /// The node's own certificate does not name it (CN `node-<its id>`).
    WrongIdentity {
        path: PathBuf,
        detail: String,
    },
    /// rustls refused to build a configuration from otherwise valid files.
    Config(String),
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TlsFileError::*;
        match self {
            Missing { path } => write!(f, "{}: missing (no such file)", path.display()),
            Unreadable { path, error } => write!(f, "{}: unreadable: {error}", path.display()),
            NotPem {
                path,
                wanted,
                detail,
            } => write!(f, "{}: no PEM {wanted} found ({detail})", path.display()),
            BadCertificate { path, detail } => {
                write!(f, "{}: not a valid certificate: {detail}", path.display())
            }
            Expired { path, not_after } => {
                write!(
                    f,
                    "{}: certificate expired (notAfter {not_after})",
                    path.display()
                )
            }
            NotYetValid { path, not_before } => write!(
                f,
                "{}: certificate not yet valid (notBefore {not_before})",
                path.display()
            ),
            BadKey { path, detail } => {
                write!(f, "{}: unusable private key: {detail}", path.display())
            }
            KeyMismatch { cert, key } => write!(
                f,
                "{}: private key does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            NotSignedByCa { cert, ca, detail } => write!(
                f,
                "{}: certificate is not signed by the CA in {}: {detail}",
                cert.display(),
                ca.display()
            ),
            WrongIdentity { path, detail } => write!(f, "{}: {detail}", path.display()),
            Config(e) => write!(f, "TLS configuration refused: {e}"),
        }
    }
}

impl std::error::Error for TlsFileError {}

/// What a loaded certificate is for: checked against the CA in that role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// A node: accepts connections (TLS server) and dials peers (TLS client).
    Node,
    /// A client presenting a certificate to a node.
    Client,
}

/// Whether the node asks clients for certificates (`--client-cert-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertPolicy {
    /// No certificate requested.
    None,
    /// Requested; verified against the CA if presented; a client without one is accepted.
    Optional,
    /// Required and verified against the CA (always so for peer connections).
    Required,
}

/// The three files of a node's (or client's) TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Loaded and checked TLS files.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The end-entity certificate first, then any intermediates from the cert file.
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: Arc<RootCertStore>,
    pub files: TlsFiles,
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => TlsFileError::Missing {
            path: path.to_owned(),
        },
        _ => TlsFileError::Unreadable {
            path: path.to_owned(),
            error: e.to_string(),
        },
    })
}

fn not_pem(path: &Path, wanted: &'static str, e: pem::Error) -> TlsFileError {
    let detail = match e {
        pem::Error::NoItemsFound => "no BEGIN line for one".to_string(),
        other => other.to_string(),
    };
    TlsFileError::NotPem {
        path: path.to_owned(),
        wanted,
        detail,
    }
}

/// Every certificate in a PEM file (at least one), each checked to be X.509 and valid now.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(not_pem(path, "certificate", pem::Error::NoItemsFound));
    }
    for cert in &certs {
        check_validity(path, cert)?;
    }
    Ok(certs)
}

/// Checks notBefore <= now <= notAfter.
fn check_validity(path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsFileError> {
    let (_, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| TlsFileError::BadCertificate {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let validity = parsed.validity();
    let now = ASN1Time::now();
    if now > validity.not_after {
        return Err(TlsFileError::Expired {
            path: path.to_owned(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before {
        return Err(TlsFileError::NotYetValid {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| not_pem(path, "private key", e))
}

/// The CA file as a root store: every certificate in it, each valid now.
pub fn load_ca(path: &Path) -> Result<Arc<RootCertStore>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsFileError::BadCertificate {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

impl TlsFiles {
    /// Loads all three files and checks that the key matches the certificate and that the
    /// certificate chains to the CA for `role`.
    pub fn load(&self, role: CertRole) -> Result<TlsMaterial, TlsFileError> {
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let roots = load_ca(&self.ca)?;
        self.check_key_matches(&certs, &key)?;
        self.check_signed_by_ca(&certs, &roots, role)?;
        Ok(TlsMaterial {
            certs,
            key,
            roots,
            files: self.clone(),
        })
    }

    fn check_key_matches(
        &self,
        certs: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
    ) -> Result<(), TlsFileError> {
        let signing_key = provider()
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| TlsFileError::BadKey {
                path: self.key.clone(),
                detail: e.to_string(),
            })?;
        match CertifiedKey::new(certs.to_vec(), signing_key).keys_match() {
            Ok(()) => Ok(()),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
            Err(_) => Err(TlsFileError::KeyMismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
            }),
        }
    }

    fn check_signed_by_ca(
        &self,
        certs: &[CertificateDer<'static>],
        roots: &Arc<RootCertStore>,
        role: CertRole,
    ) -> Result<(), TlsFileError> {
        let not_signed = |e: rustls::Error| TlsFileError::NotSignedByCa {
            cert: self.cert.clone(),
            ca: self.ca.clone(),
            detail: e.to_string(),
        };
        let (end_entity, intermediates) = (&certs[0], &certs[1..]);
        let now = UnixTime::now();
        if role == CertRole::Node {
            let parsed = ParsedCertificate::try_from(end_entity).map_err(not_signed)?;
            let algs = provider().signature_verification_algorithms.all;
            verify_server_cert_signed_by_trust_anchor(&parsed, roots, intermediates, now, algs)
                .map_err(not_signed)?;
        }
        let verifier = client_verifier(roots, ClientCertPolicy::Required)?;
        verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(not_signed)?;
        Ok(())
    }
}

fn client_verifier(
    roots: &Arc<RootCertStore>,
    policy: ClientCertPolicy,
) -> Result<Arc<dyn ClientCertVerifier>, TlsFileError> {
    let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
    let builder = match policy {
        ClientCertPolicy::Optional => builder.allow_unauthenticated(),
        _ => builder,
    };
    builder
        .build()
        .map_err(|e| TlsFileError::Config(e.to_string()))
}

/// The node's accepting side. Peer listeners use `ClientCertPolicy::Required` and then check
/// the id with [`super::identity::check_peer_id`]; a listener shared by peers and clients uses
/// the client policy and must require a certificate on every connection that turns out to be
/// a peer's.
pub fn node_server_config(
    material: &TlsMaterial,
    policy: ClientCertPolicy,
) -> Result<Arc<ServerConfig>, TlsFileError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Config(e.to_string()))?;
    let builder = match policy {
        ClientCertPolicy::None => builder.with_no_client_auth(),
        _ => builder.with_client_cert_verifier(client_verifier(&material.roots, policy)?),
    };
    let config = builder
        .with_single_cert(material.certs.clone(), material.key.clone_key())
        .map_err(|e| TlsFileError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The name to dial peer `id` with on a [`peer_client_config`] connection: `node-<id>`. It is
/// never sent (SNI is off); the verifier reads the expected id from it.
pub fn peer_server_name(id: NodeId) -> ServerName<'static> {
    let name = DnsName::try_from(format!("{NODE_CN_PREFIX}{id}"))
        .expect("node-<decimal> is always a valid DNS name");
    ServerName::DnsName(name)
}

/// The node's dialling side: presents the node's certificate; accepts a peer whose chain ends
/// at the CA and whose CN is `node-<id>` for the id in [`peer_server_name`], whatever address
/// it was reached at (so certificates from any CA work without SANs for every address).
pub fn peer_client_config(material: &TlsMaterial) -> Result<Arc<ClientConfig>, TlsFileError> {
    let verifier = Arc::new(NodeCertVerifier {
        roots: material.roots.clone(),
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(material.certs.clone(), material.key.clone_key())
        .map_err(|e| TlsFileError::Config(e.to_string()))?;
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The client library's and loadgen's side: standard verification against `roots` (the node's
/// certificate must name the host dialled), optionally presenting a client certificate.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<&TlsMaterial>,
) -> Result<Arc<ClientConfig>, TlsFileError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(m) => builder
            .with_client_auth_cert(m.certs.clone(), m.key.clone_key())
            .map_err(|e| TlsFileError::Config(e.to_string()))?,
    };
    Ok(Arc::new(config))
}

/// Verifies a peer node's certificate: chain to the CA (no hostname check), then CN
/// `node-<id>` equal to the id in the server name the connection was opened with.
#[derive(Debug)]
struct NodeCertVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

fn identity_error(e: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

impl ServerCertVerifier for NodeCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let algs = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, algs)?;
        let expected = match server_name {
            ServerName::DnsName(name) => parse_node_cn(name.as_ref()),
            _ => None,
        };
        let expected = expected.ok_or_else(|| {
            rustls::Error::General(format!("dialled {server_name:?}, not node-<id>"))
        })?;
        let found = node_id_of(end_entity).map_err(identity_error)?;
        if found != expected {
            return Err(identity_error(IdentityError::WrongNode { expected, found }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
