//! The README tells the truth about iocomctl: its exit-code table is the one `iocomctl --help`
//! prints (and the code returns, tests in ctl_cli/ctl_push), and its examples against the
//! demo device name the device `iocomd --demo` really is.

use std::path::PathBuf;

fn readme() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `(exit code, meaning)` rows of the README's `| exit | meaning |` table.
fn readme_table(text: &str) -> Vec<(u8, String)> {
    let start = text
        .find("| exit | meaning |")
        .expect("exit table in the README");
    text[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].parse().expect("exit number"), cells[1].to_owned())
        })
        .collect()
}

/// The same rows from `iocomctl --help`.
fn help_table() -> Vec<(u8, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .arg("--help")
        .output()
        .expect("iocomctl runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = text.find("Exit status:").expect("exit table in --help");
    text[start..]
        .lines()
        .skip(1)
        .map_while(|l| {
            let l = l.trim_start();
            let (n, rest) = l.split_once("  ")?;
            Some((n.parse().ok()?, rest.trim().to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_exit_table_is_the_help_table() {
    let readme = readme_table(&readme());
    let help = help_table();
    assert_eq!(readme.len(), 10, "{readme:?}");
    assert_eq!(readme, help);
}

#[test]
fn readme_examples_against_the_demo_name_the_demo_device() {
    let demo = iocomd::config::Settings::demo(std::path::Path::new("/tmp/x")).device_path();
    let text = readme();
    let mut seen = 0;
    for line in text.lines().filter(|l| {
        l.starts_with("iocomctl ")
            && (l.contains("127.0.0.1:6368") || l.contains("--connect localhost"))
    }) {
        seen += 1;
        assert!(
            line.contains(&demo),
            "{line:?} does not name the demo's {demo}"
        );
    }
    assert!(seen >= 2, "no demo examples found");
}

#[test]
fn completions_know_every_subcommand_and_option() {
    let generate = |prog: &str, args: &[&str]| {
        let exe = if prog == "iocomctl" {
            env!("CARGO_BIN_EXE_iocomctl")
        } else {
            env!("CARGO_BIN_EXE_iocomd")
        };
        let out = std::process::Command::new(exe).args(args).output().unwrap();
        assert!(out.status.success(), "{prog} {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let s = generate("iocomctl", &["completions", shell]);
        // Option names without their dashes: fish writes `-l keyring`.
        for word in [
            "push-many",
            "status",
            "check",
            "keyring",
            "connect",
            "quiet",
        ] {
            assert!(s.contains(word), "{shell}: {word} missing");
        }
        let s = generate("iocomd", &["--completions", shell]);
        for word in ["check-config", "demo", "state-dir"] {
            assert!(s.contains(word), "{shell}: {word} missing");
        }
    }
    // Not a shell: a usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
