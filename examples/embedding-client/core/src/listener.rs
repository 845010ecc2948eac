//! The service's HTTP/1.1 accept loop, hardened against clients that hold connections open.
//!
//! `axum::serve` has no timeouts and no connection bound, so a few hundred idle or half-sent
//! connections can exhaust the process's file descriptors and starve real requests. This loop
//! serves the same router through hyper with four limits (defaults in [`ConnectionLimits`]):
//!
//! | limit | what it bounds | how |
//! |---|---|---|
//! | `header_timeout` | from the moment a connection is ready for a request (just opened, or its previous response sent) until the request head has fully arrived | hyper's `header_read_timeout`: the connection is closed |
//! | `body_timeout` | from the head until the body has fully arrived | the embeddings handler: `408` with an OpenAI error body |
//! | `idle_timeout` | a keep-alive connection with no request in progress and no byte received | a watchdog per connection: graceful close, then a forced close after another `idle_timeout` (a client that never reads its response cannot hold the socket) |
//! | `max_connections` | connections open at once | a semaphore taken *before* `accept`: excess clients wait in the kernel's backlog instead of costing a file descriptor each |
//!
//! `accept` errors (out of file descriptors, for example) pause the loop for a moment instead of
//! spinning. Stopping stops accepting, asks every connection to close once its in-flight request
//! is answered, and waits for them.
//!
//! # Memory ordering
//! [`Activity`]'s fields are read by the watchdog of the same connection only to decide when to
//! look again; a stale value delays a close by one check at most: `Relaxed`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Connection-level limits of the service (see the module doc for what each bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Default 10 s.
    pub header_timeout: Duration,
    /// Default 30 s.
    pub body_timeout: Duration,
    /// Default 5 s (uvicorn's keep-alive default).
    pub idle_timeout: Duration,
    /// Default 1,024.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5),
            max_connections: 1024,
        }
    }
}

/// How long `accept` pauses after an error such as "too many open files".
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `stop` turns true, then closes connections gracefully.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, close) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let (app, metrics, close) = (app.clone(), metrics.clone(), close.clone());
        connections.spawn(async move {
            metrics.connection_opened();
            connection(stream, app, limits, close).await;
            metrics.connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until the client closes it, a limit closes it, or the service stops.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut close: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = TowerToHyperService::new(Tracked {
        inner: app,
        activity: activity.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Set once the connection was asked to close; past it, the connection is dropped.
    let mut forced_at: Option<Instant> = None;
    loop {
        let wake_at = match forced_at {
            Some(at) => at,
            None => activity.idle_deadline(limits.idle_timeout),
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stopped(&mut close), if forced_at.is_none() => {
                conn.as_mut().graceful_shutdown();
                forced_at = Some(Instant::now() + limits.idle_timeout);
            }
            () = tokio::time::sleep_until(wake_at) => {
                if forced_at.is_some() {
                    return;
                }
                if activity.idle_for(limits.idle_timeout) {
                    conn.as_mut().graceful_shutdown();
                    forced_at = Some(Instant::now() + limits.idle_timeout);
                }
            }
        }
    }
}

/// Resolves once `flag` is true (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// When a connection last did something, and whether a request is being handled.
struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last byte received or response produced.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Relaxed))
    }

    /// When the connection will have been idle for `timeout` if nothing happens meanwhile.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        if self.in_flight.load(Relaxed) > 0 {
            return Instant::now() + timeout;
        }
        self.last() + timeout
    }

    fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Relaxed) == 0 && self.last().elapsed() >= timeout
    }
}

/// The socket, noting every received byte in [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router, counting the request in flight from its head until its response is ready.
#[derive(Clone)]
struct Tracked {
    inner: Router,
    activity: Arc<Activity>,
}

/// Ends a request's "in flight" mark even when its future is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl tower::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = crate::provider::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Relaxed);
        let in_flight = InFlight(self.activity.clone());
        let response = tower::ServiceExt::oneshot(self.inner.clone(), request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}
