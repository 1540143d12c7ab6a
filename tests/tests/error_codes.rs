//! The result codes as every reader sees them: one table (`install_api::code`) decides the
//! number and string iocomd publishes, the `tod_err` IOCOM controllers see, and iocomctl's exit
//! class; a helper's D-Bus refusal is decoded from its error name, not its message text.

use install_api::{Class, DaemonCode, ErrorCode, ResultCode, tod_err};
use iocomd::ctl::{FailureClass, classify};

fn every_code() -> impl Iterator<Item = ResultCode> {
    ErrorCode::ALL
        .iter()
        .map(|c| ResultCode::Helper(*c))
        .chain(DaemonCode::ALL.iter().map(|c| ResultCode::Daemon(*c)))
}

#[test]
fn iocomctl_classes_every_published_result_as_the_table_says() {
    for c in every_code() {
        let class = classify(c.as_str(), Some(c.number()));
        assert_eq!(class, FailureClass::of(c.class()), "{c}");
        assert_eq!(class.is_none(), c == ResultCode::OK, "{c}");
        // A reader that sees only the string (no number) agrees, except where the same
        // string exists on both sides (`busy`, `no-space`, `not-authorized`).
        if DaemonCode::from_str_code(c.as_str()).is_none()
            || ErrorCode::from_str_code(c.as_str()).is_none()
        {
            assert_eq!(classify(c.as_str(), None), class, "{c} by string");
        }
    }
}

#[test]
fn every_failure_has_a_final_tod_err_and_success_is_completed() {
    for c in every_code() {
        let t = c.tod_err();
        assert!(iocomd::ctl::tod_err_is_final(t), "{c}: {t}");
        assert_eq!(t == tod_err::COMPLETED, c.class() == Class::Ok, "{c}");
        // The reverse reading (a controller with only tod_err) never mistakes a failure for
        // success.
        let back = iocomd::ctl::classify_tod_err(t);
        assert_eq!(back.is_none(), c == ResultCode::OK, "{c}");
    }
}

#[tokio::test]
async fn a_helper_refusal_is_decoded_from_the_d_bus_error_name() {
    use install_helper::auth::AuthConfig;
    use install_helper::service::{self, InstallHelper, Transport};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    let paths = install_helper::paths::Paths::isolated(&root, &state, &dir.path().join("p.toml"));
    let settings = install_helper::paths::Settings::new(
        paths,
        install_helper::paths::SystemdMode::None,
        "amd64".into(),
    );
    // Nobody is allowed: the call is refused with not-authorized.
    let helper = InstallHelper::new(
        settings,
        std::sync::Arc::new(install_helper::verifier::PolicyVerifier::new(
            install_helper::verify::Policy::from_toml_str(
                "allowed_packages = [\"iocom-*\"]\nrequire_signature = false\n",
                std::path::Path::new("p.toml"),
            )
            .unwrap(),
            "amd64",
        )),
        AuthConfig {
            allowed_uids: vec![],
            polkit: false,
        },
    );
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (server, client) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        iocomd::helper_client::HelperClient::p2p(b)
    );
    let (_server, client) = (server.unwrap(), client.unwrap());
    let e = client.status().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
    let file = tempfile::tempfile().unwrap();
    let meta = iocomd::helper_client::InstallMeta {
        sha256: String::new(),
        size: 0,
        origin: "test".into(),
    };
    let e = client.install(&file, &meta).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
}
