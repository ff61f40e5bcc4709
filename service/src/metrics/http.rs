//! A small HTTP/1.1 responder for the metrics: `GET /metrics` (and `HEAD`)
//! answers the Prometheus text format, `/` a line saying where the metrics
//! are, anything else 404 or 405. One request per connection
//! (`Connection: close`), requests of at most 8 KiB read within 5 s, and
//! at most 8 connections served at once: enough for scrapers, and nothing
//! a stray client can use to hold the capture's memory.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 8;

/// The metrics address cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}")]
pub struct BindError {
    addr: String,
    #[source]
    source: std::io::Error,
}

/// A bound listener, not serving yet.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Listens on `addr` (`HOST:PORT`; port 0 picks a free port).
    pub async fn bind(addr: &str) -> Result<Server, BindError> {
        match TcpListener::bind(addr).await {
            Ok(listener) => Ok(Server { listener }),
            Err(source) => Err(BindError { addr: addr.to_owned(), source }),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers requests until dropped; `page` makes the body of each
    /// `/metrics` answer.
    pub async fn serve<F, Fut>(self, page: F)
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = String> + Send,
    {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let page = page.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, page).await {
                    tracing::debug!(%error, %peer, "metrics: request not answered");
                }
                drop(slot);
            });
        }
    }
}

/// Reads one request and answers it.
async fn answer<F, Fut>(mut stream: TcpStream, page: F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return respond(&mut stream, 408, "text/plain", "request timeout\n", true).await,
    };
    let Some(head) = head else {
        return respond(&mut stream, 431, "text/plain", "request too large\n", true).await;
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let body = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => respond(&mut stream, 200, CONTENT_TYPE, &page().await, body).await,
        ("GET" | "HEAD", "/") => {
            respond(
                &mut stream,
                200,
                "text/plain; charset=utf-8",
                "flowsql capture: metrics at /metrics\n",
                body,
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            respond(&mut stream, 404, "text/plain; charset=utf-8", "not found\n", body).await
        }
        _ => respond(&mut stream, 405, "text/plain; charset=utf-8", "only GET and HEAD\n", true).await,
    }
}

/// The request head (up to the blank line), or `None` when it is longer
/// than allowed.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Request Header Fields Too Large",
    };
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(addr: SocketAddr, text: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(text.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn answers_get_head_and_refuses_the_rest() {
        let server = Server::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let task = tokio::spawn(server.serve(|| async { "flowsql_up 1\n".to_owned() }));
        let ok = request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 13\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nflowsql_up 1\n"), "{ok}");
        let head = request(addr, "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        assert!(request(addr, "GET /nope HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404 "));
        let post = request(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"), "{post}");
        // A request too large is refused (or reset mid-write), and the
        // server goes on.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let _ = stream.write_all(huge.as_bytes()).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        assert!(response.is_empty() || response.starts_with(b"HTTP/1.1 431 "));
        assert!(request(addr, "GET /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 200 OK"));
        task.abort();
    }
}
