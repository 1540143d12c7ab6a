//! `iocomctl hash-password`: the account entry a device's iocomd config needs for a controller
//! user, with the password as an IOCOM password hash ([`crate::proto::password`], the format of
//! IOCOM account files and of `[accounts.NAME] password_hash` in iocomd's config).

use super::CtlError;
use crate::proto::auth::MAX_PASSWORD_LEN;
use crate::proto::password::hash_password;

/// The config lines for `user` (or only the `password_hash` line when `None`).
///
/// Refused: an empty password (it never matches), one longer than the 45 bytes an IOCOM
/// authentication frame carries, a user name iocomd's config refuses (1 to 25 characters, no
/// spaces or `.`).
pub fn account_config(user: Option<&str>, password: &str) -> Result<String, CtlError> {
    if password.is_empty() {
        return Err(CtlError::Usage(
            "empty password: an empty password never matches an account".into(),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(CtlError::Usage(format!(
            "password longer than {MAX_PASSWORD_LEN} bytes: IOCOM peers cannot send it"
        )));
    }
    let line = format!("password_hash = \"{}\"", hash_password(password));
    let Some(user) = user else {
        return Ok(line);
    };
    if user.is_empty()
        || user.chars().count() > 25
        || user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '.')
    {
        return Err(CtlError::Usage(format!(
            "invalid user name {user:?}: 1 to 25 characters, no spaces or '.'"
        )));
    }
    let bare = user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        user.to_owned()
    } else {
        format!("\"{}\"", user.replace('\\', "\\\\").replace('"', "\\\""))
    };
    Ok(format!("[accounts.{key}]\n{line}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PasswordHash;

    fn hash_of(text: &str, user: &str) -> PasswordHash {
        let v: toml::Table = toml::from_str(text).unwrap();
        let h = v["accounts"][user]["password_hash"].as_str().unwrap();
        PasswordHash::parse(h).unwrap()
    }

    #[test]
    fn makes_a_config_entry_the_daemon_accepts() {
        let text = account_config(Some("frank"), "pass").unwrap();
        assert_eq!(
            text,
            "[accounts.frank]\npassword_hash = \"!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8\""
        );
        let h = hash_of(&text, "frank");
        assert!(h.verify("pass") && !h.verify("Pass"));
        // A name that is not a bare TOML key is quoted.
        let text = account_config(Some("ops@site"), "s3cret").unwrap();
        assert!(text.starts_with("[accounts.\"ops@site\"]"));
        assert!(hash_of(&text, "ops@site").verify("s3cret"));
        assert_eq!(
            account_config(None, "pass").unwrap(),
            "password_hash = \"!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8\""
        );
    }

    #[test]
    fn refuses_what_cannot_work() {
        for (user, pw) in [
            (Some("frank"), ""),
            (Some("frank"), &"x".repeat(46)[..]),
            (Some("a.b"), "pass"),
            (Some("a b"), "pass"),
            (Some(""), "pass"),
            (Some(&"u".repeat(26)[..]), "pass"),
        ] {
            let e = account_config(user, pw).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{user:?}");
        }
        assert!(account_config(Some("frank"), &"x".repeat(45)).is_ok());
    }
}
