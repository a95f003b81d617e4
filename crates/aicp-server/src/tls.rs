//! TLS for the HTTP and gRPC listeners (rustls): the server's certificate and key from PEM files,
//! client certificates required when a client CA is given (mutual TLS), and the files read
//! again when they change, as cert-manager or a Kubernetes Secret rotates them. A rotation that
//! fails to load (a key that does not match, a file half written) is logged and the previous
//! certificate goes on serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::connections::Protocols;

/// How often the files are looked at for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Where the server's certificate, its key and the client CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; `None`: clients need none.
    pub client_ca: Option<PathBuf>,
}

/// The TLS settings in force, reloaded when the files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

struct Loaded {
    stamp: Vec<Stamp>,
    http: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
}

/// What a file looked like when it was read: a rewrite (or a swapped symbolic link) changes it.
#[derive(Debug, PartialEq, Eq)]
struct Stamp(Option<(u64, SystemTime)>);

impl Tls {
    /// Reads the files; fails with a message that names the file at fault.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let loaded = load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(loaded),
        }))
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the settings in force now, offering the listener's protocols by ALPN.
    pub fn acceptor(&self, protocols: Protocols) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(match protocols {
            Protocols::Http => current.http.clone(),
            Protocols::Http2 => current.grpc.clone(),
        })
    }

    /// Looks at the files every [`RELOAD_INTERVAL`], and loads them again when they change.
    pub async fn watch(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_failed = None;
        loop {
            ticks.tick().await;
            let stamp = stamps(&self.files);
            let unchanged = self
                .current
                .read()
                .map(|current| current.stamp == stamp)
                .unwrap_or(false);
            if unchanged || last_failed.as_ref() == Some(&stamp) {
                continue;
            }
            match load(&self.files) {
                Ok(loaded) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
                    last_failed = None;
                    tracing::info!(
                        "TLS certificate reloaded from {}",
                        self.files.cert.display()
                    );
                }
                Err(e) => {
                    tracing::error!(
                        "TLS files changed but do not load (still serving the previous certificate): {e:#}"
                    );
                    last_failed = Some(stamp);
                }
            }
        }
    }
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    let stamp = |path: &Path| {
        Stamp(
            std::fs::metadata(path)
                .and_then(|m| Ok((m.len(), m.modified()?)))
                .ok(),
        )
    };
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| stamp(path))
    .collect()
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the {what} {}: {e}", path.display()))
}

fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the {what} {} is not PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!(
            "the {what} {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        );
    }
    Ok(certificates)
}

fn load(files: &TlsFiles) -> anyhow::Result<Loaded> {
    // Stamped before reading: a change during the read is seen at the next look.
    let stamp = stamps(files);
    let chain = certificates(&files.cert, "certificate file (--tls-cert)")?;
    let key_pem = read(&files.key, "key file (--tls-key)")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "the key file (--tls-key) {} holds no private key (expected PEM PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, "client CA file (--tls-client-ca)")? {
                roots
                    .add(certificate)
                    .map_err(|e| anyhow::anyhow!("the client CA file {}: {e}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("the client CA file {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "the certificate {} and the key {} do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let with_alpn = |protocols: &[&[u8]]| {
        let mut config = config.clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    };
    Ok(Loaded {
        stamp,
        http: with_alpn(&[b"h2", b"http/1.1"]),
        grpc: with_alpn(&[b"h2"]),
    })
}

/// Why a client's TLS handshake failed, as the `reason` of
/// `aicp_tls_handshake_failures_total`, and what an operator can do about it.
fn handshake_failure(error: &std::io::Error) -> (&'static str, &'static str) {
    use rustls::Error as E;
    match error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(_)) => (
            "bad_client_certificate",
            "a client certificate must be X.509 v3 (a bare `openssl x509 -req` makes v1), \
             chain to --tls-client-ca, and allow client authentication: \
             docs/guide/security.md shows openssl commands that make one",
        ),
        Some(E::NoCertificatesPresented) => (
            "no_client_certificate",
            "--tls-client-ca asks every client for a certificate, and this one sent none",
        ),
        Some(E::AlertReceived(_)) => (
            "client_refused",
            "the client refused the server's certificate: most often it does not trust the CA \
             that signed it, or the name it dialled is not in the certificate",
        ),
        Some(E::PeerIncompatible(_)) => (
            "incompatible_client",
            "the client offers no TLS version or cipher suite the server accepts (TLS 1.2 and 1.3)",
        ),
        Some(
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. },
        ) => (
            "not_tls",
            "the client does not speak TLS: plain HTTP to a TLS port?",
        ),
        Some(_) => ("other", ""),
        None => ("io", ""),
    }
}

/// Counts a failed handshake by its reason and says why in the log, at most every ten
/// seconds, since a scanner or a misconfigured client fails again and again. A connection
/// closed mid-handshake (`io`: port checks, a client that gave up) is only counted.
pub(crate) fn handshake_failed(error: &std::io::Error, peer: Option<std::net::SocketAddr>) {
    static LAST_WARNING: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let (reason, hint) = handshake_failure(error);
    metrics::counter!("aicp_tls_handshake_failures_total", "reason" => reason).increment(1);
    let peer = peer.map_or_else(|| "a client".to_string(), |p| p.to_string());
    if reason == "io" {
        tracing::debug!("TLS handshake with {peer} failed: {error}");
        return;
    }
    let mut last = LAST_WARNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!("TLS handshake with {peer} refused ({reason}): {error}; {hint}");
    } else {
        tracing::debug!("TLS handshake with {peer} refused ({reason}): {error}");
    }
}

/// Rotation under paused time: the watcher's looks cost no wall-clock time, and a handshake
/// over an in-memory pipe shows which certificate is served.
#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, SanType,
    };
    use rustls::pki_types::ServerName;

    use super::*;

    /// A certificate authority, and a server certificate and key it signed (PEM).
    fn authority(name: &str) -> (String, String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        (issuer.pem(), certificate.pem(), key.serialize_pem())
    }

    /// Whether a client that trusts only `ca` completes a handshake with the server now.
    async fn trusted_by(tls: &Tls, ca: &str) -> bool {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(certificate.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let (client, server) = tokio::io::duplex(1 << 16);
        let localhost = ServerName::try_from("localhost").unwrap();
        let (client, _) = tokio::join!(
            connector.connect(localhost, client),
            tls.acceptor(Protocols::Http).accept(server)
        );
        client.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_is_served_at_the_next_look_and_one_that_does_not_load_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: None,
        };
        let (first_ca, cert, key) = authority("first CA");
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        let tls = Tls::load(files.clone()).unwrap();
        tokio::spawn(tls.clone().watch());
        assert!(trusted_by(&tls, &first_ca).await);

        // cert-manager's way: new files from another CA written in place.
        let (second_ca, cert, key) = authority("second CA");
        std::fs::write(&files.key, key).unwrap();
        std::fs::write(&files.cert, cert).unwrap();
        assert!(
            trusted_by(&tls, &first_ca).await,
            "changed before the next look"
        );
        tokio::time::sleep(RELOAD_INTERVAL + Duration::from_millis(1)).await;
        assert!(trusted_by(&tls, &second_ca).await);
        assert!(
            !trusted_by(&tls, &first_ca).await,
            "the old certificate is still served"
        );

        // A key that belongs to another certificate: the working certificate stays.
        let (_, _, wrong_key) = authority("third CA");
        std::fs::write(&files.key, wrong_key).unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 2).await;
        assert!(trusted_by(&tls, &second_ca).await);
    }
}
