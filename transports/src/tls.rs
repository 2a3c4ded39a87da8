//! TLS material shared by the TCP and QUIC transports: the ALPN, the
//! server's certificate (provided, or self-signed on first start), its SPKI
//! pin, and the rustls configurations both sides use.
//!
//! - Server: TLS 1.3 only, ALPN [`ALPN`], the ring provider.
//! - Client: trusts either one pinned key ([`ClientTrust::Pin`], seed 001's
//!   "server key compiled into the client") or a CA certificate
//!   ([`ClientTrust::Ca`], with the usual name and chain checks). A pinned
//!   key is the whole trust decision: the certificate's names and validity
//!   dates are not checked (a self-signed certificate has no CA to vouch
//!   for them), but the handshake signature must be made by that key.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The ALPN protocol id of confab over TLS and QUIC.
pub const ALPN: &[u8] = b"confab/1";

/// The TLS name a client asks for when it connects to a pinned server by
/// address (a pinned key does not depend on names).
pub const DEFAULT_SERVER_NAME: &str = "confab.local";

/// TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file holds no certificate or no key, or is not PEM.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (for example a key that does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A SHA-256 pin of a certificate's SubjectPublicKeyInfo, written
/// `sha256//BASE64` (the form curl's `--pinnedpubkey` uses).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// The pin of a DER SubjectPublicKeyInfo.
    #[must_use]
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        Pin(Sha256::digest(spki_der).into())
    }

    /// The pin of the key a DER certificate carries.
    ///
    /// # Errors
    /// The certificate cannot be parsed.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<Pin, rustls::Error> {
        let parsed = ParsedCertificate::try_from(cert)?;
        Ok(Pin::of_spki(parsed.subject_public_key_info().as_ref()))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256//{}", B64.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A pin string is not `sha256//` followed by the base64 of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a pin is `sha256//` followed by 44 base64 characters (as printed by `confab-server run` and kept in DATA/server.pin)"
)]
pub struct PinParseError;

impl FromStr for Pin {
    type Err = PinParseError;

    fn from_str(s: &str) -> Result<Pin, PinParseError> {
        let b64 = s.trim().strip_prefix("sha256//").ok_or(PinParseError)?;
        let bytes = B64.decode(b64).map_err(|_| PinParseError)?;
        Ok(Pin(bytes.try_into().map_err(|_| PinParseError)?))
    }
}

/// The server's certificate chain and private key.
#[derive(Debug)]
pub struct ServerIdentity {
    /// End-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The end-entity certificate's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ServerIdentity {
    fn clone(&self) -> ServerIdentity {
        ServerIdentity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

/// A freshly generated self-signed identity with its PEM forms, for writing to the data directory.
#[derive(Debug)]
pub struct SelfSigned {
    /// The identity.
    pub identity: ServerIdentity,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl ServerIdentity {
    /// A self-signed certificate (ECDSA P-256) for `names` (DNS names or IP
    /// addresses), made with rcgen.
    ///
    /// # Errors
    /// rcgen refused a name.
    pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        let cert_pem = certified.cert.pem();
        let key_pem = certified.signing_key.serialize_pem();
        let identity = ServerIdentity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
        Ok(SelfSigned { identity, cert_pem, key_pem })
    }

    /// Parses a PEM certificate chain (end-entity first) and a PEM private key.
    ///
    /// # Errors
    /// No certificate, no key, or malformed PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerIdentity, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem { what: "certificate chain", reason: e.to_string() })?;
        if chain.is_empty() {
            return Err(TlsError::Pem { what: "certificate chain", reason: "no CERTIFICATE section".into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Pem { what: "private key", reason: e.to_string() })?;
        Ok(ServerIdentity { chain, key })
    }

    /// The pin of the end-entity certificate's key.
    ///
    /// # Errors
    /// The certificate cannot be parsed.
    pub fn pin(&self) -> Result<Pin, rustls::Error> {
        Pin::of_certificate(&self.chain[0])
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's rustls configuration: TLS 1.3 only, ALPN `confab/1`, no client certificates.
///
/// ALPN is required: a client offering other protocols is refused by
/// rustls with the `no_application_protocol` alert; a client offering no
/// ALPN extension at all (which rustls accepts over TLS, unlike QUIC) is
/// refused before a certificate is chosen, with `access_denied`.
///
/// # Errors
/// The key does not match the certificate, or is of an unsupported type.
pub fn server_config(identity: &ServerIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.cert_resolver = Arc::new(RequireAlpn(config.cert_resolver.clone()));
    Ok(config)
}

/// The `wss://` server's rustls configuration: the same identity and TLS
/// 1.3 as [`server_config`], ALPN `http/1.1` (the WebSocket upgrade is an
/// HTTP/1.1 request). A client offering only other protocols (`h2`) is
/// refused with `no_application_protocol`; one offering none is served
/// (many WebSocket libraries send no ALPN).
///
/// # Errors
/// The key does not match the certificate, or is of an unsupported type.
pub fn ws_server_config(identity: &ServerIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![crate::ws::ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// A client configuration for `wss://`: [`client_config`]'s trust (the pin
/// or the CA) with ALPN `http/1.1` instead of `confab/1`.
///
/// # Errors
/// A CA certificate cannot be used as a root.
pub fn ws_client_config(trust: &ClientTrust) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = client_config(trust)?;
    config.alpn_protocols = vec![crate::ws::ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Resolves no certificate, which aborts the handshake, for a client that
/// offered no ALPN at all (one that offered others is refused by rustls
/// itself, with `no_application_protocol`).
#[derive(Debug)]
struct RequireAlpn(Arc<dyn ResolvesServerCert>);

impl ResolvesServerCert for RequireAlpn {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.alpn().is_some() { self.0.resolve(hello) } else { None }
    }
}

/// What a client trusts.
#[derive(Debug, Clone)]
pub enum ClientTrust {
    /// Exactly the key with this pin.
    Pin(Pin),
    /// Certificates chaining to these roots, for the server name asked.
    Ca(Vec<CertificateDer<'static>>),
}

/// The client's rustls configuration: TLS 1.3 only, ALPN `confab/1`.
///
/// # Errors
/// A CA certificate cannot be used as a root.
pub fn client_config(trust: &ClientTrust) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match trust {
        ClientTrust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        ClientTrust::Ca(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root.clone())?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Reads PEM certificates (for `--ca FILE`).
///
/// # Errors
/// Not PEM, or no certificate in it.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: "CA file", reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what: "CA file", reason: "no CERTIFICATE section".into() });
    }
    Ok(certs)
}

/// The server name a client should send: the host part of `--server` when
/// it is a DNS name, else [`DEFAULT_SERVER_NAME`] (a pin does not need it;
/// with `--ca` an IP address is matched as an IP SAN).
#[must_use]
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from(DEFAULT_SERVER_NAME).expect("constant is a valid DNS name"))
}

/// Accepts exactly one server key, by its SPKI SHA-256.
#[derive(Debug)]
struct PinVerifier {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Pin::of_certificate(end_entity)?;
        if bool::from(got.0.ct_eq(&self.pin.0)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("server key {got} does not match the pinned key {}", self.pin)))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_the_sha256_of_the_spki_rcgen_reports() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&certified.signing_key);
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        assert_eq!(Pin::of_certificate(&cert).unwrap(), Pin::of_spki(&spki));
    }

    #[test]
    fn pin_text_round_trips_and_rejects_garbage() {
        let pin = Pin([7; 32]);
        let text = pin.to_string();
        assert!(text.starts_with("sha256//"));
        assert_eq!(text.parse::<Pin>().unwrap(), pin);
        assert_eq!("sha256//AAAA".parse::<Pin>(), Err(PinParseError));
        assert_eq!("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".parse::<Pin>(), Err(PinParseError));
    }

    #[test]
    fn self_signed_identity_makes_both_configs() {
        let made = ServerIdentity::self_signed(&["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let again = ServerIdentity::from_pem(made.cert_pem.as_bytes(), made.key_pem.as_bytes()).unwrap();
        assert_eq!(again.pin().unwrap(), made.identity.pin().unwrap());
        let server = server_config(&made.identity).unwrap();
        assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
        let client = client_config(&ClientTrust::Pin(made.identity.pin().unwrap())).unwrap();
        assert_eq!(client.alpn_protocols, vec![ALPN.to_vec()]);
        let ca = certificates_from_pem(made.cert_pem.as_bytes()).unwrap();
        client_config(&ClientTrust::Ca(ca)).unwrap();
        assert!(certificates_from_pem(b"not pem").is_err());
    }
}
