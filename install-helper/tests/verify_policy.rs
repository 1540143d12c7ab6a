//! The policy file: the shipped sample parses and means what its comments say; errors name
//! the file and the key; trusted keys load from binary and armored files.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{Gpg, KeyAlgo};
use install_helper::verify::{Policy, PolicyError, TrustedKey};

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../etc/iocomd/install-policy.toml")
}

#[test]
fn shipped_sample_parses_with_its_relative_key_dir() {
    let gpg = Gpg::new();
    let k1 = gpg.gen_key("One <one@example.invalid>", KeyAlgo::Ed25519);
    let k2 = gpg.gen_key("Two <two@example.invalid>", KeyAlgo::Ed25519);
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/iocomd");
    fs::create_dir_all(&etc).unwrap();
    let policy_path = etc.join("install-policy.toml");
    fs::copy(sample_path(), &policy_path).unwrap();
    // Without the key directory the sample (which requires signatures) is refused, by name.
    let err = Policy::load(&policy_path).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::Invalid {
                key: "trusted_keys_dir",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("install-policy.toml"), "{err}");
    // With one binary and one armored key, plus a file that is not a key file name.
    gpg.write_key(&k1, &etc.join("trusted-keys"), false);
    gpg.write_key(&k2, &etc.join("trusted-keys"), true);
    fs::write(etc.join("trusted-keys/README"), "not a key").unwrap();
    let p = Policy::load(&policy_path).unwrap();
    assert_eq!(p.allowed_packages, ["iocomd", "iocom-*"]);
    assert!(p.name_allowed("iocomd") && p.name_allowed("iocom-app"));
    assert!(!p.name_allowed("iocomd-evil") && !p.name_allowed("bash"));
    assert_eq!(p.architectures, None);
    assert!(p.architecture_allowed("all", "arm64") && p.architecture_allowed("arm64", "arm64"));
    assert!(!p.architecture_allowed("amd64", "arm64"));
    assert!(!p.allow_downgrade && !p.allow_reinstall && p.require_signature);
    let mut fprs: Vec<&str> = p
        .trusted_keys
        .iter()
        .map(|k| k.fingerprint.as_str())
        .collect();
    fprs.sort();
    let mut want = vec![k1.fingerprint.as_str(), k2.fingerprint.as_str()];
    want.sort();
    assert_eq!(fprs, want);
}

#[test]
fn errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let cases = [
        (
            "allowed_packages = \"iocom-*\"\nrequire_signature = false\n",
            "allowed_packages",
        ),
        ("require_signature = false\n", "allowed_packages"),
        (
            "allowed_packages = [\"a\"]\nrequire_signature = \"yes\"\n",
            "require_signature",
        ),
        (
            "allowed_packages = [\"a\"]\nrequire_signature = false\ntrusted_key_dir = \"k\"\n",
            "trusted_key_dir",
        ),
        (
            "allowed_packages = [\"a b\"]\nrequire_signature = false\n",
            "allowed_packages",
        ),
        (
            "allowed_packages = [\"a\"]\nrequire_signature = false\narchitectures = [\"Amd64\"]\n",
            "architectures",
        ),
        (
            "allowed_packages = [\"a\"]\nrequire_signature = false\narchitectures = []\n",
            "architectures",
        ),
        (
            "allowed_packages = [\"a\"]\ntrusted_keys = [\"missing.pgp\"]\n",
            "missing.pgp",
        ),
        ("allowed_packages = [\"a\"]\n[oops\n", "p.toml"),
    ];
    for (text, needle) in cases {
        fs::write(&path, text).unwrap();
        let err = Policy::load(&path).unwrap_err().to_string();
        assert!(err.contains("p.toml"), "{text:?}: {err}");
        assert!(err.contains(needle), "{text:?}: {err}");
    }
    let err = Policy::load(&dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }) && err.to_string().contains("absent.toml"));
}

#[test]
fn bad_key_files_are_refused_by_name() {
    let gpg = Gpg::new();
    let k = gpg.gen_key("Key <k@example.invalid>", KeyAlgo::Ed25519);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    fs::write(
        keys.join("junk.asc"),
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("p.toml"),
        "allowed_packages = [\"a\"]\ntrusted_keys_dir = \"keys\"\n",
    )
    .unwrap();
    let err = Policy::load(&dir.path().join("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.asc"), "{err}");
    // A secret key is not accepted as a trusted public key.
    let secret = common::run(gpg.cmd().args(["--export-secret-keys", &k.fingerprint]));
    let err = TrustedKey::from_bytes(&secret, &keys.join("secret.pgp")).unwrap_err();
    assert!(err.to_string().contains("secret.pgp"), "{err}");
    // Several keys in one file (a keyring) all load.
    let k2 = gpg.gen_key("Key2 <k2@example.invalid>", KeyAlgo::Rsa3072);
    let mut ring = gpg.export(&k, false);
    ring.extend(gpg.export(&k2, false));
    let loaded = TrustedKey::from_bytes(&ring, &keys.join("ring.gpg")).unwrap();
    let fprs: Vec<&str> = loaded.iter().map(|t| t.fingerprint.as_str()).collect();
    assert_eq!(fprs, [k.fingerprint.as_str(), k2.fingerprint.as_str()]);
}

#[test]
fn shipped_sample_documents_the_content_defaults() {
    let text = fs::read_to_string(sample_path()).unwrap();
    let (head, content) = text.split_once("\n[content]\n").unwrap();
    // Uncomment every commented `key = value` (with continuation lines) of [content], up to
    // the commented exception example.
    let mut uncommented = String::from("[content]\n");
    for line in content.lines() {
        if line.starts_with("# [[content.exception]]") {
            break;
        }
        if let Some(rest) = line.strip_prefix("# ")
            && (rest.contains(" = ") || rest.starts_with(' '))
        {
            uncommented.push_str(rest);
            uncommented.push('\n');
        }
    }
    assert!(uncommented.matches(" = ").count() >= 5, "{uncommented}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("install-policy.toml");
    let base = head
        .replace("require_signature = true", "require_signature = false")
        .replace("trusted_keys_dir = \"trusted-keys\"", "");
    fs::write(&path, format!("{base}\n{uncommented}")).unwrap();
    let written = Policy::load(&path).unwrap();
    fs::write(&path, format!("{base}\n[content]\n")).unwrap();
    let defaults = Policy::load(&path).unwrap();
    assert_eq!(written.content, defaults.content);
    assert_eq!(
        defaults.content,
        install_helper::verify::ContentPolicy::default()
    );
    // An unknown key in [content] is refused by name.
    fs::write(&path, format!("{base}\n[content]\nallowed_prefix = []\n")).unwrap();
    let err = Policy::load(&path).unwrap_err();
    assert!(err.to_string().contains("allowed_prefix"), "{err}");
}
