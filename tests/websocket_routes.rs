//! Mixed routing for websockets: one Axum router where a websocket path is answered by a
//! Rust handler (`WebSocketUpgrade`) and the others fall back to the Python ASGI app.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{any_service, get};
use futures_util::{SinkExt, StreamExt};
use rust_asgi_server::{PythonApp, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

const RUST_GREETING: &str = "hello from rust";
const STEP: Duration = Duration::from_secs(10);

/// Runs a test body on its own runtime, under a watchdog: a test that hangs (in the body,
/// or while the runtime shuts down after a failed assertion) aborts the process with a
/// message after `LIMIT` instead of blocking the test run forever.
fn run_test(body: impl Future<Output = ()>) {
    const LIMIT: Duration = Duration::from_secs(120);
    let (disarm, armed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(LIMIT) {
            eprintln!(
                "websocket_routes: the test did not finish within {LIMIT:?} \
                 (a hang in the body, in shutdown, or while dropping the runtime); aborting"
            );
            std::process::abort();
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(body);
    drop(runtime);
    drop(disarm);
}

async fn rust_ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        if socket
            .send(AxumMessage::Text(RUST_GREETING.into()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                AxumMessage::Text(text) => format!("rust echo: {}", text.as_str()),
                AxumMessage::Close(_) => return,
                _ => continue,
            };
            if socket.send(AxumMessage::Text(reply.into())).await.is_err() {
                return;
            }
        }
    })
}

type Client = WebSocketStream<TcpStream>;

async fn open(address: SocketAddr, path: &str) -> Client {
    let tcp = TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}{path}");
    let (client, response) = tokio::time::timeout(STEP, client_async(url, tcp))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|err| panic!("websocket handshake for {path} failed: {err}"));
    assert_eq!(response.status(), 101, "{path}");
    client
}

async fn next_text(client: &mut Client) -> String {
    loop {
        let message = tokio::time::timeout(STEP, client.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn http_get(address: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[test]
fn a_websocket_route_in_rust_next_to_python_websockets() {
    run_test(async {
        let python = PythonApp::builder("pyapp.ws_apps:app")
            .app_dir(env!("CARGO_MANIFEST_DIR"))
            .start()
            .expect("the websocket test app imports");
        let asgi = python.service();
        let router = Router::new()
            .route("/rust-ws", get(rust_ws))
            // a websocket routed to Python explicitly, not through the fallback
            .route("/explicit/py-ws", any_service(asgi.clone()))
            .fallback_service(asgi);
        let server = Server::new(router).bind("127.0.0.1:0");
        let handle = server.handle();
        let serving = tokio::spawn(server.serve(python));
        let address = handle.ready().await[0];

        // Rust: greets first (Python's echo never speaks first), then answers with its prefix.
        let mut rust = open(address, "/rust-ws").await;
        assert_eq!(next_text(&mut rust).await, RUST_GREETING);
        rust.send(Message::Text("ping".into())).await.unwrap();
        assert_eq!(next_text(&mut rust).await, "rust echo: ping");

        // Python, through the fallback: a plain echo, no greeting.
        let mut python_ws = open(address, "/py-ws").await;
        python_ws
            .send(Message::Text("to python".into()))
            .await
            .unwrap();
        assert_eq!(next_text(&mut python_ws).await, "to python");
        python_ws
            .send(Message::Binary(vec![0u8, 1, 2, 255].into()))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(STEP, python_ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::Binary(vec![0u8, 1, 2, 255].into()));

        // Python, through an explicit route.
        let mut explicit = open(address, "/explicit/py-ws").await;
        explicit
            .send(Message::Text("explicit".into()))
            .await
            .unwrap();
        assert_eq!(next_text(&mut explicit).await, "explicit");

        // Python's own view: the scope it got is a websocket scope with the original path.
        let mut scope = open(address, "/scope/from-rust-router?x=1").await;
        let report = next_text(&mut scope).await;
        assert!(report.contains(r#""type": "websocket""#), "{report}");
        assert!(
            report.contains(r#""path": "/scope/from-rust-router""#),
            "{report}"
        );
        assert!(report.contains(r#""scheme": "ws""#), "{report}");

        // Both kinds stay usable at the same time, and the Rust one still is not Python.
        rust.send(Message::Text("again".into())).await.unwrap();
        assert_eq!(next_text(&mut rust).await, "rust echo: again");
        python_ws.send(Message::Text("again".into())).await.unwrap();
        assert_eq!(next_text(&mut python_ws).await, "again");

        // Plain HTTP on a non-websocket path still reaches Python.
        let http = http_get(address, "/anything").await;
        assert!(http.starts_with("HTTP/1.1 200"), "{http}");
        assert!(http.ends_with("python http"), "{http}");

        for mut client in [rust, python_ws, explicit] {
            client.close(None).await.unwrap();
            // read until the server's close reply ends the stream
            while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, client.next()).await {}
        }

        handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("shutdown in time")
            .unwrap()
            .expect("clean shutdown");
    });
}

#[test]
fn a_python_websocket_rejection_reaches_the_client_through_the_router() {
    run_test(async {
        let python = PythonApp::builder("pyapp.ws_apps:app")
            .app_dir(env!("CARGO_MANIFEST_DIR"))
            .start()
            .expect("the websocket test app imports");
        let router = Router::new()
            .route("/rust-ws", get(rust_ws))
            .fallback_service(python.service());
        let server = Server::new(router).bind("127.0.0.1:0");
        let handle = server.handle();
        let serving = tokio::spawn(server.serve(python));
        let address = handle.ready().await[0];

        let tcp = TcpStream::connect(address).await.unwrap();
        let refused = client_async(format!("ws://{address}/reject"), tcp).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403)
            }
            other => panic!("expected an HTTP 403 refusal, got {other:?}"),
        }

        let tcp = TcpStream::connect(address).await.unwrap();
        let denied = client_async(format!("ws://{address}/deny"), tcp).await;
        match denied {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 418);
                assert_eq!(
                    response.body().as_deref(),
                    Some(&b"no websockets for you"[..])
                );
            }
            other => panic!("expected the app's 418 denial, got {other:?}"),
        }

        let mut rust = open(address, "/rust-ws").await;
        assert_eq!(next_text(&mut rust).await, RUST_GREETING);
        rust.close(None).await.unwrap();

        handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("shutdown in time")
            .unwrap()
            .expect("clean shutdown");
    });
}
