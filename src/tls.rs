//! TLS with rustls (ring provider): the server side of TLS listeners (certificates chosen
//! by SNI, optional client certificates), and the client side of `https://` upstreams and
//! of the collector (system roots or a CA bundle, optional client certificate).
//!
//! Everything here reads PEM files; errors name the file. Handshakes happen in `listen`
//! (server) and in the connectors of `forward` and `export` (client).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::config::{CertFiles, ClientAuth, ClientTlsSettings, ServerTlsSettings, TlsVersion};

/// ALPN identifiers.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The one crypto provider used everywhere (passed explicitly, so no process default is
/// needed and none is changed).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => BOTH,
        TlsVersion::Tls13 => TLS13_ONLY,
    }
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, &e))
}

fn pem_error(path: &Path, e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        Error::NoItemsFound => format!("{}: no PEM item of the expected kind", path.display()),
        other => format!("{}: invalid PEM: {other:?}", path.display()),
    }
}

/// A certificate chain with its key, checked to belong together.
pub fn certified_key(files: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| format!("{} with {}: {e}", files.cert.display(), files.key.display()))
}

/// Trust anchors: a CA bundle, or the system's roots when `ca` is `None`.
pub fn roots(ca: Option<&Path>) -> Result<Arc<RootCertStore>, String> {
    let Some(ca) = ca else {
        return Ok(system_roots());
    };
    let mut store = RootCertStore::empty();
    for cert in load_certs(ca)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
    }
    Ok(Arc::new(store))
}

/// The system's trust store, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                crate::log::warn("no system CA certificates found: https upstreams need `tls.ca`");
            }
            Arc::new(store)
        })
        .clone()
}

/// Picks the certificate whose names cover the client's SNI; the first one otherwise
/// (no SNI, an IP address, or no match).
#[derive(Debug)]
struct BySni(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.0.first().cloned();
        let Some(name) = hello.server_name() else {
            return first;
        };
        let Ok(name) = ServerName::try_from(name) else {
            return first;
        };
        self.0
            .iter()
            .find(|ck| {
                ck.cert.first().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
            .cloned()
            .or(first)
    }
}

/// The server config of a TLS listener: its certificates (chosen by SNI), ALPN `h2` and
/// `http/1.1`, TLS 1.2 and 1.3 (or 1.3 only), and client certificates when configured.
pub fn server_config(s: &ServerTlsSettings) -> Result<Arc<ServerConfig>, String> {
    let keys = s
        .certificates
        .iter()
        .map(certified_key)
        .collect::<Result<Vec<_>, _>>()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(s.min_version))
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots(Some(ca))?, provider());
            let verifier = match s.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni(keys)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A client config for an upstream or the collector. ALPN is left to the connector
/// (hyper-rustls sets it from the HTTP versions enabled).
pub fn client_config(s: &ClientTlsSettings) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(TlsVersion::Tls12))
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots(s.ca.as_deref())?);
    let config = match &s.identity {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain = load_certs(&files.cert)?;
            let key = load_key(&files.key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!("{} with {}: {e}", files.cert.display(), files.key.display())
            })?
        }
    };
    Ok(config)
}

/// A client config for a connector that never makes a TLS handshake (no `https://` URL):
/// no trust anchors, so the system's store is not read for nothing.
pub fn unused_client_config() -> Result<ClientConfig, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(TlsVersion::Tls12))
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The files a server config is built from, to notice when they change.
pub fn server_files(s: &ServerTlsSettings) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = s
        .certificates
        .iter()
        .flat_map(|c| [c.cert.clone(), c.key.clone()])
        .collect();
    files.extend(s.client_ca.iter().cloned());
    files
}

/// What the handshake of an inbound TLS connection established.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// `1.2` or `1.3`.
    pub version: &'static str,
    /// The client certificate's subject (RFC 4514), when verified and recorded.
    pub client_subject: Option<String>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection, record_subject: bool) -> TlsInfo {
        TlsInfo {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
                _ => "",
            },
            client_subject: record_subject
                .then(|| conn.peer_certificates()?.first().and_then(|c| subject(c)))
                .flatten(),
        }
    }
}

/// The subject of an X.509 certificate as an RFC 4514 string (`CN=client,O=Example`).
/// Attribute types without a short name are written as dotted OIDs, values that are not
/// strings as `#` and hex.
pub fn subject(cert: &[u8]) -> Option<String> {
    let (cert, _) = der::read(cert, der::SEQUENCE)?;
    let (mut tbs, _) = der::read(cert, der::SEQUENCE)?;
    // version [0] EXPLICIT, optional
    if tbs.first() == Some(&0xa0) {
        tbs = der::skip(tbs)?;
    }
    // serialNumber, signature, issuer, validity: then subject
    for _ in 0..4 {
        tbs = der::skip(tbs)?;
    }
    let (mut name, _) = der::read(tbs, der::SEQUENCE)?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (set, rest) = der::read(name, der::SET)?;
        name = rest;
        let mut parts = Vec::new();
        let mut set = set;
        while !set.is_empty() {
            let (atv, rest) = der::read(set, der::SEQUENCE)?;
            set = rest;
            let (oid, value) = der::read(atv, der::OID)?;
            let tag = *value.first()?;
            let (text, _) = der::read(value, tag)?;
            let value = match tag {
                // UTF8String, PrintableString, IA5String, TeletexString (as Latin-1)
                0x0c | 0x13 | 0x16 => escape_rfc4514(std::str::from_utf8(text).ok()?),
                0x14 => escape_rfc4514(&text.iter().map(|&b| b as char).collect::<String>()),
                _ => {
                    let mut hex = String::from("#");
                    for b in value {
                        hex.push_str(&format!("{b:02x}"));
                    }
                    hex
                }
            };
            parts.push(format!("{}={value}", oid_name(oid)));
        }
        rdns.push(parts.join("+"));
    }
    // RFC 4514: the last RDN of the sequence comes first.
    rdns.reverse();
    Some(rdns.join(","))
}

fn oid_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x09] => "STREET".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
        _ => dotted(oid),
    }
}

fn dotted(oid: &[u8]) -> String {
    let mut out = String::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if out.is_empty() {
                let (first, second) = match value {
                    0..40 => (0, value),
                    40..80 => (1, value - 40),
                    _ => (2, value - 80),
                };
                out = format!("{first}.{second}");
            } else {
                out.push_str(&format!(".{value}"));
            }
            value = 0;
        }
    }
    out
}

fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Just enough DER to walk to a certificate's subject.
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;

    /// One element: its content and what follows it.
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        Some((tag, content, after))
    }

    /// An element of type `tag`: its content and the rest.
    pub fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, content, rest) = element(input)?;
        (t == tag).then_some((content, rest))
    }

    /// The input after its first element.
    pub fn skip(input: &[u8]) -> Option<&[u8]> {
        element(input).map(|(_, _, rest)| rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_rfc4514_in_reverse_order() {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc-a");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("CN=svc-a,O=Example\\, Inc,C=DE")
        );
    }

    #[test]
    fn subject_of_garbage_is_none() {
        assert_eq!(subject(b""), None);
        assert_eq!(subject(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }

    #[test]
    fn dotted_oid() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(oid_name(&[0x55, 0x04, 0x05]), "2.5.4.5");
    }
}
