//! The DDI client over TLS (rustls, ring): the server certificate is checked against the
//! configured CA, a client certificate is presented for mutual TLS, the `TargetToken` from the
//! token file goes to the server (polls and downloads), and without the client certificate
//! the server is not reached (the status says why). A missing token file stops the start.

mod ddi_support;

use ddi_support::mock::{BASE, Link, Mock};
use ddi_support::*;
use iocomd::config::HawkbitAuth;
use iocomd::ddi::{self, DdiStatus};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Pki {
    ca: PathBuf,
    client: (PathBuf, PathBuf),
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("dev1");
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_path = write("ca.pem", ca.pem());
    let client = (
        write("client.pem", client_cert.pem()),
        write("client.key", client_key.serialize_pem()),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key_der = rustls_pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.der().clone()], key_der)
        .unwrap();
    Pki {
        ca: ca_path,
        client,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    }
}

#[tokio::test]
async fn mutual_tls_with_a_target_token_installs_an_action() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let m = Mock::start_with(Some(pki.acceptor.clone())).await;
    let d = data(50_000, 20);
    let art = m.artifact("app_1_all.deb", &d, Link::Good);
    m.offer_app("1", "app", "1", art);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3tT0ken\n").unwrap();
    let mut h = settings(&m.url);
    h.ca = Some(pki.ca.clone());
    h.identity = Some(pki.client.clone());
    h.auth = HawkbitAuth::TargetToken(token);
    let fake = Arc::new(FakeInstaller::default());
    let dev = Device::new();
    let c = dev.start(h, fake.clone());
    wait_for(60, "closed feedback", || !finals(&m, "1").is_empty()).await;
    assert_eq!(finals(&m, "1"), [("closed".into(), "success".into())]);
    assert_eq!(fake.installs()[0][0].1, d);
    let seen = m.seen();
    let poll = seen.iter().find(|s| s.path == BASE).unwrap();
    assert_eq!(poll.headers["authorization"], "TargetToken s3cr3tT0ken");
    let dl = seen
        .iter()
        .find(|s| s.path == "/artifacts/app_1_all.deb")
        .unwrap();
    assert_eq!(
        dl.headers["authorization"], "TargetToken s3cr3tT0ken",
        "same host: token sent"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn without_the_client_certificate_the_server_is_not_reached() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let m = Mock::start_with(Some(pki.acceptor.clone())).await;
    let mut h = settings(&m.url);
    h.ca = Some(pki.ca.clone());
    let fake = Arc::new(FakeInstaller::default());
    let dev = Device::new();
    let c = dev.start(h, fake);
    wait_for(60, "TLS error in the status", || {
        c.status
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("TLS") || e.contains("HTTP"))
    })
    .await;
    assert!(c.status.borrow().last_poll.is_none());
    assert!(m.seen().is_empty(), "no request got through");
    c.shutdown().await;
}

#[tokio::test]
async fn a_missing_token_file_stops_the_start_naming_it() {
    let dev = Device::new();
    let mut h = settings("http://127.0.0.1:1");
    h.auth = HawkbitAuth::GatewayToken(dev.dir.path().join("no-such-token"));
    let (tx, _rx) = tokio::sync::watch::channel(DdiStatus::default());
    let e = ddi::run(
        dev.config(h),
        Arc::new(FakeInstaller::default()),
        tx,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("no token file");
    assert!(e.to_string().starts_with("hawkbit.token_file "), "{e}");
    assert!(e.to_string().contains("no-such-token"), "{e}");
}
