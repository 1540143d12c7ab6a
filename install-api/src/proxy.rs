//! The one client proxy of `org.iocom.InstallHelper1` and the typed decoding of its signals.

use crate::{ErrorCode, Phase, TxResult};
use std::collections::HashMap;

/// The helper's interface. `Install` returns once the helper has taken its own copy of the fd.
#[zbus::proxy(
    interface = "org.iocom.InstallHelper1",
    default_service = "org.iocom.InstallHelper1",
    default_path = "/org/iocom/InstallHelper1"
)]
pub trait InstallHelper1 {
    /// `Install(h package, a{sv} meta) -> s transaction_id` (keys: [`crate::meta`]).
    fn install(
        &self,
        package: zbus::Fd<'_>,
        meta: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;

    /// `Status() -> s json` ([`crate::HelperStatus`]).
    fn status(&self) -> zbus::Result<String>;

    /// `Result(s transaction_id) -> s json` ([`TxResult`]).
    fn result(&self, txid: &str) -> zbus::Result<String>;

    /// `Progress(s txid, s phase, u percent, s message)`; `percent` is the transaction's overall
    /// progress ([`Phase::range`]).
    #[zbus(signal)]
    fn progress(
        &self,
        txid: String,
        phase: String,
        percent: u32,
        message: String,
    ) -> zbus::Result<()>;

    /// `Healthy(s txid, t probation_until, s result_json)` (since 0.2): the provisional success
    /// — installed, the units passed the ready gate — with probation running until
    /// `probation_until` (seconds since the Unix epoch). Not the end: the settled result (ok
    /// after probation, or rolled back) is the `Finished` that follows. Readers of 0.1 ignore it.
    #[zbus(signal)]
    fn healthy(&self, txid: String, probation_until: u64, result_json: String) -> zbus::Result<()>;

    /// `Finished(s txid, s code, s message, s result_json)`: the settled end of a transaction.
    #[zbus(signal)]
    fn finished(
        &self,
        txid: String,
        code: String,
        message: String,
        result_json: String,
    ) -> zbus::Result<()>;
}

/// A decoded signal of the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperSignal {
    /// `Progress`.
    Progress {
        /// Transaction id.
        txid: String,
        /// The phase (`None`: a phase this reader does not know; its percent still counts).
        phase: Option<Phase>,
        /// Overall percent.
        percent: u32,
        /// Human message.
        message: String,
    },
    /// `Healthy`: a provisional success ([`TxResult::is_provisional`]); `Finished` follows.
    Healthy(Box<TxResult>),
    /// `Finished`: the whole, settled result.
    Finished(Box<TxResult>),
}

/// Decodes a `Progress`, `Healthy` or `Finished` signal message; `None` for anything else. A `Finished`
/// whose JSON does not parse still yields a result from its code and message arguments.
pub fn decode_signal(m: &zbus::Message) -> Option<HelperSignal> {
    let header = m.header();
    let body = m.body();
    match header.member()?.as_str() {
        "Progress" => {
            let (txid, phase, percent, message): (String, String, u32, String) =
                body.deserialize().ok()?;
            Some(HelperSignal::Progress {
                txid,
                phase: Phase::from_name(&phase),
                percent,
                message,
            })
        }
        "Finished" => {
            let (txid, code, message, json): (String, String, String, String) =
                body.deserialize().ok()?;
            Some(HelperSignal::Finished(Box::new(finished_result(
                &txid, &code, &message, &json,
            ))))
        }
        "Healthy" => {
            let (txid, until, json): (String, u64, String) = body.deserialize().ok()?;
            let mut r = finished_result(&txid, "ok", "healthy, probation running", &json);
            r.settled = false;
            r.probation_until = Some(until);
            Some(HelperSignal::Healthy(Box::new(r)))
        }
        _ => None,
    }
}

/// The result carried by a `Finished` signal's arguments.
pub fn finished_result(txid: &str, code: &str, message: &str, json: &str) -> TxResult {
    let mut r = serde_json::from_str::<TxResult>(json).unwrap_or_else(|_| {
        TxResult::new(
            txid,
            ErrorCode::from_str_code(code).unwrap_or(ErrorCode::Internal),
            message,
        )
    });
    r.txid = txid.to_owned();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(
        member: &str,
        body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
    ) -> zbus::Message {
        zbus::Message::signal(crate::OBJECT_PATH, crate::INTERFACE, member)
            .build(body)
            .unwrap()
    }

    #[test]
    fn healthy_is_provisional_and_finished_settled() {
        let mut p = TxResult::new("t", ErrorCode::Ok, "app 2.0 installed and healthy");
        p.settled = false;
        p.probation_until = Some(77);
        let m = signal("Healthy", &("t", 77u64, p.to_json()));
        let Some(HelperSignal::Healthy(r)) = decode_signal(&m) else {
            panic!("not decoded as Healthy");
        };
        assert!(r.is_provisional());
        assert_eq!((r.code, r.probation_until), (ErrorCode::Ok, Some(77)));
        // Even without usable JSON a Healthy is a provisional ok.
        let m = signal("Healthy", &("t", 78u64, "{"));
        let Some(HelperSignal::Healthy(r)) = decode_signal(&m) else {
            panic!("not decoded as Healthy");
        };
        assert!(r.is_provisional() && r.code == ErrorCode::Ok && r.probation_until == Some(78));
        let done = TxResult::new("t", ErrorCode::UnhealthyRolledBack, "back").to_json();
        let m = signal("Finished", &("t", "unhealthy-rolled-back", "back", done));
        let Some(HelperSignal::Finished(r)) = decode_signal(&m) else {
            panic!("not decoded as Finished");
        };
        assert!(r.settled);
        assert_eq!(decode_signal(&signal("Other", &("t",))), None);
    }

    #[test]
    fn a_finished_signal_without_usable_json_keeps_code_and_message() {
        let r = finished_result("t", "not-newer", "1.0 is installed", "{oops");
        assert_eq!(
            (r.code, r.message.as_str()),
            (ErrorCode::NotNewer, "1.0 is installed")
        );
        let r = finished_result("t", "what", "m", "");
        assert_eq!(r.code, ErrorCode::Internal);
        let full = TxResult::new("other", ErrorCode::Ok, "fine").to_json();
        let r = finished_result("t", "ok", "fine", &full);
        assert_eq!((r.txid.as_str(), r.code), ("t", ErrorCode::Ok));
    }
}
