//! Certificate generation with rcgen (ring backend): a cluster CA, node certificates (CN
//! `node-<id>`, SANs for the addresses they serve, usable as TLS server and client) and client
//! certificates (CN `client-<name>`). Used by the `certs` tool and by tests, which also need
//! certificates that must be refused ([`TestCerts`]: another CA's, an expired one).
//! Writes only the files it is asked for (keys with mode 0600); never reads certificates back.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::config::TlsFiles;
use super::identity::NODE_CN_PREFIX;
use crate::raft::NodeId;

/// Hosts every generated node certificate is valid for, besides those asked for.
pub const DEFAULT_HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate could not be generated or written.
#[derive(Debug)]
pub enum GenError {
    /// rcgen refused the parameters (a bad host name, for one).
    Rcgen(String),
    /// A file could not be written.
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenError::Rcgen(e) => write!(f, "cannot generate certificate: {e}"),
            GenError::Write { path, error } => {
                write!(f, "{}: cannot write: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for GenError {}

impl From<rcgen::Error> for GenError {
    fn from(e: rcgen::Error) -> Self {
        GenError::Rcgen(e.to_string())
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// When a certificate is valid: `not_before ..= not_after`.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (some clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    /// Already expired: valid from 30 days ago until yesterday.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

/// A certificate authority that signs node and client certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    pem: Pem,
}

impl CertAuthority {
    /// A new self-signed CA whose subject CN is `name`.
    pub fn new(name: &str, days: u32) -> Result<Self, GenError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = subject(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::days_from_now(days));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Ok(CertAuthority {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// The CA's own certificate and key.
    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// A certificate for node `id`: CN `node-<id>`, SANs `hosts` (IP addresses or DNS names),
    /// usable both to accept (server) and to dial (client) TLS connections.
    pub fn node(&self, id: NodeId, hosts: &[String], validity: Validity) -> Result<Pem, GenError> {
        let usages = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.leaf(&format!("{NODE_CN_PREFIX}{id}"), hosts, &usages, validity)
    }

    /// A client certificate: CN `client-<name>`, no SANs, client authentication only.
    pub fn client(&self, name: &str, validity: Validity) -> Result<Pem, GenError> {
        let usages = [ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(&format!("client-{name}"), &[], &usages, validity)
    }

    fn leaf(
        &self,
        cn: &str,
        hosts: &[String],
        usages: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<Pem, GenError> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = subject(cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
}

/// `DEFAULT_HOSTS` followed by `extra`, without duplicates.
pub fn hosts_with_defaults(extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
    for h in extra {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    hosts
}

/// Writes `contents` to `path`; `secret` files get mode 0600.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), GenError> {
    let mode = if secret { 0o600 } else { 0o644 };
    let result = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()));
    result.map_err(|error| GenError::Write {
        path: path.to_owned(),
        error,
    })
}

/// Writes a certificate as `<stem>.pem` and its key as `<stem>-key.pem` in `dir`.
pub fn write_pair(dir: &Path, stem: &str, pem: &Pem) -> Result<TlsFiles, GenError> {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    write_file(&cert, &pem.cert, false)?;
    write_file(&key, &pem.key, true)?;
    Ok(TlsFiles {
        cert,
        key,
        ca: dir.join("ca.pem"),
    })
}

/// What `certs` is asked to write.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: u64,
    pub clients: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub days: u32,
}

/// Writes `ca.pem`, `ca-key.pem`, `node-<id>.pem` and `node-<id>-key.pem` for ids
/// `0..nodes` (the ids `server <id> <count>` takes), and `client-<name>.pem` with its key; returns the paths written.
pub fn write_cluster(dir: &Path, spec: &ClusterSpec) -> Result<Vec<PathBuf>, GenError> {
    let ca = CertAuthority::new("raftchat cluster CA", spec.days)?;
    let mut written = Vec::new();
    let files = write_pair(dir, "ca", ca.pem())?;
    written.extend([files.cert, files.key]);
    let hosts = hosts_with_defaults(&spec.extra_hosts);
    let validity = Validity::days_from_now(spec.days);
    for id in 0..spec.nodes {
        let pem = ca.node(id, &hosts, validity)?;
        let files = write_pair(dir, &format!("{NODE_CN_PREFIX}{id}"), &pem)?;
        written.extend([files.cert, files.key]);
    }
    for name in &spec.clients {
        let pem = ca.client(name, validity)?;
        let files = write_pair(dir, &format!("client-{name}"), &pem)?;
        written.extend([files.cert, files.key]);
    }
    Ok(written)
}

/// Certificates for tests, written under one directory: a cluster CA with node and client
/// certificates, and ones that must be refused (another CA's, an expired one).
pub struct TestCerts {
    pub dir: PathBuf,
    ca: CertAuthority,
    other_ca: CertAuthority,
}

impl TestCerts {
    /// A cluster CA (`ca.pem`) and another CA (`other-ca.pem`) in `dir`.
    pub fn new(dir: &Path) -> Result<Self, GenError> {
        let ca = CertAuthority::new("raftchat test CA", 30)?;
        let other_ca = CertAuthority::new("some other CA", 30)?;
        write_file(&dir.join("ca.pem"), &ca.pem().cert, false)?;
        write_file(&dir.join("other-ca.pem"), &other_ca.pem().cert, false)?;
        Ok(TestCerts {
            dir: dir.to_owned(),
            ca,
            other_ca,
        })
    }

    /// The cluster CA's certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A valid certificate for node `id` from the cluster CA.
    pub fn node(&self, id: NodeId) -> Result<TlsFiles, GenError> {
        let pem = self
            .ca
            .node(id, &hosts_with_defaults(&[]), Validity::days_from_now(30))?;
        write_pair(&self.dir, &format!("node-{id}"), &pem)
    }

    /// A certificate for node `id` signed by another CA (`ca` still names the cluster CA).
    pub fn other_ca_node(&self, id: NodeId) -> Result<TlsFiles, GenError> {
        let pem = self
            .other_ca
            .node(id, &hosts_with_defaults(&[]), Validity::days_from_now(30))?;
        write_pair(&self.dir, &format!("other-node-{id}"), &pem)
    }

    /// An expired certificate for node `id` from the cluster CA.
    pub fn expired_node(&self, id: NodeId) -> Result<TlsFiles, GenError> {
        let pem = self
            .ca
            .node(id, &hosts_with_defaults(&[]), Validity::expired())?;
        write_pair(&self.dir, &format!("expired-node-{id}"), &pem)
    }

    /// A client certificate `client-<name>` from the cluster CA.
    pub fn client(&self, name: &str) -> Result<TlsFiles, GenError> {
        let pem = self.ca.client(name, Validity::days_from_now(30))?;
        write_pair(&self.dir, &format!("client-{name}"), &pem)
    }
}
