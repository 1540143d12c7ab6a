//! Configuration loading: fragment order, merging, the shipped sample, defaults and errors.

use iocomd::config::{
    self, ConfigError, DeviceNumber, HelperConnection, LogTarget, PasswordHash, Settings, defaults,
};
use iocomd::paths::Paths;
use std::fs;
use std::path::{Path, PathBuf};

const MINIMAL: &str = "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:6368\"\n";

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/iocomd/iocomd.toml")
}

fn err_text(r: Result<Settings, ConfigError>) -> String {
    r.expect_err("configuration should be rejected").to_string()
}

#[test]
fn shipped_sample_validates() {
    let root = tempfile::tempdir().unwrap();
    let s = config::load_file(&sample_path(), &Paths::rooted(root.path())).unwrap();
    assert_eq!(s.device_path(), "gina3.iocafenet");
    assert_eq!(s.listen.len(), 1);
    // Out of the box: loopback plain TCP, so a fresh install starts without certificates,
    // and pushes over it stay refused.
    assert_eq!(s.listen[0].address.to_string(), "127.0.0.1:6368");
    assert!(s.listen[0].tls.is_none());
    assert!(s.connect.is_empty());
    assert!(s.serial.is_empty());
    assert!(!s.allow_plain_tcp_push);
    assert!(
        !s.allow_serial_push,
        "serial pushes are off unless configured"
    );
    assert!(s.accounts.is_empty());
    assert_eq!(s.spool.dir, Path::new("/var/cache/iocomd/spool"));
    assert_eq!(s.spool.max_package_size, 256 << 20);
    assert_eq!(s.spool.min_free_space, 64 << 20);
    assert!(s.spool.stream_to_helper);
    assert_eq!(s.stream_buffer_size, 1 << 20);
    assert_eq!(s.helper, HelperConnection::SystemBus);
    assert_eq!(s.log.level, "info");
    assert_eq!(s.log.target, LogTarget::Auto);
}

#[test]
fn shipped_sample_documents_every_key() {
    let text = fs::read_to_string(sample_path()).unwrap();
    let keys = [
        "[device]",
        "name =",
        "number =",
        "network =",
        "[[endpoints.listen]]",
        "[[endpoints.connect]]",
        "transport =",
        "address =",
        "cert =",
        "key =",
        "ca =",
        "server_name =",
        "password_file =",
        "[security]",
        "allow_plain_tcp_push =",
        "[[endpoints.serial]]",
        "port =",
        "baud =",
        "parity",
        "stop_bits",
        "side",
        "allow_serial_push =",
        "[accounts.",
        "password_hash =",
        "[spool]",
        "dir =",
        "max_package_size =",
        "min_free_space =",
        "stream_to_helper =",
        "[stream]",
        "buffer_size =",
        "[helper]",
        "connection =",
        "program =",
        "args =",
        "[log]",
        "level =",
        "target =",
    ];
    for k in keys {
        assert!(text.contains(k), "the sample does not document {k}");
    }
    // The commented-out alternatives are valid too once uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|r| is_toml_line(r))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("connection = \"system-bus\"", "connection = \"spawn\"");
    let root = tempfile::tempdir().unwrap();
    let s = config::parse_str(
        Path::new("/etc/iocomd/iocomd.toml"),
        &uncommented,
        &Paths::rooted(root.path()),
    )
    .unwrap();
    assert_eq!(s.listen.len(), 2);
    assert_eq!(s.connect.len(), 1);
    assert_eq!(s.serial.len(), 1);
    assert_eq!(s.serial[0].params.to_string(), "/dev/ttyUSB0,baud=115200");
    assert_eq!(s.serial[0].side, config::SerialSide::Client);
    assert_eq!(s.connect[0].host, "controller.example.net");
    assert_eq!(
        s.connect[0].tls.as_ref().unwrap().server_name,
        "controller.example.net"
    );
    assert_eq!(
        s.account("frank").unwrap().password_hash,
        Some(PasswordHash::from_password("pass"))
    );
    assert!(
        matches!(s.helper, HelperConnection::Spawn { ref program, .. }
        if program == Path::new("/usr/libexec/iocomd/iocom-install-helper"))
    );
}

/// A commented line that is TOML (a key assignment or a table header), not prose.
fn is_toml_line(l: &str) -> bool {
    (l.starts_with('[') && l.ends_with(']'))
        || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
}

#[test]
fn fragments_merge_in_order_and_later_wins() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let [usr, run, etc] = [0, 1, 2].map(|i| paths.config_dirs[i].clone());
    write(
        &usr.join("iocomd.toml"),
        &format!(
            "{MINIMAL}[device]\nname = \"usr\"\nnetwork = \"usrnet\"\n[log]\nlevel = \"debug\"\n"
        ),
    );
    write(&usr.join("conf.d/50-a.toml"), "[device]\nnumber = 7\n");
    write(&run.join("conf.d/10-x.toml"), "[device]\nname = \"run\"\n");
    write(
        &etc.join("iocomd.toml"),
        "[device]\nname = \"etc\"\n[spool]\nmax_package_size = \"1 MiB\"\n",
    );
    write(
        &etc.join("conf.d/20-b.toml"),
        "[spool]\nmax_package_size = 4096\n",
    );
    write(
        &etc.join("conf.d/10-a.toml"),
        "[spool]\nmax_package_size = \"2 MiB\"\n",
    );
    write(&etc.join("conf.d/ignored.conf"), "this is not toml");
    write(&etc.join("conf.d/.hidden.toml"), "neither is this");

    let files = config::fragment_files(&paths).unwrap();
    let expect = [
        usr.join("iocomd.toml"),
        usr.join("conf.d/50-a.toml"),
        run.join("conf.d/10-x.toml"),
        etc.join("iocomd.toml"),
        etc.join("conf.d/10-a.toml"),
        etc.join("conf.d/20-b.toml"),
    ];
    assert_eq!(files, expect);

    let s = config::load(&paths).unwrap();
    assert_eq!(s.sources, expect);
    assert_eq!(s.device.name, "etc");
    assert_eq!(s.device.network, "usrnet");
    assert_eq!(s.device.number, DeviceNumber::Fixed(7));
    assert_eq!(s.spool.max_package_size, 4096);
    assert_eq!(s.log.level, "debug");
    assert_eq!(
        s.spool.dir, paths.spool_dir,
        "spool dir defaults to Paths::spool_dir"
    );
}

#[test]
fn config_file_alone_ignores_fragments() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    write(
        &paths.config_dirs[2].join("iocomd.toml"),
        &format!("{MINIMAL}[device]\nname = \"etc\"\n"),
    );
    let file = root.path().join("alone.toml");
    write(&file, &format!("{MINIMAL}[device]\nname = \"alone\"\n"));
    let s = config::load_file(&file, &paths).unwrap();
    assert_eq!(s.device.name, "alone");
    assert_eq!(s.sources, vec![file]);
}

#[test]
fn defaults_fill_everything_but_endpoints() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let s = config::parse_str(Path::new("/x.toml"), MINIMAL, &paths).unwrap();
    assert_eq!(s.device.name, defaults::DEVICE_NAME);
    assert_eq!(s.device.number, DeviceNumber::Auto);
    assert_eq!(s.device_path(), "iocomd.iocafenet");
    assert!(!s.allow_plain_tcp_push);
    assert_eq!(s.stream_buffer_size, 1_048_576);
    assert_eq!(s.spool.max_package_size, defaults::MAX_PACKAGE_SIZE);
    assert_eq!(s.helper, HelperConnection::SystemBus);
    let e = err_text(config::parse_str(Path::new("/x.toml"), "", &paths));
    assert_eq!(
        e,
        "configuration: endpoints: no endpoint configured: add [[endpoints.listen]], \
         [[endpoints.connect]] or [[endpoints.serial]]"
    );
}

#[test]
fn bad_value_names_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let etc = paths.config_dirs[2].clone();
    write(&etc.join("iocomd.toml"), MINIMAL);
    let frag = etc.join("conf.d/10-net.toml");
    write(
        &frag,
        "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"x\"\n",
    );
    assert_eq!(
        err_text(config::load(&paths)),
        format!(
            "{}: endpoints.listen[0].address: invalid socket address 'x' (expected IP:PORT, e.g. 0.0.0.0:6369)",
            frag.display()
        )
    );
}

#[test]
fn unknown_key_names_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let f = paths.config_dirs[0].join("conf.d/99-typo.toml");
    write(&f, "[device]\nname = \"a\"\ncolour = \"red\"\n");
    let e = err_text(config::load(&paths));
    assert!(
        e.starts_with(&format!(
            "{}: line 3, column 1: unknown field `colour`",
            f.display()
        )),
        "{e}"
    );
    let e = err_text(config::parse_str(
        Path::new("/t.toml"),
        "[nonsense]\n",
        &paths,
    ));
    assert!(
        e.starts_with("/t.toml: line 1, column 2: unknown field `nonsense`"),
        "{e}"
    );
    let e = err_text(config::parse_str(
        Path::new("/t.toml"),
        "[device]\nname = 5\n",
        &paths,
    ));
    assert!(
        e.starts_with(
            "/t.toml: line 2, column 8: device.name: invalid type: integer `5`, expected a string"
        ),
        "{e}"
    );
    let e = err_text(config::parse_str(Path::new("/t.toml"), "[device\n", &paths));
    assert!(e.starts_with("/t.toml: line 1"), "{e}");
}

#[test]
fn every_bad_value_is_rejected_with_its_key() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let cases: &[(&str, &str)] = &[
        (
            "[device]\nname = \"gina3\"",
            "/c.toml: device.name: invalid device name 'gina3'",
        ),
        (
            "[device]\nname = \"\"",
            "/c.toml: device.name: invalid device name ''",
        ),
        ("[device]\nnetwork = \"*\"", "/c.toml: device.network: '*'"),
        (
            "[device]\nnetwork = \"a.b\"",
            "/c.toml: device.network: invalid network name 'a.b'",
        ),
        (
            "[device]\nnumber = 9000",
            "/c.toml: line 2, column 10: device.number: invalid device number 9000",
        ),
        (
            "[device]\nnumber = \"x\"",
            "/c.toml: line 2, column 10: device.number: invalid device number 'x'",
        ),
        (
            "[accounts.frank]\npassword_hash = \"pass\"",
            "/c.toml: accounts.frank.password_hash: invalid password hash (does not start with '!')",
        ),
        (
            "[accounts.\"a b\"]\npassword_hash = \"pass\"",
            "/c.toml: accounts.a b: invalid user name 'a b'",
        ),
        (
            "[spool]\nmax_package_size = 10",
            "/c.toml: spool.max_package_size: 10 B is too small (at least 1 KiB)",
        ),
        (
            "[spool]\nmax_package_size = \"5 furlongs\"",
            "/c.toml: line 2, column 20: spool.max_package_size: invalid size '5 furlongs'",
        ),
        (
            "[spool]\nmin_free_space = -1",
            "/c.toml: line 2, column 18: spool.min_free_space: invalid size -1",
        ),
        (
            "[stream]\nbuffer_size = 256",
            "/c.toml: stream.buffer_size: 256 B is out of range (257 to 16777216 bytes)",
        ),
        (
            "[stream]\nbuffer_size = \"17 MiB\"",
            "/c.toml: stream.buffer_size: 17 MiB is out of range",
        ),
        (
            "[helper]\nconnection = \"bus\"",
            "/c.toml: helper.address: required with connection = \"bus\"",
        ),
        (
            "[helper]\nconnection = \"bus\"\naddress = \"nonsense\"",
            "/c.toml: helper.address: invalid D-Bus address 'nonsense'",
        ),
        (
            "[helper]\nconnection = \"spawn\"",
            "/c.toml: helper.program: required with connection = \"spawn\"",
        ),
        (
            "[helper]\nconnection = \"carrier-pigeon\"",
            "/c.toml: line 2, column 14: helper.connection: unknown variant `carrier-pigeon`",
        ),
        (
            "[log]\nlevel = \"info,[\"",
            "/c.toml: log.level: invalid filter 'info,['",
        ),
        (
            "[log]\ntarget = \"syslog\"",
            "/c.toml: line 2, column 10: log.target: unknown variant `syslog`",
        ),
    ];
    for (extra, expect) in cases {
        let text = format!("{MINIMAL}{extra}\n");
        let e = err_text(config::parse_str(Path::new("/c.toml"), &text, &paths));
        // MINIMAL takes 3 lines, so shift the expected line numbers.
        let expect = expect.replace("line 2,", "line 5,");
        assert!(
            e.starts_with(&expect),
            "for {extra:?}:\n got {e}\nwant {expect}"
        );
    }
}

#[test]
fn serial_endpoints() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let text = "[[endpoints.serial]]\nport = \"ttyS1\"\nbaud = 57600\nparity = \"even\"\n\
                stop_bits = 2\nside = \"server\"\n[security]\nallow_serial_push = true\n";
    let s = config::parse_str(Path::new("/c.toml"), text, &paths).unwrap();
    assert_eq!(
        s.serial[0].params.to_string(),
        "/dev/ttyS1,baud=57600,parity=even,stopbits=2"
    );
    assert_eq!(s.serial[0].side, config::SerialSide::Server);
    assert!(s.allow_serial_push && !s.allow_plain_tcp_push);
    assert!(s.listen.is_empty(), "a serial endpoint alone is enough");
    let port = "[[endpoints.serial]]\nport = \"/dev/ttyUSB0\"\n";
    let cases: &[(String, &str)] = &[
        (
            format!("{port}baud = 12345"),
            "/c.toml: endpoints.serial[0].baud: baud rate \"12345\" is not supported",
        ),
        (
            format!("{port}parity = \"mark\""),
            "/c.toml: endpoints.serial[0].parity: parity \"mark\"",
        ),
        (
            format!("{port}stop_bits = 3"),
            "/c.toml: endpoints.serial[0].stop_bits: stop bits \"3\"",
        ),
        (
            format!("{port}side = \"up\""),
            "/c.toml: line 3, column 8: endpoints.serial.side: unknown variant `up`",
        ),
        (
            format!("{port}flow = \"rtscts\""),
            "/c.toml: line 3, column 1: unknown field `flow`",
        ),
        (
            "[[endpoints.serial]]\nport = \"\"".into(),
            "/c.toml: endpoints.serial[0].port: invalid port ''",
        ),
        (
            "[[endpoints.serial]]\nport = \"ttyS0,baud=9600\"".into(),
            "/c.toml: endpoints.serial[0].port: invalid port 'ttyS0,baud=9600'",
        ),
        (
            format!("{port}[[endpoints.serial]]\nport = \"ttyUSB0\""),
            "/c.toml: endpoints.serial[1].port: port /dev/ttyUSB0 is configured twice",
        ),
    ];
    for (text, expect) in cases {
        let e = err_text(config::parse_str(Path::new("/c.toml"), text, &paths));
        assert!(
            e.starts_with(expect),
            "for {text:?}:\n got {e}\nwant {expect}"
        );
    }
}

#[test]
fn endpoint_rules() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let parse = |t: &str| config::parse_str(Path::new("/etc/iocomd/e.toml"), t, &paths);
    let cases: &[(&str, &str)] = &[
        (
            "[[endpoints.listen]]\ntransport = \"tls\"\naddress = \"0.0.0.0:6369\"\nkey = \"k.pem\"",
            "endpoints.listen[0].cert: required with transport = \"tls\"",
        ),
        (
            "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"0.0.0.0:6368\"\ncert = \"c.pem\"",
            "endpoints.listen[0].cert: only valid with transport = \"tls\"",
        ),
        (
            "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"0.0.0.0:6368\"\nserver_name = \"x\"",
            "endpoints.listen[0].server_name: only valid for connect endpoints",
        ),
        (
            "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"0.0.0.0:6368\"",
            "",
        ),
        (
            "[[endpoints.listen]]\naddress = \"0.0.0.0:6368\"",
            "line 1, column 1: missing field `transport`",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tls\"\naddress = \"ctl:6369\"",
            "endpoints.connect[0].ca: required with transport = \"tls\"",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tls\"\naddress = \"ctl:6369\"\nca = \"/ca\"\ncert = \"/c\"",
            "endpoints.connect[0].key: required when cert is set",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tcp\"\naddress = \"ctl\"",
            "endpoints.connect[0].address: invalid address 'ctl'",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tcp\"\naddress = \"::1:6368\"",
            "endpoints.connect[0].address: invalid address '::1:6368'",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tcp\"\naddress = \"ctl:0\"",
            "endpoints.connect[0].address: invalid address 'ctl:0'",
        ),
        // "*": the lighthouse finds the controller; TLS then needs the name to check.
        (
            "[[endpoints.connect]]\ntransport = \"tcp\"\naddress = \"*\"",
            "",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tls\"\naddress = \"*\"\nca = \"/ca\"",
            "endpoints.connect[0].server_name: required with address = \"*\"",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tls\"\naddress = \"*\"\nca = \"/ca\"\nserver_name = \"ctl\"",
            "",
        ),
        (
            "[[endpoints.connect]]\ntransport = \"tcp\"\naddress = \"*:6368\"",
            "endpoints.connect[0].address: invalid address '*:6368'",
        ),
    ];
    for (text, expect) in cases {
        match parse(text) {
            Ok(_) => assert!(expect.is_empty(), "{text:?} was accepted"),
            Err(e) => {
                let want = format!("/etc/iocomd/e.toml: {expect}");
                assert!(
                    !expect.is_empty() && e.to_string().starts_with(&want),
                    "{text:?}: got {e}, want {want}"
                );
            }
        }
    }

    let s = parse(
        "[[endpoints.connect]]\ntransport = \"tls\"\naddress = \"[::1]:6369\"\nca = \"tls/ca.pem\"\n\
         server_name = \"ctl.example\"\ncert = \"/c\"\nkey = \"/k\"\npassword_file = \"pw\"\n\
         [[endpoints.listen]]\ntransport = \"tls\"\naddress = \"[::]:6369\"\ncert = \"c.pem\"\nkey = \"/k.pem\"\nca = \"ca.pem\"",
    )
    .unwrap();
    let c = &s.connect[0];
    assert_eq!((c.host.as_str(), c.port), ("::1", 6369));
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(
        tls.ca,
        Path::new("/etc/iocomd/tls/ca.pem"),
        "relative to the file's directory"
    );
    assert_eq!(tls.server_name, "ctl.example");
    assert_eq!(
        tls.identity,
        Some((PathBuf::from("/c"), PathBuf::from("/k")))
    );
    assert_eq!(
        c.password_file.as_deref(),
        Some(Path::new("/etc/iocomd/pw"))
    );
    let l = s.listen[0].tls.as_ref().unwrap();
    assert_eq!(l.cert, Path::new("/etc/iocomd/c.pem"));
    assert_eq!(
        l.client_ca.as_deref(),
        Some(Path::new("/etc/iocomd/ca.pem"))
    );
}

#[test]
fn accounts_merge_by_user_and_verify_passwords() {
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::rooted(root.path());
    let hash = |p: &str| PasswordHash::from_password(p).as_str().to_owned();
    write(
        &paths.config_dirs[0].join("iocomd.toml"),
        &format!(
            "{MINIMAL}[accounts.frank]\npassword_hash = \"{}\"\n[accounts.anna]\npassword_hash = \"{}\"\n",
            hash("old"),
            hash("anna")
        ),
    );
    write(
        &paths.config_dirs[2].join("conf.d/accounts.toml"),
        &format!("[accounts.frank]\npassword_hash = \"{}\"\n", hash("new")),
    );
    let s = config::load(&paths).unwrap();
    let users: Vec<_> = s.accounts.iter().map(|a| a.user.as_str()).collect();
    assert_eq!(users, ["anna", "frank"]);
    let frank = s.account("frank").unwrap();
    assert!(frank.password_hash.as_ref().unwrap().verify("new"));
    assert!(!frank.password_hash.as_ref().unwrap().verify("old"));
    assert_eq!(frank.certificate_sha256, None);
    assert!(s.account("nobody").is_none());
    assert!(
        !format!("{s:?}").contains(&hash("new")),
        "hashes stay out of Debug output"
    );
}

#[test]
fn accounts_can_be_bound_to_a_client_certificate() {
    let paths = Paths::rooted(Path::new("/r"));
    let mtls = "[[endpoints.listen]]\ntransport = \"tls\"\naddress = \"0.0.0.0:6369\"\n\
                cert = \"/c.pem\"\nkey = \"/k.pem\"\nca = \"/ca.pem\"\n";
    let fp = "3F:9A:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";
    let parse = |t: String| config::parse_str(Path::new("/c.toml"), &t, &paths);
    let s = parse(format!(
        "{mtls}[accounts.ops]\ncertificate_sha256 = \"{fp}\"\n"
    ))
    .unwrap();
    let ops = s.account("ops").unwrap();
    assert_eq!(ops.password_hash, None);
    let want = ops.certificate_sha256.unwrap();
    assert_eq!((want[0], want[1], want[31]), (0x3f, 0x9a, 0xdd));
    // Without a listener asking for client certificates it could never be used: refused.
    let e = err_text(parse(format!(
        "{MINIMAL}[accounts.ops]\ncertificate_sha256 = \"{fp}\"\n"
    )));
    assert!(
        e.starts_with(
            "/c.toml: accounts.ops.certificate_sha256: no listener asks for client certificates"
        ),
        "{e}"
    );
    let e = err_text(parse(format!(
        "{mtls}[accounts.ops]\ncertificate_sha256 = \"3F:9A\"\n"
    )));
    assert!(
        e.starts_with("/c.toml: accounts.ops.certificate_sha256: expected"),
        "{e}"
    );
    let e = err_text(parse(format!("{mtls}[accounts.ops]\n")));
    assert_eq!(
        e,
        "/c.toml: accounts.ops: needs password_hash, certificate_sha256 or both"
    );
}

#[test]
fn demo_settings() {
    let s = Settings::demo(Path::new("/tmp/demo-state"));
    assert_eq!(s.listen.len(), 1);
    assert_eq!(s.listen[0].address.to_string(), "127.0.0.1:6368");
    assert!(s.listen[0].tls.is_none());
    assert!(s.allow_plain_tcp_push);
    assert_eq!(s.spool.dir, Path::new("/tmp/demo-state/spool"));
    assert_eq!(s.stream_buffer_size, 1 << 20);
    let HelperConnection::Spawn { args, .. } = &s.helper else {
        panic!("demo spawns its helper: {:?}", s.helper)
    };
    assert_eq!(
        args[..4],
        ["--p2p-fd", "{fd}", "--root", "/tmp/demo-state/root"]
    );
    assert!(args.contains(&"/tmp/demo-state/install-policy.toml".to_owned()));
    assert_eq!(s.device_path(), "gina3.iocafenet");
}
