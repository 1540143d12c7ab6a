//! An in-process DDI server on 127.0.0.1:0 (hyper http1) for the DDI client tests: the
//! controller resources of one device, artifacts with ETag/`Range`/`If-Range` (206/416), ETag
//! and 304 on the JSON resources, scripted faults (any status, once), and links that drop or
//! stall mid-body. Everything it receives is recorded for the tests to check.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Base path of the mocked controller.
pub const BASE: &str = "/DEFAULT/controller/v1/dev1";

pub type Body = BoxBody<Bytes, std::io::Error>;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
}

/// How an artifact's link misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Serves normally.
    Good,
    /// The next `n` responses close the connection after `after` body bytes.
    Drop { after: usize, n: u32 },
    /// Responses stop sending (connection open) after `after` body bytes.
    Stall { after: usize },
}

/// An artifact served at `/artifacts/{name}`.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub data: Vec<u8>,
    pub etag: String,
    pub link: Link,
}

/// A fault returned instead of the normal answer, once, to the first request whose
/// "METHOD path body" contains `matches`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub matches: String,
    pub status: u16,
    pub retry_after: Option<u64>,
}

/// The mock's state; tests change it while the client runs.
#[derive(Debug, Default)]
pub struct State {
    /// `_links` of the base resource (names → hrefs are built by [`Mock::link`]).
    pub links: Value,
    /// `config.polling.sleep`.
    pub sleep: String,
    pub deployments: BTreeMap<String, Value>,
    /// Cancel actions: id → stopId.
    pub cancels: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, Artifact>,
    pub faults: Vec<Fault>,
    /// `GET path` answered with a 302 to this URL.
    pub redirects: BTreeMap<String, String>,
    /// Status answered to `PUT installedBase`.
    pub installed_base_status: u16,
    pub seen: Vec<Seen>,
    pub not_modified: u32,
}

/// A running mock.
#[derive(Debug, Clone)]
pub struct Mock {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn full(status: u16, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .unwrap()
}

fn json_etag(req_tag: Option<&String>, v: &Value, st: &mut State) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap();
    let tag = format!("\"{}\"", &sha256_hex(&body)[..16]);
    if req_tag == Some(&tag) {
        st.not_modified += 1;
        return Response::builder()
            .status(304)
            .header("etag", tag)
            .body(
                Full::new(Bytes::new())
                    .map_err(|e: Infallible| match e {})
                    .boxed(),
            )
            .unwrap();
    }
    let mut r = full(200, body);
    r.headers_mut().insert("etag", tag.parse().unwrap());
    r
}

impl Mock {
    pub async fn start() -> Mock {
        Self::start_with(None).await
    }

    /// A mock over TLS with `acceptor`, reached as `https://localhost:PORT`.
    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let state = Arc::new(Mutex::new(State {
            sleep: "00:00:00".into(),
            links: json!({}),
            installed_base_status: 200,
            ..State::default()
        }));
        let mock = Mock { url, state };
        let m = mock.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let m = m.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let m = m.clone();
                        async move { Ok::<_, Infallible>(m.handle(req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        mock
    }

    /// An absolute URL on the mock.
    pub fn href(&self, path: &str) -> Value {
        json!({ "href": format!("{}{path}", self.url) })
    }

    /// Sets the base resource's links: e.g. `[("deploymentBase", "/deploymentBase/1")]`
    /// (paths below the controller).
    pub fn set_links(&self, links: &[(&str, &str)]) {
        let mut v = serde_json::Map::new();
        for (k, p) in links {
            v.insert((*k).to_owned(), self.href(&format!("{BASE}{p}")));
        }
        self.state.lock().unwrap().links = Value::Object(v);
    }

    /// Adds an artifact and returns its DDI JSON (with a `download` link and sha256).
    pub fn artifact(&self, name: &str, data: &[u8], link: Link) -> Value {
        let etag = format!("\"{}\"", &sha256_hex(data)[..12]);
        self.state.lock().unwrap().artifacts.insert(
            name.into(),
            Artifact {
                data: data.to_vec(),
                etag,
                link,
            },
        );
        json!({
            "filename": name, "size": data.len(),
            "hashes": { "sha1": "x", "md5": "y", "sha256": sha256_hex(data) },
            "_links": { "download": self.href(&format!("/artifacts/{name}")) }
        })
    }

    /// Offers action `id` with `chunks` (a JSON array), `download`/`update` handling and an
    /// optional maintenance window.
    pub fn offer(
        &self,
        id: &str,
        chunks: Value,
        download: &str,
        update: &str,
        window: Option<&str>,
    ) {
        let mut dep = json!({ "download": download, "update": update, "chunks": chunks });
        if let Some(w) = window {
            dep["maintenanceWindow"] = json!(w);
        }
        let mut st = self.state.lock().unwrap();
        st.deployments
            .insert(id.into(), json!({ "id": id, "deployment": dep }));
        drop(st);
        self.set_links(&[("deploymentBase", &format!("/deploymentBase/{id}?c=-1"))]);
    }

    /// Offers action `id` (forced) with one chunk `name` `version` holding `artifact`.
    pub fn offer_app(&self, id: &str, name: &str, version: &str, artifact: Value) {
        let chunks = json!([{ "name": name, "version": version, "artifacts": [artifact] }]);
        self.offer(id, chunks, "forced", "forced", None);
    }

    pub fn fault(&self, matches: &str, status: u16, retry_after: Option<u64>) {
        self.state.lock().unwrap().faults.push(Fault {
            matches: matches.into(),
            status,
            retry_after,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Bodies of the feedback POSTs to `deploymentBase/{id}/feedback` (accepted ones only).
    pub fn feedback(&self, id: &str) -> Vec<Value> {
        let p = format!("{BASE}/deploymentBase/{id}/feedback");
        self.seen()
            .into_iter()
            .filter(|s| s.path == p && s.headers.contains_key("x-accepted"))
            .filter_map(|s| s.body)
            .collect()
    }

    /// Bodies of the feedback POSTs to `cancelAction/{id}/feedback`.
    pub fn cancel_feedback(&self, id: &str) -> Vec<Value> {
        let p = format!("{BASE}/cancelAction/{id}/feedback");
        self.seen()
            .into_iter()
            .filter(|s| s.path == p)
            .filter_map(|s| s.body)
            .collect()
    }

    /// `(execution, finished)` of a feedback body.
    pub fn exec(v: &Value) -> (String, String) {
        (
            v["status"]["execution"].as_str().unwrap_or("").into(),
            v["status"]["result"]["finished"]
                .as_str()
                .unwrap_or("")
                .into(),
        )
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let mut headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice::<Value>(&bytes).ok();
        let mut st = self.state.lock().unwrap();
        let key = format!("{method} {path} {}", String::from_utf8_lossy(&bytes));
        if let Some(i) = st.faults.iter().position(|f| key.contains(&f.matches)) {
            let f = st.faults.remove(i);
            if f.status == 410 {
                // Gone, as on hawkBit: no longer offered.
                st.links = json!({});
            }
            st.seen.push(Seen {
                method,
                path,
                headers,
                body,
            });
            let mut r = full(f.status, b"{}".to_vec());
            if let Some(s) = f.retry_after {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            return r;
        }
        headers.insert("x-accepted".into(), "1".into());
        let inm = headers.get("if-none-match").cloned();
        let range = headers.get("range").cloned();
        let if_range = headers.get("if-range").cloned();
        st.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
            body,
        });
        if let Some(to) = st.redirects.get(&path) {
            let mut r = full(302, Vec::new());
            r.headers_mut().insert("location", to.parse().unwrap());
            return r;
        }
        let rest = path.strip_prefix(BASE);
        match (method.as_str(), rest) {
            ("GET", Some("")) => {
                let v =
                    json!({ "config": { "polling": { "sleep": st.sleep } }, "_links": st.links });
                json_etag(inm.as_ref(), &v, &mut st)
            }
            ("PUT", Some("/configData")) => full(200, b"{}".to_vec()),
            ("PUT", Some("/installedBase")) => full(st.installed_base_status, b"{}".to_vec()),
            ("POST", Some(r)) if r.ends_with("/feedback") => {
                // Like hawkBit: a closed action (or an accepted cancel) is no longer offered.
                let exec = st
                    .seen
                    .last()
                    .and_then(|s| s.body.as_ref())
                    .map(Mock::exec)
                    .unwrap_or_default();
                let id = r
                    .trim_end_matches("/feedback")
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                if r.starts_with("/deploymentBase/") && exec.0 == "closed" {
                    st.deployments.remove(&id);
                    st.links = json!({});
                } else if r.starts_with("/cancelAction/") {
                    let stop = st.cancels.remove(&id).unwrap_or_default();
                    st.links = json!({});
                    if exec.0 == "closed" {
                        st.deployments.remove(&stop);
                    } else if st.deployments.contains_key(&stop) {
                        st.links = json!({ "deploymentBase": { "href": format!("{}{BASE}/deploymentBase/{stop}", self.url) } });
                    }
                }
                full(200, b"{}".to_vec())
            }
            ("GET", Some(r)) if r.starts_with("/deploymentBase/") => {
                let id = r.trim_start_matches("/deploymentBase/").to_owned();
                match st.deployments.get(&id).cloned() {
                    Some(v) => json_etag(inm.as_ref(), &v, &mut st),
                    None => full(404, b"{}".to_vec()),
                }
            }
            ("GET", Some(r)) if r.starts_with("/cancelAction/") => {
                let id = r.trim_start_matches("/cancelAction/").to_owned();
                match st.cancels.get(&id) {
                    Some(stop) => full(
                        200,
                        serde_json::to_vec(
                            &json!({ "id": id, "cancelAction": { "stopId": stop } }),
                        )
                        .unwrap(),
                    ),
                    None => full(404, b"{}".to_vec()),
                }
            }
            ("GET", None) if path.starts_with("/artifacts/") => {
                let name = path.trim_start_matches("/artifacts/");
                match st.artifacts.get_mut(name) {
                    Some(a) => super::artifact::serve(a, range.as_deref(), if_range.as_deref()),
                    None => full(404, b"{}".to_vec()),
                }
            }
            _ => full(404, b"{}".to_vec()),
        }
    }
}
