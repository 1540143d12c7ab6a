//! Serving a mock artifact: ETag, `Range` with `If-Range` (206), 416 past the end, and the
//! link faults of [`Link`] (drop the connection mid-body, or stall).

use super::mock::{Artifact, Body, Link};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use std::convert::Infallible;

pub fn serve(a: &mut Artifact, range: Option<&str>, if_range: Option<&str>) -> Response<Body> {
    let len = a.data.len();
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|_| if_range.is_none_or(|t| t == a.etag));
    let (status, from) = match start {
        Some(s) if s >= len => {
            return Response::builder()
                .status(416)
                .header("content-range", format!("bytes */{len}"))
                .body(
                    Full::new(Bytes::new())
                        .map_err(|e: Infallible| match e {})
                        .boxed(),
                )
                .unwrap();
        }
        Some(s) => (StatusCode::PARTIAL_CONTENT, s),
        None => (StatusCode::OK, 0),
    };
    let rest = a.data[from..].to_vec();
    let mut b = Response::builder()
        .status(status)
        .header("etag", a.etag.clone())
        .header("accept-ranges", "bytes")
        .header("content-length", rest.len().to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header("content-range", format!("bytes {from}-{}/{len}", len - 1));
    }
    let cut = |after: usize| rest[..after.min(rest.len())].to_vec();
    let body: Body = match a.link {
        Link::Good => Full::new(Bytes::from(rest))
            .map_err(|e: Infallible| match e {})
            .boxed(),
        Link::Drop { after, n } if n > 0 => {
            a.link = if n > 1 {
                Link::Drop { after, n: n - 1 }
            } else {
                Link::Good
            };
            // The bytes go out first (hyper would drop unflushed data on the error).
            let first = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Frame::data(
                Bytes::from(cut(after)),
            ))]);
            let fail = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                Err(std::io::Error::other("link dropped"))
            });
            StreamBody::new(futures_util::StreamExt::chain(first, fail)).boxed()
        }
        Link::Drop { .. } => Full::new(Bytes::from(rest))
            .map_err(|e: Infallible| match e {})
            .boxed(),
        Link::Stall { after } => {
            let first = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Frame::data(
                Bytes::from(cut(after)),
            ))]);
            let never = futures_util::stream::pending();
            StreamBody::new(futures_util::StreamExt::chain(first, never)).boxed()
        }
    };
    b.body(body).unwrap()
}
